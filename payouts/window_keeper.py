"""The accountant kept durable: shares, chain events and snapshots in the store, the window in
memory, and a restart that reads only what the last snapshot does not hold.

ARCHITECTURE invariant 7: the window and the next distribution after a restart equal an
uninterrupted run. Everything that moves a window is in the store, in one order:

- shares, in id order (``persist_shares``: one writer at a time, under :attr:`WindowKeeper.lock`,
  so ids ascend in the order shares reach the window);
- chain events (:mod:`payouts.store.accounting_state`), each placed after the newest share the
  window held when it happened: the node's network difficulty (``difficulty``: the next block's
  nBits, exact) and a block the pool found (``round``: PROP closes its round), the latter written
  in the block's own transaction.

A restart decodes the newest snapshot (:mod:`payouts.accounting.snapshot`: the rows still in
reach of the window and its scalars) and replays the shares and events stored after it; without
a usable snapshot (none yet, corrupt, another format or other window settings: logged) it
replays everything the store still holds. Both give the same window as an uninterrupted run,
because every window is a function of its rows and these events alone: TIDES of the rows and D
(not of the order D changed in), PPLNS of the last N rows, PROP of the rows since the last round.

Memory is bounded by the window: taking a snapshot drops the rows before the window start. A
TIDES window that must reach further back after D rose (``short_of_history``) is rebuilt from
the store, which keeps shares at least back to the oldest row of the last snapshot (retention,
docs/retention.md), so the rebuilt window is the one an uninterrupted run has.

Locks: :attr:`WindowKeeper.lock` is the only writer of shares and of the in-memory window (held
for a batch's insert, not for a block's ledger write); the event lock orders events so that
their ids ascend with their positions (a block's ledger transaction may take long, and a
difficulty change in the meantime must not overtake its round event).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine

from payouts.accounting import snapshot
from payouts.accounting.accountant import Accountant
from payouts.accounting.shares import I64, ShareBatch
from payouts.errors import InvalidDifficultyError
from payouts.settings import Settings
from payouts.store.accounting_state import (
    EventRecord,
    iter_hot_shares,
    last_difficulty_event,
    load_events,
    load_latest_snapshot,
    record_event,
    save_snapshot,
)
from payouts.store.shares import persist_shares_with_ids
from payouts.tx.block import bits_to_target, difficulty_from_bits

log = logging.getLogger("payouts.accounting")

T = TypeVar("T")

# Bitcoin Core's powLimit per network (chainparams.cpp), as nBits: no valid block has a
# larger target, so a node reporting a lower difficulty is wrong.
POW_LIMIT_BITS = {
    "mainnet": 0x1D00FFFF,
    "testnet": 0x1D00FFFF,
    "testnet4": 0x1D00FFFF,
    "signet": 0x1E0377AE,
    "regtest": 0x207FFFFF,
}
# Consensus bounds one mainnet retarget to a factor of 4 either way (pow.cpp): a larger jump
# between two reports is a node error, not the network.
MAX_RETARGET_FACTOR = 4


@dataclass(slots=True)
class _Pending:
    """A batch waiting to be written, and what became of it (:meth:`WindowKeeper.ingest`)."""

    batch: ShareBatch
    done: bool = False
    new: int = 0
    error: BaseException | None = None


class ImplausibleDifficultyError(InvalidDifficultyError):
    """A network difficulty the node reported cannot be the network's."""

    code = "implausible-difficulty"


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """How the window was restored: from snapshot ``snapshot_id`` (None: rebuilt from the
    store), with ``shares`` shares and ``events`` events replayed after it."""

    snapshot_id: int | None
    shares: int
    events: int
    reason: str = ""


class WindowKeeper:
    """The accountant of one pool with its durable state (module docstring)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []  # batches waiting for the lock (group commit)
        self._event_lock = threading.Lock()
        self.last_share_id = 0
        self.last_event_id = 0
        self.node_bits: int | None = None  # the nBits the node reported last (any run)
        # Other processes write shares to this store too (a leader on PostgreSQL): the window
        # then follows the store in id order (:meth:`follow`), and a batch ingested here first
        # takes in the others' rows stored before it.
        self.shared_store = False
        self.accountant, self.restored = self._restore()

    # -- what the window uses -----------------------------------------------------------------

    @property
    def node_difficulty(self) -> Fraction | None:
        """The network difficulty the node reported last, exactly (None before any)."""
        return None if self.node_bits is None else difficulty_from_bits(self.node_bits)

    def window_difficulty(self) -> Fraction:
        """What TIDES uses: ``[accounting] pin_difficulty`` (test networks), else the node's,
        else 1 (nothing known yet; ``payouts serve`` asks the node before it serves)."""
        pin = self.settings.accounting.pin_difficulty
        if pin is not None:
            return Fraction(pin)
        d = self.node_difficulty
        return d if d is not None else Fraction(1)

    # -- restart ------------------------------------------------------------------------------

    def _restore(self, use_snapshot: bool = True) -> tuple[Accountant, RestoreReport]:
        acc: Accountant | None = None
        used: int | None = None
        after_share = after_event = 0
        snap = load_latest_snapshot(self.engine) if use_snapshot else None
        reason = "" if use_snapshot else "reload"
        if snap is not None:
            if not snap.intact:
                reason = "its checksum does not match its body"
            else:
                try:
                    acc = snapshot.decode(snap.body, self.settings.accounting)
                except snapshot.SnapshotError as exc:
                    reason = exc.message
            if acc is None:
                log.warning("accounting snapshot %d is unusable (%s): rebuilding the window "
                            "from the stored shares", snap.id, reason)
            else:
                used, after_share, after_event = snap.id, snap.after_share_id, snap.after_event_id
        if acc is None:
            acc = Accountant(self.settings.accounting)
        last = last_difficulty_event(self.engine)
        self.last_share_id = after_share
        self.last_event_id = after_event
        replayed_shares = replayed_events = 0
        for ev in load_events(self.engine, after_event):
            replayed_shares += self._replay(acc, ev.after_share_id)
            self._apply(acc, ev)
            replayed_events += 1
        replayed_shares += self._replay(acc, None)
        if last is not None:
            self.node_bits = last.bits
        acc.set_network_difficulty(self.window_difficulty())  # a pin may have changed
        return acc, RestoreReport(used, replayed_shares, replayed_events, reason)

    def _replay(self, acc: Accountant, upto_id: int | None) -> int:
        """Append the stored shares after :attr:`last_share_id` (up to ``upto_id``)."""
        n = 0
        for hot in iter_hot_shares(self.engine, self.last_share_id, upto_id):
            acc.replay(hot.miner_id, hot.difficulty, hot.revenue, hot.time_ms, hot.share_id)
            self.last_share_id = int(hot.share_id[-1])
            n += len(hot)
        if upto_id is not None:
            self.last_share_id = max(self.last_share_id, upto_id)
        return n

    def _apply(self, acc: Accountant, e: EventRecord) -> None:
        """One event, the same way live and in a replay."""
        if e.kind == "difficulty":
            assert e.bits is not None
            self.node_bits = e.bits
            acc.set_network_difficulty(self.window_difficulty())
        else:
            acc.on_block_found()
        self.last_event_id = e.id

    # -- live ---------------------------------------------------------------------------------

    def ingest(self, batch: ShareBatch) -> int:
        """Persist (durable before returning) and account a batch; how many were new.

        Group commit: batches that arrive while another is being written wait for the lock
        together, and whoever takes it next writes all of them in one transaction (one fsync
        instead of one per batch; ids still ascend in arrival order). Each caller returns
        only after its own rows are committed, with its own count or its own error: if the
        joint write fails (a bad row, keys shared between batches), nothing of it was
        written, and every batch is then written alone, as if it had come by itself.
        """
        slot = _Pending(batch)
        with self._queue_lock:
            self._queue.append(slot)
        with self.lock:
            if not slot.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                try:
                    self._ingest_group(group)
                except BaseException as e:  # every waiter hears it, none returns a count
                    for p in group:
                        if not p.done:
                            p.error, p.done = e, True
        if slot.error is not None:
            raise slot.error
        return slot.new

    def _ingest_group(self, group: list[_Pending]) -> None:
        if len(group) > 1:
            total = sum(len(p.batch) for p in group)
            if len({k for p in group for k in p.batch.key}) == total:
                try:
                    joint = ShareBatch.concat([p.batch for p in group])
                    new, ids = persist_shares_with_ids(self.engine, joint)
                except Exception:  # the transaction rolled back whole: one by one below
                    pass
                else:
                    self._account(joint, new, ids)
                    start = 0
                    for p in group:
                        end = start + len(p.batch)
                        p.new = int(np.count_nonzero((new >= start) & (new < end)))
                        p.done, start = True, end
                    return
        for p in group:
            try:
                p.new = self._account(p.batch, *persist_shares_with_ids(self.engine, p.batch))
            except BaseException as e:
                p.error = e
            p.done = True

    def _account(self, batch: ShareBatch, new: npt.NDArray[np.intp], ids: I64) -> int:
        """The window takes the rows the store just reported new, with their ids."""
        if len(new):
            if self.shared_store:
                # Every id below ours committed before ours (the share-order lock,
                # payouts.store.shares): take those rows in first, in id order.
                self._replay(self.accountant, int(ids[0]) - 1)
            self.accountant.ingest(batch if len(new) == len(batch) else batch.take(new), ids)
            self.last_share_id = int(ids[-1])
        return len(new)

    def follow(self) -> int:
        """Take the shares other processes stored since the last one in the window, in id
        order (the leader's share follower); returns how many."""
        with self.lock:
            return self._replay(self.accountant, None)

    def check_bits(self, bits: int) -> Fraction:
        """The difficulty of ``bits`` if it can be the network's next block's; else
        :class:`ImplausibleDifficultyError` (a malformed or zero target, a target above the
        network's powLimit, or more than a retarget's factor 4 from the last one on mainnet)."""
        try:
            d = difficulty_from_bits(bits)
        except ValueError as e:
            raise ImplausibleDifficultyError(f"nBits {bits:#010x}: {e}") from None
        network = self.settings.network
        if bits_to_target(bits) > bits_to_target(POW_LIMIT_BITS[network]):
            raise ImplausibleDifficultyError(
                f"nBits {bits:#010x} is easier than {network}'s proof-of-work limit")
        old = self.node_difficulty
        if network == "mainnet" and old is not None and not (
                old / MAX_RETARGET_FACTOR <= d <= old * MAX_RETARGET_FACTOR):
            raise ImplausibleDifficultyError(
                f"difficulty {float(d):.6g} after {float(old):.6g}: more than a retarget's "
                f"factor {MAX_RETARGET_FACTOR}")
        return d

    def on_network_bits(self, bits: int) -> bool:
        """The node reports ``bits`` for the next block: record and apply the difficulty if it
        changed (False: unchanged). Raises :class:`ImplausibleDifficultyError`, changing
        nothing, for a value that cannot be the network's."""
        self.check_bits(bits)
        with self._event_lock:
            if bits == self.node_bits:
                return False

            def apply() -> int:
                self.node_bits = bits
                self.accountant.set_network_difficulty(self.window_difficulty())
                return self.last_share_id

            def write(after: int) -> tuple[None, int]:
                return None, record_event(self.engine, "difficulty", after, bits=bits)

            self._event(apply, write)
            tides = self.accountant.tides
            if tides is not None and tides.short_of_history:
                self.reload()
        return True

    def close_round(self, write: Callable[[int], tuple[T, int]]) -> T:
        """A block was found: close the round in memory (PROP) at the newest share, then run
        ``write(after_share_id)``, the block's transaction, which stores the ``round`` event at
        that position and returns ``(what it wrote, the event's id)``. Shares keep flowing
        while ``write`` runs; they belong to the next round."""
        with self._event_lock:

            def apply() -> int:
                self.accountant.on_block_found()
                return self.last_share_id

            return self._event(apply, write)

    def _event(self, apply: Callable[[], int], write: Callable[[int], tuple[T, int]]) -> T:
        """Apply an event in memory at the current position (under the share lock, so no
        share slips between), then store it (outside it). A failed write leaves memory ahead
        of the store: the window is rebuilt from the store, then the error is raised."""
        with self.lock:
            after = apply()
        try:
            out, event_id = write(after)
        except BaseException:
            log.error("an accounting event could not be stored: rebuilding the window from "
                      "the store")
            self.reload()
            raise
        self.last_event_id = event_id
        return out

    def reload(self) -> None:
        """Rebuild the window from the store (every share it still holds, every event)."""
        with self.lock:
            self.accountant, self.restored = self._restore(use_snapshot=False)

    # -- snapshots ----------------------------------------------------------------------------

    def take_snapshot(self) -> int:
        """Store a snapshot of the window now, then drop the rows before its start from
        memory (they are in the snapshot's past: no later window reads them without a
        reload). Returns the snapshot id."""
        with self._event_lock:  # no event half applied: its id is known
            with self.lock:
                body = snapshot.encode(self.accountant)
                after_share, after_event = self.last_share_id, self.last_event_id
                first = snapshot.keep_from(self.accountant)
            sid = save_snapshot(
                self.engine, version=snapshot.VERSION, after_share_id=after_share,
                after_event_id=after_event,
                settings_key=snapshot.settings_key(self.settings.accounting), body=body)
            with self.lock:
                self.accountant.log.drop_before(first)
        return sid


__all__ = ["ImplausibleDifficultyError", "RestoreReport", "WindowKeeper"]
