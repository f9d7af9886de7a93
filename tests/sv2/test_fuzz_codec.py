"""Decoder robustness (bounded): mutated and truncated valid frames and random bytes produce a
value or a typed :class:`sv2.errors.DecodeError`, never an untyped exception.

The unbounded version is ``python -m benchmarks.fuzz_codec --frames 1000000``.
"""

from __future__ import annotations

import contextlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz_codec import mutate, run_decoders
from sv2.errors import DecodeError
from sv2.framing import FrameDecoder
from sv2.messages import REGISTRY, Message, decode_frame
from tests.sv2.test_codec_roundtrip import any_message

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_all(data: bytes) -> None:
    """All decoders; only DecodeError may escape from any of them (then we swallow it)."""
    try:
        _, msg = decode_frame(data)
        assert type(msg).decode(msg.encode()) == msg
    except DecodeError:
        pass
    if len(data) >= 3:
        cls = REGISTRY.get(((data[0] | data[1] << 8) & 0x7FFF, data[2]))
        if cls is not None:
            for allow in (True, False):
                with contextlib.suppress(DecodeError):
                    cls.decode(data[6:], allow_tlvs=allow)
    dec = FrameDecoder(max_frame_size=1024)
    try:
        for i in range(0, len(data), 7):
            dec.feed(data[i : i + 7])
        dec.close()
    except DecodeError:
        pass


@FUZZ
@given(st.binary(max_size=128))
def test_random_bytes(data: bytes) -> None:
    _decode_all(data)


@FUZZ
@given(any_message, st.data())
def test_truncated_frames(msg: Message, data: st.DataObject) -> None:
    frame = msg.encode_frame()
    cut = data.draw(st.integers(0, len(frame) - 1))
    _decode_all(frame[:cut])
    # Truncate the payload but fix msg_length: the message decoder sees a short body.
    payload = frame[6:cut] if cut > 6 else b""
    fixed = frame[:3] + len(payload).to_bytes(3, "little") + payload
    _decode_all(fixed)


@FUZZ
@given(
    any_message,
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_byte_overwrites(msg: Message, edits: list[tuple[int, int]]) -> None:
    b = bytearray(msg.encode_frame())
    for pos, val in edits:
        b[pos % len(b)] = val
    _decode_all(bytes(b))
    # And with a consistent msg_length, so every overwrite reaches the message decoders.
    b[3:6] = (len(b) - 6).to_bytes(3, "little")
    _decode_all(bytes(b))


@FUZZ
@given(any_message, st.integers(0, 2**32 - 1))
def test_benchmark_mutator(msg: Message, seed: int) -> None:
    """The fuzz job's own mutations and decoder battery, a few hundred times."""
    from collections import Counter

    rng = random.Random(seed)
    run_decoders(mutate(msg.encode_frame(), rng), rng, 1024, Counter())
