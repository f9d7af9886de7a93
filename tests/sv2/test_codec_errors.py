"""Strict decoding: every malformed input gives a specific typed error (sv2-spec §3.1, §3.2)."""

from __future__ import annotations

import pytest

from payouts.errors import ValidationError
from sv2.errors import (
    DecodeError,
    DecoderStateError,
    EncodeError,
    FrameTooLargeError,
    InvalidOptionError,
    InvalidTlvError,
    InvalidUtf8Error,
    LengthError,
    TrailingBytesError,
    TruncatedError,
    UnknownMessageError,
)
from sv2.framing import Frame, FrameDecoder
from sv2.messages import (
    AllocateMiningJobToken,
    CoinbaseOutputConstraints,
    DeclareMiningJobSuccess,
    NewTemplate,
    PushSolution,
    decode_frame,
)
from sv2.types import (
    B0_16M,
    B0_32,
    B0_64K,
    BOOL,
    OPTION,
    SEQ0_64K,
    STR0_255,
    U16,
    U24,
    U32,
    U256,
)


def test_truncated_values() -> None:
    with pytest.raises(TruncatedError):
        U32.decode(b"\x01\x02\x03")
    with pytest.raises(TruncatedError):
        U256.decode(bytes(31))
    with pytest.raises(TruncatedError):
        B0_64K.decode(b"\x05\x00abcd")
    with pytest.raises(TruncatedError):
        B0_16M.decode(b"\x01\x00")  # u24 length itself cut
    with pytest.raises(TruncatedError):
        SEQ0_64K(U256).decode(b"\x02\x00" + bytes(32))


def test_length_prefixes_are_le_and_sized() -> None:
    assert B0_64K.encode(b"ab") == b"\x02\x00ab"
    assert B0_16M.encode(b"a") == b"\x01\x00\x00a"
    assert SEQ0_64K(U16).encode((1,)) == b"\x01\x00\x01\x00"
    assert U24.encode(0x060504) == b"\x04\x05\x06"


def test_oversized_length() -> None:
    with pytest.raises(LengthError) as e:
        B0_32.decode(b"\x21" + bytes(33))
    assert e.value.code == "sv2-length-exceeded"
    with pytest.raises(EncodeError):
        B0_32.encode(bytes(33))


def test_invalid_utf8() -> None:
    with pytest.raises(InvalidUtf8Error):
        STR0_255.decode(b"\x02\xc3\x28")
    assert STR0_255.decode(b"\x02\xc3\xa9") == "é"
    with pytest.raises(EncodeError):
        STR0_255.encode("é" * 128)  # 256 bytes of UTF-8


def test_option_count_above_one() -> None:
    assert OPTION(U16).decode(b"\x00") is None
    assert OPTION(U16).decode(b"\x01\x07\x00") == 7
    with pytest.raises(InvalidOptionError):
        OPTION(U16).decode(b"\x02\x07\x00\x08\x00")


def test_bool_ignores_upper_bits() -> None:
    # sv2-spec §3.1: receivers MUST ignore all bits but the LSB.
    assert BOOL.decode(b"\x03") is True
    assert BOOL.decode(b"\x02") is False
    assert BOOL.encode(True) == b"\x01"


def test_encode_rejects_wrong_types_and_ranges() -> None:
    with pytest.raises(EncodeError):
        U32.encode(1 << 32)
    with pytest.raises(EncodeError):
        U32.encode(-1)
    with pytest.raises(EncodeError):
        U32.encode(True)
    with pytest.raises(EncodeError, match=r"CoinbaseOutputConstraints\.coinbase_output_max"):
        CoinbaseOutputConstraints(1, 1 << 16).encode()
    with pytest.raises(EncodeError):
        PushSolution(bytes(8), bytes(31), 0, 0, 0, 0).encode()


def test_trailing_bytes() -> None:
    payload = DeclareMiningJobSuccess(1, b"").encode()
    with pytest.raises(TrailingBytesError):
        DeclareMiningJobSuccess.decode(payload + b"\x00\x00")  # too short for a TLV header
    with pytest.raises(TrailingBytesError):
        DeclareMiningJobSuccess.decode(payload + bytes(5), allow_tlvs=False)
    with pytest.raises(TrailingBytesError):
        Frame.decode(Frame(0, 0x58, payload).encode() + b"\x00")


def test_tlv_errors() -> None:
    payload = DeclareMiningJobSuccess(1, b"").encode()
    with pytest.raises(InvalidTlvError):  # length runs past the payload
        DeclareMiningJobSuccess.decode(payload + bytes.fromhex("0300010900") + bytes(8))
    with pytest.raises(InvalidTlvError, match="length must be 8"):  # known TLV, wrong length
        DeclareMiningJobSuccess.decode(payload + bytes.fromhex("0300010400") + bytes(4))


def test_truncated_message_names_field() -> None:
    data = AllocateMiningJobToken("pool-user", 1).encode()[:-1]
    with pytest.raises(TruncatedError, match=r"AllocateMiningJobToken\.request_id"):
        AllocateMiningJobToken.decode(data)


def test_unknown_message() -> None:
    with pytest.raises(UnknownMessageError):
        decode_frame(bytes.fromhex("0000ff000000"))


def test_channel_bit_ignored_for_lookup() -> None:
    data = bytearray(CoinbaseOutputConstraints(31, 0).encode_frame())
    data[1] |= 0x80
    frame, msg = decode_frame(bytes(data))
    assert frame.channel_msg is True
    assert msg == CoinbaseOutputConstraints(31, 0)
    assert msg.encode_frame(channel_msg=True) == bytes(data)


def test_errors_are_validation_errors_with_codes() -> None:
    with pytest.raises(ValidationError) as e:
        U32.decode(b"")
    assert isinstance(e.value, DecodeError)
    assert e.value.code == "sv2-truncated"
    assert e.value.offset == 0


def test_frame_decoder_rejects_oversized_before_buffering() -> None:
    dec = FrameDecoder(max_frame_size=100)
    with pytest.raises(FrameTooLargeError):
        dec.feed(bytes.fromhex("000071650000"))  # 101-byte payload announced, none sent
    with pytest.raises(DecoderStateError):
        dec.feed(b"")


def test_frame_decoder_exact_limit_and_partial_close() -> None:
    dec = FrameDecoder(max_frame_size=3)
    assert dec.feed(bytes.fromhex("00007003000001")) == []
    assert dec.buffered == 7
    frames = dec.feed(b"\x02\x03" + bytes.fromhex("000058"))
    assert frames == [Frame(0, 0x70, b"\x01\x02\x03")]
    with pytest.raises(TruncatedError):
        dec.close()


def test_new_template_truncated_merkle_path_count() -> None:
    msg = NewTemplate(1, False, 2, 2, b"", 0, 0, 0, b"", 0, (bytes(32),) * 3)
    data = msg.encode()
    with pytest.raises(TruncatedError):
        NewTemplate.decode(data[:-1])
