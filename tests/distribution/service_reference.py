"""The per-object service code that the column readers of issue #2 replaced, kept as the
reference: ``test_service_columns`` checks the new code equals it, ``bench_settlement`` times it
as the baseline of ``PoolService.publish_distribution`` and of loading and settling a block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.fitting import Budget, Candidate, FittedDistribution, fit_distribution
from payouts.distribution.jsonio import distribution_to_json
from payouts.distribution.ledger import LedgerEntry
from payouts.distribution.model import Distribution, PoolPayout
from payouts.distribution.settle import BlockSettlement
from payouts.distribution.stored import _fitted_from_objects
from payouts.service import PoolService
from payouts.store import repositories as repo
from payouts.store.ledger import ledger_balances


def old_fitted_to_json(f: FittedDistribution) -> dict[str, Any]:
    body = distribution_to_json(f.distribution)
    body["accounts"] = list(f.accounts)
    body["earned"] = [str(e) for e in f.earned]
    body["owed"] = list(f.owed)
    body["fee_weight"] = str(f.fee_weight)
    # The stored document's dropped candidates are columns (issue #11), built here object by
    # object from the Candidate tuple.
    body["dropped"] = {
        "account": [c.account for c in f.dropped],
        "script": [c.script.hex() for c in f.dropped],
        "weight": [str(c.weight) for c in f.dropped],
        "owed": [c.owed for c in f.dropped],
    }
    for p in body["payouts"]:
        p["weight"] = str(p["weight"])
    body["pool_payout"]["weight"] = str(body["pool_payout"]["weight"])
    return body


# The per-object reader is the service's own fallback path (_fitted_from_objects), kept there
# for documents the column reader does not take: the same code serves as the reference here.
old_fitted_from_json = _fitted_from_objects


def old_settle_block(fitted: FittedDistribution, revenue: int, ref: str = "",
                     balances: Mapping[str, int] | None = None) -> BlockSettlement:
    dist = fitted.distribution
    result = compute_outputs(dist, revenue)
    t_prime, total_weight = result.distributable, dist.total_weight
    paid: dict[str, int] = {}
    fair: dict[str, int] = {}
    entries: list[LedgerEntry] = []
    bonus = 0
    for payee, earned, owed, amount in zip(
        dist.payouts, fitted.earned, fitted.owed, result.payee_amounts, strict=True
    ):
        account = payee.account or payee.script.hex()
        share = earned * t_prime // total_weight
        fair[account] = share
        paid[account] = amount
        if amount == 0:
            if share:
                entries.append(LedgerEntry(account, share, "pruned", ref))
            continue
        extra = amount - share
        current = owed if balances is None else balances.get(account, 0)
        repaid = min(extra, current)
        if repaid:
            entries.append(LedgerEntry(account, -repaid, "repaid", ref))
        bonus += extra - repaid
    for c in fitted.dropped:
        share = c.weight * t_prime // total_weight
        fair[c.account] = share
        paid[c.account] = 0
        if share:
            entries.append(LedgerEntry(c.account, share, "dropped", ref))
    net_credit = sum(e.amount for e in entries)
    return BlockSettlement(result=result, paid=paid, fair=fair, entries=tuple(entries),
                           pool_keeps=result.pool_amount - net_credit, bonus=bonus)


def old_candidates(svc: PoolService) -> list[Candidate]:
    weights = svc.accountant.weights()
    ids = weights.miner_ids.tolist()
    miners = repo.get_miners(svc.engine, ids)
    balances = ledger_balances(svc.engine)
    by_id = {m.id: m for m in miners.values()}
    out = [
        Candidate(by_id[i].account, by_id[i].payout_script, w, balances.get(i, 0))
        for i, w in zip(ids, weights.weights, strict=True)
    ]
    in_window = set(ids)
    owed_only = [i for i, b in balances.items() if b > 0 and i not in in_window]
    for m in repo.get_miners(svc.engine, owed_only).values():
        out.append(Candidate(m.account, m.payout_script, 0, balances[m.id]))
    return out


def old_publish_distribution(svc: PoolService, estimated_revenue: int) -> FittedDistribution:
    """``PoolService.publish_distribution`` as it was (without the listeners)."""
    ds = svc.settings.distribution
    next_id = (repo.last_distribution_id(svc.engine) or 0) + 1
    candidates = old_candidates(svc)
    if any(c.weight or c.owed for c in candidates):
        fitted = fit_distribution(next_id, svc.pool_script(), candidates,
                                  fee_bps=svc.settings.pool.fee_bps,
                                  budget=Budget(ds.max_outputs_bytes, ds.max_sigops),
                                  estimated_revenue=estimated_revenue)
    else:
        fitted = FittedDistribution(Distribution(next_id, PoolPayout(svc.pool_script(), 1)),
                                    (), (), (), 0)
    repo.save_distribution(svc.engine, next_id, old_fitted_to_json(fitted))
    return fitted
