"""Compute the expected results of the 0x4003 conformance vectors (the JSON document)."""

from __future__ import annotations

from typing import Any

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.jsonio import distribution_to_json
from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.settlement.ctv import build_ctv_fanout
from payouts.settlement.modes import SettlementMode
from payouts.tx.txout import TxOut
from sv2.domain_messages import coinbase_output_constraints, mode_from_message, mode_to_message
from sv2.messages import decode_frame
from sv2.settlement_vectors.cases import (
    FrameCase,
    ModeCase,
    coinbase_cases,
    ctv_cases,
    frame_cases,
    musig2_cases,
)
from sv2.settlement_vectors.distributions import build_distributions

HEADER = {
    "title": "Stratum V2 extension 0x4003 (settlement modes): conformance vectors",
    "spec": "docs/extensions/0x4003-settlement-modes.md",
    "builds_on": (
        "sv2-spec PR #203 revision c1babf7 (2026-09), "
        "extensions/0x0003-coinbase-transaction-payouts.md"
    ),
    "generator": "python -m sv2.settlement_vectors (tests/extensions regenerates and compares)",
    "keys": (
        "Every key is derived from a small secret (the integer i as 32 big-endian bytes): real "
        "curve points, EXAMPLES ONLY, spendable by anyone. Payee P2TR scripts use the untweaked "
        "x-only key of their secret."
    ),
    "conventions": (
        "Hex is wire/consensus byte order; txids and funding outpoints are display order "
        "(reversed). Every fan-out and payout tx spends the placeholder outpoint 00..00:0: CTV "
        "does not commit to outpoints, so only txids change once the coinbase is known. Payout "
        "txs are shown without witness. 'set_settlement_mode' is the frame the JDS sends for "
        "the case's distribution; 'error' replaces 'result' where the spec refuses the case."
    ),
}


def _outputs(outs: tuple[TxOut, ...] | list[TxOut]) -> list[dict[str, Any]]:
    return [{"script": o.script.hex(), "amount": o.value} for o in outs]


def _frame(case: FrameCase) -> dict[str, Any]:
    raw = case.frame()
    entry: dict[str, Any] = {"name": case.name, "description": case.description}
    if case.error is None:
        _, msg = decode_frame(raw)  # a valid case decodes and maps to a mode
        mode = mode_from_message(msg)  # type: ignore[arg-type]
        entry.update(
            {"fields": msg.fields_to_json(), "mode": mode.name, "frame": raw.hex()}
        )
        return entry
    try:
        decode_frame(raw)
    except ValidationError as exc:
        if exc.code != case.error:  # pragma: no cover - the generator checks itself
            raise AssertionError(f"{case.name}: {exc.code}, expected {case.error}") from None
    else:  # pragma: no cover
        raise AssertionError(f"{case.name}: decoded, expected {case.error}")
    entry.update({"frame": raw.hex(), "error": case.error})
    return entry


def coinbase_result(d: Distribution, revenue: int, mode: SettlementMode) -> dict[str, Any]:
    """The ``result`` of a coinbase-mode case: PR #203 §4 (raises ValidationError)."""
    r = compute_outputs(d, revenue)
    return {"coinbase_outputs": _outputs(r.outputs), "pruned": list(r.pruned)}


def ctv_result(d: Distribution, revenue: int, mode: SettlementMode) -> dict[str, Any]:
    """The ``result`` of a ctv case (raises ValidationError with the spec §5.9 code)."""
    f = build_ctv_fanout(d, revenue, mode.ctv)
    return {
        "coinbase_outputs": _outputs(f.coinbase_outputs),
        "arity": f.arity,
        "tx_version": f.version,
        "anchor_value": f.anchor_value,
        "reserved_cost": f.reserved,
        "tree_cost": f.tree_cost,
        "pool_amount": f.pool.output.value,
        "pruned": list(f.payout.pruned),
        "txs": [
            {
                "txid": t.tx.txid_hex,
                "level": t.level,
                "parent": t.parent,
                "parent_vout": t.parent_vout,
                "value": t.value,
                "fee": t.fee,
                "vsize": t.tx.vsize,
                "template_hash": t.template_hash.hex(),
                "hex": t.tx.serialize().hex(),
            }
            for t in f.txs
        ],
    }


def musig2_result(d: Distribution, revenue: int, mode: SettlementMode) -> dict[str, Any]:
    """The ``result`` of a musig2 case (raises ValidationError with the spec §6.6 code)."""
    assert mode.musig2 is not None
    out = mode.musig2.build(d, revenue)
    tx = out.payout_tx
    return {
        "internal_key": out.internal_key.hex(),
        "fallback_leaf": out.fallback_leaf.script.hex(),
        "ctv_leaf": None if out.ctv_leaf is None else out.ctv_leaf.script.hex(),
        "merkle_root": out.merkle_root.hex(),
        "output_key": out.output_key.hex(),
        "output_parity": out.output_parity,
        "coinbase_outputs": _outputs(out.coinbase_outputs),
        "reserved_fee": out.split.reserved,
        "pool_amount": out.split.outputs[0].value,
        "pruned": list(out.split.payout.pruned),
        "payout_tx": {
            "txid": tx.txid_hex,
            "vsize": out.split.vsize,
            "fee": out.split.fee,
            "hex": tx.serialize().hex(),
        },
    }


def _mode_case(dists: dict[str, Distribution], c: ModeCase) -> dict[str, Any]:
    d = dists[c.distribution]
    msg = mode_to_message(c.mode, d.distribution_id)
    limits = coinbase_output_constraints(d, c.mode)
    entry: dict[str, Any] = {
        "name": c.name,
        "description": c.description,
        "distribution": c.distribution,
        "revenue": c.revenue,
        "set_settlement_mode": msg.encode_frame().hex(),
        "coinbase_output_constraints": limits.fields_to_json(),
    }
    build = {"coinbase": coinbase_result, "ctv": ctv_result, "musig2": musig2_result}
    try:
        entry["result"] = build[c.mode.name](d, c.revenue, c.mode)
    except ValidationError as exc:
        entry["error"] = exc.code
    return entry


def generate() -> dict[str, Any]:
    """The whole vectors document (deterministic: same bytes on every run)."""
    dists = build_distributions()
    frames = [_frame(f) for f in frame_cases()]
    return {
        **HEADER,
        "frames": {
            "valid": [f for f in frames if "error" not in f],
            "invalid": [f for f in frames if "error" in f],
        },
        "distributions": {k: distribution_to_json(v) for k, v in dists.items()},
        "coinbase": [_mode_case(dists, c) for c in coinbase_cases()],
        "ctv": [_mode_case(dists, c) for c in ctv_cases()],
        "musig2": [_mode_case(dists, c) for c in musig2_cases()],
    }


__all__ = ["HEADER", "coinbase_result", "ctv_result", "generate", "musig2_result"]
