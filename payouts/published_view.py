"""The window view a cluster's leader publishes and its frontends answer from.

The leader holds the only accounting window; every ~1 s, when it moved, it stores what the
API's window reads need (``GET /v1/window`` and ``GET /v1/miners/{account}/shares``) as one
exact JSON document (:func:`view_body`: big integers and fractions as decimal strings, nothing
rounded) in ``window_view`` (:mod:`payouts.store.cluster`). A frontend reads it back through
:class:`PublishedWindow` (``no-window-yet`` before the first publication).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from sqlalchemy import Engine

from payouts.accounting.accountant import MinerWindowStats
from payouts.errors import PayoutsError
from payouts.store.cluster import PublishedView, read_view
from payouts.views import WindowView, window

REFRESH_SEC = 0.2  # a frontend re-reads the view at most this often


class NoWindowYetError(PayoutsError):
    """No leader has published a window view yet (none elected, or just elected)."""

    code = "no-window-yet"


def _frac(f: Fraction | None) -> str | None:
    return None if f is None else f"{f.numerator}/{f.denominator}"


def _unfrac(s: str | None) -> Fraction | None:
    return None if s is None else Fraction(s)


def _per_miner(pool: Any) -> tuple[dict[str, list[int]], int, int]:
    """``{miner_id: [shares, difficulty]}`` of every miner in the window, the window's share
    count and time span, in one pass over the log (``Accountant.miner_stats`` per miner would
    read the whole window once per miner)."""
    acc = pool.accountant
    start, end = acc.window.start, acc.window.end
    counts: dict[int, list[int]] = {}
    t_min: int | None = None
    t_max: int | None = None
    for piece in acc.log.pieces(start, end):
        if not len(piece.time_ms):
            continue
        lo, hi = int(piece.time_ms.min()), int(piece.time_ms.max())
        t_min = lo if t_min is None else min(t_min, lo)
        t_max = hi if t_max is None else max(t_max, hi)
        order = np.argsort(piece.codes, kind="stable")
        codes = piece.codes[order]
        firsts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        # object dtype: exact Python-int sums (difficulties summed may pass 2^63)
        sums = np.add.reduceat(piece.difficulty[order].astype(object), firsts)
        n = np.diff(np.r_[firsts, len(codes)])
        ids = acc.log.miners.ids(codes[firsts])
        for mid, c, d in zip(ids.tolist(), n.tolist(), sums.tolist(), strict=True):
            e = counts.setdefault(mid, [0, 0])
            e[0] += c
            e[1] += int(d)
    span = t_max - t_min if t_min is not None and t_max is not None else 0
    return {str(k): v for k, v in counts.items()}, end - start, span


@dataclass(frozen=True, slots=True)
class LeaderNode:
    """What the leader's chain follower last saw of its node, as published with the view (the
    operator page's node card on a member that runs no node source of its own)."""

    reachable: bool | None
    error: str
    tip_height: int | None
    tip_time: int | None
    checked_at: float | None


def view_body(pool: Any, node: Any = None, template_revenue: int | None = None
              ) -> dict[str, Any]:
    """The view of ``pool``'s window now (a :class:`~payouts.service.PoolService` with one);
    ``node``: the leader's node status (a :class:`payouts.chain_follower.NodeStatus`), and
    ``template_revenue``: the node's current template revenue T, both for the operator page
    of members."""
    with pool.window.lock:
        w = window(pool)
        weights = pool.accountant.weights()
        per, window_shares, span = _per_miner(pool)
    for mid, x in zip(weights.miner_ids.tolist(), weights.weights, strict=True):
        per.setdefault(str(mid), [0, 0]).append(x)
    return {
        "scheme": w.scheme, "share_count": w.share_count, "total_weight": str(w.total_weight),
        "node_difficulty": _frac(w.node_difficulty), "node_bits": w.node_bits,
        "window_difficulty": _frac(w.window_difficulty), "difficulty_pinned": w.difficulty_pinned,
        "miners": [[a, str(x)] for a, x in w.miners],
        "window_shares": window_shares, "span_ms": span,
        # When the leader read the window: a member's pages say "as of" this (docs/deployment.md).
        "taken_ms": int(time.time() * 1000),
        "node": None if node is None else {
            "reachable": node.reachable, "error": node.error, "tip_height": node.tip_height,
            "tip_time": node.tip_time, "checked_at": node.checked_at},
        "template_revenue": template_revenue,
        "per_miner": {k: [v[0], str(v[1]), str(v[2] if len(v) > 2 else 0)]
                      for k, v in per.items()},
    }


class PublishedWindow:
    """A frontend's reader of the published view (module docstring), re-read at most every
    :data:`REFRESH_SEC`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._view: PublishedView | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def current(self) -> PublishedView:
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= REFRESH_SEC or self._view is None:
                newer = read_view(self.engine, self._view.version if self._view else 0)
                if newer is not None:
                    self._view = newer
                self._read_at = now
            if self._view is None:
                raise NoWindowYetError("no leader has published the window yet; retry shortly")
            return self._view

    def window(self) -> WindowView:
        b = self.current().body
        node_d = _unfrac(b["node_difficulty"])
        wd = _unfrac(b["window_difficulty"])
        assert wd is not None
        return WindowView(b["scheme"], int(b["share_count"]), int(b["total_weight"]), node_d,
                          b["node_bits"], wd, bool(b["difficulty_pinned"]),
                          tuple((a, int(x)) for a, x in b["miners"]))

    def miner_stats(self, miner_id: int) -> MinerWindowStats:
        return _miner_stats(self.current().body, miner_id)

    def dashboard_stats(self, miner_id: int) -> tuple[MinerWindowStats, int | None]:
        """``miner_id``'s window figures for the miner page (:func:`payouts.dashboards.
        miner_dashboard`) and the wall time (ms) the leader read them at: the page says "as
        of" it, since a member cannot know whether the window moved since (None: a view
        published before the time was part of it)."""
        b = self.current().body  # one version for both
        taken = b.get("taken_ms")
        return _miner_stats(b, miner_id), None if taken is None else int(taken)


    def leader_node(self) -> tuple[LeaderNode | None, int | None]:
        """The leader's node status and template revenue as of the view (None: not known)."""
        b = self.current().body
        n = b.get("node")
        revenue = b.get("template_revenue")
        return (None if n is None else LeaderNode(**n),
                None if revenue is None else int(revenue))


def _miner_stats(b: dict[str, Any], miner_id: int) -> MinerWindowStats:
    shares, difficulty, weight = b["per_miner"].get(str(miner_id), [0, "0", "0"])
    return MinerWindowStats(int(b["window_shares"]), int(shares), int(difficulty), int(weight),
                            int(b["total_weight"]), int(b["span_ms"]))


__all__ = ["LeaderNode", "NoWindowYetError", "PublishedWindow", "view_body"]
