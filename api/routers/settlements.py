"""Settlements: each recorded block's payout with its raw transactions, and the operator's
broadcast actions (scope ``settlements:write``).

The actions run the settlement runner's lifecycle step (:mod:`payouts.settlement.runner`), the
same code the background poller runs, under the same lock: ``broadcast`` re-sends what is
pending and sends what became broadcastable, reporting the node's answer per tx (or CPFP
package); ``fallback`` (musig2) aborts the signing session so the lifecycle signs and sends the
timelocked script-path spend. Refusals are 409 problems (``not-mature`` with
``mature_at_tip``, ``not-in-active-chain``, ``fallback-locked`` with ``valid_from_height``,
``signing-complete``, ``nothing-to-broadcast``...), decided from the node before any step, so
a refused action changes nothing (it does not even confirm or orphan the block: the poller
does); 503 ``settlement-not-running`` when the server runs no lifecycle.

On a cluster member (docs/deployment.md) the actions are forwarded to the leader, whose runner
acts and answers the same report or the same problem; 503 ``no-leader`` when none answers
within ``[cluster] request_timeout_sec``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path

from api.auth import AuthFirstRoute, scope_read, scope_settlements_write
from api.deps import OptionalActionsDep, ServiceDep, SessionsDep, require_actions
from api.problems import problem_responses
from api.schemas import (
    ActionOut,
    BroadcastResultOut,
    LifecycleEventOut,
    SettlementOut,
    SettlementTxOut,
)
from payouts.service import PoolService
from payouts.settlement.lifecycle_store import TxRow
from payouts.settlement.musig2.registry import SessionRegistry
from payouts.settlement.runner import ActionReport
from payouts.tx.hashes import display_hex
from payouts.views import SettlementView

router = APIRouter(prefix="/v1/settlements", tags=["settlements"], route_class=AuthFirstRoute)
_AUTH = problem_responses(401, 403)
BlockId = Path(ge=1, le=2**62, description="the block's id (GET /v1/blocks)")


def _tx_out(r: TxRow) -> SettlementTxOut:
    return SettlementTxOut(txid=display_hex(r.txid), role=r.role, seq=r.seq,
                           parent_seq=r.parent_seq, level=r.level, status=r.status,
                           confirmed_height=r.confirmed_height, raw=r.raw.hex())


def settlement_out(sessions: SessionRegistry, view: SettlementView) -> SettlementOut:
    block, s = view.block, view.settlement
    return SettlementOut(
        block_id=block.id, height=block.height, block_hash=display_hex(block.block_hash),
        status=block.status, mode=s.mode, phase=s.phase,
        funding_txid=None if s.funding_txid is None else display_hex(s.funding_txid),
        funding_vout=s.funding_vout, funding_value=s.funding_value, paid_height=s.paid_height,
        signing_session=sessions.block_session(block.id) if s.mode == "musig2" else None,
        txs=[_tx_out(r) for r in view.txs],
    )


@router.get("", response_model=list[SettlementOut], responses=_AUTH)
def list_settlements(service: ServiceDep, sessions: SessionsDep,
                     _: Any = Depends(scope_read)) -> list[SettlementOut]:
    """Every tracked block's settlement (without raw transactions; see the single read)."""
    return [settlement_out(sessions, v) for v in service.settlements()]


@router.get("/{block_id}", response_model=SettlementOut,
            responses={**_AUTH, **problem_responses(404)})
def get_settlement(service: ServiceDep, sessions: SessionsDep, block_id: int = BlockId,
                   _: Any = Depends(scope_read)) -> SettlementOut:
    """One block's settlement with every transaction (raw hex) and its status."""
    return settlement_out(sessions, service.settlement(block_id))


def _action_out(service: PoolService, sessions: SessionRegistry,
                report: ActionReport) -> ActionOut:
    view = service.settlement(report.block_id)
    return ActionOut(
        settlement=settlement_out(sessions, SettlementView(view.block, view.settlement,
                                                           report.txs)),
        events=[LifecycleEventOut(kind=e.kind, detail=e.detail) for e in report.events],
        results=[BroadcastResultOut(txids=[display_hex(t) for t in r.txids], result=r.result,
                                    reason=r.reason) for r in report.sent],
    )


@router.post("/{block_id}/broadcast", response_model=ActionOut,
             responses={**_AUTH, **problem_responses(404, 409, 503)})
async def broadcast(service: ServiceDep, actions: OptionalActionsDep, sessions: SessionsDep,
                    block_id: int = BlockId,
                    _: Any = Depends(scope_settlements_write)) -> ActionOut:
    """Send the settlement's pending transactions now (ctv: the fan-out level by level, each
    with its CPFP child when the server has a fee wallet; musig2: the signed spend) and return
    the node's answer to each: accepted, already-known, or rejected with the reason."""
    service.block(block_id)  # 404 before 503: an unknown block is unknown either way
    report = await require_actions(actions).broadcast(block_id)
    return _action_out(service, sessions, report)


@router.post("/{block_id}/fallback", response_model=ActionOut,
             responses={**_AUTH, **problem_responses(404, 409, 503)})
async def fallback(service: ServiceDep, actions: OptionalActionsDep, sessions: SessionsDep,
                   block_id: int = BlockId,
                   _: Any = Depends(scope_settlements_write)) -> ActionOut:
    """MuSig2: give up the cooperative spend (abort the signing session) and broadcast the
    signed script-path fallback. 409 ``fallback-locked`` until its BIP-68 relative timelock
    lets it into the next block; 409 ``signing-complete`` once the committee has signed."""
    service.block(block_id)  # 404 before 503, as for broadcast
    report = await require_actions(actions).fallback(block_id)
    return _action_out(service, sessions, report)
