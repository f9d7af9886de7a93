"""A sans-I/O SV2 connection (h11 style) for both roles: Noise NX handshake, encrypted
transport, frames and messages.

It never touches a socket. The application feeds it received bytes and writes out the bytes it
returns::

    server = Sv2Connection.server(identity)          # NoiseResponder underneath
    client = Sv2Connection.client(authority_pubkey)  # NoiseInitiator underneath
    wire.send(client.initiate())                     # act 1 (64 bytes)
    for ev in server.receive_data(wire.recv()):      # -> [HandshakeComplete(reply=act 2)]
        ...
    wire.send(client.send(msg))                      # encrypted frame(s)
    for item in server.receive_data(wire.recv()):    # -> [Message | event, ...]

What ``receive_data`` returns, in order:

- :class:`HandshakeComplete` once the Noise handshake is done on this side (the server's
  ``reply`` is act 2 and must be sent; the client's is empty);
- a decoded :class:`~sv2.messages.base.Message` per frame;
- :class:`UnknownMessage` for a frame of an unregistered (extension_type, msg_type): sv2-spec
  §3.4 says a non-channel message of an unknown extension is discarded, so it is reported, not
  raised;
- :class:`MalformedMessage` for a registered message whose payload does not decode (the frame
  boundary is intact, so the stream survives; whether to hang up is the application's call).

Errors that end the connection (sv2-spec §4.5: a failed decryption terminates the session) are
raised as :class:`ConnectionFailed` subclasses and leave the object in state ``CLOSED``; every
later call raises :class:`ConnectionClosedError`.

Limits: ``max_frame_size`` bounds the plaintext payload of every frame in both directions (it
is checked on the decrypted header before any payload is buffered), except the message types
in ``frame_limits``, which have their own ceiling in both directions: the messages that carry a
block's worth of transactions (:data:`JD_FRAME_LIMITS`: ProvideMissingTransactions.Success;
:data:`TDP_FRAME_LIMITS`: RequestTransactionData.Success), up to :data:`BLOCK_TXS_FRAME_SIZE`.
``max_buffered`` bounds the bytes held between calls (handshake bytes, partial ciphertext
chunks and the partial frame); a frame whose announced length passed its type's ceiling may be
buffered whole even when that is more.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from types import MappingProxyType

from payouts.errors import PayoutsError
from payouts.tx.consensus import MAX_BLOCK_SERIALIZED_SIZE, MAX_BLOCK_TXS
from sv2.errors import DecodeError, Sv2Error, UnknownMessageError
from sv2.framing import HEADER_SIZE, MAX_PAYLOAD, Frame, FrameHeader
from sv2.messages.base import Message, decode_message
from sv2.messages.job_declaration import ProvideMissingTransactionsSuccess
from sv2.messages.mining import SubmitSharesExtended
from sv2.messages.template_distribution import RequestTransactionDataSuccess
from sv2.noise import (
    ACT1_SIZE,
    ACT2_SIZE,
    Clock,
    NoiseInitiator,
    NoiseResponder,
    Rng,
    ServerIdentity,
)
from sv2.noise_certificate import TIME_LEEWAY_S
from sv2.noise_errors import NoiseError
from sv2.noise_transport import MAX_CT_CHUNK, FrameLimits, Transport, check_frame_limits

DEFAULT_MAX_FRAME_SIZE = 1 << 20
"""1 MiB for every message but those in ``frame_limits``: a DeclareMiningJob with 16,666
wtxids and two 64 KiB coinbase halves is ~664 kB; nothing else a JD or TDP peer sends comes
near it."""
DEFAULT_MAX_BUFFERED = 4 << 20

BLOCK_TXS_FRAME_SIZE = (
    MAX_BLOCK_SERIALIZED_SIZE  # every transaction of the largest block, serialized
    + 3 * MAX_BLOCK_TXS  # the B0_16M length prefix of each (SEQ0_64K[B0_16M])
    + 2  # the SEQ0_64K count
    + 8  # RequestTransactionData.Success.template_id (U64; PMT.Success has a U32 request_id)
    + 2
    + 0xFFFF  # RequestTransactionData.Success.excess_data (B0_64K)
)
"""4,115,545 bytes: the largest payload of a message carrying a whole block's transactions
(a mainnet-size RequestTransactionData.Success or ProvideMissingTransactions.Success is
~1.5-2 MB; a witness-heavy block approaches 4 MB). Still a quarter of the U24 maximum, so a
peer cannot make us hold 16 MiB for one frame."""

JD_FRAME_LIMITS: FrameLimits = MappingProxyType(
    {
        (
            ProvideMissingTransactionsSuccess.EXTENSION_TYPE,
            ProvideMissingTransactionsSuccess.MSG_TYPE,
        ): BLOCK_TXS_FRAME_SIZE
    }
)
"""Job Declaration: ProvideMissingTransactions.Success (JDC -> JDS) may carry every
transaction of the declared block (sv2-spec §6.4.7)."""

TDP_FRAME_LIMITS: FrameLimits = MappingProxyType(
    {
        (
            RequestTransactionDataSuccess.EXTENSION_TYPE,
            RequestTransactionDataSuccess.MSG_TYPE,
        ): BLOCK_TXS_FRAME_SIZE
    }
)
"""Template Distribution: RequestTransactionData.Success (TP -> client) carries every
transaction of the template (sv2-spec §7.5)."""

NO_FRAME_LIMITS: FrameLimits = MappingProxyType({})


class Role(enum.Enum):
    INITIATOR = "initiator"  # client (JDC), sends act 1
    RESPONDER = "responder"  # server (JDS), answers with act 2


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


# -- errors -----------------------------------------------------------------------------------


class ConnectionFailed(PayoutsError):
    """The connection cannot continue; ``code`` says why."""

    code = "sv2-connection-failed"


class HandshakeFailed(ConnectionFailed):
    """The Noise handshake failed (bad act, bad certificate, wrong size)."""

    code = "sv2-handshake-failed"


class TransportFailed(ConnectionFailed):
    """A ciphertext failed authentication (tampered, replayed, reordered) or the peer announced
    a frame above ``max_frame_size``."""

    code = "sv2-transport-failed"


class BufferLimitExceeded(ConnectionFailed):
    """The peer made us hold more than ``max_buffered`` bytes."""

    code = "sv2-buffer-limit"


class ProtocolViolation(ConnectionFailed):
    """A call out of order for this role/state (e.g. ``send`` before the handshake)."""

    code = "sv2-protocol-violation"


class ConnectionClosedError(ConnectionFailed):
    """The connection already failed or was closed."""

    code = "sv2-connection-closed"


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The handshake finished on this side. ``reply`` must be sent to the peer (act 2 for the
    server; empty for the client). ``handshake_hash`` is Noise's final ``h``."""

    reply: bytes
    handshake_hash: bytes


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A frame whose (extension_type, msg_type) has no registered message."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """A frame of a known message type whose payload does not decode."""

    frame: Frame
    error: DecodeError


Event = HandshakeComplete | UnknownMessage | MalformedMessage
Received = Message | Event



_SUBMIT_EXTENDED = SubmitSharesExtended.MSG_TYPE


def decode_received(raw: bytes) -> Received:
    """One whole plaintext frame, as the transport delimits it (6-byte header, then exactly
    ``msg_length`` bytes), to what :meth:`Sv2Connection.receive_data` returns for it.

    ``SubmitSharesExtended`` (extension 0, either channel bit, sv2-spec §3.2 and §5.3.12) --
    what a pool receives tens of thousands of times a second -- goes straight to its decoder:
    no header object, no registry lookup (its ``check_frame`` refuses nothing). If that
    decoder refuses the payload, the general path below decodes it again and names the frame
    in the :class:`MalformedMessage`, so the outcome is the same either way."""
    if raw[2] == _SUBMIT_EXTENDED and raw[0] == 0 and not raw[1] & 0x7F:
        try:
            return SubmitSharesExtended.decode(raw[HEADER_SIZE:])
        except DecodeError:
            pass
    header = FrameHeader.decode(raw[:HEADER_SIZE])
    frame = Frame(header.extension_type, header.msg_type, raw[HEADER_SIZE:], header.channel_msg)
    try:
        return decode_message(frame)
    except UnknownMessageError:
        return UnknownMessage(frame)
    except DecodeError as exc:
        return MalformedMessage(frame, exc)


class Sv2Connection:
    """One SV2 connection, either role. Not thread-safe; one instance per connection."""

    def __init__(
        self,
        role: Role,
        *,
        responder: NoiseResponder | None = None,
        initiator: NoiseInitiator | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        frame_limits: FrameLimits = NO_FRAME_LIMITS,
    ) -> None:
        if not 0 <= max_frame_size <= MAX_PAYLOAD:
            raise ValueError(f"max_frame_size must be in 0..{MAX_PAYLOAD}")
        check_frame_limits(frame_limits)
        if max_buffered < ACT2_SIZE:
            raise ValueError(f"max_buffered must be at least {ACT2_SIZE} bytes")
        if (role is Role.RESPONDER) != (responder is not None) or (role is Role.INITIATOR) != (
            initiator is not None
        ):
            raise ValueError("a responder needs a NoiseResponder, an initiator a NoiseInitiator")
        self.role = role
        self.state = State.HANDSHAKE
        self.max_frame_size = max_frame_size
        self.max_buffered = max_buffered
        self.frame_limits = frame_limits
        self._responder = responder
        self._initiator = initiator
        self._handshake_buf = bytearray()
        self._sent_act1 = False
        self._transport: Transport | None = None
        self.bytes_received = 0
        self.frames_received = 0

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def server(
        cls,
        identity: ServerIdentity,
        *,
        rng: Rng = os.urandom,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        frame_limits: FrameLimits = NO_FRAME_LIMITS,
    ) -> Sv2Connection:
        """A responder presenting ``identity`` (static key + certificate)."""
        responder = NoiseResponder(identity, rng=rng, max_frame_size=max_frame_size)
        return cls(
            Role.RESPONDER,
            responder=responder,
            max_frame_size=max_frame_size,
            max_buffered=max_buffered,
            frame_limits=frame_limits,
        )

    @classmethod
    def client(
        cls,
        authority_pubkey: bytes | None,
        *,
        now: int | Clock = time.time,
        rng: Rng = os.urandom,
        leeway: int = TIME_LEEWAY_S,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        frame_limits: FrameLimits = NO_FRAME_LIMITS,
    ) -> Sv2Connection:
        """An initiator that authenticates the server against ``authority_pubkey`` (32-byte
        x-only; ``None`` accepts any server: encryption without authentication)."""
        initiator = NoiseInitiator(
            authority_pubkey, now=now, rng=rng, leeway=leeway, max_frame_size=max_frame_size
        )
        return cls(
            Role.INITIATOR,
            initiator=initiator,
            max_frame_size=max_frame_size,
            max_buffered=max_buffered,
            frame_limits=frame_limits,
        )

    # -- state --------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes received and held, not yet returned as part of an event."""
        if self._transport is not None:
            return self._transport.buffered + self._partial_frame_bytes()
        return len(self._handshake_buf)

    def _partial_frame_bytes(self) -> int:
        t = self._transport
        # Transport keeps the decrypted chunks of a frame in progress in ``_parts``; count them
        # so a peer trickling a huge frame is bounded by max_buffered too.
        parts = getattr(t, "_parts", None)
        return sum(len(p) for p in parts) if parts else 0

    @property
    def handshake_hash(self) -> bytes | None:
        return self._transport.handshake_hash if self._transport is not None else None

    def _fail(self, exc: ConnectionFailed) -> ConnectionFailed:
        self.close()
        return exc

    def _check_open_for_io(self) -> None:
        if self.state is State.CLOSED:
            raise ConnectionClosedError("connection closed")

    def close(self) -> None:
        """Refuse further use; drop buffers (idempotent)."""
        self.state = State.CLOSED
        self._handshake_buf.clear()
        if self._transport is not None:
            self._transport.close()

    # -- handshake ----------------------------------------------------------------------------

    def initiate(self) -> bytes:
        """Client only: act 1 (64 bytes), to be sent first."""
        self._check_open_for_io()
        if self._initiator is None or self._sent_act1:
            raise ProtocolViolation("initiate() is for a client, once")
        self._sent_act1 = True
        try:
            return self._initiator.act1()
        except NoiseError as exc:
            raise self._fail(HandshakeFailed(str(exc))) from exc

    def _handshake(self, data: bytes) -> tuple[list[Received], bytes]:
        """Consume handshake bytes; return events and leftover bytes for the transport."""
        self._handshake_buf += data
        need = ACT1_SIZE if self.role is Role.RESPONDER else ACT2_SIZE
        if len(self._handshake_buf) < need:
            return [], b""
        msg = bytes(self._handshake_buf[:need])
        rest = bytes(self._handshake_buf[need:])
        self._handshake_buf.clear()
        try:
            if self._responder is not None:
                reply = self._responder.read_act1(msg)
                self._transport = self._responder.transport
            else:
                assert self._initiator is not None
                if not self._sent_act1:
                    raise ProtocolViolation("act 2 received before act 1 was sent")
                reply = b""
                self._transport = self._initiator.read_act2(msg)
        except NoiseError as exc:
            raise self._fail(HandshakeFailed(f"{exc.code}: {exc.message}")) from exc
        except ValueError as exc:  # e.g. an invalid EllSwift encoding from a library
            raise self._fail(HandshakeFailed(str(exc))) from exc
        self._transport.frame_limits = self.frame_limits
        self._responder = None  # the handshake objects hold nothing we need any more
        self._initiator = None
        self.state = State.OPEN
        return [HandshakeComplete(reply, self._transport.handshake_hash)], rest

    # -- receive ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Received]:
        """Feed received bytes; return events and messages they complete, in order.

        Raises a :class:`ConnectionFailed` subclass (and closes) on a handshake failure, a
        transport authentication failure, an oversized frame or a buffer overrun.
        """
        self._check_open_for_io()
        self.bytes_received += len(data)
        out: list[Received] = []
        if self.state is State.HANDSHAKE:
            if self.role is Role.INITIATOR and not self._sent_act1:
                raise self._fail(ProtocolViolation("data received before act 1 was sent"))
            if len(self._handshake_buf) + len(data) > self.max_buffered:
                raise self._fail(BufferLimitExceeded("handshake bytes exceed max_buffered"))
            out, data = self._handshake(data)
            if not data:
                return out
        transport = self._transport
        assert transport is not None
        if self.buffered + len(data) > self._buffer_limit(transport) + 2 * MAX_CT_CHUNK:
            # Allow one call's worth of chunks on top of the limit: the transport consumes
            # whole chunks as they complete, so what stays buffered is checked below.
            raise self._fail(BufferLimitExceeded(f"more than {self.max_buffered} bytes buffered"))
        try:
            plain_frames = transport.feed(data)
        except NoiseError as exc:
            raise self._fail(TransportFailed(f"{exc.code}: {exc.message}")) from exc
        if self.buffered > self._buffer_limit(transport):
            raise self._fail(BufferLimitExceeded(f"more than {self.max_buffered} bytes buffered"))
        for raw in plain_frames:
            out.append(self._decode(raw))
        return out

    def _buffer_limit(self, transport: Transport) -> int:
        """``max_buffered``, or more while a frame of a type listed in ``frame_limits`` (a
        block's transactions) is being received: that frame plus one chunk in flight."""
        return max(self.max_buffered, HEADER_SIZE + transport.receiving_listed + MAX_CT_CHUNK)

    def _decode(self, raw: bytes) -> Received:
        self.frames_received += 1
        return decode_received(raw)

    # -- send ---------------------------------------------------------------------------------

    def send(self, msg: Message) -> bytes:
        """Encode and encrypt ``msg``; return the bytes to write. Raises
        :class:`~sv2.errors.EncodeError` for an unencodable message (nothing is consumed, the
        connection stays usable) or :class:`ProtocolViolation` before the handshake."""
        self._check_open_for_io()
        if self.state is not State.OPEN or self._transport is None:
            raise ProtocolViolation("send() before the handshake completed")
        frame = msg.encode_frame()  # EncodeError propagates: caller's bug, connection intact
        limit = self._transport.frame_limit(msg.EXTENSION_TYPE, msg.MSG_TYPE)
        if len(frame) - HEADER_SIZE > limit:
            raise Sv2Error(
                f"{msg.NAME} payload of {len(frame) - HEADER_SIZE} bytes exceeds max_frame_size "
                f"{limit} for it",
                code="sv2-frame-too-large",
            )
        try:
            return self._transport.encrypt_frame(frame)
        except NoiseError as exc:
            raise self._fail(TransportFailed(f"{exc.code}: {exc.message}")) from exc


__all__ = [
    "BLOCK_TXS_FRAME_SIZE",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_FRAME_SIZE",
    "JD_FRAME_LIMITS",
    "NO_FRAME_LIMITS",
    "TDP_FRAME_LIMITS",
    "BufferLimitExceeded",
    "ConnectionClosedError",
    "ConnectionFailed",
    "Event",
    "HandshakeComplete",
    "HandshakeFailed",
    "MalformedMessage",
    "ProtocolViolation",
    "Received",
    "Role",
    "State",
    "Sv2Connection",
    "TransportFailed",
    "UnknownMessage",
    "decode_received",
]
