"""sv2.connection: the sans-I/O connection object, both roles, without sockets."""

from __future__ import annotations

import os

import pytest

from sv2.connection import (
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
from sv2.errors import EncodeError
from sv2.framing import Frame
from sv2.messages import AllocateMiningJobToken, SetupConnection
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
