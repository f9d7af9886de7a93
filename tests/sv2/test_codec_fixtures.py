"""Byte-exact fixtures.

Sources: ``reference/sv2.md`` §5.4(e) (frames derived from the spec rules), SRI
``framing-sv2/src/header.rs::test_header_from_bytes``, SRI
``parsers-sv2/src/tlv/codec.rs::test_tlv_encode_format``, and sv2-tp
``src/test/sv2_messages_tests.cpp`` (payload-only vectors; the NewTemplate ones are taken with the
unmerged PR #198 ``coinbase_witness`` B0_32 removed, i.e. the spec-conformant form of sv2-tp
``1be45c46``).
"""

from __future__ import annotations

import pytest

from sv2.framing import Frame, FrameHeader
from sv2.messages import (
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    CoinbaseOutputConstraints,
    DeclareMiningJob,
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    DistributionIdTlv,
    Message,
    NewTemplate,
    ProvideMissingTransactions,
    ProvideMissingTransactionsSuccess,
    PushSolution,
    RequestExtensions,
    RequestPayoutOutputs,
    SetNewPrevHash,
    SetPayoutDistribution,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    UserIdentityTlv,
    decode_frame,
    distribution_id_of,
)
from sv2.tlv import Tlv, decode_tlvs

P2WPKH_11 = bytes.fromhex("0014") + b"\x11" * 20
TXOUT_0_P2WPKH = (0).to_bytes(8, "little") + bytes([len(P2WPKH_11)]) + P2WPKH_11

# (message, frame hex) -- reference/sv2.md §5.4(e)
SPEC_FRAMES: list[tuple[Message, str]] = [
    (AllocateMiningJobToken("pool-user", 1), "0000500e000009706f6f6c2d7573657201000000"),
    (
        AllocateMiningJobTokenSuccess(1, bytes(8), b"\x01" + TXOUT_0_P2WPKH),
        "0000512f0000"
        + "01000000"
        + "08"
        + "00" * 8
        + "2000"
        + "01"
        + "00" * 8
        + "16"
        + "0014"
        + "11" * 20,
    ),
    (CoinbaseOutputConstraints(31, 0), "0000700600001f0000000000"),
    (
        DeclareMiningJobSuccess(7, (1).to_bytes(8, "little")),
        "0000580d000007000000080100000000000000",
    ),
    (
        DeclareMiningJobError(7, "stale-chain-tip", b""),
        "000059160000070000000f7374616c652d636861696e2d7469700000",
    ),
    (ProvideMissingTransactions(7, (0, 2)), "0000550a000007000000020000000200"),
    (
        ProvideMissingTransactionsSuccess(7, (bytes.fromhex("aabb"), b"\xcc")),
        "0000560f0000070000000200020000aabb010000cc",
    ),
    (
        PushSolution(bytes(8), bytes(32), 0x01020304, 0x66000000, 0x1D00FFFF, 0x20000000),
        "000060390000"
        + "08"
        + "00" * 8
        + "00" * 32
        + "04030201"
        + "00000066"
        + "ffff001d"
        + "00000020",
    ),
    (
        SetupConnection(1, 2, 2, 1, "", 0, "py", "", "", ""),
        "000000120000010200020001000000000000027079000000",
    ),
    (RequestExtensions(1, (0x0002,)), "010000060000010001000200"),
]


@pytest.mark.parametrize(("msg", "hexframe"), SPEC_FRAMES, ids=lambda v: getattr(v, "NAME", ""))
def test_spec_frames_encode_and_decode(msg: Message, hexframe: str) -> None:
    data = bytes.fromhex(hexframe)
    assert msg.encode_frame() == data
    frame, decoded = decode_frame(data)
    assert decoded == msg
    assert frame.channel_msg is False
    assert decoded.encode_frame(channel_msg=frame.channel_msg) == data


def test_header_from_bytes_sri() -> None:
    """SRI ``header.rs::test_header_from_bytes``."""
    h = FrameHeader.decode(bytes.fromhex("010203040506"))
    assert (h.extension_type, h.channel_msg, h.msg_type, h.msg_length) == (
        0x0201,
        False,
        3,
        0x060504,
    )
    assert h.encode() == bytes.fromhex("010203040506")


def test_channel_bit_is_msb_of_le_u16() -> None:
    h = FrameHeader.decode(bytes.fromhex("bc8a22000000"))
    assert (h.extension_type, h.channel_msg) == (0x0ABC, True)
    assert Frame(0x0ABC, 0x22, b"", True).encode() == bytes.fromhex("bc8a22000000")


def test_tlv_encode_format_sri() -> None:
    """SRI ``test_tlv_encode_format``: type and length are little-endian."""
    expected = bytes.fromhex("0200010400") + b"test"
    assert Tlv(0x0002, 0x01, b"test").encode() == expected
    assert UserIdentityTlv("test").to_tlv().encode() == expected
    assert decode_tlvs(expected) == (UserIdentityTlv("test"),)


# sv2-tp src/test/sv2_messages_tests.cpp payloads
TP_SETUP_CONNECTION = bytes.fromhex(
    "02020002000100000007302e302e302e30612107426974 6d61696e".replace(" ", "")
    + "0853396920 31332e35".replace(" ", "")
    + "1c627261 69696e73 2d6f732d 32303138 2d30392d 32322d31 2d686173 68".replace(" ", "")
    + "10736f6d 652d6465 76696365 2d757569 64".replace(" ", "")
)


def test_tp_setup_connection() -> None:
    assert len(TP_SETUP_CONNECTION) == 82
    msg = SetupConnection.decode(TP_SETUP_CONNECTION)
    assert msg == SetupConnection(
        2,
        2,
        2,
        1,
        "0.0.0.0",
        8545,
        "Bitmain",
        "S9i 13.5",
        "braiins-os-2018-09-22-1-hash",
        "some-device-uuid",
    )
    assert msg.encode() == TP_SETUP_CONNECTION
    # Sv2NetHeader_SetupConnection_test
    assert msg.to_frame().header.encode() == bytes.fromhex("000000520000")


def test_tp_setup_connection_success_and_error() -> None:
    assert SetupConnectionSuccess(2, 3).encode() == bytes.fromhex("020003000000")
    err = SetupConnectionError(0, "protocol-version-mismatch")
    expected = bytes.fromhex("000000001970726f746f636f6c2d76657273696f6e2d6d69736d61746368")
    assert err.encode() == expected
    assert SetupConnectionError.decode(expected) == err


MERKLE = bytes.fromhex("1a6240823de4c8d6aaf826851bdf2b0e8d5acf7c31e8578cff4c394b5a32bd4e")


@pytest.mark.parametrize(
    ("hexpayload", "count", "outputs"),
    [
        (
            "0100000000000000"
            "00"
            "00000030"
            "02000000"
            "04"
            "03012100"
            "ffffffff"
            "0040075af0750700"
            "01000000"
            "0c00"
            "0100000000000000"
            "036a012a"
            "dbc80d00"
            "01" + MERKLE.hex(),
            1,
            bytes.fromhex("0100000000000000036a012a"),
        ),
        (
            "0100000000000000"
            "00"
            "00000030"
            "02000000"
            "04"
            "03012100"
            "ffffffff"
            "0040075af0750700"
            "03000000"
            "2100"
            "6400000000000000026a51c800000000000000026a52"
            "2c01000000000000026a53"
            "dbc80d00"
            "01" + MERKLE.hex(),
            3,
            bytes.fromhex("6400000000000000026a51c800000000000000026a522c01000000000000026a53"),
        ),
    ],
)
def test_tp_new_template(hexpayload: str, count: int, outputs: bytes) -> None:
    data = bytes.fromhex(hexpayload)
    msg = NewTemplate(
        template_id=1,
        future_template=False,
        version=805306368,
        coinbase_tx_version=2,
        coinbase_prefix=bytes.fromhex("03012100"),
        coinbase_tx_input_sequence=0xFFFFFFFF,
        coinbase_tx_value_remaining=21_000_000 * 100_000_000,
        coinbase_tx_outputs_count=count,
        coinbase_tx_outputs=outputs,  # no CompactSize prefix in NewTemplate
        coinbase_tx_locktime=903387,
        merkle_path=(MERKLE,),
    )
    assert msg.encode() == data
    assert NewTemplate.decode(data) == msg
    assert msg.to_frame().header.encode()[:3] == bytes.fromhex("000071")


def test_tp_set_new_prev_hash() -> None:
    data = bytes.fromhex(
        "0200000000000000"
        "e59a2ef8d4826b89fe637f3b5322c0f167fd2d3dc88ec568a7c2c8ffd8eb8873"
        "973c0e63"
        "ffff7f03"
        "ffff7f0000000000000000000000000000000000000000000000000000000000"
    )
    msg = SetNewPrevHash.decode(data)
    assert msg.template_id == 2
    # U256 stays in wire (internal) byte order: no reversal.
    assert msg.prev_hash.hex().startswith("e59a2ef8")
    assert msg.header_timestamp == 1661877399
    assert msg.n_bits == 58720255
    assert msg.encode() == data


def test_declare_mining_job_with_distribution_id_tlv() -> None:
    wtxid = bytes(range(32))
    body = (
        "01000000"
        "08"
        + "2a00000000000000"
        + "00000020"
        + "0300"
        + "010203"
        + "0200"
        + "0405"
        + "0100"
        + wtxid.hex()
        + "0000"
    )
    tlv = "03000108000500000000000000"
    msg = DeclareMiningJob(
        request_id=1,
        mining_job_token=(42).to_bytes(8, "little"),
        version=0x20000000,
        coinbase_tx_prefix=b"\x01\x02\x03",
        coinbase_tx_suffix=b"\x04\x05",
        wtxid_list=(wtxid,),
        excess_data=b"",
        tlvs=(DistributionIdTlv(5),),
    )
    payload = bytes.fromhex(body + tlv)
    assert msg.encode() == payload
    frame = msg.to_frame()
    assert (frame.extension_type, frame.msg_type) == (0x0000, 0x57)  # TLVs keep ext 0x0000
    decoded = DeclareMiningJob.decode(payload)
    assert decoded == msg
    assert distribution_id_of(decoded) == 5
    # Unknown TLVs are kept raw and re-encoded byte-identically, after the known one.
    unknown = "7f40090300aabbcc"
    payload2 = bytes.fromhex(body + tlv + unknown)
    decoded2 = DeclareMiningJob.decode(payload2)
    assert decoded2.tlvs == (DistributionIdTlv(5), Tlv(0x407F, 0x09, bytes.fromhex("aabbcc")))
    assert decoded2.encode() == payload2


def test_set_payout_distribution_layout() -> None:
    pool = (1000).to_bytes(8, "little") + b"\x16" + P2WPKH_11
    payee = (3).to_bytes(8, "little") + b"\x16" + b"\x00\x14" + b"\x22" * 20
    opret = bytes(8) + b"\x02\x6a\x00"
    msg = SetPayoutDistribution(9, pool, (payee,), (546,), (opret,))
    expected = (
        (9).to_bytes(8, "little")
        + len(pool).to_bytes(2, "little")
        + pool
        + b"\x01\x00"
        + len(payee).to_bytes(2, "little")
        + payee
        + b"\x01\x00"
        + (546).to_bytes(4, "little")
        + b"\x01\x00"
        + len(opret).to_bytes(2, "little")
        + opret
    )
    assert msg.encode() == expected
    frame = msg.to_frame()
    assert frame.encode()[:3] == bytes.fromhex("030000")  # ext 0x0003, msg 0x00, no channel bit
    assert decode_frame(frame.encode())[1] == msg


def test_per_job_adapter_extension_type() -> None:
    msg = RequestPayoutOutputs(1, b"\x01", 312_500_000)
    data = msg.encode_frame()
    assert data[:3] == bytes.fromhex("024000")  # ext 0x4002 (experimental), msg 0x00
    assert decode_frame(data)[1] == msg
