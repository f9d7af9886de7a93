"""What the sans-I/O sessions of every SV2 role share, below the roles (sv2-spec
03-Protocol-Overview.md §3.6): the protocol version, ``SetupConnection`` as a client sends it
and as a server checks it, and the two ways a session ends its connection.

A session never touches a socket; it tells its asyncio driver (:mod:`sv2.listener` for the
servers, :mod:`sv2.client` for the clients) what to do:

- it raises :class:`Disconnect` for a peer that broke the protocol: the connection ends at
  once, with the reason logged (what was already queued is still flushed);
- it returns a :class:`Close` among its outputs to end the connection after what came before
  is written (e.g. after ``SetupConnection.Error``): :data:`CLOSE`, without a reason, skips the
  rest of what that read decoded and closes as if the peer had (SRI's JDS); with a reason, the
  driver ends the connection as for :class:`Disconnect`, logging it.

A client session's outputs also say which request a message answers (:class:`Reply`: the
driver resolves whoever waits for it) and that pushed state changed (:data:`STATE_CHANGED`:
the driver wakes whoever waits on it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sv2.messages.base import Message
from sv2.messages.common import SetupConnection, SetupConnectionError

SV2_VERSION = 2
"""The only protocol version there is (sv2-spec §3.6.1): both ``min_version`` and
``max_version`` a client sends, and the ``used_version`` a server answers with."""

# SetupConnection.Error codes (sv2-spec §3.6.3 leaves them to implementations; these are SRI's
# and sv2-tp's strings, so their peers react to ours the same way).
SETUP_UNSUPPORTED_PROTOCOL = "unsupported-protocol"
SETUP_VERSION_MISMATCH = "protocol-version-mismatch"
SETUP_UNSUPPORTED_FLAGS = "unsupported-feature-flags"


class Disconnect(Exception):
    """Raised by a session (or a server's handler) to end this connection; ``reason`` is
    logged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Close:
    """An output of a session: write what came before, then close the connection (see the
    module docstring for ``reason``)."""

    reason: str | None = None


CLOSE = Close()


@dataclass(frozen=True, slots=True)
class Reply:
    """An output of a client session: ``message`` answers the request of this ``kind``
    (``"setup"``, ``"declare"``, ``"txdata"``...) and ``request_id``."""

    kind: str
    request_id: int
    message: Message


@dataclass(frozen=True, slots=True)
class StateChanged:
    """An output of a client session: state the server pushed changed."""


STATE_CHANGED = StateChanged()


def setup_connection(
    protocol: int, flags: int, *, host: str, port: int, vendor: str, device_id: str = ""
) -> SetupConnection:
    """The ``SetupConnection`` a client opens with (sv2-spec §3.6.1): version 2 only, the
    endpoint it connected to, ``device_id`` cut to the field's 255 bytes."""
    return SetupConnection(
        protocol=protocol,
        min_version=SV2_VERSION,
        max_version=SV2_VERSION,
        flags=flags,
        endpoint_host=host,
        endpoint_port=port,
        vendor=vendor,
        hardware_version="",
        firmware="",
        device_id=device_id[:255],
    )


def check_setup(
    msg: SetupConnection, protocol: int, *, supported_flags: int = 0
) -> SetupConnectionError | None:
    """A server's first checks of ``SetupConnection`` (sv2-spec §3.6.1-§3.6.3), in order:
    the protocol it serves, version 2 within the client's range, no flag bit outside
    ``supported_flags``. Returns the ``.Error`` to answer with (``flags`` lists the
    unsupported flags when they are the reason, else 0), or ``None``."""
    if msg.protocol != protocol:
        return SetupConnectionError(flags=0, error_code=SETUP_UNSUPPORTED_PROTOCOL)
    if not msg.min_version <= SV2_VERSION <= msg.max_version:
        return SetupConnectionError(flags=0, error_code=SETUP_VERSION_MISMATCH)
    unsupported = msg.flags & ~supported_flags
    if unsupported:
        return SetupConnectionError(flags=unsupported, error_code=SETUP_UNSUPPORTED_FLAGS)
    return None


__all__ = [
    "CLOSE",
    "SETUP_UNSUPPORTED_FLAGS",
    "SETUP_UNSUPPORTED_PROTOCOL",
    "SETUP_VERSION_MISMATCH",
    "STATE_CHANGED",
    "SV2_VERSION",
    "Close",
    "Disconnect",
    "Reply",
    "StateChanged",
    "check_setup",
    "setup_connection",
]
