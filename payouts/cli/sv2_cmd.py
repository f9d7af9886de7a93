"""``payouts sv2``: decode and encode plaintext Stratum V2 frames from the command line.

``decode HEX`` prints one frame (6-byte header + payload; sv2-spec 03-Protocol-Overview.md §3.2)
as JSON: ``message`` (the spec's name), ``extension_type``, ``msg_type``, ``channel_msg``,
``fields`` (the spec's field names in snake_case; bytes as hex; U256 as hex in *wire* byte order,
i.e. a hash's internal order, not the reversed display form) and ``tlvs``. ``encode JSON`` is the
exact inverse: ``encode(decode(x)) == x`` for every frame the codec accepts.
"""

from __future__ import annotations

import json
import re

import typer

from payouts.errors import ValidationError
from sv2.messages import decode_frame, message_from_json

app = typer.Typer(help="Stratum V2 frames: decode to JSON, encode from JSON (plaintext, no Noise).")

_HEX_JUNK = re.compile(r"[\s:_]")  # tolerate spaces/newlines/colons people paste from dumps


def _read_arg(value: str) -> str:
    return typer.get_text_stream("stdin").read() if value == "-" else value


@app.command("decode")
def decode(
    frame_hex: str = typer.Argument(
        ..., metavar="HEX", help="One plaintext frame, header + payload, as hex ('-' for stdin)."
    ),
    no_tlvs: bool = typer.Option(
        False, "--no-tlvs", help="Reject bytes after the message body instead of reading TLVs."
    ),
) -> None:
    """Print one SV2 frame as JSON."""
    text = _HEX_JUNK.sub("", _read_arg(frame_hex))
    if text.lower().startswith("0x"):
        text = text[2:]
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise ValidationError(
            "HEX is not valid hex (an even number of 0-9a-f digits)", code="sv2-bad-hex"
        ) from None
    frame, msg = decode_frame(data, allow_tlvs=not no_tlvs)
    typer.echo(json.dumps(msg.to_json(channel_msg=frame.channel_msg), indent=2, ensure_ascii=False))


@app.command("encode")
def encode(
    doc: str = typer.Argument(
        ..., metavar="JSON", help="The JSON that 'payouts sv2 decode' prints ('-' for stdin)."
    ),
) -> None:
    """Print the frame (header + payload) for a JSON message, as hex."""
    text = _read_arg(doc)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"JSON is not valid JSON: {exc}", code="sv2-bad-json") from None
    msg, channel_msg = message_from_json(obj)
    typer.echo(msg.encode_frame(channel_msg=channel_msg).hex())
