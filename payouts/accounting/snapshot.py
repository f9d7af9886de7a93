"""A snapshot of the accountant: what a restart needs so it reads only the shares after it.

The window of every scheme is a function of the rows it may still reach and a few scalars
(docs/accounting.md, "State that survives a restart"):

- TIDES: the minimal suffix with difficulty sum >= k·D: the rows from the window start on, and D;
- PPLNS: the last N rows;
- PROP: the rows since the round started (the last block found).

So a snapshot holds those scalars and the hot columns of the rows from ``keep_from`` (the window
start) to the end, with miner ids (not the log's private codes) and the store's share ids. Rows
before ``keep_from`` are never read by these windows again (a TIDES window that must reach
further back after D rose is reloaded from the store by the service), so dropping them from
memory at the same point changes no result: restoring a snapshot and replaying the shares and
chain events after it gives the window an uninterrupted run has.

Format (``VERSION`` 2): ``MAGIC``, a 4-byte big-endian header length, the header as JSON, then
the zlib-compressed (level 1) concatenation of five little-endian int64 columns of ``rows``
values each: miner_id, difficulty, revenue, time_ms and share_id, the last two as differences
from the row before (ids and times ascend: the differences are small and compress to little).
A 1,000,000-row window is ~40 MB raw and a few MB stored; decompressing costs ~50 ms. The
store keeps the SHA-256 of the whole body beside it
(:mod:`payouts.store.accounting_state`); a body that does not decode, a version or settings
mismatch is a :class:`SnapshotError`, and the service rebuilds from the store instead.
"""

from __future__ import annotations

import json
import zlib
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from payouts.accounting.accountant import Accountant
from payouts.accounting.log import ShareLog
from payouts.errors import PayoutsError
from payouts.settings import AccountingSettings

VERSION = 2
MAGIC = b"PAYOUTS-ACCT\x00"
_COLUMNS = 5


class SnapshotError(PayoutsError):
    """A snapshot that cannot be used (corrupt, another format version, other settings)."""

    code = "snapshot-unusable"


def settings_key(s: AccountingSettings) -> str:
    """What a window's rows mean: a snapshot taken under other settings is not reused."""
    return f"{s.scheme}|k={s.tides_k}|n={s.pplns_n}|vw={int(s.value_weighting)}"


def keep_from(acc: Accountant) -> int:
    """The oldest row any later window of ``acc`` can read without a reload: its start."""
    return acc.window.start


def encode(acc: Accountant) -> bytes:
    """Snapshot ``acc`` (rows from :func:`keep_from` on). O(rows kept), copies only."""
    first = keep_from(acc)
    end = len(acc.log)
    d = acc.network_difficulty
    header = {
        "version": VERSION,
        "settings": settings_key(acc.settings),
        "first_row": first,
        "rows": end - first,
        "difficulty": [d.numerator, d.denominator],
        "blocks_found": acc.blocks_found,
        "chunk_rows": acc.log.chunk_rows,
    }
    head = json.dumps(header, sort_keys=True).encode()
    miner_id, difficulty, revenue, time_ms, share_id = acc.log.rows(first, end)
    z = zlib.compressobj(1)
    parts = [z.compress(c.astype("<i8", copy=False).tobytes()) for c in (
        miner_id, difficulty, revenue, _delta(time_ms), _delta(share_id))]
    return b"".join([MAGIC, len(head).to_bytes(4, "big"), head, *parts, z.flush()])


def _delta(c: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.diff(c, prepend=np.int64(0)) if len(c) else c


def _undelta(c: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.cumsum(c, dtype=np.int64)


def _header(body: bytes) -> tuple[dict[str, Any], int]:
    if not body.startswith(MAGIC) or len(body) < len(MAGIC) + 4:
        raise SnapshotError("not an accounting snapshot")
    at = len(MAGIC)
    n = int.from_bytes(body[at:at + 4], "big")
    try:
        header = json.loads(body[at + 4:at + 4 + n])
    except ValueError:
        raise SnapshotError("snapshot header is not JSON") from None
    if not isinstance(header, dict):
        raise SnapshotError("snapshot header is not an object")
    return header, at + 4 + n


def decode(body: bytes, settings: AccountingSettings) -> Accountant:
    """The accountant ``body`` snapshotted, for ``settings`` (which must describe the same
    window). Raises :class:`SnapshotError` for anything it cannot trust."""
    header, at = _header(body)
    if header.get("version") != VERSION:
        raise SnapshotError(f"snapshot format version {header.get('version')!r}, "
                            f"this engine reads {VERSION}")
    if header.get("settings") != settings_key(settings):
        raise SnapshotError(f"snapshot of window {header.get('settings')!r}, settings say "
                            f"{settings_key(settings)!r}")
    try:
        first, rows = int(header["first_row"]), int(header["rows"])
        num, den = (int(x) for x in header["difficulty"])
        blocks_found = int(header["blocks_found"])
        chunk_rows = int(header["chunk_rows"])
    except (KeyError, TypeError, ValueError):
        raise SnapshotError("snapshot header lacks a field or has a bad one") from None
    if first < 0 or rows < 0 or num <= 0 or den <= 0 or blocks_found < 0:
        raise SnapshotError("snapshot header has out-of-range values")
    try:
        raw = zlib.decompress(memoryview(body)[at:], bufsize=_COLUMNS * 8 * rows or 1)
    except zlib.error as e:
        raise SnapshotError(f"snapshot rows do not decompress: {e}") from None
    if len(raw) != _COLUMNS * 8 * rows:
        raise SnapshotError(f"snapshot body holds {len(raw)} bytes of rows, the header says "
                            f"{rows} rows")
    cols = np.frombuffer(raw, dtype="<i8").reshape(_COLUMNS, rows)
    # Views of the rows, no copies: the log copies them into its chunks once.
    miner_id, difficulty, revenue = (c.astype(np.int64, copy=False) for c in cols[:3])
    time_ms, share_id = _undelta(cols[3]), _undelta(cols[4])
    if rows and (difficulty.min() < 1 or revenue.min() < 0 or miner_id.min() < 1):
        raise SnapshotError("snapshot rows hold values no validated share has")
    try:
        log = ShareLog(chunk_rows=chunk_rows, first_row=first)
    except ValueError as e:
        raise SnapshotError(f"snapshot header: {e}") from None
    log.append(miner_id, difficulty, revenue, time_ms, share_id)
    acc = Accountant(settings, network_difficulty=Fraction(num, den), log=log)
    acc.blocks_found = blocks_found
    return acc


__all__ = ["MAGIC", "VERSION", "SnapshotError", "decode", "encode", "keep_from",
           "settings_key"]
