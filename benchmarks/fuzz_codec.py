"""Fuzz job for the SV2 codec: throw generated and mutated frames at every decoder.

    python -m benchmarks.fuzz_codec --frames 1000000 [--seed N] [--max-frame-size N]

Each iteration builds one input -- a valid frame of a random registered message (random field
values, random TLVs), then mutated (bit flips, byte sets, truncation, extension, splices, length
field rewrites, header swaps) or, sometimes, plain random bytes -- and feeds it to every decoder:
``Frame.decode``, ``decode_frame`` (frame + message), the message class's ``decode`` on the raw
payload with and without TLVs, ``FrameDecoder`` fed in random chunks, and ``decode_tlvs``.

Allowed outcomes are a value or a :class:`sv2.errors.DecodeError` subclass. Anything else (an
``IndexError``, ``struct.error``, ``UnicodeDecodeError``...) is a bug: it is printed with the input
hex and the job exits 1. A successful decode must also re-encode to a message that decodes to
itself, and -- for messages without a BOOL field, the one lenient type (sv2-spec §3.1) -- to the
identical bytes. Progress goes to stdout every 100k frames. Not part of the unit tests
(``tests/sv2/test_fuzz_codec.py`` is the bounded, hypothesis-driven version).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
import traceback
from collections import Counter
from typing import Any

from sv2.errors import DecodeError
from sv2.framing import HEADER_SIZE, Frame, FrameDecoder
from sv2.messages import REGISTRY, DistributionIdTlv, Message, UserIdentityTlv, decode_frame
from sv2.tlv import Tlv, TlvItem, decode_tlvs
from sv2.types import (
    Bool,
    FixedBytes,
    Float32,
    Option,
    RawBytes,
    Seq,
    Str0255,
    Sv2Type,
    UInt,
    VarBytes,
)

CLASSES: list[type[Message]] = sorted(
    REGISTRY.values(), key=lambda c: (c.EXTENSION_TYPE, c.MSG_TYPE)
)
HAS_BOOL = {c for c in CLASSES if any(isinstance(t, Bool) for _, t in c.FIELDS)}
# F32 (the Mining Protocol's nominal_hash_rate) is the other lenient type: a signalling NaN
# comes back quieted from binary64, and NaN never equals itself.
HAS_F32 = {c for c in CLASSES if any(isinstance(t, Float32) for _, t in c.FIELDS)}
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF]


def random_value(t: Sv2Type[Any], rng: random.Random) -> Any:
    """A valid value for ``t``; small sizes so most inputs are short and fast."""
    if isinstance(t, UInt):
        return rng.choice((0, 1, t.max, rng.randint(0, t.max)))
    if isinstance(t, Bool):
        return rng.random() < 0.5
    if isinstance(t, Float32):
        return rng.choice((0.0, 1.0, 1e15, rng.random() * 1e18))
    if isinstance(t, FixedBytes):
        return rng.randbytes(t.size)
    if isinstance(t, VarBytes):
        return rng.randbytes(rng.choice((0, 1, rng.randint(0, min(t.max_len, 80)))))
    if isinstance(t, Str0255):
        alphabet = "abcxyz-_.0123456789é€𝄞"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
    if isinstance(t, RawBytes):
        return rng.randbytes(rng.randint(0, 16))
    if isinstance(t, Seq):
        return tuple(random_value(t.inner, rng) for _ in range(rng.choice((0, 1, 2, 5))))
    if isinstance(t, Option):
        return None if rng.random() < 0.5 else random_value(t.inner, rng)
    raise TypeError(f"no generator for {t}")


def random_tlv(rng: random.Random) -> TlvItem:
    r = rng.random()
    if r < 0.4:
        return DistributionIdTlv(rng.getrandbits(64))
    if r < 0.5:
        return UserIdentityTlv("w" * rng.randint(0, 32))
    return Tlv(rng.randint(0x4000, 0x7FFF), rng.randint(0, 255), rng.randbytes(rng.randint(0, 12)))


def random_message(rng: random.Random) -> Message:
    cls = rng.choice(CLASSES)
    values = {name: random_value(t, rng) for name, t in cls.FIELDS}
    ntlv = rng.choice((0, 0, 0, 1, 2))
    return cls(**values, tlvs=tuple(random_tlv(rng) for _ in range(ntlv)))


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random mutations of ``data``."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # set a byte to an interesting value
            b[rng.randrange(len(b))] = rng.choice(INTERESTING)
        elif op == 2 and b:  # truncate
            del b[rng.randrange(len(b)) :]
        elif op == 3:  # extend with junk
            b += rng.randbytes(rng.randint(1, 8))
        elif op == 4 and len(b) > 1:  # delete a slice
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 4)]
        elif op == 5 and len(b) >= HEADER_SIZE:  # rewrite msg_length (consistent or not)
            n = len(b) - HEADER_SIZE + rng.choice((-2, -1, 0, 0, 1, 2))
            b[3:6] = max(0, n).to_bytes(3, "little")
        elif op == 6 and len(b) >= 3:  # swap in another message's header
            other = rng.choice(CLASSES)
            b[0:2] = (other.EXTENSION_TYPE | (0x8000 if rng.random() < 0.2 else 0)).to_bytes(
                2, "little"
            )
            b[2] = other.MSG_TYPE
        elif op == 7 and b:  # insert bytes
            i = rng.randrange(len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 4))
        elif op == 8 and len(b) > HEADER_SIZE + 2:  # duplicate a slice (splice)
            i = rng.randrange(HEADER_SIZE, len(b))
            b += b[i : i + rng.randint(1, 16)]
    return bytes(b)


def fix_length(data: bytes) -> bytes:
    """Make msg_length consistent so the payload reaches the message decoders."""
    if len(data) < HEADER_SIZE:
        return data
    return data[:3] + (len(data) - HEADER_SIZE).to_bytes(3, "little") + data[HEADER_SIZE:]


def make_input(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.05:
        return rng.randbytes(rng.randint(0, 64))
    frame = random_message(rng).encode_frame()
    if r < 0.15:
        return frame
    mutated = mutate(frame, rng)
    return fix_length(mutated) if rng.random() < 0.6 else mutated


def check_message(msg: Message, payload: bytes) -> None:
    """A decoded message re-encodes canonically (BOOL-carrying messages only up to LSBs)."""
    again = msg.encode()
    back = type(msg).decode(again)
    if back != msg and not (type(msg) in HAS_F32 and back.encode() == again):
        raise AssertionError("decode(encode(m)) != m")
    if type(msg) not in HAS_BOOL | HAS_F32 and again != payload:
        raise AssertionError("encode(decode(b)) != b")


def run_decoders(
    data: bytes, rng: random.Random, max_frame_size: int, outcomes: Counter[str]
) -> None:
    """Every decoder on ``data``. Typed errors are counted; anything else propagates."""
    try:
        frame = Frame.decode(data, max_frame_size=max_frame_size)
        outcomes["frame:ok"] += 1
    except DecodeError as exc:
        outcomes[f"frame:{exc.code}"] += 1
        frame = None
    try:
        _, msg = decode_frame(data, max_frame_size=max_frame_size)
        check_message(msg, data[HEADER_SIZE:])
        outcomes["message:ok"] += 1
    except DecodeError as exc:
        outcomes[f"message:{exc.code}"] += 1
    # The payload straight into the message class named by the header (even if the length lies).
    if len(data) >= 3:
        cls = REGISTRY.get(((data[0] | data[1] << 8) & 0x7FFF, data[2]))
        if cls is not None:
            payload = data[HEADER_SIZE:]
            for allow in (True, False):
                try:
                    m = cls.decode(payload, allow_tlvs=allow)
                    check_message(m, payload)
                except DecodeError:
                    pass
    with contextlib.suppress(DecodeError):
        decode_tlvs(data)
    dec = FrameDecoder(max_frame_size=max_frame_size)
    pos = 0
    try:
        while pos < len(data):
            n = rng.randint(1, 16)
            dec.feed(data[pos : pos + n])
            pos += n
        dec.close()
    except DecodeError:
        pass
    if frame is not None and len(frame.payload) > max_frame_size:
        raise AssertionError("Frame.decode accepted a frame above max_frame_size")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=1_000_000, help="inputs to generate")
    p.add_argument("--seed", type=int, default=None, help="RNG seed (default: random, printed)")
    p.add_argument("--max-frame-size", type=int, default=4096)
    p.add_argument("--progress", type=int, default=100_000, help="print every N frames")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    rng = random.Random(seed)
    print(
        f"fuzz_codec: {args.frames} frames, seed {seed}, {len(CLASSES)} message types", flush=True
    )
    outcomes: Counter[str] = Counter()
    start = time.monotonic()
    for i in range(1, args.frames + 1):
        data = make_input(rng)
        try:
            run_decoders(data, rng, args.max_frame_size, outcomes)
        except Exception:  # the whole point: anything untyped is a finding
            print(f"UNTYPED EXCEPTION at frame {i} (seed {seed}) on input {data.hex()}")
            traceback.print_exc()
            return 1
        if i % args.progress == 0 or i == args.frames:
            rate = i / max(time.monotonic() - start, 1e-9)
            ok = outcomes["message:ok"]
            print(f"{i:>9} frames  {rate:,.0f}/s  messages decoded {ok}", flush=True)
    print("outcomes:")
    for key, n in sorted(outcomes.items()):
        print(f"  {key:<40} {n}")
    print("no untyped exceptions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
