"""sv2.connection: the sans-I/O connection object, both roles, without sockets."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sv2.connection import (
    BLOCK_TXS_FRAME_SIZE,
    DEFAULT_MAX_FRAME_SIZE,
    JD_FRAME_LIMITS,
    NO_FRAME_LIMITS,
    BufferLimitExceeded,
    ConnectionClosedError,
    HandshakeComplete,
    HandshakeFailed,
    MalformedMessage,
    ProtocolViolation,
    State,
    Sv2Connection,
    TransportFailed,
    UnknownMessage,
)
from sv2.errors import EncodeError, Sv2Error
from sv2.framing import MAX_PAYLOAD, Frame
from sv2.jds import JdsLimits
from sv2.listener import ListenerLimits
from sv2.messages import (
    AllocateMiningJobToken,
    DeclareMiningJob,
    ProvideMissingTransactionsSuccess,
    SetupConnection,
)
from sv2.messages.template_distribution import RequestTransactionDataSuccess
from sv2.noise_transport import ciphertext_length
from tests.jds.helpers import AUTHORITY_PK, IDENTITY

SETUP = SetupConnection(1, 2, 2, 1, "h", 1, "v", "", "", "")


def pair(**kw: int) -> tuple[Sv2Connection, Sv2Connection]:
    srv = Sv2Connection.server(IDENTITY, **kw)
    cli = Sv2Connection.client(AUTHORITY_PK, **kw)
    act1 = cli.initiate()
    # Byte-at-a-time delivery of act 1: nothing happens until the 64th byte.
    for b in act1[:-1]:
        assert srv.receive_data(bytes([b])) == []
    (ev,) = srv.receive_data(act1[-1:])
    assert isinstance(ev, HandshakeComplete) and len(ev.reply) == 234
    (ev2,) = cli.receive_data(ev.reply)
    assert isinstance(ev2, HandshakeComplete) and ev2.reply == b""
    assert ev.handshake_hash == ev2.handshake_hash
    assert srv.state is cli.state is State.OPEN
    return srv, cli


def test_round_trip_both_directions_any_split() -> None:
    srv, cli = pair()
    data = cli.send(SETUP) + cli.send(AllocateMiningJobToken("u", 1))
    got = []
    for i in range(0, len(data), 7):
        got += srv.receive_data(data[i : i + 7])
    assert got == [SETUP, AllocateMiningJobToken("u", 1)]
    assert cli.receive_data(srv.send(SETUP)) == [SETUP]


def test_unknown_and_malformed_frames_are_events() -> None:
    srv, cli = pair()
    tr = cli._transport
    assert tr is not None
    unknown = tr.encrypt_frame(Frame(0x4ABC, 0x01, b"xyz").encode())
    (ev,) = srv.receive_data(unknown)
    assert isinstance(ev, UnknownMessage) and ev.frame.extension_type == 0x4ABC
    bad = tr.encrypt_frame(Frame(0x0000, 0x50, b"\x05ab").encode())  # truncated STR0_255
    (ev,) = srv.receive_data(bad)
    assert isinstance(ev, MalformedMessage) and ev.error.code == "sv2-truncated"
    # The stream survives both.
    assert srv.receive_data(cli.send(SETUP)) == [SETUP]


def test_tampered_ciphertext_closes() -> None:
    srv, cli = pair()
    data = bytearray(cli.send(SETUP))
    data[3] ^= 1
    with pytest.raises(TransportFailed):
        srv.receive_data(bytes(data))
    assert srv.state is State.CLOSED
    with pytest.raises(ConnectionClosedError):
        srv.receive_data(b"")
    with pytest.raises(ConnectionClosedError):
        srv.send(SETUP)


def test_frame_and_buffer_limits() -> None:
    _srv, cli = pair(max_frame_size=64, max_buffered=4096)
    with pytest.raises(Exception, match="max_frame_size"):
        cli.send(AllocateMiningJobToken("x" * 100, 1))
    assert cli.state is State.OPEN  # the sender's mistake does not kill the connection
    big_cli = Sv2Connection.client(AUTHORITY_PK)
    big_srv = Sv2Connection.server(IDENTITY, max_frame_size=64)
    (ev,) = big_srv.receive_data(big_cli.initiate())
    assert isinstance(ev, HandshakeComplete)
    big_cli.receive_data(ev.reply)
    with pytest.raises(TransportFailed, match="frame-too-large"):
        big_srv.receive_data(big_cli.send(AllocateMiningJobToken("x" * 100, 1)))
    # Buffer limit during the handshake: more than max_buffered before act 1 completes is
    # impossible (act 1 is 64 bytes), so feed a responder a huge blob at once.
    s = Sv2Connection.server(IDENTITY, max_buffered=1024)
    with pytest.raises(BufferLimitExceeded):
        s.receive_data(os.urandom(2048))


def test_misuse() -> None:
    cli = Sv2Connection.client(AUTHORITY_PK)
    with pytest.raises(ProtocolViolation):
        cli.send(SETUP)
    with pytest.raises(ProtocolViolation):
        cli.receive_data(b"x")  # act 2 before act 1
    srv = Sv2Connection.server(IDENTITY)
    with pytest.raises(ProtocolViolation):
        srv.initiate()
    cli = Sv2Connection.client(AUTHORITY_PK)
    cli.initiate()
    with pytest.raises(HandshakeFailed):
        cli.receive_data(os.urandom(234))  # act 2 not from the server
    _s2, c2 = pair()
    with pytest.raises(EncodeError):
        c2.send(SetupConnection(300, 2, 2, 1, "", 0, "", "", "", ""))
    assert c2.state is State.OPEN


def test_wrong_authority_fails_handshake() -> None:
    srv = Sv2Connection.server(IDENTITY)
    cli = Sv2Connection.client(
        bytes.fromhex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    )
    (ev,) = srv.receive_data(cli.initiate())
    assert isinstance(ev, HandshakeComplete)
    with pytest.raises(HandshakeFailed, match="certificate"):
        cli.receive_data(ev.reply)


def _connected(srv_kw: dict[str, Any], cli_kw: dict[str, Any]) -> tuple[Sv2Connection, ...]:
    srv = Sv2Connection.server(IDENTITY, **srv_kw)
    cli = Sv2Connection.client(AUTHORITY_PK, **cli_kw)
    (ev,) = srv.receive_data(cli.initiate())
    assert isinstance(ev, HandshakeComplete)
    cli.receive_data(ev.reply)
    return srv, cli


def _feed(conn: Sv2Connection, data: bytes) -> list[Any]:
    """Deliver ``data`` as the listener reads it: 64 KiB at a time."""
    out: list[Any] = []
    for i in range(0, len(data), 65_536):
        out += conn.receive_data(data[i : i + 65_536])
    return out


BLOCK_TXS = tuple(os.urandom(200_000) for _ in range(20))  # 4,000,000 bytes of transactions
FORGER = {"max_frame_size": MAX_PAYLOAD, "frame_limits": {(0, 0x56): MAX_PAYLOAD}}


def test_a_block_of_missing_transactions_fits_in_one_frame() -> None:
    """ProvideMissingTransactions.Success may carry a whole block (sv2-spec §6.4.7): its own
    ceiling, BLOCK_TXS_FRAME_SIZE, in both directions; Noise splits it into 62 chunks."""
    assert JdsLimits().frame_limits == JD_FRAME_LIMITS
    assert ListenerLimits().frame_limits == NO_FRAME_LIMITS
    srv, cli = _connected({"frame_limits": JD_FRAME_LIMITS}, {"frame_limits": JD_FRAME_LIMITS})
    msg = ProvideMissingTransactionsSuccess(7, BLOCK_TXS)
    assert DEFAULT_MAX_FRAME_SIZE < len(msg.encode()) <= BLOCK_TXS_FRAME_SIZE
    wire = cli.send(msg)
    assert len(wire) == 22 + ciphertext_length(len(msg.encode()))
    assert _feed(srv, wire) == [msg]
    assert srv.buffered == 0 and srv.receive_data(cli.send(SETUP)) == [SETUP]
    # Without the table (the 1 MiB default for every type) the same frame is refused at its
    # header, before any of its payload is held.
    plain, sender = _connected({}, FORGER)
    with pytest.raises(TransportFailed, match=r"frame-too-large.*0x56"):
        plain.receive_data(sender.send(msg)[:65_536])
    assert plain.state is State.CLOSED


def test_other_messages_keep_the_default_limits() -> None:
    """The raised ceiling is per message type: a DeclareMiningJob, or another protocol's
    block-sized message (RequestTransactionData.Success is TDP's, not JD's), above 1 MiB is
    refused at its header; a missing-tx frame above BLOCK_TXS_FRAME_SIZE too, and our own
    sender refuses to build one (the connection stays usable)."""
    jd = {"frame_limits": JD_FRAME_LIMITS}
    big_wtxids = tuple(os.urandom(32) for _ in range(40_000))  # 1.28 MB
    dmj = DeclareMiningJob(1, b"t", 0x20000000, b"p", b"s", big_wtxids, b"")
    rtd = RequestTransactionDataSuccess(1, b"", BLOCK_TXS[:8])  # 1.6 MB
    too_big = ProvideMissingTransactionsSuccess(1, (*BLOCK_TXS, os.urandom(200_000)))
    assert len(too_big.encode()) > BLOCK_TXS_FRAME_SIZE
    forger = {"max_frame_size": MAX_PAYLOAD, "frame_limits": {}}
    for msg, sender_kw in ((dmj, forger), (rtd, forger), (too_big, FORGER)):
        srv, sender = _connected(jd, sender_kw)
        wire = sender.send(msg)
        with pytest.raises(TransportFailed, match="frame-too-large"):
            srv.receive_data(wire[:65_536])
        assert srv.buffered == 0
    _srv, cli = _connected(jd, jd)
    for msg in (dmj, too_big):
        with pytest.raises(Sv2Error) as e:
            cli.send(msg)
        assert e.value.code == "sv2-frame-too-large"
    assert cli.state is State.OPEN and _srv.receive_data(cli.send(SETUP)) == [SETUP]


def test_max_buffered_still_bounds_other_frames() -> None:
    """A block-sized frame may be buffered whole once its header passed its type's ceiling;
    any other frame is still bounded by max_buffered (here 256 KiB)."""
    small = {"max_buffered": 256 << 10, "frame_limits": JD_FRAME_LIMITS}
    srv, cli = _connected(small, {"frame_limits": JD_FRAME_LIMITS})
    msg = ProvideMissingTransactionsSuccess(7, BLOCK_TXS)
    assert _feed(srv, cli.send(msg)) == [msg]
    dmj = DeclareMiningJob(1, b"t", 0x20000000, b"p", b"s", (bytes(32),) * 18_000, b"")
    assert 256 << 10 < len(dmj.encode()) < DEFAULT_MAX_FRAME_SIZE
    with pytest.raises(BufferLimitExceeded):
        _feed(srv, cli.send(dmj))
