"""Every byte example of docs/extensions/0x4003-settlement-modes.md §9 decodes and equals the
conformance vectors (which test_vectors.py holds equal to the code)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from payouts.tx.transaction import Tx
from sv2.framing import HEADER_SIZE, FrameHeader
from sv2.messages import SetSettlementMode, decode_frame
from sv2.messages.settlement import SettlementModeError
from tests.extensions.vectors import vectors

DOC = Path(__file__).resolve().parents[2] / "docs" / "extensions" / "0x4003-settlement-modes.md"
MARKED = re.compile(r"<!-- vector: (?P<path>[\w.\-]+) -->\n```\n(?P<body>.*?)```", re.S)


def _section(number: int) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {number}. ")
    return text[start : text.index("\n## ", start + 1)]


def _bytes(body: str) -> bytes:
    """The bytes of a block: every line's text before ``#``, whitespace removed."""
    return bytes.fromhex("".join("".join(ln.split("#", 1)[0].split()) for ln in body.splitlines()))


def _resolve(path: str) -> Any:
    node: Any = vectors()
    for token in path.split("."):
        if isinstance(node, list):
            node = node[int(token)] if token.isdigit() else next(
                x for x in node if x.get("name") == token
            )
        else:
            node = node[token]
    return node


def _examples() -> list[tuple[str, str]]:
    return [(m["path"], m["body"]) for m in MARKED.finditer(_section(9))]


def test_every_block_of_section_9_is_checked() -> None:
    blocks = re.findall(r"```\n", _section(9))
    assert len(blocks) == 2 * len(_examples()) > 0  # each block opens and closes once


@pytest.mark.parametrize(("path", "body"), _examples(), ids=[p for p, _ in _examples()])
def test_example_equals_the_vector_and_decodes(path: str, body: str) -> None:
    raw = _bytes(body)
    assert raw.hex() == _resolve(path), path
    if path.startswith("frames."):
        header = FrameHeader.decode(raw)
        assert len(raw) == HEADER_SIZE + header.msg_length  # a 6-byte header, then the payload
        assert (header.extension_type, header.msg_type) == (0x4003, 0x00)
        if path.startswith("frames.invalid."):
            with pytest.raises(SettlementModeError):
                decode_frame(raw)
        else:
            _, msg = decode_frame(raw)
            assert isinstance(msg, SetSettlementMode)
            assert msg.encode_frame() == raw
    elif path.endswith(".hex"):
        assert Tx.parse(raw).serialize() == raw


def test_examples_use_real_curve_points() -> None:
    """The musig2 example's keys are the example secrets' points (the old 02 11…11 was not)."""
    from sv2.settlement_vectors.keys import pubkey, xonly

    text = _section(9)
    for i in (1, 2):
        assert pubkey(i).hex() in text
    assert xonly(3).hex() in text
    assert "11" * 32 not in text
