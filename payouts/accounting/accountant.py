"""The accounting facade: one share log, the configured window, chain events. No I/O.

Implements the ``payouts.accounting`` box of ARCHITECTURE.md's data flow: validated share
batches in, per-miner weights out (the input of ``payouts.distribution``). The durable store
persists batches and hands over only the rows that are new; :meth:`Accountant.ingest` validates
again (cheap, and the same :func:`~payouts.accounting.validate.validate_batch` the store and the
API use) so that a batch that reaches it by another path cannot corrupt the log: a rejected batch
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from payouts.accounting.chain import BlockFound, ChainSource
from payouts.accounting.log import I64, ShareLog
from payouts.accounting.shares import ShareBatch
from payouts.accounting.validate import KnownMiners, validate_batch
from payouts.accounting.weighting import exact_sum
from payouts.accounting.windows import (
    Difficulty,
    MinerWeights,
    TidesWindow,
    Window,
    check_network_difficulty,
    make_window,
)
from payouts.settings import AccountingSettings


@dataclass(frozen=True, slots=True)
class MinerWindowStats:
    """One miner's part of the current window: its ``shares`` (of ``window_shares``), their
    summed target ``difficulty`` and the miner's ``weight`` (of ``total_weight``); ``span_ms``
    is the window's time span (last minus first share time, every miner's shares)."""

    window_shares: int
    shares: int
    difficulty: int
    weight: int
    total_weight: int
    span_ms: int

    @property
    def hashrate_hs(self) -> int:
        """Hashes per second the miner's shares stand for, as an integer: a share of target
        difficulty d takes d·2^32 hashes on average. A window of one share (span 0) counts as
        1 s, so the estimate stays finite."""
        return self.difficulty * (1 << 32) * 1000 // max(self.span_ms, 1000)


class Accountant:
    """Share log + the window chosen by ``settings`` (scheme, tides_k, pplns_n,
    value_weighting). Implements :class:`~payouts.accounting.chain.ChainListener`."""

    def __init__(
        self,
        settings: AccountingSettings | None = None,
        *,
        network_difficulty: Difficulty | None = None,
        known_miner: KnownMiners | None = None,
        chain: ChainSource | None = None,
        log: ShareLog | None = None,
    ) -> None:
        """``known_miner=None`` accepts any miner id (the store has already checked them);
        the network difficulty comes from ``network_difficulty``, else ``chain``, else 1."""
        self.settings = settings if settings is not None else AccountingSettings()
        if network_difficulty is None:
            network_difficulty = chain.network_difficulty if chain is not None else 1
        self._network_difficulty = check_network_difficulty(network_difficulty)
        self.known_miner = known_miner
        self.log = log if log is not None else ShareLog()
        s = self.settings
        self.window: Window = make_window(
            s.scheme,
            self.log,
            network_difficulty=self._network_difficulty,
            tides_k=s.tides_k,
            pplns_n=s.pplns_n,
            value_weighting=s.value_weighting,
        )
        self.blocks_found = 0
        if chain is not None:
            chain.subscribe(self)

    @property
    def network_difficulty(self) -> Fraction:
        """The exact difficulty the window uses (a node's, or a pinned one on test networks)."""
        return self._network_difficulty

    def ingest(self, batch: ShareBatch, share_ids: I64 | None = None) -> range:
        """Validate ``batch`` and append it; return the log rows it occupies. ``share_ids``:
        the ids the store gave these shares (a snapshot and a reload need them).

        Raises the specific :class:`~payouts.errors.ValidationError` and leaves the log and the
        window untouched if any row is invalid.
        """
        batch = validate_batch(batch, self.known_miner)
        rows = self.log.append(batch.miner_id, batch.difficulty, batch.revenue, batch.time_ms,
                               share_ids)
        self.window.sync()
        return rows

    def replay(self, miner_id: I64, difficulty: I64, revenue: I64, time_ms: I64,
               share_id: I64) -> range:
        """Append shares read back from the store (validated when they were stored, and held
        to it by the store's constraints): a restart's replay, not new input."""
        rows = self.log.append(miner_id, difficulty, revenue, time_ms, share_id)
        self.window.sync()
        return rows

    def set_network_difficulty(self, difficulty: Difficulty) -> None:
        """A difficulty adjustment (moves the TIDES cut incrementally)."""
        self._network_difficulty = check_network_difficulty(difficulty)
        self.window.on_network_difficulty(difficulty)

    def on_network_difficulty(self, difficulty: Difficulty) -> None:
        """:class:`ChainListener` hook."""
        self.set_network_difficulty(difficulty)

    def on_block_found(self, event: BlockFound | None = None) -> None:
        """The pool found a block: PROP starts a new round; TIDES and PPLNS are unaffected (their
        window is defined by the log and D alone). A difficulty carried by ``event`` is applied
        first."""
        new_d = event.network_difficulty if event is not None else None
        if new_d is not None and new_d != self._network_difficulty:
            self.set_network_difficulty(new_d)
        self.blocks_found += 1
        self.window.on_block_found()

    def weights(self) -> MinerWeights:
        """Per-miner weights of the current window (miner ids ascending, weights > 0)."""
        return self.window.weights()

    @property
    def total_weight(self) -> int:
        return self.window.total_weight

    def miner_stats(self, miner_id: int) -> MinerWindowStats:
        """``miner_id``'s shares, difficulty and weight in the current window (zeros for a
        miner without shares in it), read from the log's columns in place."""
        weights = self.weights()
        start, end = self.window.start, self.window.end
        code = self.log.miners.code(miner_id)
        count = difficulty = 0
        t_min: int | None = None
        t_max: int | None = None
        for piece in self.log.pieces(start, end):
            if len(piece.time_ms):
                lo, hi = int(piece.time_ms.min()), int(piece.time_ms.max())
                t_min = lo if t_min is None else min(t_min, lo)
                t_max = hi if t_max is None else max(t_max, hi)
            if code is not None:
                mask = piece.codes == code
                count += int(mask.sum())
                difficulty += exact_sum(piece.difficulty[mask])
        ids = weights.miner_ids.tolist()
        weight = weights.weights[ids.index(miner_id)] if miner_id in ids else 0
        span = t_max - t_min if t_min is not None and t_max is not None else 0
        return MinerWindowStats(end - start, count, difficulty, weight, self.total_weight, span)

    @property
    def share_count(self) -> int:
        return self.window.share_count

    @property
    def tides(self) -> TidesWindow | None:
        """The window as a :class:`TidesWindow` when the scheme is TIDES."""
        return self.window if isinstance(self.window, TidesWindow) else None
