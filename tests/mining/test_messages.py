"""Mining Protocol message layouts, byte by byte, from the field tables of sv2-spec
05-Mining-Protocol.md §5.3 (at 0f38d51) and the type table of 08-Message-Types.md (PR #196
channel bits). Round-trips of every message are in tests/sv2/test_codec_roundtrip.py."""

from __future__ import annotations

import pytest

from sv2.framing import Frame
from sv2.messages import decode_frame
from sv2.messages.base import Message, decode_message
from sv2.messages.mining import (
    CloseChannel,
    MiningSetNewPrevHash,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetCustomMiningJob,
    SetExtranoncePrefix,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    UpdateChannel,
    UpdateChannelError,
)
from sv2.messages.payouts import DistributionIdTlv

T = bytes(range(32))
TH = T.hex()

CASES: list[tuple[Message, int, bool, str]] = [
    # (message, msg_type, channel_msg, payload hex)
    (OpenStandardMiningChannel(1, "ab", 1.0, T), 0x10, False,
     "01000000" "026162" "0000803f" + TH),
    (OpenStandardMiningChannelSuccess(1, 2, T, b"\x01\x02", 0), 0x11, False,
     "01000000" "02000000" + TH + "020102" "00000000"),
    (OpenMiningChannelError(1, "unknown-user"), 0x12, False,
     "01000000" "0c" + b"unknown-user".hex()),
    (OpenExtendedMiningChannel(1, "ab", 2.0, T, 4), 0x13, False,
     "01000000" "026162" "00000040" + TH + "0400"),
    (OpenExtendedMiningChannelSuccess(1, 2, T, 4, b"\xaa", 0), 0x14, False,
     "01000000" "02000000" + TH + "0400" "01aa" "00000000"),
    (NewMiningJob(2, 3, None, 0x20000000, T), 0x15, True,
     "02000000" "03000000" "00" "00000020" + TH),
    (NewMiningJob(2, 3, 0x66000000, 0x20000000, T), 0x15, True,
     "02000000" "03000000" "01" "00000066" "00000020" + TH),
    (UpdateChannel(2, 0.5, T), 0x16, True, "02000000" "0000003f" + TH),
    (UpdateChannelError(2, "x"), 0x17, True, "02000000" "0178"),
    (CloseChannel(2, "bye"), 0x18, True, "02000000" "03627965"),
    (SetExtranoncePrefix(2, b"\x01"), 0x19, True, "02000000" "0101"),
    (SubmitSharesStandard(2, 5, 3, 0x01020304, 0x66000000, 0x20000000), 0x1A, True,
     "02000000" "05000000" "03000000" "04030201" "00000066" "00000020"),
    (SubmitSharesExtended(2, 5, 3, 1, 2, 3, b"\xee\xff"), 0x1B, True,
     "02000000" "05000000" "03000000" "01000000" "02000000" "03000000" "02eeff"),
    (SubmitSharesSuccess(2, 5, 10, 1 << 40), 0x1C, True,
     "02000000" "05000000" "0a000000" "0000000000010000"),
    (SubmitSharesError(2, 5, "stale-share"), 0x1D, True,
     "02000000" "05000000" "0b" + b"stale-share".hex()),
    (NewExtendedMiningJob(2, 3, None, 0x20000000, True, (T,), b"\x01", b"\x02\x03"), 0x1F, True,
     "02000000" "03000000" "00" "00000020" "01" "01" + TH + "010001" "02000203"),
    (MiningSetNewPrevHash(2, 3, T, 0x66000000, 0x207FFFFF), 0x20, True,
     "02000000" "03000000" + TH + "00000066" "ffff7f20"),
    (SetTarget(2, T), 0x21, True, "02000000" + TH),
]


@pytest.mark.parametrize(("msg", "msg_type", "channel_msg", "payload"), CASES,
                         ids=[c[0].NAME for c in CASES])
def test_layout(msg: Message, msg_type: int, channel_msg: bool, payload: str) -> None:
    assert msg_type == msg.MSG_TYPE and msg.EXTENSION_TYPE == 0
    assert msg.CHANNEL_MSG is channel_msg
    assert msg.encode().hex() == payload
    frame, decoded = decode_frame(msg.encode_frame())
    assert decoded == msg and frame.channel_msg is channel_msg
    # The channel bit is the MSB of the LE u16 extension_type: byte[1] & 0x80 (sv2-spec §3.2).
    assert bool(msg.encode_frame()[1] & 0x80) is channel_msg


def test_set_custom_mining_job_carries_distribution_tlv_le() -> None:
    """PR #203 §6: TLV (0x0003, 0x01), U64 distribution_id, type and length little-endian as
    SRI encodes them."""
    msg = SetCustomMiningJob(1, 2, b"\x07", 3, T, 4, 5, 6, b"\x01\x02", 7, b"\x00", 8, (),
                             tlvs=(DistributionIdTlv(9),))
    tail = msg.encode()[-13:]
    assert tail.hex() == "030001" "0800" "0900000000000000"
    assert decode_message(Frame(0x8000, 0x22, msg.encode())) == msg


def test_nominal_hash_rate_is_binary32() -> None:
    msg = OpenStandardMiningChannel(1, "", 1e15, T)
    raw = msg.encode()
    assert len(raw) == 4 + 1 + 4 + 32
    decoded = decode_message(Frame(0, 0x10, raw))
    assert isinstance(decoded, OpenStandardMiningChannel)
    assert decoded.nominal_hash_rate == msg.nominal_hash_rate
