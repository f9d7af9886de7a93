"""Pure rules of the settlement lifecycle: depth, maturity, timelocks, tree order, re-binding.

No I/O here; the driver (:mod:`payouts.settlement.lifecycle`) asks the node and the store and
applies these. Heights are block heights of the active chain; ``tip`` is the tip's height.

Coinbase maturity, exactly as Core (consensus/tx_verify.cpp ``CheckTxInputs``):
``if (coin.IsCoinBase() && nSpendHeight - coin.nHeight < COINBASE_MATURITY)`` reject
``bad-txns-premature-spend-of-coinbase``. A spend of the coinbase of block ``h`` is valid in
a block at height ``h + 100`` or later, and the mempool checks a tx as if it were in the next
block (validation.cpp: ``nSpendHeight = tip + 1``). So the fan-out / payout tx is accepted by
the mempool iff ``tip + 1 - h >= 100`` iff ``tip >= h + 99`` iff the coinbase has 100
confirmations (``tip - h + 1``). One block earlier (``tip == h + 98``, 99 confirmations) the
node rejects it; the tests pin both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

from payouts.states import BLOCK_STATUS_ORDER, BlockStatus
from payouts.tx.transaction import OutPoint, Tx, TxIn

COINBASE_MATURITY = 100  # Core consensus/consensus.h
SEQUENCE_LOCKTIME_DISABLE_FLAG = 1 << 31
SEQUENCE_LOCKTIME_TYPE_FLAG = 1 << 22
SEQUENCE_LOCKTIME_MASK = 0x0000FFFF


def confirmations(height: int, tip: int) -> int:
    """Confirmations of a block at ``height`` in the active chain with tip ``tip``."""
    return max(0, tip - height + 1)


def coinbase_spendable(height: int, tip: int) -> bool:
    """Whether a tx spending the coinbase of block ``height`` is valid in block ``tip + 1``
    (and so accepted by the mempool now): 100 confirmations. See the module docstring."""
    return (tip + 1) - height >= COINBASE_MATURITY


def first_mature_tip(height: int) -> int:
    """The lowest tip height at which :func:`coinbase_spendable` holds: ``height + 99``."""
    return height + COINBASE_MATURITY - 1


def target_status(current: str, height: int, tip: int, confirmed_depth: int) -> BlockStatus:
    """The status a block in the active chain should have now (never backwards): ``confirmed``
    at ``confirmed_depth`` confirmations, ``mature`` once its coinbase is spendable. ``paid``
    is decided by the settlement mode, not by depth."""
    if current not in BLOCK_STATUS_ORDER:
        raise ValueError(f"no forward status from {current!r}")
    now = BlockStatus(current)
    want = BlockStatus.FOUND
    if confirmations(height, tip) >= confirmed_depth:
        want = BlockStatus.CONFIRMED
    if coinbase_spendable(height, tip):
        want = BlockStatus.MATURE
    return want if BLOCK_STATUS_ORDER[want] > BLOCK_STATUS_ORDER[now] else now


def relative_lock_height(tx: Tx, coin_heights: Sequence[int]) -> int:
    """The lowest block height that may contain ``tx`` under BIP-68 height locks (time locks
    are not used by the engine's spends and are refused). ``coin_heights`` are the heights
    of the blocks that created its inputs."""
    lowest = 0
    if (tx.version & 0xFFFFFFFF) < 2:
        return lowest
    for txin, coin_height in zip(tx.inputs, coin_heights, strict=True):
        seq = txin.sequence
        if seq & SEQUENCE_LOCKTIME_DISABLE_FLAG:
            continue
        if seq & SEQUENCE_LOCKTIME_TYPE_FLAG:
            raise ValueError("time-based relative locks are not used by settlement spends")
        lowest = max(lowest, coin_height + (seq & SEQUENCE_LOCKTIME_MASK))
    return lowest


def broadcastable(
    parents: Sequence[int | None], done: Sequence[bool], confirmed: Sequence[bool]
) -> list[int]:
    """Tree txs that may be broadcast now: not yet sent (``done`` False) and whose parent is
    confirmed (the root's parent is the mature coinbase: the caller only asks then).
    Broadcasting a child before its parent confirms is avoided on purpose: a TRUC parent may
    have only one unconfirmed child, and a 0-fee parent's child slot is its CPFP."""
    return [
        i
        for i, (p, d) in enumerate(zip(parents, done, strict=True))
        if not d and (p is None or confirmed[p])
    ]


def rebind(txs: Sequence[Tx], parents: Sequence[int | None], funding: OutPoint) -> list[Tx]:
    """The fan-out txs with the root spending ``funding`` and every child spending its
    parent's new txid (same output index). BIP-119 does not commit to outpoints, so the
    witnesses and template hashes stay valid; only txids change."""
    out: list[Tx] = []
    for tx, parent in zip(txs, parents, strict=True):
        old = tx.inputs[0]
        prevout = funding if parent is None else OutPoint(out[parent].txid, old.prevout.n)
        txin = TxIn(prevout, old.script_sig, old.sequence, old.witness)
        out.append(Tx(tx.version, (txin, *tx.inputs[1:]), tx.outputs, tx.locktime))
    return out


__all__ = [
    "COINBASE_MATURITY",
    "broadcastable",
    "coinbase_spendable",
    "confirmations",
    "first_mature_tip",
    "rebind",
    "relative_lock_height",
    "target_status",
]
