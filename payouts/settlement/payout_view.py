"""Where each miner's payout of a block lands, and a CTV payee's unilateral exit path.

Read-only views over the store's settlement rows (:mod:`payouts.settlement.lifecycle_store`)
for the payout history and exit-path read models (:mod:`payouts.views`); nothing here talks to
the node.

- **coinbase** mode: the payee's output in the coinbase itself. The settlement row keeps the
  coinbase txid (``funding_txid``) and the index of the first payout output in it
  (``funding_vout``; the JD server requires the coinbase to *start* with the PR #203 §4
  outputs, so this is 0 for every JD-declared block); the payee's vout follows from
  :func:`~payouts.distribution.amounts.compute_outputs` (pool first, then the kept payees in
  distribution order).
- **ctv** mode: the leaf of the fan-out tree (BIP-119) paying the payee's script; the exit
  path is every tree tx from the root (spending the coinbase's commitment output) to that
  leaf's tx, in the order they must be broadcast (each spends its parent's output).
- **musig2** mode: the payee's output in the persisted cooperative or fallback spend, once that
  spend was broadcast (before, no txid is final: the fallback has another one).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.fitting import FittedDistribution
from payouts.settlement.lifecycle_store import SettlementRow, TxRow
from payouts.states import BlockStatus, TxRole, TxStatus
from payouts.store.ledger import BlockRecord
from payouts.tx.transaction import OutPoint, Tx


@dataclass(frozen=True, slots=True)
class Landing:
    """Output ``vout`` of tx ``txid`` pays the miner ``amount`` sat. ``status``: the tx's
    (``planned``, ``broadcast``, ``confirmed``), or the block's status for a coinbase output."""

    txid: bytes
    vout: int
    amount: int
    status: TxStatus | BlockStatus


@dataclass(frozen=True, slots=True)
class ExitPath:
    """What a CTV payee broadcasts to claim alone: ``txs`` root first, the payee's output at
    ``txs[-1].outputs[vout]``; the root spends ``funding`` (the coinbase's commitment output,
    ``funding_value`` sat)."""

    funding: OutPoint
    funding_value: int
    txs: tuple[TxRow, ...]
    vout: int
    amount: int


def _match_scripts(
    scripts: Sequence[bytes], txs: Sequence[tuple[TxRow, Tx]]
) -> list[tuple[int, int] | None]:
    """For each script, the (index into ``txs``, vout) of its output. Equal scripts (two
    accounts sharing an address) take their outputs in order of appearance."""
    where: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for i, (_, tx) in enumerate(txs):
        for n, out in enumerate(tx.outputs):
            where[out.script].append((i, n))
    taken: dict[bytes, int] = defaultdict(int)
    found: list[tuple[int, int] | None] = []
    for script in scripts:
        hits = where.get(script, [])
        k = taken[script]
        found.append(hits[k] if k < len(hits) else None)
        taken[script] = k + 1
    return found


def _payee_scripts(fitted: FittedDistribution) -> list[bytes]:
    return [p.script for p in fitted.distribution.payouts]


def coinbase_amounts(fitted: FittedDistribution, revenue: int) -> dict[str, int]:
    """account → what a block of ``revenue`` found on ``fitted`` pays it in coinbase mode
    (0 for a payee pruned as dust: the ledger owes it instead). The amounts depend only on the
    distribution and the revenue (sv2-spec PR #203 §4)."""
    amounts = compute_outputs(fitted.distribution, revenue).payee_amounts
    return dict(zip(fitted.accounts, amounts, strict=True))


def _fanout(rows: Sequence[TxRow]) -> list[tuple[TxRow, Tx]]:
    tree = sorted((r for r in rows if r.role == TxRole.FANOUT), key=lambda r: r.seq)
    return [(r, Tx.parse(r.raw)) for r in tree]


def landings(
    block: BlockRecord,
    fitted: FittedDistribution,
    settlement: SettlementRow | None,
    rows: Sequence[TxRow],
) -> dict[str, Landing]:
    """account → where the block paid it (accounts whose place is not known yet are absent)."""
    if settlement is None:
        return {}
    accounts = fitted.accounts
    if settlement.mode == "coinbase":
        if settlement.funding_txid is None or settlement.funding_vout is None:
            return {}
        amounts = compute_outputs(fitted.distribution, block.revenue).payee_amounts
        out: dict[str, Landing] = {}
        vout = settlement.funding_vout + 1  # the pool payout comes first (PR #203 §4)
        for account, amount in zip(accounts, amounts, strict=True):
            if amount == 0:  # pruned as dust: owed in the ledger instead
                continue
            out[account] = Landing(settlement.funding_txid, vout, amount, block.status)
            vout += 1
        return out
    if settlement.mode == "ctv":
        txs = _fanout(rows)
    else:
        txs = [
            (r, Tx.parse(r.raw))
            for r in rows
            if r.role in (TxRole.COOPERATIVE, TxRole.FALLBACK) and r.status != TxStatus.PLANNED
        ]
    out = {}
    for account, hit in zip(accounts, _match_scripts(_payee_scripts(fitted), txs), strict=True):
        if hit is not None:
            row, tx = txs[hit[0]]
            out[account] = Landing(row.txid, hit[1], tx.outputs[hit[1]].value, row.status)
    return out


def exit_path(
    fitted: FittedDistribution,
    account: str,
    settlement: SettlementRow,
    rows: Sequence[TxRow],
) -> ExitPath | None:
    """The CTV exit path of ``account`` in this block, or None when the block does not pay it
    through the tree (not in the distribution, or pruned as dust). The settlement must be a
    ``ctv`` one bound to its coinbase outpoint."""
    if settlement.mode != "ctv":
        raise ValueError("exit paths exist only for ctv settlements")
    if settlement.funding_txid is None or settlement.funding_vout is None:
        raise ValueError("the fan-out is not bound to its coinbase outpoint yet")
    if account not in fitted.accounts:
        return None
    txs = _fanout(rows)
    hits = _match_scripts(_payee_scripts(fitted), txs)
    hit = hits[fitted.accounts.index(account)]
    if hit is None:
        return None
    by_seq = {r.seq: r for r, _ in txs}
    path = [txs[hit[0]][0]]
    while path[-1].parent_seq is not None:
        path.append(by_seq[path[-1].parent_seq])
    path.reverse()
    return ExitPath(
        OutPoint(settlement.funding_txid, settlement.funding_vout),
        settlement.funding_value or 0,
        tuple(path),
        hit[1],
        txs[hit[0]][1].outputs[hit[1]].value,
    )


__all__ = ["ExitPath", "Landing", "coinbase_amounts", "exit_path", "landings"]
