"""Encrypted SV2 frame transport (sv2-spec §4.6; SRI codec-sv2 encoder/decoder)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sv2.noise import (
    DecryptError,
    FrameTooLargeError,
    NoiseError,
    NonceExhaustedError,
    Transport,
    TransportClosedError,
    ciphertext_length,
)
from sv2.noise_transport import ENCRYPTED_HEADER_SIZE, MAX_CT_CHUNK, MAX_PT_CHUNK

K1, K2 = bytes(range(32)), bytes(range(32, 64))


def pair(max_frame_size: int = 0xFFFFFF) -> tuple[Transport, Transport]:
    """An initiator/responder transport pair as the handshake split creates it."""
    return (
        Transport(K1, K2, max_frame_size=max_frame_size),
        Transport(K2, K1, max_frame_size=max_frame_size),
    )


def frame(payload: bytes, ext: int = 0, msg_type: int = 0x57) -> bytes:
    return (
        ext.to_bytes(2, "little") + bytes([msg_type]) + len(payload).to_bytes(3, "little") + payload
    )


def spec_pt_len_to_ct_len(pt_len: int) -> int:
    """The C function in sv2-spec §4.6, transcribed."""
    max_ct, mac = 65535, 16
    max_pt = max_ct - mac
    remainder = pt_len % max_pt
    if remainder > 0:
        remainder += mac
    return pt_len // max_pt * max_ct + remainder


@pytest.mark.parametrize("n", [0, 1, 65518, 65519, 65520, 131038, 131039, 200_000, 0xFFFFFF])
def test_ciphertext_length_matches_spec(n: int) -> None:
    assert ciphertext_length(n) == spec_pt_len_to_ct_len(n)
    assert (MAX_PT_CHUNK, MAX_CT_CHUNK, ENCRYPTED_HEADER_SIZE) == (65519, 65535, 22)


@pytest.mark.parametrize("size", [0, 1, 100, 65519, 65520, 200_000])
def test_round_trip_sizes(size: int) -> None:
    a, b = pair()
    f = frame(os.urandom(size))
    wire = a.encrypt_frame(f)
    chunks = -(-size // MAX_PT_CHUNK)
    assert len(wire) == 22 + size + 16 * chunks == 22 + ciphertext_length(size)
    assert a.send_nonce == 1 + chunks
    assert b.feed(wire) == [f]
    assert b.recv_nonce == 1 + chunks and b.buffered == 0


def test_empty_payload_is_header_only() -> None:
    a, b = pair()
    f = frame(b"")
    wire = a.encrypt_frame(f)
    assert len(wire) == 22
    assert b.feed(wire) == [f]


def test_200k_payload_byte_by_byte_pieces() -> None:
    a, b = pair()
    f = frame(os.urandom(200_000), ext=0x8003, msg_type=0)
    wire = a.encrypt_frame(f)
    got: list[bytes] = []
    step = 4099  # odd piece size so that pieces straddle header/chunk boundaries
    for i in range(0, len(wire), step):
        got += b.feed(wire[i : i + step])
    assert got == [f]
    # Single bytes across the header and first chunk boundary.
    small = frame(b"abcdef")
    wire = a.encrypt_frame(small)
    out = [fr for byte in wire for fr in b.feed(bytes([byte]))]
    assert out == [small]


def test_both_directions_and_many_frames_in_one_feed() -> None:
    a, b = pair()
    frames = [frame(os.urandom(n), msg_type=n % 256) for n in (0, 5, 70_000, 0, 3)]
    assert b.feed(b"".join(a.encrypt_frame(f) for f in frames)) == frames
    replies = [frame(b"ok" * n) for n in range(4)]
    assert a.feed(b"".join(b.encrypt_frame(f) for f in replies)) == replies


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=5),
    cuts=st.lists(st.integers(1, 2000), max_size=20),
)
def test_arbitrary_splits(sizes: list[int], cuts: list[int]) -> None:
    a, b = pair()
    frames = [frame(bytes([i]) * n) for i, n in enumerate(sizes)]
    wire = b"".join(a.encrypt_frame(f) for f in frames)
    got: list[bytes] = []
    pos = 0
    for c in cuts:
        got += b.feed(wire[pos : pos + c])
        pos += c
    got += b.feed(wire[pos:])
    assert got == frames


def _flip(data: bytes, i: int) -> bytes:
    out = bytearray(data)
    out[i] ^= 0x04
    return bytes(out)


@pytest.mark.parametrize("where", [0, 5, 21, 22, 65535 + 22, 22 + 65535 + 100, -1])
def test_bit_flip_rejected_and_transport_closed(where: int) -> None:
    a, b = pair()
    wire = a.encrypt_frame(frame(os.urandom(150_000)))
    with pytest.raises(DecryptError):
        b.feed(_flip(wire, where))
    assert b.closed
    with pytest.raises(TransportClosedError):
        b.feed(b"")
    with pytest.raises(TransportClosedError):
        b.encrypt_frame(frame(b"x"))


def test_flipped_length_field_cannot_resize_the_frame() -> None:
    # msg_length sits inside the encrypted header: flipping it breaks the header's tag.
    a, b = pair()
    wire = a.encrypt_frame(frame(b"12345"))
    with pytest.raises(DecryptError, match="header"):
        b.feed(_flip(wire, 3))


def test_replay_rejected() -> None:
    a, b = pair()
    w1 = a.encrypt_frame(frame(b"one"))
    assert b.feed(w1) == [frame(b"one")]
    with pytest.raises(DecryptError):
        b.feed(w1)  # same bytes, but the receiver's nonce has moved on


def test_reorder_rejected() -> None:
    a, b = pair()
    w1, w2 = a.encrypt_frame(frame(b"one")), a.encrypt_frame(frame(b"two"))
    with pytest.raises(DecryptError):
        b.feed(w2 + w1)


def test_dropped_frame_rejected() -> None:
    a, b = pair()
    a.encrypt_frame(frame(b"lost"))
    with pytest.raises(DecryptError):
        b.feed(a.encrypt_frame(frame(b"next")))


def test_reordered_chunks_within_a_frame_rejected() -> None:
    a, b = pair()
    wire = a.encrypt_frame(frame(os.urandom(2 * MAX_PT_CHUNK)))
    head, c1, c2 = wire[:22], wire[22 : 22 + MAX_CT_CHUNK], wire[22 + MAX_CT_CHUNK :]
    with pytest.raises(DecryptError, match="payload chunk"):
        b.feed(head + c2 + c1)


def test_wrong_direction_key_rejected() -> None:
    a, _ = pair()
    with pytest.raises(DecryptError):
        Transport(K1, K2).feed(a.encrypt_frame(frame(b"x")))  # a's own keys: receives with K2


def test_error_carries_frames_decoded_before_it() -> None:
    a, b = pair()
    good = frame(b"good")
    w = a.encrypt_frame(good) + _flip(a.encrypt_frame(frame(b"bad")), 0)
    with pytest.raises(DecryptError) as info:
        b.feed(w)
    assert info.value.frames == [good]
    assert isinstance(info.value, NoiseError) and info.value.code == "noise-decrypt-failed"


def test_max_frame_size_receive_side_fails_on_header() -> None:
    a = Transport(K1, K2)
    b = Transport(K2, K1, max_frame_size=1000)
    assert b.feed(a.encrypt_frame(frame(bytes(1000)))) == [frame(bytes(1000))]
    wire = a.encrypt_frame(frame(bytes(1001)))
    with pytest.raises(FrameTooLargeError):
        b.feed(wire[:22])  # rejected before any payload is buffered
    assert b.closed


def test_max_frame_size_send_side_does_not_close() -> None:
    a, _ = pair(max_frame_size=10)
    with pytest.raises(FrameTooLargeError):
        a.encrypt_frame(frame(bytes(11)))
    assert not a.closed and a.send_nonce == 0
    a.encrypt_frame(frame(bytes(10)))


def test_malformed_plaintext_frame_is_caller_error() -> None:
    a, _ = pair()
    with pytest.raises(ValueError, match="header"):
        a.encrypt_frame(b"\x00" * 5)
    with pytest.raises(ValueError, match="msg_length"):
        a.encrypt_frame(frame(b"abc") + b"extra")
    assert a.send_nonce == 0 and not a.closed


def test_nonce_exhaustion() -> None:
    a, _ = pair()
    a._send.n = 2**64 - 3  # white-box: a session would take centuries to get here
    a.encrypt_frame(frame(b""))  # uses 2**64 - 3
    with pytest.raises(NonceExhaustedError):
        a.encrypt_frame(frame(b"x"))  # would need 2**64 - 2 and 2**64 - 1 (reserved)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        Transport(bytes(31), K2)
    with pytest.raises(ValueError):
        Transport(K1, K2, max_frame_size=0x1000000)


def test_close_is_final() -> None:
    a, b = pair()
    b.close()
    with pytest.raises(TransportClosedError):
        b.feed(a.encrypt_frame(frame(b"x")))
