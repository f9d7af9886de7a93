"""An operator action's report (:class:`~payouts.settlement.runner.ActionReport`) as JSON and
back: how the cluster's leader answers a settlement action a frontend forwarded
(docs/deployment.md), so that the frontend renders exactly the report the runner made. Every
field travels (txids, raw txs and block hashes as hex), none is re-read on the frontend."""

from __future__ import annotations

from typing import Any

from payouts.settlement.lifecycle import LifecycleEvent, SendResult
from payouts.settlement.lifecycle_store import TxRow
from payouts.settlement.runner import ActionReport
from payouts.states import TxRole, TxStatus


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def _bytes(h: str | None) -> bytes | None:
    return None if h is None else bytes.fromhex(h)


def report_json(r: ActionReport) -> dict[str, Any]:
    """``r`` as plain JSON values."""
    return {
        "block_id": r.block_id, "status": r.status, "phase": r.phase,
        "events": [[e.block_id, e.kind, e.detail] for e in r.events],
        "sent": [[s.block_id, [t.hex() for t in s.txids], s.result, s.reason] for s in r.sent],
        "txs": [{"id": t.id, "block_id": t.block_id, "role": str(t.role), "seq": t.seq,
                 "parent_seq": t.parent_seq, "level": t.level, "txid": t.txid.hex(),
                 "raw": t.raw.hex(), "status": str(t.status),
                 "confirmed_height": t.confirmed_height,
                 "confirmed_block": _hex(t.confirmed_block)} for t in r.txs],
    }


def report_from_json(d: dict[str, Any]) -> ActionReport:
    """The report :func:`report_json` wrote."""
    return ActionReport(
        int(d["block_id"]), str(d["status"]), str(d["phase"]),
        tuple(LifecycleEvent(int(b), str(k), str(detail)) for b, k, detail in d["events"]),
        tuple(SendResult(int(b), tuple(bytes.fromhex(t) for t in txids), str(res), str(why))
              for b, txids, res, why in d["sent"]),
        tuple(TxRow(int(t["id"]), int(t["block_id"]), TxRole(t["role"]), int(t["seq"]),
                    t["parent_seq"], int(t["level"]), bytes.fromhex(t["txid"]),
                    bytes.fromhex(t["raw"]), TxStatus(t["status"]), t["confirmed_height"],
                    _bytes(t["confirmed_block"])) for t in d["txs"]),
    )


__all__ = ["report_from_json", "report_json"]
