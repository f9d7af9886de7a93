"""Bitcoin's CompactSize integer encoding (``WriteCompactSize`` in Core's serialize.h)."""

from __future__ import annotations

MAX_COMPACT_SIZE = 0x02000000  # Core's MAX_SIZE: larger sizes are rejected on read


def ser_compact_size(n: int) -> bytes:
    if n < 0:
        raise ValueError("CompactSize cannot encode a negative number")
    if n < 0xFD:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def compact_size_len(n: int) -> int:
    return 1 if n < 0xFD else 3 if n <= 0xFFFF else 5 if n <= 0xFFFFFFFF else 9


def read_compact_size(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode at ``pos``; returns (value, new_pos). Rejects non-canonical encodings as Core does."""
    if pos >= len(buf):
        raise ValueError("truncated CompactSize")
    first = buf[pos]
    if first < 0xFD:
        return first, pos + 1
    width = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
    end = pos + 1 + width
    if end > len(buf):
        raise ValueError("truncated CompactSize")
    value = int.from_bytes(bytes(buf[pos + 1 : end]), "little")
    minimum = {2: 0xFD, 4: 0x10000, 8: 0x100000000}[width]
    if value < minimum:
        raise ValueError("non-canonical CompactSize")
    return value, end
