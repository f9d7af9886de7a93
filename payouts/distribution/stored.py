"""The stored form of a fitted distribution: everything needed to settle a block found on it,
even after a restart (the distributions table holds it as JSON text; the API shows it).

Big integers are decimal strings (JSON readers lose them). The payees are a list of objects as
in the PR #203 JSON form; the dropped candidates (no room in the coinbase: up to the whole pool)
are columns. Documents stored before that change hold a list of objects there and are still
read. :func:`fitted_from_json` reads into columns and falls back to the per-object reader for
any document it does not take exactly as that reader would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from payouts.distribution.columns import store_field
from payouts.distribution.fitting import (
    Candidate,
    CandidateColumns,
    DroppedColumns,
    FittedDistribution,
    IntColumn,
)
from payouts.distribution.jsonio import distribution_from_json
from payouts.distribution.model import Distribution, Payee, PayeeColumns
from payouts.distribution.settle import dropped_columns, fitted_column, int_column


def _dropped_rows(raw: Any) -> Iterator[Mapping[str, Any]]:
    """The dropped candidates of a stored document, one mapping each (either form)."""
    if isinstance(raw, Mapping):
        for a, s, w, o in zip(raw["account"], raw["script"], raw["weight"], raw["owed"],
                              strict=True):
            yield {"account": a, "script": s, "weight": w, "owed": o}
    else:
        yield from raw


def fitted_to_json(f: FittedDistribution) -> dict[str, Any]:
    """Everything needed to settle a block found on this distribution, even after a restart.

    Read from the columns (issue #2): the same document as building it payee by payee
    (``distribution_to_json`` plus the ledger fields), big ints as strings since JSON readers
    lose them."""
    dist = f.distribution
    cols = dist.columns()
    pool = dist.pool_payout
    d_accounts, d_scripts, d_weights, d_owed = dropped_columns(f)
    return {
        "distribution_id": dist.distribution_id,
        "pool_payout": {"script": pool.script.hex(), "weight": str(pool.weight)},
        "payouts": [
            {"script": s, "weight": w, "dust_limit": d}
            for s, w, d in zip(map(bytes.hex, cols.scripts), map(str, cols.weights.tolist()),
                               cols.dust_limits.tolist(), strict=True)
        ],
        "additional_outputs": [
            {"script": a.script.hex(), "amount": a.amount} for a in dist.additional_outputs
        ],
        "accounts": list(f.accounts),
        "earned": list(map(str, fitted_column(f, "earned").tolist())),
        "owed": fitted_column(f, "owed").tolist(),
        "fee_weight": str(f.fee_weight),
        # Columns, not an object per dropped miner: up to the whole pool (issue #11: 100k
        # objects made the stored document ~8 MiB and its encoding the slowest part of a
        # publish). Documents stored with a list of objects are still read.
        "dropped": {
            "account": list(d_accounts),
            "script": list(map(bytes.hex, d_scripts)),
            "weight": list(map(str, d_weights.tolist())),
            "owed": d_owed.tolist(),
        },
    }


def _fitted_from_objects(body: dict[str, Any]) -> FittedDistribution:
    """:func:`fitted_from_json` payee by payee: the reference, and the path for documents the
    column reader does not take (it then raises the error this one gives, or agrees)."""
    doc = dict(body)
    doc["pool_payout"] = dict(body["pool_payout"], weight=int(body["pool_payout"]["weight"]))
    doc["payouts"] = [dict(p, weight=int(p["weight"])) for p in body["payouts"]]
    dist = distribution_from_json(doc)
    payees = tuple(
        Payee(p.script, p.weight, p.dust_limit, account)
        for p, account in zip(dist.payouts, body["accounts"], strict=True)
    )
    dist = Distribution(dist.distribution_id, dist.pool_payout, payees, dist.additional_outputs)
    return FittedDistribution(
        distribution=dist,
        earned=tuple(int(e) for e in body["earned"]),
        owed=tuple(int(o) for o in body["owed"]),
        dropped=tuple(
            Candidate(d["account"], bytes.fromhex(d["script"]), int(d["weight"]), int(d["owed"]))
            for d in _dropped_rows(body["dropped"])
        ),
        fee_weight=int(body["fee_weight"]),
    )


def _fitted_from_columns(body: dict[str, Any]) -> FittedDistribution:
    """:func:`fitted_from_json` into columns: no Payee or Candidate object per row. Raises
    (anything) on a document it does not take exactly as the per-object reader would."""
    payouts = body["payouts"]
    accounts = body["accounts"]
    if (type(payouts) is not list or type(accounts) is not list
            or len(accounts) != len(payouts)
            or any(type(p) is not dict or type(p.get("dust_limit")) is not int for p in payouts)):
        raise ValueError("not a plain stored document")
    scripts = [bytes.fromhex(p["script"]) for p in payouts]
    weights = np.array([int(p["weight"]) for p in payouts], dtype=np.uint64)
    dusts = np.array([p["dust_limit"] for p in payouts], dtype=np.int64)
    # the pool payout, id and additional outputs, checked by the per-object reader
    head = dict(body, payouts=[])
    head["pool_payout"] = dict(body["pool_payout"], weight=int(body["pool_payout"]["weight"]))
    shell = distribution_from_json(head)
    dist = Distribution.from_columns(
        shell.distribution_id, shell.pool_payout,
        PayeeColumns(scripts, weights, dusts, accounts), shell.additional_outputs)
    raw_dropped = body["dropped"]
    if type(raw_dropped) is dict:
        d_accounts = list(raw_dropped["account"])
        d_scripts = list(map(bytes.fromhex, raw_dropped["script"]))
        d_weights = np.array(list(map(int, raw_dropped["weight"])), dtype=np.int64)
        d_owed = np.array(list(map(int, raw_dropped["owed"])), dtype=np.int64)
        if not len(d_accounts) == len(d_scripts) == len(d_weights) == len(d_owed):
            raise ValueError("dropped columns differ in length")
    else:
        d_accounts = [d["account"] for d in raw_dropped]
        d_scripts = [bytes.fromhex(d["script"]) for d in raw_dropped]
        d_weights = np.array([int(d["weight"]) for d in raw_dropped], dtype=np.int64)
        d_owed = np.array([int(d["owed"]) for d in raw_dropped], dtype=np.int64)
    fitted = FittedDistribution(dist, (), (), (), int(body["fee_weight"]))
    store_field(fitted, "earned", IntColumn(int_column([int(e) for e in body["earned"]])))
    store_field(fitted, "owed", IntColumn(int_column([int(o) for o in body["owed"]])))
    store_field(fitted, "dropped", DroppedColumns(
        CandidateColumns(d_accounts, d_scripts, d_weights.tolist(), d_owed.tolist()),
        d_weights, d_owed, np.arange(len(d_accounts), dtype=np.intp)))
    return fitted


def fitted_from_json(body: dict[str, Any]) -> FittedDistribution:
    """The distribution :func:`fitted_to_json` stored, equal to reading it payee by payee."""
    try:
        return _fitted_from_columns(body)
    except Exception:  # whatever the column reader refused, the per-object one explains
        return _fitted_from_objects(body)


__all__ = ["fitted_from_json", "fitted_to_json"]
