"""Common messages, extension_type 0x0000 (sv2-spec 03-Protocol-Overview.md §3.6).

``SetupConnection`` opens every connection; ``flags`` are protocol-specific with bit 0 = LSB (for
Job Declaration, bit 0 is ``DECLARE_TX_DATA``, i.e. Full-Template mode; SPEC 06 §6.4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from sv2.messages.base import Message, register
from sv2.types import STR0_255, U8, U16, U32

PROTOCOL_MINING = 0
PROTOCOL_JOB_DECLARATION = 1
PROTOCOL_TEMPLATE_DISTRIBUTION = 2

# SetupConnection.flags for protocol = Job Declaration (§6.4.1).
JD_FLAG_DECLARE_TX_DATA = 1 << 0


@register(0x0000, 0x00, "SetupConnection")
@dataclass(frozen=True)
class SetupConnection(Message):
    """sv2-spec §3.6.1. ``endpoint_host`` is STR0_255 (the spec's "STRO_255" is a typo)."""

    protocol: Annotated[int, U8]
    min_version: Annotated[int, U16]
    max_version: Annotated[int, U16]
    flags: Annotated[int, U32]
    endpoint_host: Annotated[str, STR0_255]
    endpoint_port: Annotated[int, U16]
    vendor: Annotated[str, STR0_255]
    hardware_version: Annotated[str, STR0_255]
    firmware: Annotated[str, STR0_255]
    device_id: Annotated[str, STR0_255]


@register(0x0000, 0x01, "SetupConnection.Success")
@dataclass(frozen=True)
class SetupConnectionSuccess(Message):
    """sv2-spec §3.6.2."""

    used_version: Annotated[int, U16]
    flags: Annotated[int, U32]


@register(0x0000, 0x02, "SetupConnection.Error")
@dataclass(frozen=True)
class SetupConnectionError(Message):
    """sv2-spec §3.6.3. ``flags`` lists every unsupported flag; 0 if the error is not about
    flags."""

    flags: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@register(0x0000, 0x03, "ChannelEndpointChanged", channel_msg=True)
@dataclass(frozen=True)
class ChannelEndpointChanged(Message):
    """sv2-spec §3.6.4. A channel message: resets negotiated extension state (§3.4)."""

    channel_id: Annotated[int, U32]


@register(0x0000, 0x04, "Reconnect")
@dataclass(frozen=True)
class Reconnect(Message):
    """sv2-spec §3.6.5 (moved from 0x25 to 0x04 in PR #72)."""

    new_host: Annotated[str, STR0_255]
    new_port: Annotated[int, U16]
