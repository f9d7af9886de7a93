"""Extension negotiation, extension_type 0x0001, and the 0x0002 ``user_identity`` TLV.

Sources: sv2-spec ``extensions/0x0001-extensions-negotiation.md``; SRI
``sv2/extensions-sv2/src/extensions_negotiation.rs``.

The client sends ``RequestExtensions`` right after ``SetupConnection.Success`` and MUST NOT use an
extension before the server confirms it. All three messages have channel_msg = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from sv2.errors import EncodeError, InvalidTlvError
from sv2.messages.base import Message, register
from sv2.tlv import Tlv, register_tlv
from sv2.types import SEQ0_64K, U16

EXT_NEGOTIATION = 0x0001
EXT_WORKER_HASHRATE_TRACKING = 0x0002


@register(EXT_NEGOTIATION, 0x00, "RequestExtensions")
@dataclass(frozen=True)
class RequestExtensions(Message):
    """0x0001-extensions-negotiation.md: the extensions the client wants to use."""

    request_id: Annotated[int, U16]
    requested_extensions: Annotated[tuple[int, ...], SEQ0_64K(U16)]


@register(EXT_NEGOTIATION, 0x01, "RequestExtensions.Success")
@dataclass(frozen=True)
class RequestExtensionsSuccess(Message):
    """The subset of the requested extensions the server supports."""

    request_id: Annotated[int, U16]
    supported_extensions: Annotated[tuple[int, ...], SEQ0_64K(U16)]


@register(EXT_NEGOTIATION, 0x02, "RequestExtensions.Error")
@dataclass(frozen=True)
class RequestExtensionsError(Message):
    """Unsupported requested extensions, and the ones the server requires but were not asked
    for (a client that does not retry with them MUST be disconnected)."""

    request_id: Annotated[int, U16]
    unsupported_extensions: Annotated[tuple[int, ...], SEQ0_64K(U16)]
    required_extensions: Annotated[tuple[int, ...], SEQ0_64K(U16)]


@dataclass(frozen=True, slots=True)
class UserIdentityTlv:
    """TLV (0x0002, 0x01) ``user_identity`` on SubmitSharesExtended: at most 32 bytes of UTF-8,
    not padded (extensions/0x0002-worker-specific-hashrate-tracking.md)."""

    EXTENSION_TYPE: ClassVar[int] = EXT_WORKER_HASHRATE_TRACKING
    FIELD_TYPE: ClassVar[int] = 0x01
    NAME: ClassVar[str] = "user_identity"

    user_identity: str

    def to_tlv(self) -> Tlv:
        try:
            raw = self.user_identity.encode("utf-8")
        except UnicodeEncodeError:
            raise EncodeError("user_identity must be encodable as UTF-8") from None
        if len(raw) > 32:
            raise EncodeError(f"user_identity holds at most 32 bytes, got {len(raw)}")
        return Tlv(self.EXTENSION_TYPE, self.FIELD_TYPE, raw)

    def to_json(self) -> dict[str, Any]:
        return {"user_identity": self.user_identity}

    @classmethod
    def parse(cls, value: bytes) -> UserIdentityTlv:
        if len(value) > 32:
            raise InvalidTlvError(f"user_identity TLV is {len(value)} bytes, at most 32")
        try:
            return cls(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidTlvError("user_identity TLV is not UTF-8") from None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> UserIdentityTlv:
        v = obj.get("user_identity")
        if not isinstance(v, str):
            raise EncodeError("user_identity TLV needs a string 'user_identity'")
        tlv = cls(v)
        tlv.to_tlv()  # validates length
        return tlv


register_tlv(EXT_WORKER_HASHRATE_TRACKING, 0x01, UserIdentityTlv.parse, UserIdentityTlv.from_json)
