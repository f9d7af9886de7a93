"""Read models: what the API shows of a pool, computed in the domain from what the store recorded
and what the accountant holds. The API's routes only translate these into response schemas;
:class:`~payouts.service.PoolService` exposes each one as a method.

- the window: per-account weights of the current accounting window (``GET /v1/window``);
- a miner's shares: its shares, target difficulty and weight in the window and its hashrate
  (``GET /v1/miners/{account}/shares``, :meth:`~payouts.accounting.accountant.Accountant.
  miner_stats`);
- a miner's payout history: its ledger lines and every block whose distribution paid it, with
  what it was paid and where that landed (``GET /v1/miners/{account}/payouts``);
- a CTV payee's exit path (``GET /v1/miners/{account}/payouts/{block_id}/exit-path``);
- each tracked block's settlement with its transactions (``GET /v1/settlements``).

What a block paid a miner is not re-settled here. The store's ledger holds only what a block
credited or repaid (owed balances), not what it paid, so a payout is read from the transaction
that carries it once the settlement rows know it
(:func:`~payouts.settlement.payout_view.landings`), and until then it is the coinbase-mode amount,
which depends only on the distribution and the block's revenue
(:func:`~payouts.settlement.payout_view.coinbase_amounts`, sv2-spec PR #203 §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from payouts.accounting.accountant import Accountant, MinerWindowStats
from payouts.errors import PayoutsError, UnknownMinerError, ValidationError
from payouts.settlement.lifecycle_store import SettlementRow, TxRow, load_settlements, load_txs
from payouts.settlement.payout_view import ExitPath, Landing, coinbase_amounts, exit_path, landings
from payouts.settlement.runner import SettledPool
from payouts.states import Scheme
from payouts.store import repositories as repo
from payouts.store.ledger import BlockRecord, export_ledger, get_block, list_blocks
from payouts.window_keeper import WindowKeeper


class ViewedPool(SettledPool, Protocol):
    """What the read models read of a pool (a :class:`~payouts.service.PoolService` is one):
    what the settlement runner reads (store, settings, stored distributions), the window keeper
    and its accountant."""

    @property
    def window(self) -> WindowKeeper: ...

    @property
    def accountant(self) -> Accountant: ...


# -- miners and the window ---------------------------------------------------------------------


def miner(pool: ViewedPool, account: str) -> repo.MinerRecord:
    """The registered miner ``account`` (``unknown-miner`` otherwise)."""
    found = repo.get_miner_by_account(pool.engine, account)
    if found is None:
        raise UnknownMinerError(f"no miner account {account!r}")
    return found


@dataclass(frozen=True, slots=True)
class WindowView:
    """The current window: ``miners`` are (account, weight) in miner-id order, weights > 0;
    ``node_difficulty`` and ``node_bits`` what the node reported last (None before it did),
    ``window_difficulty`` what the window uses (the node's, or ``[accounting] pin_difficulty``,
    then ``difficulty_pinned``)."""

    scheme: Scheme
    share_count: int
    total_weight: int
    node_difficulty: Fraction | None
    node_bits: int | None
    window_difficulty: Fraction
    difficulty_pinned: bool
    miners: tuple[tuple[str, int], ...]


def window(pool: ViewedPool) -> WindowView:
    acc = pool.accountant
    w = acc.weights()
    ids = w.miner_ids.tolist()
    records = repo.get_miners(pool.engine, ids)
    return WindowView(
        pool.settings.accounting.scheme, acc.share_count, acc.total_weight,
        pool.window.node_difficulty, pool.window.node_bits, acc.network_difficulty,
        pool.settings.accounting.pin_difficulty is not None,
        tuple((records[i].account, x) for i, x in zip(ids, w.weights, strict=True)),
    )


@dataclass(frozen=True, slots=True)
class MinerShares:
    """A miner's part of the current window under ``scheme``."""

    miner: repo.MinerRecord
    scheme: Scheme
    stats: MinerWindowStats


def miner_shares(pool: ViewedPool, account: str) -> MinerShares:
    m = miner(pool, account)
    return MinerShares(m, pool.settings.accounting.scheme, pool.accountant.miner_stats(m.id))


# -- ledger and payouts ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MinerLedger:
    """A miner's owed-balance ledger lines in id order (as :func:`export_ledger` writes them)
    and their sum."""

    miner: repo.MinerRecord
    entries: list[dict[str, Any]]

    @property
    def owed(self) -> int:
        return sum(int(e["amount"]) for e in self.entries)


def miner_ledger(pool: ViewedPool, account: str) -> MinerLedger:
    m = miner(pool, account)
    return MinerLedger(m, export_ledger(pool.engine, m.id))


@dataclass(frozen=True, slots=True)
class BlockPayout:
    """What ``block`` paid the miner (``paid_sats``) and, once known, where (``landing``)."""

    block: BlockRecord
    paid_sats: int
    landing: Landing | None


@dataclass(frozen=True, slots=True)
class PayoutHistory:
    """A miner's ledger lines and the blocks whose distribution paid it, in block id order."""

    ledger: MinerLedger
    blocks: list[BlockPayout]


def payout_history(pool: ViewedPool, account: str) -> PayoutHistory:
    """Every recorded block whose distribution has ``account`` among its payees: the amount
    where it landed (the coinbase output in coinbase mode, the fan-out leaf in ctv, the spend
    once broadcast in musig2), else the coinbase-mode amount (see the module docstring)."""
    ledger = miner_ledger(pool, account)
    name = ledger.miner.account
    settlements = load_settlements(pool.engine)
    blocks = []
    for b in list_blocks(pool.engine):
        if b.distribution_id is None:
            continue
        fitted = pool.distribution(b.distribution_id)
        if name not in fitted.accounts:
            continue
        s = settlements.get(b.id)
        landed = landings(b, fitted, s, load_txs(pool.engine, b.id) if s else []).get(name)
        paid = landed.amount if landed is not None else coinbase_amounts(fitted, b.revenue)[name]
        blocks.append(BlockPayout(b, paid, landed))
    return PayoutHistory(ledger, blocks)


# -- blocks and settlements --------------------------------------------------------------------


def block(pool: ViewedPool, block_id: int) -> BlockRecord:
    """The recorded block ``block_id`` (``unknown-block`` otherwise)."""
    found = get_block(pool.engine, block_id)
    if found is None:
        raise ValidationError(f"block {block_id} does not exist", code="unknown-block")
    return found


@dataclass(frozen=True, slots=True)
class SettlementView:
    """A tracked block, its settlement row and its transactions (empty in list reads)."""

    block: BlockRecord
    settlement: SettlementRow
    txs: tuple[TxRow, ...]


def settlements(pool: ViewedPool) -> list[SettlementView]:
    """Every tracked block's settlement, block id order, without transactions."""
    rows = load_settlements(pool.engine)
    return [SettlementView(b, rows[b.id], ()) for b in list_blocks(pool.engine) if b.id in rows]


def settlement(pool: ViewedPool, block_id: int) -> SettlementView:
    """One block's settlement with every transaction: ``unknown-block``, then
    ``untracked-block`` (recorded without a settlement runner, or its coinbase lacked the
    mode's outputs)."""
    b = block(pool, block_id)
    s = load_settlements(pool.engine).get(block_id)
    if s is None:
        raise PayoutsError(f"block {block_id} has no settlement", code="untracked-block")
    return SettlementView(b, s, tuple(load_txs(pool.engine, block_id)))


@dataclass(frozen=True, slots=True)
class MinerExitPath:
    miner: repo.MinerRecord
    block: BlockRecord
    path: ExitPath


def miner_exit_path(pool: ViewedPool, account: str, block_id: int) -> MinerExitPath:
    """A CTV payee's exit path in one block. Refusals, in this order: ``unknown-miner``,
    ``unknown-block``, ``not-ctv-settlement`` (settled otherwise, or not tracked),
    ``exit-path-not-ready`` (the fan-out is not bound to its coinbase yet),
    ``no-payout-in-block`` (no distribution, or none of its fan-out pays the miner)."""
    m = miner(pool, account)
    b = block(pool, block_id)
    s = load_settlements(pool.engine).get(block_id)
    if s is None or s.mode != "ctv":
        raise PayoutsError(
            f"block {block_id} does not settle through a CTV fan-out "
            f"({s.mode + ' mode' if s else 'not tracked'})", code="not-ctv-settlement")
    if s.funding_txid is None or s.funding_vout is None:
        raise PayoutsError(f"block {block_id}'s fan-out is not bound to its coinbase yet",
                           code="exit-path-not-ready")
    if b.distribution_id is None:
        raise PayoutsError(f"block {block_id} has no distribution", code="no-payout-in-block")
    path = exit_path(pool.distribution(b.distribution_id), m.account, s,
                     load_txs(pool.engine, block_id))
    if path is None:
        raise PayoutsError(f"block {block_id} pays {account!r} nothing through its fan-out",
                           code="no-payout-in-block")
    return MinerExitPath(m, b, path)


__all__ = [
    "BlockPayout",
    "MinerExitPath",
    "MinerLedger",
    "MinerShares",
    "PayoutHistory",
    "SettlementView",
    "ViewedPool",
    "WindowView",
    "block",
    "miner",
    "miner_exit_path",
    "miner_ledger",
    "miner_shares",
    "payout_history",
    "settlement",
    "settlements",
    "window",
]

