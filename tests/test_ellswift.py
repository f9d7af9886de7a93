"""ElligatorSwift / BIP-324 xdh against the official BIP-324 CSV vectors."""

from __future__ import annotations

import csv
from pathlib import Path

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payouts.crypto.ellswift import (
    SecpError,
    ellswift_create,
    ellswift_decode,
    ellswift_decode_xonly,
    ellswift_encode,
    ellswift_xdh,
    is_valid_secret_key,
)


def _rows(vectors: Path, name: str) -> list[dict[str, str]]:
    with (vectors / "bip-0324" / name).open(newline="") as f:
        return list(csv.DictReader(f))


def test_decode_vectors(vectors: Path) -> None:
    rows = _rows(vectors, "ellswift_decode_test_vectors.csv")
    assert len(rows) == 76
    passed = 0
    for row in rows:
        assert ellswift_decode_xonly(bytes.fromhex(row["ellswift"])).hex() == row["x"], row
        passed += 1
    assert passed == 76


def test_xdh_vectors(vectors: Path) -> None:
    rows = _rows(vectors, "packet_encoding_test_vectors.csv")
    assert len(rows) == 7
    for row in rows:
        priv = bytes.fromhex(row["in_priv_ours"])
        ours = bytes.fromhex(row["in_ellswift_ours"])
        theirs = bytes.fromhex(row["in_ellswift_theirs"])
        initiating = row["in_initiating"] == "1"
        # The vectors' own consistency: our encoding decodes to our key, theirs to mid_x_theirs.
        assert ellswift_decode_xonly(ours).hex() == row["mid_x_ours"]
        assert ellswift_decode_xonly(theirs).hex() == row["mid_x_theirs"]
        ell_a, ell_b = (ours, theirs) if initiating else (theirs, ours)
        assert ellswift_xdh(ell_a, ell_b, priv, initiating).hex() == row["mid_shared_secret"]


def test_xdh_is_role_sensitive_but_agrees() -> None:
    ska, skb = b"\x01" * 32, b"\x02" * 32
    ea, eb = ellswift_create(ska, b"\x03" * 32), ellswift_create(skb, b"\x04" * 32)
    s_a = ellswift_xdh(ea, eb, ska, True)
    s_b = ellswift_xdh(ea, eb, skb, False)
    assert s_a == s_b
    # Swapping the encoding order (the mistake of ordering by "ours/theirs") changes the secret.
    assert ellswift_xdh(eb, ea, skb, True) != s_a


@settings(max_examples=25, deadline=None)
@given(sk=st.binary(min_size=32, max_size=32), rnd=st.binary(min_size=32, max_size=32))
def test_create_encode_decode_roundtrip(sk: bytes, rnd: bytes) -> None:
    if not is_valid_secret_key(sk):
        with pytest.raises(SecpError):
            ellswift_create(sk, rnd)
        return
    pub = coincurve.PrivateKey(sk).public_key.format()
    assert ellswift_decode(ellswift_create(sk, rnd)) == pub
    assert ellswift_decode(ellswift_encode(pub, rnd)) == pub
    assert ellswift_decode(ellswift_create(sk, None)) == pub


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        ellswift_decode(b"\x00" * 63)
    with pytest.raises(SecpError):
        ellswift_create(b"\x00" * 32)
    with pytest.raises(SecpError):
        ellswift_xdh(b"\x00" * 64, b"\x00" * 64, b"\xff" * 32, True)
    with pytest.raises(ValueError):
        ellswift_encode(b"\x02" + b"\x00" * 31, b"\x00" * 32)
