"""SV2 data types with strict decoding (sv2-spec 03-Protocol-Overview.md §3.1).

Every type is a small object with ``read`` (from a :class:`Reader`), ``write`` (to a
``bytearray``), and ``to_json``/``from_json`` for the CLI. Python values:

- BOOL -> ``bool``; U8..U64 -> ``int``; STR0_255 -> ``str``;
- U256, PUBKEY, SIGNATURE, B0_* , BYTES -> ``bytes`` (U256 in *wire* byte order: SV2 is
  little-endian everywhere, and hashes are raw internal byte order, never reversed display hex);
- SEQ0_255[T], SEQ0_64K[T] -> ``tuple``; OPTION[T] -> ``T | None``.

Decoding is strict: a truncated input raises :class:`~sv2.errors.TruncatedError`, a length prefix
above the type's maximum :class:`~sv2.errors.LengthError`, a STR0_255 that is not UTF-8
:class:`~sv2.errors.InvalidUtf8Error`, an OPTION count above 1
:class:`~sv2.errors.InvalidOptionError`. Encoding validates type and range and raises
:class:`~sv2.errors.EncodeError`.

The one deliberate leniency is BOOL: sv2-spec §3.1 says only the least significant bit carries
meaning and receivers MUST ignore the others (SRI decodes ``(x << 7) >> 7``), so ``0x02`` decodes
as ``False``. That makes BOOL the only type whose decoding is not injective; every valid encoder
(ours included) writes 0x00/0x01.
"""

from __future__ import annotations

import binascii
import math
import struct
from typing import Any, Generic, TypeVar

from sv2.errors import (
    DecodeError,
    EncodeError,
    InvalidOptionError,
    InvalidUtf8Error,
    LengthError,
    TruncatedError,
)

T = TypeVar("T")


class Reader:
    """A cursor over immutable bytes. ``take`` is the only way to consume input."""

    __slots__ = ("_buf", "_end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self._buf = data
        self.pos = pos
        self._end = len(data) if end is None else end

    def remaining(self) -> int:
        return self._end - self.pos

    def take(self, n: int, what: str) -> bytes:
        """Consume exactly ``n`` bytes or raise :class:`TruncatedError` naming ``what``."""
        end = self.pos + n
        if end > self._end:
            raise TruncatedError(
                f"{what}: need {n} bytes, only {self._end - self.pos} left", offset=self.pos
            )
        out = self._buf[self.pos : end]
        self.pos = end
        return out

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "little")


class Sv2Type(Generic[T]):
    """Base of all data types. ``name`` is the spec's spelling (``B0_64K``, ``SEQ0_64K[U16]``)."""

    name: str = "?"

    def read(self, r: Reader) -> T:
        raise NotImplementedError

    def write(self, value: T, out: bytearray) -> None:
        raise NotImplementedError

    def normalize(self, value: Any) -> Any:
        """Convert an equivalent Python value to the canonical one (lists -> tuples)."""
        return value

    def to_json(self, value: T) -> Any:
        return value

    def from_json(self, obj: Any) -> T:
        raise NotImplementedError

    def encode(self, value: T) -> bytes:
        out = bytearray()
        self.write(value, out)
        return bytes(out)

    def decode(self, data: bytes) -> T:
        """Decode exactly one value: leftover bytes are a :class:`DecodeError`."""
        r = Reader(bytes(data))
        value = self.read(r)
        if r.remaining():
            raise DecodeError(f"{r.remaining()} bytes after {self.name}", offset=r.pos)
        return value

    def __repr__(self) -> str:
        return self.name


def _type_name(value: object) -> str:
    return type(value).__name__


class UInt(Sv2Type[int]):
    """U8, U16, U24, U32, U64: unsigned little-endian integers of ``size`` bytes (§3.1)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.max = (1 << (8 * size)) - 1
        self.name = f"U{8 * size}"

    def read(self, r: Reader) -> int:
        return r.uint(self.size, self.name)

    def write(self, value: int, out: bytearray) -> None:
        # bool is an int subclass; accepting it would hide field mix-ups.
        if not isinstance(value, int) or isinstance(value, bool):
            raise EncodeError(f"{self.name} needs an int, got {_type_name(value)}")
        if not 0 <= value <= self.max:
            raise EncodeError(f"{self.name} out of range: {value}")
        out += value.to_bytes(self.size, "little")

    def from_json(self, obj: Any) -> int:
        if isinstance(obj, str) and obj.lower().startswith("0x"):
            try:
                obj = int(obj, 16)
            except ValueError:
                raise EncodeError(f"{self.name}: bad hex integer {obj!r}") from None
        if not isinstance(obj, int) or isinstance(obj, bool):
            raise EncodeError(f"{self.name} needs an integer, got {_type_name(obj)}")
        if not 0 <= obj <= self.max:
            raise EncodeError(f"{self.name} out of range: {obj}")
        return obj


class Bool(Sv2Type[bool]):
    """BOOL: one byte; only the LSB has meaning, other bits are ignored on decode (§3.1)."""

    name = "BOOL"

    def read(self, r: Reader) -> bool:
        return bool(r.take(1, self.name)[0] & 1)

    def write(self, value: bool, out: bytearray) -> None:
        if not isinstance(value, bool):
            raise EncodeError(f"BOOL needs a bool, got {_type_name(value)}")
        out.append(1 if value else 0)

    def from_json(self, obj: Any) -> bool:
        if not isinstance(obj, bool):
            raise EncodeError(f"BOOL needs true/false, got {_type_name(obj)}")
        return obj


class Float32(Sv2Type[float]):
    """F32: IEEE-754 binary32, little-endian. Not in the spec's §3.1 table but used by the
    Mining Protocol's ``nominal_hash_rate`` (SRI ``binary-sv2``: "f32 <-> F32 // Not in the
    spec, but used"; unmerged spec PR #211 adds it). Hash rates only: never an amount. NaN and
    infinities decode (a peer may send them) and the session refuses them where it matters."""

    name = "F32"

    def read(self, r: Reader) -> float:
        value: float = struct.unpack("<f", r.take(4, self.name))[0]
        return value

    def write(self, value: float, out: bytearray) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise EncodeError(f"F32 needs a number, got {_type_name(value)}")
        try:
            out += struct.pack("<f", value)
        except OverflowError:
            raise EncodeError(f"F32 out of range: {value}") from None

    def normalize(self, value: Any) -> Any:
        # Round to binary32 so a constructed message equals its decoded self.
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            try:
                return struct.unpack("<f", struct.pack("<f", value))[0]
            except OverflowError:
                return value
        return value

    def to_json(self, value: float) -> Any:
        return value if math.isfinite(value) else str(value)

    def from_json(self, obj: Any) -> float:
        # JSON has no infinities or NaN: to_json writes them as Python's names for them.
        if isinstance(obj, str) and obj in _NON_FINITE:
            return float(obj)
        if not isinstance(obj, int | float) or isinstance(obj, bool):
            raise EncodeError(f"F32 needs a number (or \"inf\", \"-inf\", \"nan\"), "
                              f"got {_type_name(obj)}")
        return float(obj)


_NON_FINITE = frozenset({"inf", "-inf", "nan"})


def _bytes_from_json(name: str, obj: Any) -> bytes:
    if not isinstance(obj, str):
        raise EncodeError(f"{name} needs a hex string, got {_type_name(obj)}")
    try:
        return binascii.unhexlify(obj)
    except (binascii.Error, ValueError):
        raise EncodeError(f"{name}: not valid hex: {obj[:40]!r}") from None


def _check_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise EncodeError(f"{name} needs bytes, got {_type_name(value)}")
    return bytes(value)


class FixedBytes(Sv2Type[bytes]):
    """Fixed-size byte strings: U256 (32), PUBKEY (32, x-only), SIGNATURE (64) (§3.1)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size

    def read(self, r: Reader) -> bytes:
        return r.take(self.size, self.name)

    def write(self, value: bytes, out: bytearray) -> None:
        b = _check_bytes(self.name, value)
        if len(b) != self.size:
            raise EncodeError(f"{self.name} must be {self.size} bytes, got {len(b)}")
        out += b

    def normalize(self, value: Any) -> Any:
        return bytes(value) if isinstance(value, bytearray | memoryview) else value

    def to_json(self, value: bytes) -> Any:
        return value.hex()

    def from_json(self, obj: Any) -> bytes:
        b = _bytes_from_json(self.name, obj)
        if len(b) != self.size:
            raise EncodeError(f"{self.name} must be {self.size} bytes, got {len(b)}")
        return b


class VarBytes(Sv2Type[bytes]):
    """B0_32, B0_255, B0_64K, B0_16M: a ``prefix``-byte LE length then that many bytes (§3.1).

    B0_64K has a **u16** length and B0_16M a **u24** length (SRI HEADERSIZE 2 and 3).
    """

    def __init__(self, name: str, prefix: int, max_len: int) -> None:
        self.name = name
        self.prefix = prefix
        self.max_len = max_len

    def read(self, r: Reader) -> bytes:
        start = r.pos
        n = r.uint(self.prefix, f"{self.name} length")
        if n > self.max_len:
            raise LengthError(f"{self.name} length {n} exceeds {self.max_len}", offset=start)
        return r.take(n, self.name)

    def write(self, value: bytes, out: bytearray) -> None:
        b = _check_bytes(self.name, value)
        if len(b) > self.max_len:
            raise EncodeError(f"{self.name} holds at most {self.max_len} bytes, got {len(b)}")
        out += len(b).to_bytes(self.prefix, "little")
        out += b

    def normalize(self, value: Any) -> Any:
        return bytes(value) if isinstance(value, bytearray | memoryview) else value

    def to_json(self, value: bytes) -> Any:
        return value.hex()

    def from_json(self, obj: Any) -> bytes:
        b = _bytes_from_json(self.name, obj)
        if len(b) > self.max_len:
            raise EncodeError(f"{self.name} holds at most {self.max_len} bytes, got {len(b)}")
        return b


class Str0255(Sv2Type[str]):
    """STR0_255: u8 length then UTF-8 bytes, not null-terminated (§3.1)."""

    name = "STR0_255"

    def read(self, r: Reader) -> str:
        start = r.pos
        raw = r.take(r.uint(1, "STR0_255 length"), self.name)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidUtf8Error(f"STR0_255 is not UTF-8 ({exc.reason})", offset=start) from None

    def write(self, value: str, out: bytearray) -> None:
        if not isinstance(value, str):
            raise EncodeError(f"STR0_255 needs a str, got {_type_name(value)}")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            raise EncodeError("STR0_255 must be encodable as UTF-8") from None
        if len(raw) > 255:
            raise EncodeError(f"STR0_255 holds at most 255 bytes of UTF-8, got {len(raw)}")
        out.append(len(raw))
        out += raw

    def from_json(self, obj: Any) -> str:
        if not isinstance(obj, str):
            raise EncodeError(f"STR0_255 needs a string, got {_type_name(obj)}")
        self.write(obj, bytearray())  # validates length and encodability
        return obj


class RawBytes(Sv2Type[bytes]):
    """BYTES: raw bytes whose length comes from context -- here, the rest of the input (§3.1)."""

    name = "BYTES"

    def read(self, r: Reader) -> bytes:
        return r.take(r.remaining(), self.name)

    def write(self, value: bytes, out: bytearray) -> None:
        out += _check_bytes(self.name, value)

    def normalize(self, value: Any) -> Any:
        return bytes(value) if isinstance(value, bytearray | memoryview) else value

    def to_json(self, value: bytes) -> Any:
        return value.hex()

    def from_json(self, obj: Any) -> bytes:
        return _bytes_from_json(self.name, obj)


class Seq(Sv2Type[tuple[T, ...]]):
    """SEQ0_255[T] (u8 count) and SEQ0_64K[T] (**u16 LE** count): count then elements (§3.1).

    Variable-size elements (e.g. B0_16M) carry their own length prefixes.
    """

    def __init__(self, inner: Sv2Type[T], prefix: int, label: str) -> None:
        self.inner = inner
        self.prefix = prefix
        self.max_count = (1 << (8 * prefix)) - 1
        self.name = f"{label}[{inner.name}]"
        # For fixed-size elements we can reject a count the input cannot hold before looping.
        self._elem_size = inner.size if isinstance(inner, UInt | FixedBytes) else None

    def read(self, r: Reader) -> tuple[T, ...]:
        start = r.pos
        count = r.uint(self.prefix, f"{self.name} count")
        if self._elem_size is not None and count * self._elem_size > r.remaining():
            raise TruncatedError(
                f"{self.name}: {count} elements need {count * self._elem_size} bytes, "
                f"only {r.remaining()} left",
                offset=start,
            )
        if isinstance(self.inner, FixedBytes):
            # Hot path (DeclareMiningJob.wtxid_list: thousands of U256): one bounds-checked take,
            # then slicing, instead of a Python call per element.
            size = self.inner.size
            blob = r.take(count * size, self.name)
            return tuple(blob[i : i + size] for i in range(0, count * size, size))  # type: ignore[misc]
        read = self.inner.read
        return tuple(read(r) for _ in range(count))

    def write(self, value: tuple[T, ...], out: bytearray) -> None:
        if not isinstance(value, tuple | list):
            raise EncodeError(f"{self.name} needs a sequence, got {_type_name(value)}")
        if len(value) > self.max_count:
            raise EncodeError(f"{self.name} holds at most {self.max_count} elements")
        out += len(value).to_bytes(self.prefix, "little")
        for item in value:
            self.inner.write(item, out)

    def normalize(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if isinstance(self.inner, FixedBytes) and all(type(v) is bytes for v in value):
                return tuple(value)
            return tuple(self.inner.normalize(v) for v in value)
        return value

    def to_json(self, value: tuple[T, ...]) -> Any:
        return [self.inner.to_json(v) for v in value]

    def from_json(self, obj: Any) -> tuple[T, ...]:
        if not isinstance(obj, list):
            raise EncodeError(f"{self.name} needs a JSON array, got {_type_name(obj)}")
        if len(obj) > self.max_count:
            raise EncodeError(f"{self.name} holds at most {self.max_count} elements")
        return tuple(self.inner.from_json(v) for v in obj)


class Option(Sv2Type[T | None]):
    """OPTION[T], an alias of SEQ0_1[T]: u8 count 0 or 1, then the element (§3.1).

    A count above 1 is :class:`InvalidOptionError` (SRI ``Sv2OptionHaveMoreThenOneElement``).
    """

    def __init__(self, inner: Sv2Type[T]) -> None:
        self.inner = inner
        self.name = f"OPTION[{inner.name}]"

    def read(self, r: Reader) -> T | None:
        start = r.pos
        count = r.uint(1, f"{self.name} count")
        if count > 1:
            raise InvalidOptionError(f"{self.name} count {count} > 1", offset=start)
        return self.inner.read(r) if count else None

    def write(self, value: T | None, out: bytearray) -> None:
        if value is None:
            out.append(0)
        else:
            out.append(1)
            self.inner.write(value, out)

    def normalize(self, value: Any) -> Any:
        return None if value is None else self.inner.normalize(value)

    def to_json(self, value: T | None) -> Any:
        return None if value is None else self.inner.to_json(value)

    def from_json(self, obj: Any) -> T | None:
        return None if obj is None else self.inner.from_json(obj)


BOOL = Bool()
F32 = Float32()
U8 = UInt(1)
U16 = UInt(2)
U24 = UInt(3)
U32 = UInt(4)
U64 = UInt(8)
U256 = FixedBytes("U256", 32)
PUBKEY = FixedBytes("PUBKEY", 32)
SIGNATURE = FixedBytes("SIGNATURE", 64)
STR0_255 = Str0255()
B0_32 = VarBytes("B0_32", 1, 32)
B0_255 = VarBytes("B0_255", 1, 255)
B0_64K = VarBytes("B0_64K", 2, 0xFFFF)
B0_16M = VarBytes("B0_16M", 3, 0xFFFFFF)
BYTES = RawBytes()


def SEQ0_255(inner: Sv2Type[T]) -> Seq[T]:
    """SEQ0_255[T]: u8 count + elements."""
    return Seq(inner, 1, "SEQ0_255")


def SEQ0_64K(inner: Sv2Type[T]) -> Seq[T]:
    """SEQ0_64K[T]: u16 LE count + elements."""
    return Seq(inner, 2, "SEQ0_64K")


def OPTION(inner: Sv2Type[T]) -> Option[T]:
    """OPTION[T] = SEQ0_1[T]: u8 count (0 or 1) + element."""
    return Option(inner)


__all__ = [
    "B0_16M",
    "B0_32",
    "B0_64K",
    "B0_255",
    "BOOL",
    "BYTES",
    "F32",
    "OPTION",
    "PUBKEY",
    "SEQ0_64K",
    "SEQ0_255",
    "SIGNATURE",
    "STR0_255",
    "U8",
    "U16",
    "U24",
    "U32",
    "U64",
    "U256",
    "Bool",
    "FixedBytes",
    "Float32",
    "Option",
    "RawBytes",
    "Reader",
    "Seq",
    "Str0255",
    "Sv2Type",
    "UInt",
    "VarBytes",
]
