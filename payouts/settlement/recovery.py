"""Found blocks a crash left behind: in the node's active chain, paying one of our recent
distributions, never recorded (issue #13).

The JD server submits a block, the node accepts it, and the process dies before
:meth:`~payouts.service.PoolService.record_block` commits: nothing in the store knows the block,
so no runner would ever settle it and the next distribution would pay the same window again.
At start-up ``payouts serve`` asks the node for the blocks above the newest one it recorded and
looks in each coinbase for the outputs the pool's settlement mode builds from one of the recent
distributions (:func:`~payouts.settlement.modes.default_expected_outputs`, the same bytes the JD
server checked in the declared coinbase, at ``T`` = the coinbase's value, as the JD server
computes it: sv2.jds.validation step 7). A block that matches is reported through the one
found-block entry point, like a PushSolution.

Bounded: at most :data:`RECOVERY_DEPTH` blocks back from the tip, and only the
:data:`~payouts.service.RECENT_DISTRIBUTIONS` newest distributions (a JD server serves only
the newest one and its short grace window).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from payouts.distribution.fitting import FittedDistribution
from payouts.errors import ValidationError
from payouts.node.interface import Node
from payouts.settlement.modes import SettlementMode, default_expected_outputs
from payouts.tx.block import Block
from payouts.tx.transaction import Tx
from payouts.tx.txout import TxOut

log = logging.getLogger("payouts.settlement")

#: How far back from the tip the start-up scan looks (a restart within ~16 hours of mainnet
#: blocks; everything since the newest recorded block when that is nearer).
RECOVERY_DEPTH = 100


@dataclass(frozen=True, slots=True)
class UnrecordedBlock:
    """A block of the active chain that pays ``distribution_id`` at ``revenue``."""

    block_hash: bytes
    height: int
    distribution_id: int
    revenue: int
    coinbase: Tx


def starts_with(coinbase: Tx, outputs: Sequence[TxOut]) -> bool:
    """Whether ``outputs`` appear, in order and contiguous, among the coinbase's outputs."""
    outs, want, n = list(coinbase.outputs), list(outputs), len(outputs)
    return n > 0 and any(outs[i:i + n] == want for i in range(len(outs) - n + 1))


Expected = dict[tuple[int, int], Sequence[TxOut]]


def paid_distribution(mode: SettlementMode, coinbase: Tx,
                      recent: Sequence[FittedDistribution],
                      cache: Expected | None = None) -> tuple[int, int] | None:
    """``(distribution_id, revenue)`` of the first of ``recent`` whose outputs in ``mode`` the
    coinbase carries at its own value, else None. ``cache``: the outputs already computed,
    by (distribution id, revenue) (blocks of one revenue are common: regtest, empty mempool)."""
    revenue = sum(o.value for o in coinbase.outputs)
    scripts = {o.script for o in coinbase.outputs}
    cache = {} if cache is None else cache
    for fitted in recent:
        dist = fitted.distribution
        if mode.name == "coinbase" and dist.pool_payout.script not in scripts:
            continue  # the pool payout is never pruned (PR #203 §5): cheap to rule out
        key = (dist.distribution_id, revenue)
        if key not in cache:
            try:
                cache[key] = tuple(default_expected_outputs(mode, dist, revenue))
            except ValidationError:  # a distribution this revenue cannot pay: no match
                cache[key] = ()
        if starts_with(coinbase, cache[key]):
            return dist.distribution_id, revenue
    return None


async def unrecorded_blocks(node: Node, mode: SettlementMode,
                            recent: Sequence[FittedDistribution], *, above_height: int,
                            recorded: set[bytes]) -> list[UnrecordedBlock]:
    """Blocks of the node's active chain above ``above_height`` (and at most
    :data:`RECOVERY_DEPTH` below the tip), not in ``recorded``, that pay one of ``recent``
    in ``mode``; in height order."""
    if not recent:
        return []
    tip = (await node.tip()).height
    found = []
    cache: Expected = {}
    for height in range(max(above_height + 1, tip - RECOVERY_DEPTH + 1, 1), tip + 1):
        block_hash = await node.block_hash(height)
        if block_hash is None or block_hash in recorded:
            continue
        raw = await node.get_block(block_hash)
        if raw is None:
            continue
        coinbase = Block.parse(raw).txs[0]
        match = paid_distribution(mode, coinbase, recent, cache)
        if match is not None:
            found.append(UnrecordedBlock(block_hash, height, *match, coinbase))
    return found


__all__ = ["RECOVERY_DEPTH", "UnrecordedBlock", "paid_distribution", "starts_with",
           "unrecorded_blocks"]
