"""BIP-327 official vectors (all 8 files) against payouts.crypto.musig2 (libsecp256k1).

Cases the libsecp256k1 musig API cannot express (messages that are not 32 bytes,
DeterministicSign) are skipped here with the exact reason, and each of them is run instead
through btclib-ecc's independent pure-Python ``ecc.musig2`` (``test_*_oracle``), so the
behaviour the vector pins down is still checked in this suite.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from btclib_ecc.ecc import musig2 as bm
from btclib_ecc.exceptions import InvalidContributionError as BtclibContributionError
from coincurve import PublicKeyXOnly

from payouts.crypto import musig2 as m

from ._structs import dump_secnonce, keyagg_from_aggpk, load_secnonce

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "bip-0327"

@cache
def load(name: str) -> dict[str, Any]:
    path = VECTORS / f"{name}_vectors.json"
    if not path.is_file():  # fail loudly: a missing vector file must never look like a pass
        raise FileNotFoundError(f"BIP-327 vectors not found: {path}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def h(x: str | None) -> bytes | None:
    return None if x is None else bytes.fromhex(x)


def hb(x: str) -> bytes:
    return bytes.fromhex(x)


def cases(name: str, key: str) -> list[Any]:
    return [pytest.param(c, id=f"{key}-{i}") for i, c in enumerate(load(name)[key])]


def expect_error(err: dict[str, Any]) -> Any:
    """pytest.raises for a vector error, checking blame for invalid contributions."""
    if err["type"] == "invalid_contribution":
        return pytest.raises(m.InvalidContributionError)
    assert err["type"] == "value"
    return pytest.raises(m.MuSig2ValueError)


def check_blame(excinfo: Any, err: dict[str, Any]) -> None:
    if err["type"] == "invalid_contribution":
        assert excinfo.value.signer == err["signer"]
        assert excinfo.value.contrib == err["contrib"]


def bip_partial_sig_verify(
    psig: bytes,
    pubnonces: list[bytes],
    pubkeys: list[bytes],
    tweaks: list[bytes],
    is_xonly: list[bool],
    msg: bytes,
    i: int,
) -> bool:
    """BIP-327 "PartialSigVerify" composed from the wrapper's pieces."""
    aggnonce = m.nonce_agg(pubnonces)
    session = m.SessionContext(aggnonce, m.key_agg(pubkeys, tweaks, is_xonly), msg)
    return m.partial_sig_verify(psig, pubnonces[i], pubkeys[i], session, signer_index=i)


def btclib_expect(err: dict[str, Any], fn: Any) -> None:
    """Run ``fn`` under btclib and check it fails the way the vector says."""
    if err["type"] == "invalid_contribution":
        with pytest.raises(BtclibContributionError) as ei:
            fn()
        assert ei.value.signer == err["signer"]
        assert ei.value.contrib == err["contrib"]
    else:
        with pytest.raises(ValueError, match=re.escape(err["message"])):
            fn()


# ----------------------------------------------------------------------------------- key_sort


def test_key_sort() -> None:
    v = load("key_sort")
    assert m.key_sort([hb(k) for k in v["pubkeys"]]) == [hb(k) for k in v["sorted_pubkeys"]]


# ------------------------------------------------------------------------------------ key_agg


@pytest.mark.parametrize("case", cases("key_agg", "valid_test_cases"))
def test_key_agg_valid(case: dict[str, Any]) -> None:
    pks = [hb(load("key_agg")["pubkeys"][i]) for i in case["key_indices"]]
    ctx = m.key_agg(pks)
    assert ctx.xonly_pubkey == hb(case["expected"])
    assert ctx.pubkeys == tuple(pks)


@pytest.mark.parametrize("case", cases("key_agg", "error_test_cases"))
def test_key_agg_error(case: dict[str, Any]) -> None:
    v = load("key_agg")
    pks = [hb(v["pubkeys"][i]) for i in case["key_indices"]]
    tweaks = [hb(v["tweaks"][i]) for i in case["tweak_indices"]]
    err = case["error"]
    with expect_error(err) as ei:
        m.key_agg(pks, tweaks, case["is_xonly"])
    check_blame(ei, err)
    if err["type"] == "value":
        assert str(ei.value) == err["message"]


# ---------------------------------------------------------------------------------- nonce_gen


def _libsecp_expressible(case: dict[str, Any]) -> bool:
    return all(case[k] is None or len(hb(case[k])) == 32 for k in ("msg", "extra_in"))


@pytest.mark.parametrize("case", cases("nonce_gen", "test_cases"))
def test_nonce_gen(case: dict[str, Any]) -> None:
    if not _libsecp_expressible(case):
        # libsecp256k1 cannot express this case; the wrapper must refuse it loudly (never
        # sign something else), and test_nonce_gen_oracle checks the math with btclib-ecc.
        with pytest.raises(m.MuSig2ValueError, match="32 bytes"):
            m.nonce_gen(h(case["sk"]), hb(case["pk"]), None, h(case["msg"]), h(case["extra_in"]))
        return
    keyagg = None if case["aggpk"] is None else keyagg_from_aggpk(hb(case["aggpk"]))
    secnonce, pubnonce = m.nonce_gen(
        h(case["sk"]),
        hb(case["pk"]),
        keyagg,
        h(case["msg"]),
        h(case["extra_in"]),
        rand=hb(case["rand_"]),
    )
    assert pubnonce == hb(case["expected_pubnonce"])
    assert dump_secnonce(secnonce) == hb(case["expected_secnonce"])


@pytest.mark.parametrize("case", cases("nonce_gen", "test_cases"))
def test_nonce_gen_oracle(case: dict[str, Any]) -> None:
    sk = h(case["sk"])
    secnonce, pubnonce = bm.nonce_gen_(
        hb(case["rand_"]),
        None if sk is None else int.from_bytes(sk, "big"),
        hb(case["pk"]),
        h(case["aggpk"]),
        h(case["msg"]),
        h(case["extra_in"]),
    )
    assert bytes(secnonce) == hb(case["expected_secnonce"])
    assert pubnonce == hb(case["expected_pubnonce"])


# ---------------------------------------------------------------------------------- nonce_agg


@pytest.mark.parametrize("case", cases("nonce_agg", "valid_test_cases"))
def test_nonce_agg_valid(case: dict[str, Any]) -> None:
    pn = [hb(load("nonce_agg")["pnonces"][i]) for i in case["pnonce_indices"]]
    assert m.nonce_agg(pn) == hb(case["expected"])


@pytest.mark.parametrize("case", cases("nonce_agg", "error_test_cases"))
def test_nonce_agg_error(case: dict[str, Any]) -> None:
    pn = [hb(load("nonce_agg")["pnonces"][i]) for i in case["pnonce_indices"]]
    with expect_error(case["error"]) as ei:
        m.nonce_agg(pn)
    check_blame(ei, case["error"])


# -------------------------------------------------------------------------------- sign/verify


def _sv() -> dict[str, Any]:
    return load("sign_verify")


def _sv_inputs(case: dict[str, Any]) -> tuple[list[bytes], list[bytes], bytes]:
    v = _sv()
    pks = [hb(v["pubkeys"][i]) for i in case["key_indices"]]
    pns = [hb(v["pnonces"][i]) for i in case.get("nonce_indices", [])]
    return pks, pns, hb(v["msgs"][case["msg_index"]])


@pytest.mark.parametrize("case", cases("sign_verify", "valid_test_cases"))
def test_sign_verify_valid(case: dict[str, Any]) -> None:
    v = _sv()
    pks, pns, msg = _sv_inputs(case)
    if len(msg) != 32:
        # As above: refused by the wrapper, covered by test_sign_verify_valid_oracle.
        with pytest.raises(m.MuSig2ValueError, match="32 bytes"):
            m.SessionContext(hb(v["aggnonces"][case["aggnonce_index"]]), m.key_agg(pks), msg)
        return
    aggnonce = hb(v["aggnonces"][case["aggnonce_index"]])
    assert m.nonce_agg(pns) == aggnonce  # the vector's aggnonce is the aggregate of its nonces
    session = m.SessionContext(aggnonce, m.key_agg(pks), msg)
    secnonce = load_secnonce(hb(v["secnonces"][0]), hb(v["pnonces"][0]))
    psig = m.partial_sign(secnonce, hb(v["sk"]), session)
    assert psig == hb(case["expected"])
    assert secnonce.used
    i = case["signer_index"]
    assert bip_partial_sig_verify(psig, pns, pks, [], [], msg, i)


@pytest.mark.parametrize("case", cases("sign_verify", "valid_test_cases"))
def test_sign_verify_valid_oracle(case: dict[str, Any]) -> None:
    v = _sv()
    pks, pns, msg = _sv_inputs(case)
    aggnonce = hb(v["aggnonces"][case["aggnonce_index"]])
    ctx = bm.SessionContext(aggnonce, pks, [], [], msg)
    psig = bm.sign(bytearray(hb(v["secnonces"][0])), int(v["sk"], 16), ctx)
    assert psig == hb(case["expected"])
    assert bm.partial_sig_verify(psig, pns, pks, [], [], msg, case["signer_index"])


@pytest.mark.parametrize("case", cases("sign_verify", "sign_error_test_cases"))
def test_sign_error(case: dict[str, Any]) -> None:
    v = _sv()
    pks, _, msg = _sv_inputs(case)
    err = case["error"]
    secnonce = load_secnonce(hb(v["secnonces"][case["secnonce_index"]]))
    with expect_error(err) as ei:
        keyagg = m.key_agg(pks)
        session = m.SessionContext(hb(v["aggnonces"][case["aggnonce_index"]]), keyagg, msg)
        m.partial_sign(secnonce, hb(v["sk"]), session)
    check_blame(ei, err)
    if "nonce reuse" in case["comment"]:
        assert isinstance(ei.value, m.NonceReuseError)
    elif err["type"] == "value":
        # The optional membership check: done in Python before the nonce is touched.
        assert str(ei.value) == err["message"]
        assert not secnonce.used


@pytest.mark.parametrize("case", cases("sign_verify", "verify_fail_test_cases"))
def test_verify_fail(case: dict[str, Any]) -> None:
    pks, pns, msg = _sv_inputs(case)
    assert not bip_partial_sig_verify(hb(case["sig"]), pns, pks, [], [], msg, case["signer_index"])


@pytest.mark.parametrize("case", cases("sign_verify", "verify_error_test_cases"))
def test_verify_error(case: dict[str, Any]) -> None:
    pks, pns, msg = _sv_inputs(case)
    with expect_error(case["error"]) as ei:
        bip_partial_sig_verify(hb(case["sig"]), pns, pks, [], [], msg, case["signer_index"])
    check_blame(ei, case["error"])


# -------------------------------------------------------------------------------------- tweak


@pytest.mark.parametrize("case", cases("tweak", "valid_test_cases"))
def test_tweak_valid(case: dict[str, Any]) -> None:
    v = load("tweak")
    pks = [hb(v["pubkeys"][i]) for i in case["key_indices"]]
    pns = [hb(v["pnonces"][i]) for i in case["nonce_indices"]]
    tweaks = [hb(v["tweaks"][i]) for i in case["tweak_indices"]]
    msg, aggnonce = hb(v["msg"]), hb(v["aggnonce"])
    assert m.nonce_agg(pns) == aggnonce
    keyagg = m.key_agg(pks, tweaks, case["is_xonly"])
    session = m.SessionContext(aggnonce, keyagg, msg)
    # pnonces[0] belongs to the vector's secnonce, so partial_sign's self-verify runs too.
    secnonce = load_secnonce(hb(v["secnonce"]), hb(v["pnonces"][0]))
    psig = m.partial_sign(secnonce, hb(v["sk"]), session)
    assert psig == hb(case["expected"])
    assert bip_partial_sig_verify(
        psig, pns, pks, tweaks, case["is_xonly"], msg, case["signer_index"]
    )
    # The independent oracle agrees on the tweaked aggregate key.
    assert keyagg.xonly_pubkey == bm.key_agg_and_tweak(pks, tweaks, case["is_xonly"]).x_only_pub_key


@pytest.mark.parametrize("case", cases("tweak", "error_test_cases"))
def test_tweak_error(case: dict[str, Any]) -> None:
    v = load("tweak")
    pks = [hb(v["pubkeys"][i]) for i in case["key_indices"]]
    tweaks = [hb(v["tweaks"][i]) for i in case["tweak_indices"]]
    with pytest.raises(m.MuSig2ValueError, match=r"The tweak must be less than n\."):
        m.key_agg(pks, tweaks, case["is_xonly"])


# ------------------------------------------------------------------------------------ sig_agg


def _sa_inputs(case: dict[str, Any]) -> tuple[m.SessionContext, list[bytes]]:
    v = load("sig_agg")
    pks = [hb(v["pubkeys"][i]) for i in case["key_indices"]]
    pns = [hb(v["pnonces"][i]) for i in case["nonce_indices"]]
    tweaks = [hb(v["tweaks"][i]) for i in case["tweak_indices"]]
    aggnonce = hb(case["aggnonce"])
    assert m.nonce_agg(pns) == aggnonce
    session = m.SessionContext(aggnonce, m.key_agg(pks, tweaks, case["is_xonly"]), hb(v["msg"]))
    return session, [hb(v["psigs"][i]) for i in case["psig_indices"]]


@pytest.mark.parametrize("case", cases("sig_agg", "valid_test_cases"))
def test_sig_agg_valid(case: dict[str, Any]) -> None:
    session, psigs = _sa_inputs(case)
    sig = m.partial_sig_agg(psigs, session)
    assert sig == hb(case["expected"])
    assert PublicKeyXOnly(session.keyagg.xonly_pubkey).verify(sig, session.msg)


@pytest.mark.parametrize("case", cases("sig_agg", "error_test_cases"))
def test_sig_agg_error(case: dict[str, Any]) -> None:
    session, psigs = _sa_inputs(case)
    with expect_error(case["error"]) as ei:
        m.partial_sig_agg(psigs, session)
    check_blame(ei, case["error"])


# ----------------------------------------------------------------------------------- det_sign


# libsecp256k1 has no DeterministicSign (the engine never needs it: every signer keeps
# state between the rounds); test_det_sign_oracle / test_det_sign_error_oracle run every
# det_sign vector through btclib-ecc and verify the 32-byte-message signatures with libsecp.


def _det_args(case: dict[str, Any]) -> tuple[Any, ...]:
    v = load("det_sign")
    pks = [hb(v["pubkeys"][i]) for i in case["key_indices"]]
    tweaks = [hb(t) for t in case["tweaks"]]
    msg = hb(v["msgs"][case["msg_index"]])
    return (
        int(v["sk"], 16),
        hb(case["aggothernonce"]),
        pks,
        tweaks,
        case["is_xonly"],
        msg,
        h(case["rand"]),
    )


@pytest.mark.parametrize("case", cases("det_sign", "valid_test_cases"))
def test_det_sign_oracle(case: dict[str, Any]) -> None:
    args = _det_args(case)
    _, aggothernonce, pks, tweaks, is_xonly, msg, _ = args
    pubnonce, psig = bm.deterministic_sign(*args)
    assert [pubnonce, psig] == [hb(x) for x in case["expected"]]
    i = case["signer_index"]
    pubnonces = [aggothernonce, pubnonce]
    ctx = bm.SessionContext(bm.nonce_agg(pubnonces), pks, tweaks, is_xonly, msg)
    assert bm.partial_sig_verify_(psig, pubnonce, pks[i], ctx)
    if len(msg) == 32:
        # And libsecp256k1 accepts the deterministic partial signature as valid.
        session = m.SessionContext(m.nonce_agg(pubnonces), m.key_agg(pks, tweaks, is_xonly), msg)
        assert m.partial_sig_verify(psig, pubnonce, pks[i], session)


@pytest.mark.parametrize("case", cases("det_sign", "error_test_cases"))
def test_det_sign_error_oracle(case: dict[str, Any]) -> None:
    btclib_expect(case["error"], lambda: bm.deterministic_sign(*_det_args(case)))
