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
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request

from api.auth import scope_read, scope_settlements_write
from api.deps import OptionalRunnerDep, ServiceDep, get_runner, get_service
from api.problems import Problem, problem_responses
from api.schemas import (
    ActionOut,
    BroadcastResultOut,
    LifecycleEventOut,
    SettlementOut,
    SettlementTxOut,
)
from payouts.errors import ValidationError
from payouts.service import PoolService
from payouts.settlement.lifecycle_store import SettlementRow, TxRow, load_settlements, load_txs
from payouts.settlement.runner import (
    ActionReport,
    SettlementActionError,
    SettlementRunner,
    session_id,
)
from payouts.store.ledger import BlockRecord, get_block, list_blocks

router = APIRouter(prefix="/v1/settlements", tags=["settlements"])
_AUTH = problem_responses(401, 403)
BlockId = Path(ge=1, le=2**62, description="the block's id (GET /v1/blocks)")


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b[::-1].hex()


def _tx_out(r: TxRow) -> SettlementTxOut:
    return SettlementTxOut(txid=r.txid[::-1].hex(), role=r.role, seq=r.seq,
                           parent_seq=r.parent_seq, level=r.level, status=r.status,
                           confirmed_height=r.confirmed_height, raw=r.raw.hex())


def settlement_out(runner: SettlementRunner | None, block: BlockRecord, s: SettlementRow,
                   txs: list[TxRow]) -> SettlementOut:
    open_session = None
    if runner is not None and runner.lifecycle.session(block.id) is not None:
        open_session = session_id(block.id)
    return SettlementOut(
        block_id=block.id, height=block.height, block_hash=block.block_hash[::-1].hex(),
        status=block.status, mode=s.mode, phase=s.phase, funding_txid=_hex(s.funding_txid),
        funding_vout=s.funding_vout, funding_value=s.funding_value, paid_height=s.paid_height,
        signing_session=open_session, txs=[_tx_out(r) for r in txs],
    )


def _block(service: PoolService, block_id: int) -> BlockRecord:
    block = get_block(service.engine, block_id)
    if block is None:
        raise ValidationError(f"block {block_id} does not exist", code="unknown-block")
    return block


@router.get("", response_model=list[SettlementOut], responses=_AUTH)
def list_settlements(service: ServiceDep, runner: OptionalRunnerDep,
                     _: Any = Depends(scope_read)) -> list[SettlementOut]:
    """Every tracked block's settlement (without raw transactions; see the single read)."""
    rows = load_settlements(service.engine)
    return [settlement_out(runner, b, rows[b.id], [])
            for b in list_blocks(service.engine) if b.id in rows]


@router.get("/{block_id}", response_model=SettlementOut,
            responses={**_AUTH, **problem_responses(404)})
def get_settlement(service: ServiceDep, runner: OptionalRunnerDep, block_id: int = BlockId,
                   _: Any = Depends(scope_read)) -> SettlementOut:
    """One block's settlement with every transaction (raw hex) and its status."""
    block = _block(service, block_id)
    s = load_settlements(service.engine).get(block_id)
    if s is None:
        raise Problem(404, "untracked-block", f"block {block_id} has no settlement")
    return settlement_out(runner, block, s, load_txs(service.engine, block_id))


def _action_out(service: PoolService, runner: SettlementRunner,
                report: ActionReport) -> ActionOut:
    block = _block(service, report.block_id)
    s = load_settlements(service.engine)[report.block_id]
    return ActionOut(
        settlement=settlement_out(runner, block, s, list(report.txs)),
        events=[LifecycleEventOut(kind=e.kind, detail=e.detail) for e in report.events],
        results=[BroadcastResultOut(txids=[t[::-1].hex() for t in r.txids],
                                    result=r.result,
                                    reason=r.reason) for r in report.sent],
    )


async def _act(request: Request, block_id: int, action: str) -> ActionOut:
    service = get_service(request)
    _block(service, block_id)  # 404 before 503: an unknown block is unknown either way
    runner = get_runner(request)
    try:
        if action == "broadcast":
            report = await runner.broadcast(block_id)
        else:
            report = await runner.fallback(block_id)
    except SettlementActionError as e:
        raise Problem(e.status, e.code, e.message, headers=None, **e.extra) from None
    return _action_out(service, runner, report)


@router.post("/{block_id}/broadcast", response_model=ActionOut,
             responses={**_AUTH, **problem_responses(404, 409, 503)})
async def broadcast(request: Request, block_id: int = BlockId,
                    _: Any = Depends(scope_settlements_write)) -> ActionOut:
    """Send the settlement's pending transactions now (ctv: the fan-out level by level, each
    with its CPFP child when the server has a fee wallet; musig2: the signed spend) and return
    the node's answer to each: accepted, already-known, or rejected with the reason."""
    return await _act(request, block_id, "broadcast")


@router.post("/{block_id}/fallback", response_model=ActionOut,
             responses={**_AUTH, **problem_responses(404, 409, 503)})
async def fallback(request: Request, block_id: int = BlockId,
                   _: Any = Depends(scope_settlements_write)) -> ActionOut:
    """MuSig2: give up the cooperative spend (abort the signing session) and broadcast the
    signed script-path fallback. 409 ``fallback-locked`` until its BIP-68 relative timelock
    lets it into the next block; 409 ``signing-complete`` once the committee has signed."""
    return await _act(request, block_id, "fallback")
