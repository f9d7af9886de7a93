"""``payouts musig2``: the ``musig2`` settlement output of a distribution (an offline
calculator: no node, no key registry, no signing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from payouts.cli.ctv_cmd import (
    DISTRIBUTION_FILE,
    FUNDING,
    REVENUE,
    load_distribution,
    parse_outpoint,
)
from payouts.crypto.musig2 import key_sort
from payouts.crypto.taproot import TapLeaf
from payouts.errors import ValidationError
from payouts.settlement.modes import Musig2Mode, SettlementMode
from payouts.settlement.musig2.output import (
    DEFAULT_FALLBACK_DELAY,
    PLACEHOLDER_FUNDING,
    Musig2Output,
    Musig2ParamsError,
)
from payouts.tx.transaction import OutPoint
from sv2.domain_messages import coinbase_output_constraints, mode_to_message

app = typer.Typer(
    help=(
        "MuSig2 settlement: the committee's output, and signing as a committee member. output "
        "is an offline calculator of the coinbase output whose key path is the BIP-327 "
        "committee key; sign takes part in a signing session of the pool's API."
    ),
    no_args_is_help=True,
)

OUTPUT_HELP = (
    "Print, as JSON, the musig2 settlement output of a distribution for revenue T.\n\n"
    "Output: the committee (BIP-327 KeySort order) and its aggregate internal key, the script "
    "leaves (the timelocked fallback and, with --ctv-leaf, the CTV exit with the template hash "
    "it commits to) with their leaf hashes and control blocks, the merkle root, the output key "
    "and scriptPubKey, the coinbase outputs (this output worth T minus the additional outputs, "
    "then the additional outputs), the unsigned payout tx (hex, txid, vsize with a 64-byte "
    "key-path witness, fee) with the pool payout and each kept payee, the SetSettlementMode "
    "frame (extension 0x4003) for the file's distribution_id, and the CoinbaseOutputConstraints "
    "a JD client sends for it.\n\n"
    "The rules: docs/extensions/0x4003-settlement-modes.md §6. The CTV leaf is anyone-can-spend "
    "where BIP-119 is not enforced: announce --ctv-leaf only on a chain that enforces it."
)


@app.command("output", help=OUTPUT_HELP)
def output_cmd(
    file: Path = DISTRIBUTION_FILE,
    revenue: int = REVENUE,
    committee: list[str] = typer.Option(
        ...,
        "--committee",
        "-c",
        help=(
            "A committee member's 33-byte compressed public key in hex; repeat it for each, in "
            "BIP-327 KeySort order (ascending bytes), as SetSettlementMode carries them."
        ),
    ),
    fallback_key: str = typer.Option(
        ..., "--fallback-key", help="x-only (32-byte) public key of the fallback leaf, in hex."
    ),
    fallback_timelock: int = typer.Option(
        DEFAULT_FALLBACK_DELAY,
        "--fallback-timelock",
        help="Relative lock of the fallback leaf in blocks (BIP-68), 101..65535.",
    ),
    fee_rate: int = typer.Option(
        1, "--fee-rate", "-r", help="sat/vB the payout tx pays (1..100,000; it has no anchor)."
    ),
    ctv_leaf: bool = typer.Option(
        False,
        "--ctv-leaf/--no-ctv-leaf",
        help="Add the CTV exit leaf committing to the payout tx (only where CTV is enforced).",
    ),
    funding: str = FUNDING,
) -> None:
    dist = load_distribution(file)
    keys = tuple(_hex(k, "--committee") for k in committee)
    mode = Musig2Mode(
        keys, fallback_timelock, _hex(fallback_key, "--fallback-key"), fee_rate, ctv_leaf
    )
    if list(keys) != key_sort(list(keys)):
        raise Musig2ParamsError(
            "give --committee in BIP-327 KeySort order (the aggregation order): "
            + " ".join(k.hex() for k in key_sort(list(keys)))
        )
    # The wire message first: its §3.3 checks (curve points, order, ranges) name the field.
    frame = mode_to_message(SettlementMode("musig2", musig2=mode), dist.distribution_id)
    out = mode.build(dist, revenue)
    doc = output_to_json(out, parse_outpoint(funding) or PLACEHOLDER_FUNDING)
    doc["set_settlement_mode"] = frame.encode_frame().hex()
    c = coinbase_output_constraints(dist, SettlementMode("musig2", musig2=mode))
    doc["coinbase_output_constraints"] = c.fields_to_json()
    typer.echo(json.dumps(doc, indent=2))


def output_to_json(out: Musig2Output, funding: OutPoint) -> dict[str, Any]:
    """The JSON form printed by ``payouts musig2 output`` (amounts in satoshis)."""

    def leaf(x: TapLeaf) -> dict[str, Any]:
        return {
            "script": x.script.hex(),
            "leaf_hash": x.hash.hex(),
            "control_block": out.control_block(x).hex(),
        }

    tx = out.payout_tx_for(funding)
    pruned = set(out.split.payout.pruned)
    kept = [i for i in range(len(out.distribution.payouts)) if i not in pruned]
    return {
        "settlement": "musig2",
        "committee": [k.hex() for k in out.committee.pubkeys],
        "internal_key": out.internal_key.hex(),
        "fallback_leaf": leaf(out.fallback_leaf),
        "ctv_leaf": None
        if out.ctv_leaf is None
        else {**leaf(out.ctv_leaf), "template_hash": (out.template_hash or b"").hex()},
        "merkle_root": out.merkle_root.hex(),
        "output_key": out.output_key.hex(),
        "output_parity": out.output_parity,
        "script_pubkey": out.script_pubkey.hex(),
        "coinbase_outputs": [
            {"script": o.script.hex(), "amount": o.value} for o in out.coinbase_outputs
        ],
        "payout_tx": {
            "funding": f"{funding.txid[::-1].hex()}:{funding.n}",
            "txid": tx.txid_hex,
            "hex": tx.serialize().hex(),
            "vsize": out.split.vsize,
            "fee": out.split.fee,
        },
        "pool": {"script": tx.outputs[0].script.hex(), "amount": tx.outputs[0].value},
        "payees": [
            {"index": i, "script": o.script.hex(), "amount": o.value, "vout": vout}
            for vout, (i, o) in enumerate(zip(kept, tx.outputs[1:], strict=True), start=1)
        ],
        "pruned": list(out.split.payout.pruned),
    }


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValidationError(f"{what} is not valid hex: {text!r}", code="invalid-hex") from None


SIGN_HELP = (
    "Sign a MuSig2 session of the pool's API as a committee member (BIP-327).\n\n"
    "Reads the session (GET /v1/musig2/sessions/SESSION; a mature block's is block-<id>), finds "
    "your signer index from your key, checks that the committee's key with the session's "
    "taproot tweak is the output key it announces, posts a fresh nonce signed with your key, "
    "waits for the other nonces, posts your partial signature and waits for the result. The "
    "secret key never leaves this machine; the secret nonce is used once and kept in memory "
    "only. Progress goes to stderr; the session as it ends, as JSON, to stdout. Exit 0 when "
    "the session is complete, 3 when it failed (the JSON says why and who is blamed)."
)


@app.command("sign", help=SIGN_HELP)
def sign_cmd(
    session: str = typer.Argument(..., help="The session id (block-<id> for a mature block)."),
    pool: str = typer.Option(..., "--pool", help="The pool's API, e.g. http://pool:8080."),
    key_file: Path = typer.Option(..., "--key-file", help="File holding your 32-byte secret "
                                  "key in hex (the key whose public key is in the committee)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the others."),
    poll: float = typer.Option(1.0, "--poll", help="Seconds between two reads of the session."),
) -> None:
    import httpx

    from payouts.cli.musig2_signer import sign_session

    try:
        seckey = bytes.fromhex(key_file.read_text().strip())
    except (OSError, ValueError) as e:
        raise ValidationError(f"cannot read a hex secret key from {key_file}: {e}",
                              code="bad-file") from None
    if len(seckey) != 32:
        raise ValidationError(f"{key_file} holds {len(seckey)} bytes, not a 32-byte key",
                              code="bad-file")
    with httpx.Client(base_url=pool.rstrip("/"), timeout=30) as client:
        result = sign_session(client, session, seckey, poll=poll, timeout=timeout,
                              say=lambda line: typer.echo(line, err=True))
    typer.echo(json.dumps(result.session, indent=2))
    if result.session["state"] != "complete":
        raise typer.Exit(3)
