"""TLV fields appended to SV2 messages (sv2-spec 03-Protocol-Overview.md §3.4.3).

Wire layout of one TLV::

    U16 extension_type | U8 field_type | U16 length | length bytes of value

**Endianness:** the spec's example bytes (``00 02 01 00 0A ...``) are big-endian, but SRI encodes
type and length *little-endian* (``sv2/parsers-sv2/src/tlv/codec.rs``, test
``test_tlv_encode_format``: ``Tlv(0x0002, 0x01, "test")`` -> ``02 00 01 04 00 74 65 73 74``). We
follow SRI, because interoperating with it is what matters; the spec text is the outlier.

Decoding keeps unknown TLVs as raw :class:`Tlv` values, which re-encode byte-identically, and
turns TLVs registered with :func:`register_tlv` into typed values (e.g.
:class:`sv2.messages.payouts.DistributionIdTlv`). Order is kept as received: the spec asks senders
to order TLVs by extension type, but a receiver gains nothing by rejecting other orders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from sv2.errors import EncodeError, InvalidTlvError, TrailingBytesError

TLV_HEADER_SIZE = 5  # U16 extension_type + U8 field_type + U16 length


@dataclass(frozen=True, slots=True)
class Tlv:
    """A raw TLV: unknown (or not yet interpreted) fields are carried in this form."""

    extension_type: int
    field_type: int
    value: bytes

    def encode(self) -> bytes:
        if not 0 <= self.extension_type <= 0xFFFF or not 0 <= self.field_type <= 0xFF:
            raise EncodeError(f"TLV type out of range: {self.extension_type}/{self.field_type}")
        if len(self.value) > 0xFFFF:
            raise EncodeError(f"TLV value holds at most 65535 bytes, got {len(self.value)}")
        return (
            self.extension_type.to_bytes(2, "little")
            + bytes((self.field_type,))
            + len(self.value).to_bytes(2, "little")
            + bytes(self.value)
        )


@runtime_checkable
class KnownTlv(Protocol):
    """A typed TLV value. Implementations are frozen dataclasses registered with
    :func:`register_tlv`; ``NAME`` is the spec's field name, used in JSON."""

    EXTENSION_TYPE: ClassVar[int]
    FIELD_TYPE: ClassVar[int]
    NAME: ClassVar[str]

    def to_tlv(self) -> Tlv: ...

    def to_json(self) -> dict[str, Any]: ...


TlvItem = Tlv | KnownTlv
"""What a message's ``tlvs`` tuple holds."""

# (extension_type, field_type) -> parser of the value bytes (raises InvalidTlvError)
_KNOWN: dict[tuple[int, int], Callable[[bytes], KnownTlv]] = {}
# (extension_type, field_type) -> builder from the JSON fields
_FROM_JSON: dict[tuple[int, int], Callable[[dict[str, Any]], KnownTlv]] = {}


def register_tlv(
    extension_type: int,
    field_type: int,
    parse: Callable[[bytes], KnownTlv],
    from_json: Callable[[dict[str, Any]], KnownTlv],
) -> None:
    """Make (extension_type, field_type) a known TLV: decoded into a typed value."""
    _KNOWN[(extension_type, field_type)] = parse
    _FROM_JSON[(extension_type, field_type)] = from_json


def encode_tlv(item: TlvItem) -> bytes:
    return item.encode() if isinstance(item, Tlv) else item.to_tlv().encode()


def encode_tlvs(items: tuple[TlvItem, ...]) -> bytes:
    return b"".join(encode_tlv(i) for i in items)


def decode_tlvs(data: bytes, start: int = 0) -> tuple[TlvItem, ...]:
    """Decode the TLV list that fills ``data[start:]`` (the tail of a message payload).

    A tail shorter than a TLV header is :class:`TrailingBytesError` (it cannot be a TLV); a TLV
    whose length runs past the end, or a known TLV with a malformed value, is
    :class:`InvalidTlvError`.
    """
    items: list[TlvItem] = []
    pos, end = start, len(data)
    while pos < end:
        if end - pos < TLV_HEADER_SIZE:
            raise TrailingBytesError(
                f"{end - pos} trailing bytes after the message body are not a TLV", offset=pos
            )
        ext = int.from_bytes(data[pos : pos + 2], "little")
        ftype = data[pos + 2]
        length = int.from_bytes(data[pos + 3 : pos + 5], "little")
        vstart = pos + TLV_HEADER_SIZE
        if vstart + length > end:
            raise InvalidTlvError(
                f"TLV ({ext:#06x}, {ftype:#04x}) length {length} runs past the payload "
                f"({end - vstart} bytes left)",
                offset=pos,
            )
        value = bytes(data[vstart : vstart + length])
        parse = _KNOWN.get((ext, ftype))
        if parse is None:
            items.append(Tlv(ext, ftype, value))
        else:
            try:
                items.append(parse(value))
            except InvalidTlvError as exc:
                raise InvalidTlvError(exc.reason, offset=pos) from None
        pos = vstart + length
    return tuple(items)


def tlv_to_json(item: TlvItem) -> dict[str, Any]:
    """JSON form: raw TLVs give ``value`` hex; known ones give ``name`` and their fields."""
    if isinstance(item, Tlv):
        return {
            "extension_type": item.extension_type,
            "field_type": item.field_type,
            "value": item.value.hex(),
        }
    return {
        "extension_type": item.EXTENSION_TYPE,
        "field_type": item.FIELD_TYPE,
        "name": item.NAME,
        **item.to_json(),
    }


def tlv_from_json(obj: Any) -> TlvItem:
    """Inverse of :func:`tlv_to_json`. Raises :class:`EncodeError` on bad input."""
    if not isinstance(obj, dict):
        raise EncodeError("a TLV must be a JSON object")
    ext, ftype = obj.get("extension_type"), obj.get("field_type")
    for label, v, hi in (("extension_type", ext, 0xFFFF), ("field_type", ftype, 0xFF)):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
            raise EncodeError(f"TLV {label} must be an integer in 0..{hi}, got {v!r}")
    assert isinstance(ext, int) and isinstance(ftype, int)
    build = _FROM_JSON.get((ext, ftype))
    if build is not None:
        return build(obj)
    value = obj.get("value")
    if not isinstance(value, str):
        raise EncodeError(f"unknown TLV ({ext:#06x}, {ftype:#04x}) needs a hex 'value'")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise EncodeError(f"TLV value is not valid hex: {value[:40]!r}") from None
    if len(raw) > 0xFFFF:
        raise EncodeError("TLV value holds at most 65535 bytes")
    return Tlv(ext, ftype, raw)
