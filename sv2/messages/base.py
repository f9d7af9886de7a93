"""Declarative SV2 message dataclasses and the message registry.

A message is a frozen dataclass whose fields are annotated with their SV2 data type, in wire
order, exactly as the spec tables list them::

    @register(0x0000, 0x58, "DeclareMiningJob.Success")
    @dataclass(frozen=True)
    class DeclareMiningJobSuccess(Message):
        request_id: Annotated[int, U32]
        new_mining_job_token: Annotated[bytes, B0_255]

Every message also has a keyword-only ``tlvs`` tuple: TLV fields appended after the body
(sv2-spec 03-Protocol-Overview.md §3.4.3). Appending TLVs never changes a message's
``extension_type`` (§3.4.1). The registry is keyed by (extension_type without the channel bit,
msg_type), as SRI looks messages up.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from sv2.errors import DecodeError, EncodeError, TrailingBytesError, UnknownMessageError
from sv2.framing import Frame
from sv2.tlv import TlvItem, decode_tlvs, encode_tlvs, tlv_from_json, tlv_to_json
from sv2.types import Reader, Sv2Type

M = TypeVar("M", bound="Message")

REGISTRY: dict[tuple[int, int], type[Message]] = {}
"""(extension_type, msg_type) -> message class."""

BY_NAME: dict[str, type[Message]] = {}
"""Spec name (``"DeclareMiningJob.Error"``) -> message class."""


@dataclass(frozen=True)
class Message:
    """Base of all SV2 messages. Subclasses are created with :func:`register`."""

    EXTENSION_TYPE: ClassVar[int]
    MSG_TYPE: ClassVar[int]
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str]
    FIELDS: ClassVar[tuple[tuple[str, Sv2Type[Any]], ...]] = ()

    tlvs: tuple[TlvItem, ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        # Canonicalise equivalent inputs (lists -> tuples, bytearray -> bytes) so that a
        # constructed message compares equal to its decoded self.
        for name, t in self.FIELDS:
            object.__setattr__(self, name, t.normalize(getattr(self, name)))
        if not isinstance(self.tlvs, tuple):
            object.__setattr__(self, "tlvs", tuple(self.tlvs))

    # -- bytes -------------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The frame payload: the body fields in wire order, then the TLVs."""
        out = bytearray()
        for name, t in self.FIELDS:
            try:
                t.write(getattr(self, name), out)
            except EncodeError as exc:
                raise EncodeError(f"{self.NAME}.{name}: {exc.message}") from None
        out += encode_tlvs(self.tlvs)
        return bytes(out)

    @classmethod
    def decode(cls: type[M], payload: bytes, *, allow_tlvs: bool = True) -> M:
        """Decode a frame payload. Bytes after the body must form a TLV list (if
        ``allow_tlvs``), otherwise they are :class:`~sv2.errors.TrailingBytesError`."""
        payload = bytes(payload)
        r = Reader(payload)
        values: dict[str, Any] = {}
        for name, t in cls.FIELDS:
            try:
                values[name] = t.read(r)
            except DecodeError as exc:
                raise type(exc)(f"{cls.NAME}.{name}: {exc.reason}", offset=exc.offset) from None
        tlvs: tuple[TlvItem, ...] = ()
        if r.remaining():
            if not allow_tlvs:
                raise TrailingBytesError(
                    f"{r.remaining()} bytes after the {cls.NAME} body", offset=r.pos
                )
            tlvs = decode_tlvs(payload, r.pos)
        return cls(**values, tlvs=tlvs)

    @classmethod
    def check_frame(cls, frame: Frame) -> None:
        """Refuse a frame whose header this message's spec forbids, before its payload is
        decoded. The default refuses nothing: the core messages keep the PR #196 leniency on
        ``channel_msg`` (:func:`decode_message`); an extension may be strict about its own."""

    def to_frame(self, *, channel_msg: bool | None = None) -> Frame:
        """Wrap in a frame. ``channel_msg`` overrides the spec's bit (only to reproduce peers
        that still send pre-PR #196 bits)."""
        bit = self.CHANNEL_MSG if channel_msg is None else channel_msg
        return Frame(self.EXTENSION_TYPE, self.MSG_TYPE, self.encode(), bit)

    def encode_frame(self, *, channel_msg: bool | None = None) -> bytes:
        """Header plus payload, ready for the (Noise) transport."""
        return self.to_frame(channel_msg=channel_msg).encode()

    # -- JSON --------------------------------------------------------------------------------

    def fields_to_json(self) -> dict[str, Any]:
        return {name: t.to_json(getattr(self, name)) for name, t in self.FIELDS}

    @classmethod
    def from_json_fields(cls: type[M], fields: Any, tlvs: Any = ()) -> M:
        """Build from a ``{field: json value}`` object; every field is required, no extras."""
        if not isinstance(fields, dict):
            raise EncodeError(f"{cls.NAME}: 'fields' must be a JSON object")
        names = [n for n, _ in cls.FIELDS]
        missing = [n for n in names if n not in fields]
        extra = [k for k in fields if k not in names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"unknown {', '.join(map(str, extra))}")
            raise EncodeError(f"{cls.NAME}: {'; '.join(parts)} (fields: {', '.join(names)})")
        values: dict[str, Any] = {}
        for name, t in cls.FIELDS:
            try:
                values[name] = t.from_json(fields[name])
            except EncodeError as exc:
                raise EncodeError(f"{cls.NAME}.{name}: {exc.message}") from None
        if not isinstance(tlvs, list | tuple):
            raise EncodeError(f"{cls.NAME}: 'tlvs' must be a JSON array")
        return cls(**values, tlvs=tuple(tlv_from_json(t) for t in tlvs))

    def to_json(self, *, channel_msg: bool | None = None) -> dict[str, Any]:
        """The CLI's JSON form of a frame carrying this message."""
        return {
            "message": self.NAME,
            "extension_type": self.EXTENSION_TYPE,
            "msg_type": self.MSG_TYPE,
            "channel_msg": self.CHANNEL_MSG if channel_msg is None else channel_msg,
            "fields": self.fields_to_json(),
            "tlvs": [tlv_to_json(t) for t in self.tlvs],
        }


def register(
    extension_type: int, msg_type: int, name: str, *, channel_msg: bool = False
) -> Callable[[type[M]], type[M]]:
    """Class decorator: read the ``Annotated[..., Sv2Type]`` fields and register the message."""

    def deco(cls: type[M]) -> type[M]:
        key = (extension_type, msg_type)
        if key in REGISTRY:
            raise RuntimeError(f"{name}: {key} already registered to {REGISTRY[key].NAME}")
        hints = typing.get_type_hints(cls, include_extras=True)
        fields: list[tuple[str, Sv2Type[Any]]] = []
        for f in dataclasses.fields(cls):
            if f.name == "tlvs":
                continue
            meta = getattr(hints[f.name], "__metadata__", ())
            types = [m for m in meta if isinstance(m, Sv2Type)]
            if len(types) != 1:
                raise TypeError(f"{name}.{f.name} needs exactly one Sv2Type annotation")
            fields.append((f.name, types[0]))
        cls.EXTENSION_TYPE = extension_type
        cls.MSG_TYPE = msg_type
        cls.CHANNEL_MSG = channel_msg
        cls.NAME = name
        cls.FIELDS = tuple(fields)
        REGISTRY[key] = cls
        BY_NAME[name] = cls
        return cls

    return deco


def message_class(extension_type: int, msg_type: int) -> type[Message]:
    """Look up a message class; ``extension_type``'s channel bit is ignored (§3.2)."""
    cls = REGISTRY.get((extension_type & 0x7FFF, msg_type))
    if cls is None:
        raise UnknownMessageError(
            f"no message registered for extension_type {extension_type & 0x7FFF:#06x}, "
            f"msg_type {msg_type:#04x}"
        )
    return cls


def decode_message(frame: Frame, *, allow_tlvs: bool = True) -> Message:
    """Decode a frame's payload into its registered message.

    The frame's ``channel_msg`` bit is not checked against the spec: PR #196 (2026-05) fixed
    several bits and older peers still send the old ones, so we are lenient on receive, except
    for a message whose :meth:`Message.check_frame` refuses it (extension 0x4003's).
    """
    cls = message_class(frame.extension_type, frame.msg_type)
    cls.check_frame(frame)
    return cls.decode(frame.payload, allow_tlvs=allow_tlvs)
