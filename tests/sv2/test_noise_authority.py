"""Authority key text forms: sv2-spec §4.7.1 vector and SRI ``key_utils`` vectors."""

from __future__ import annotations

import pytest

from sv2.authority import (
    AuthorityKeyError,
    authority_public_key,
    base58check_decode,
    base58check_encode,
    decode_authority_public_key,
    decode_authority_secret_key,
    encode_authority_public_key,
    encode_authority_secret_key,
)

# sv2-spec 04-Protocol-Security.md §4.7.1 (@ 0f38d51d), given there as a decimal byte list.
SPEC_RAW = bytes(
    [118, 99, 112, 0, 151, 156, 28, 17, 175, 12, 48, 11, 205, 140, 127, 228,
     134, 16, 252, 233, 185, 193, 30, 61, 174, 227, 90, 224, 176, 138, 116, 85]
)  # fmt: skip
SPEC_B58 = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh"

# SRI key_utils test `key_conversions` (stratum @ 0b7f8257, roles/stratum-apps/src/key_utils).
SRI_SECRET = "zmBEmPhqo3A92FkiLVvyCz6htc3e53ph3ZbD4ASqGaLjwnFLi"
SRI_PUBLIC = "9bDuixKmZqAJnrmP746n8zU1wyAQRrus7th9dxnkPg6RzQvCnan"
SRI_BAD_CHECKSUM = "9bDuixKmZqAJnrmP746n8zU1wyAQRrus7th9dxnkPg6RzQvCnam"
SRI_BAD_VERSION = "2myPhc5vkPzuC5FXNK5tee79WmP7uoLh55SxezoF8iqwF3E3rnPY"  # version 12
SRI_BAD_LENGTH = "2wmHTKZkLg2QzXyEXGMBXzKP7JXDUt8yy9SA5hoQwERc92qR6c"  # 1 byte short

# sv2-apps jd-client config examples / sv2-uniffi test_handshake.py: a matching key pair.
APPS_SECRET = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n"
APPS_PUBLIC = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"


def test_spec_vector() -> None:
    # The spec lists decimal bytes ending 176, 138, 116, 85 = "...b08a7455". Summaries that
    # abbreviate it as "7663700097...748a7455" have the last bytes' order wrong.
    assert SPEC_RAW.hex() == "76637000979c1c11af0c300bcd8c7fe48610fce9b9c11e3daee35ae0b08a7455"
    assert encode_authority_public_key(SPEC_RAW) == SPEC_B58
    assert decode_authority_public_key(SPEC_B58) == SPEC_RAW


@pytest.mark.parametrize(
    ("secret", "public"), [(SRI_SECRET, SRI_PUBLIC), (APPS_SECRET, APPS_PUBLIC)]
)
def test_sri_secret_public_pairs(secret: str, public: str) -> None:
    sk = decode_authority_secret_key(secret)
    assert encode_authority_secret_key(sk) == secret
    assert encode_authority_public_key(authority_public_key(sk)) == public
    assert decode_authority_public_key(public) == authority_public_key(sk)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (SRI_BAD_CHECKSUM, "checksum"),
        (SRI_BAD_VERSION, "version 12"),
        (SRI_BAD_LENGTH, "34 bytes"),
        ("9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRX0", "not base58"),  # '0' invalid
        ("1", "too short"),
    ],
)
def test_bad_public_keys(text: str, needle: str) -> None:
    with pytest.raises(AuthorityKeyError, match=needle) as info:
        decode_authority_public_key(text)
    assert info.value.code == "invalid-authority-key"


def test_public_key_not_on_curve() -> None:
    # x = 5 is not the X coordinate of any secp256k1 point (5**3 + 7 is a non-residue mod p).
    bad = (5).to_bytes(32, "big")
    with pytest.raises(AuthorityKeyError, match="not on secp256k1"):
        encode_authority_public_key(bad)
    with pytest.raises(AuthorityKeyError, match="not on secp256k1"):
        decode_authority_public_key(base58check_encode(b"\x01\x00" + bad))


def test_secret_key_range() -> None:
    with pytest.raises(AuthorityKeyError):
        decode_authority_secret_key(base58check_encode(b"\x00" * 32))
    with pytest.raises(AuthorityKeyError):
        decode_authority_secret_key(base58check_encode(b"\x01" * 31))
    with pytest.raises(AuthorityKeyError):
        encode_authority_secret_key(b"\xff" * 32)


def test_base58check_leading_zeros_roundtrip() -> None:
    for payload in (b"", b"\x00", b"\x00\x00\x01", b"\x01\x00" + SPEC_RAW):
        assert base58check_decode(base58check_encode(payload)) == payload
