"""Hypothesis round-trips: for random valid messages, decode(encode(m)) == m and
encode(decode(b)) == b, for every registered message (sv2-spec §3.1 data types, §3.4.3 TLVs).

The strategies here are reused by ``test_fuzz_codec.py``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payouts.crypto.musig2 import individual_pubkey
from payouts.crypto.schnorr import xonly_pubkey
from sv2.framing import Frame, FrameDecoder
from sv2.messages import (
    REGISTRY,
    DistributionIdTlv,
    Message,
    SetSettlementMode,
    UserIdentityTlv,
    decode_frame,
)
from sv2.tlv import Tlv, TlvItem
from sv2.types import (
    B0_16M,
    B0_32,
    B0_64K,
    B0_255,
    BOOL,
    BYTES,
    OPTION,
    PUBKEY,
    SEQ0_64K,
    SEQ0_255,
    SIGNATURE,
    STR0_255,
    U8,
    U16,
    U24,
    U32,
    U64,
    U256,
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

MESSAGE_CLASSES = sorted(REGISTRY.values(), key=lambda c: (c.EXTENSION_TYPE, c.MSG_TYPE))
KNOWN_TLV_KEYS = {(0x0003, 0x01), (0x0002, 0x01)}


def value_strategy(t: Sv2Type[Any]) -> st.SearchStrategy[Any]:
    """A bounded strategy of valid Python values for an SV2 data type."""
    if isinstance(t, UInt):
        # Bias to the edges: 0, max and around byte boundaries are where codecs break.
        return st.one_of(st.integers(0, t.max), st.sampled_from([0, 1, t.max, t.max >> 1]))
    if isinstance(t, Bool):
        return st.booleans()
    if isinstance(t, Float32):
        return st.floats(width=32, allow_nan=False)
    if isinstance(t, FixedBytes):
        return st.binary(min_size=t.size, max_size=t.size)
    if isinstance(t, VarBytes):
        return st.binary(max_size=min(t.max_len, 300))
    if isinstance(t, Str0255):
        return st.text(max_size=60)  # <= 4 UTF-8 bytes per char, so <= 240 bytes
    if isinstance(t, RawBytes):
        return st.binary(max_size=64)
    if isinstance(t, Seq):
        return st.lists(value_strategy(t.inner), max_size=4).map(tuple)
    if isinstance(t, Option):
        return st.none() | value_strategy(t.inner)
    raise TypeError(f"no strategy for {t}")


raw_tlvs = st.builds(
    Tlv,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.binary(max_size=40),
).filter(lambda t: (t.extension_type, t.field_type) not in KNOWN_TLV_KEYS)

tlv_items: st.SearchStrategy[TlvItem] = st.one_of(
    raw_tlvs,
    st.builds(DistributionIdTlv, st.integers(0, (1 << 64) - 1)),
    st.builds(UserIdentityTlv, st.text(max_size=8)),
)


# Valid curve points for SetSettlementMode, whose decoder refuses keys that are not (0x4003
# §3.3): compressed keys and x-only keys of the small secrets 1..8 (examples, not keys to use).
_KEYS33 = sorted(individual_pubkey(i.to_bytes(32, "big")) for i in range(1, 9))
_XONLY = [xonly_pubkey(i.to_bytes(32, "big")) for i in range(1, 9)]


def _valid_mode_fields() -> st.SearchStrategy[dict[str, Any]]:
    """Fields of a SetSettlementMode its decoder accepts: the mode's own fields obey §3.3, the
    other mode's fields are anything (a receiver MUST ignore them)."""
    fields = {name: value_strategy(t) for name, t in SetSettlementMode.FIELDS}

    def ctv(d: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                **{k: st.just(v) for k, v in d.items()},
                "mode": st.just(1),
                "ctv_output_form": st.sampled_from([0, 1]),
                "ctv_arity": st.sampled_from([0, 2, 3, 16, 0xFFFF]) | st.integers(2, 0xFFFF),
                "ctv_fee_rate": st.sampled_from([0, 1, 100_000]) | st.integers(0, 100_000),
                "ctv_tx_version": st.sampled_from([0, 2, 3]),
            }
        ).map(lambda f: {**f, **({"ctv_anchor": True} if f["ctv_fee_rate"] == 0 else {})}).map(
            lambda f: {**f, **({"ctv_tx_version": 3} if f["ctv_fee_rate"] == 0
                               and f["ctv_tx_version"] == 2 else {})}
        )

    def musig(d: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                **{k: st.just(v) for k, v in d.items()},
                "mode": st.just(2),
                "musig2_committee": st.sets(st.sampled_from(_KEYS33), min_size=1).map(
                    lambda keys: tuple(sorted(keys))
                ),
                "musig2_fallback_key": st.sampled_from(_XONLY),
                "musig2_fallback_timelock": st.sampled_from([101, 0xFFFF]) | st.integers(
                    101, 0xFFFF
                ),
                "musig2_fee_rate": st.sampled_from([1, 100_000]) | st.integers(1, 100_000),
            }
        )

    base = st.fixed_dictionaries(fields)
    return st.one_of(
        base.map(lambda d: {**d, "mode": 0}), base.flatmap(ctv), base.flatmap(musig)
    )


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    tlvs = st.lists(tlv_items, max_size=3).map(tuple)
    if cls is SetSettlementMode:
        return st.builds(lambda f, t: SetSettlementMode(**f, tlvs=t), _valid_mode_fields(), tlvs)
    fields = {name: value_strategy(t) for name, t in cls.FIELDS}
    return st.builds(cls, **fields, tlvs=tlvs)


any_message: st.SearchStrategy[Message] = st.sampled_from(MESSAGE_CLASSES).flatmap(message_strategy)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_message)
def test_message_roundtrip(msg: Message) -> None:
    payload = msg.encode()
    decoded = type(msg).decode(payload)
    assert decoded == msg
    assert decoded.encode() == payload
    frame_bytes = msg.encode_frame()
    frame, again = decode_frame(frame_bytes)
    assert again == msg
    assert frame.encode() == frame_bytes
    assert (frame.extension_type, frame.msg_type, frame.channel_msg) == (
        msg.EXTENSION_TYPE,
        msg.MSG_TYPE,
        msg.CHANNEL_MSG,
    )


@settings(max_examples=200, deadline=None)
@given(any_message)
def test_json_roundtrip(msg: Message) -> None:
    from sv2.messages import message_from_json

    doc = msg.to_json()
    rebuilt, channel_msg = message_from_json(doc)
    assert rebuilt == msg
    assert channel_msg == msg.CHANNEL_MSG


@settings(max_examples=100, deadline=None)
@given(
    st.lists(any_message, min_size=1, max_size=5),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_frame_decoder_any_chunking(msgs: list[Message], cuts: list[int]) -> None:
    """The incremental decoder returns the same frames however the stream is split."""
    stream = b"".join(m.encode_frame() for m in msgs)
    dec = FrameDecoder()
    frames: list[Frame] = []
    pos, i = 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        frames += dec.feed(stream[pos : pos + n])
        pos += n
        i += 1
    dec.close()
    assert [f.encode() for f in frames] == [m.encode_frame() for m in msgs]
    assert dec.buffered == 0


ALL_TYPES: list[Sv2Type[Any]] = [
    BOOL,
    U8,
    U16,
    U24,
    U32,
    U64,
    U256,
    STR0_255,
    B0_32,
    B0_255,
    B0_64K,
    B0_16M,
    BYTES,
    PUBKEY,
    SIGNATURE,
    OPTION(U32),
    OPTION(B0_32),
    SEQ0_255(U256),
    SEQ0_64K(B0_16M),
    SEQ0_64K(OPTION(U16)),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_TYPES).flatmap(lambda t: st.tuples(st.just(t), value_strategy(t))))
def test_type_roundtrip(pair: tuple[Sv2Type[Any], Any]) -> None:
    t, value = pair
    data = t.encode(value)
    assert t.decode(data) == t.normalize(value)
    assert t.encode(t.decode(data)) == data
