"""The musig2 settlement signing session: every transition, error code and blame."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
from coincurve import PublicKeyXOnly
from hypothesis import given, settings
from hypothesis import strategies as st

from payouts.crypto import musig2 as m
from payouts.settlement.musig2 import (
    Blame,
    DeadlinePassedError,
    DuplicateNonceError,
    DuplicatePartialSigError,
    DuplicatePubkeyError,
    FailureReason,
    InvalidNonceError,
    InvalidPartialSigError,
    InvalidPubkeyError,
    InvalidTimeError,
    SessionConfigError,
    SessionError,
    SessionState,
    SigningSession,
    UnknownSignerError,
    WrongStateError,
)
from payouts.settlement.musig2 import session as session_mod
from payouts.settlement.musig2.session import PartialSigCheck

S = SessionState
DEFER = PartialSigCheck.ON_AGGREGATE
ROOT = b"\x5a" * 32
NONCE_DL, SIG_DL = 100.0, 200.0


class Committee:
    """n honest signers on the test's side of the wire."""

    def __init__(self, n: int) -> None:
        self.sks = [os.urandom(32) for _ in range(n)]
        self.pks = [m.individual_pubkey(sk) for sk in self.sks]
        self.nonces: list[tuple[m.SecNonce, bytes]] = []

    def session(self, **kw: Any) -> SigningSession:
        kw.setdefault("nonce_deadline", NONCE_DL)
        kw.setdefault("sig_deadline", SIG_DL)
        kw.setdefault("taproot_merkle_root", ROOT)
        s = SigningSession(self.pks, kw.pop("msg", b"\x33" * 32), **kw)
        self.nonces = [
            m.nonce_gen(sk, pk, s.keyagg, s.msg) for sk, pk in zip(self.sks, self.pks, strict=True)
        ]
        return s

    def psig(self, s: SigningSession, i: int) -> bytes:
        assert s.session_context is not None
        return m.partial_sign(self.nonces[i][0], self.sks[i], s.session_context)

    def all_nonces(self, s: SigningSession, now: float = 1.0, skip: tuple[int, ...] = ()) -> None:
        for i in range(len(self.sks)):
            if i not in skip:
                s.add_nonce(i, self.nonces[i][1], now)


def test_happy_path_complete_and_signature_verifies() -> None:
    c = Committee(5)
    s = c.session()
    assert s.state is S.COLLECTING_NONCES
    assert s.n_signers == 5 and s.pubkeys == tuple(c.pks)
    assert s.aggnonce is None and s.session_context is None
    with pytest.raises(WrongStateError):
        s.final_signature()
    for k, i in enumerate([3, 0, 4, 1, 2]):  # any arrival order
        state = s.add_nonce(i, c.nonces[i][1], now=10 + k)
        assert state is (S.COLLECTING_NONCES if k < 4 else S.COLLECTING_PARTIAL_SIGS)
    assert s.aggnonce == m.nonce_agg([p for _, p in c.nonces])
    assert s.missing_nonces == ()
    psigs = [c.psig(s, i) for i in range(5)]
    for i in (4, 2, 0, 1):
        assert s.add_partial_sig(i, psigs[i], now=150) is S.COLLECTING_PARTIAL_SIGS
    assert s.missing_partial_sigs == (3,)
    assert s.add_partial_sig(3, psigs[3], now=150) is S.COMPLETE
    sig = s.final_signature()
    assert PublicKeyXOnly(s.output_key).verify(sig, s.msg)
    assert s.failure is None and s.failed_signers == () and s.rejections == ()
    # The output key is the BIP-341 tweak of the MuSig2 internal key by the script-tree root.
    expected = PublicKeyXOnly(s.internal_key)
    expected.tweak_add(m.tagged_hash("TapTweak", s.internal_key + ROOT))
    assert expected.format() == s.output_key
    # Terminal: nothing else is accepted; tick does nothing.
    with pytest.raises(WrongStateError):
        s.add_partial_sig(3, psigs[3], now=150)
    with pytest.raises(WrongStateError):
        s.add_nonce(0, c.nonces[0][1], now=150)
    with pytest.raises(WrongStateError):
        s.abort(now=150)
    assert s.tick(10_000) is S.COMPLETE


@pytest.mark.parametrize("root", [None, b""])
def test_untweaked_and_bip86_keys(root: bytes | None) -> None:
    c = Committee(3)
    s = c.session(taproot_merkle_root=root)
    if root is None:
        assert s.output_key == s.internal_key
    else:
        assert s.output_key != s.internal_key
    c.all_nonces(s)
    for i in range(3):
        s.add_partial_sig(i, c.psig(s, i), now=101)  # round 1 closed early: round 2 is open
    assert PublicKeyXOnly(s.output_key).verify(s.final_signature(), s.msg)


def test_single_signer_committee() -> None:
    c = Committee(1)
    s = c.session()
    assert s.add_nonce(0, c.nonces[0][1], 0) is S.COLLECTING_PARTIAL_SIGS
    assert s.add_partial_sig(0, c.psig(s, 0), 0) is S.COMPLETE


# ------------------------------------------------------------------------------ configuration


def test_config_errors() -> None:
    c = Committee(3)
    with pytest.raises(SessionConfigError, match="committee size") as ei:
        SigningSession([], b"\x00" * 32, nonce_deadline=1, sig_deadline=2)
    assert ei.value.code == "invalid-session-config"
    with pytest.raises(SessionConfigError, match=r"1\.\.2"):
        SigningSession(c.pks, b"\x00" * 32, nonce_deadline=1, sig_deadline=2, max_signers=2)
    with pytest.raises(SessionConfigError, match="max_signers"):
        SigningSession(c.pks, b"\x00" * 32, nonce_deadline=1, sig_deadline=2, max_signers=0)
    for bad_msg in (b"", b"\x00" * 31, b"\x00" * 33, "00" * 32):
        with pytest.raises(SessionConfigError, match="32-byte"):
            SigningSession(c.pks, bad_msg, nonce_deadline=1, sig_deadline=2)  # type: ignore[arg-type]
    for nd, sd in ((2, 2), (3, 2)):
        with pytest.raises(SessionConfigError, match="before"):
            SigningSession(c.pks, b"\x00" * 32, nonce_deadline=nd, sig_deadline=sd)
    for bad in (math.nan, math.inf):
        with pytest.raises(InvalidTimeError) as ti:
            SigningSession(c.pks, b"\x00" * 32, nonce_deadline=bad, sig_deadline=2)
        assert ti.value.code == "invalid-time"
    with pytest.raises(SessionConfigError, match="merkle_root"):
        SigningSession(
            c.pks, b"\x00" * 32, nonce_deadline=1, sig_deadline=2, taproot_merkle_root=b"\x01"
        )


def test_default_committee_bound_is_100() -> None:
    pks = [m.individual_pubkey(i.to_bytes(32, "big")) for i in range(1, 102)]
    SigningSession(pks[:100], b"\x00" * 32, nonce_deadline=1, sig_deadline=2)
    with pytest.raises(SessionConfigError, match=r"1\.\.100"):
        SigningSession(pks, b"\x00" * 32, nonce_deadline=1, sig_deadline=2)
    SigningSession(pks, b"\x00" * 32, nonce_deadline=1, sig_deadline=2, max_signers=101)


def test_invalid_and_duplicate_committee_keys_blame_the_position() -> None:
    c = Committee(3)
    bad = [c.pks[0], c.pks[1], b"\x02" + b"\x00" * 31 + b"\x07"]  # x=7 is not on the curve
    with pytest.raises(InvalidPubkeyError) as ei:
        SigningSession(bad, b"\x00" * 32, nonce_deadline=1, sig_deadline=2)
    assert (ei.value.code, ei.value.signer_index) == ("invalid-pubkey", 2)
    with pytest.raises(DuplicatePubkeyError) as di:
        SigningSession([*c.pks, c.pks[1]], b"\x00" * 32, nonce_deadline=1, sig_deadline=2)
    assert (di.value.code, di.value.signer_index) == ("duplicate-pubkey", 3)


# ------------------------------------------------------------------------------ round 1


@pytest.mark.parametrize("bad_index", [-1, 3, True, "0", None, 1.0])
def test_unknown_signer(bad_index: Any) -> None:
    c = Committee(3)
    s = c.session()
    with pytest.raises(UnknownSignerError) as ei:
        s.add_nonce(bad_index, c.nonces[0][1], 1)
    assert ei.value.code == "unknown-signer"
    assert s.state is S.COLLECTING_NONCES and s.pubnonces == {}


def test_invalid_nonce_rejected_with_blame_then_valid_accepted() -> None:
    c = Committee(3)
    s = c.session()
    s.add_nonce(0, c.nonces[0][1], 1)
    garbage = b"\x04" + c.nonces[1][1][1:]
    for bad in (garbage, c.nonces[1][1][:65], b"", "zz"):
        with pytest.raises(InvalidNonceError) as ei:
            s.add_nonce(1, bad, 2)  # type: ignore[arg-type]
        assert (ei.value.code, ei.value.signer_index) == ("invalid-nonce", 1)
    # Nothing changed for anyone.
    assert s.state is S.COLLECTING_NONCES
    assert dict(s.pubnonces) == {0: c.nonces[0][1]}
    assert [(r.signer_index, r.code) for r in s.rejections] == [(1, "invalid-nonce")] * 4
    c.all_nonces(s, now=3, skip=(0,))
    assert s.state is S.COLLECTING_PARTIAL_SIGS


def test_duplicate_nonce() -> None:
    c = Committee(3)
    s = c.session()
    s.add_nonce(0, c.nonces[0][1], 1)
    assert s.add_nonce(0, c.nonces[0][1], 2) is S.COLLECTING_NONCES  # identical: idempotent
    with pytest.raises(DuplicateNonceError) as ei:
        s.add_nonce(0, c.nonces[1][1], 3)
    assert (ei.value.code, ei.value.signer_index) == ("duplicate-nonce", 0)
    assert s.pubnonces[0] == c.nonces[0][1]
    with pytest.raises(DuplicateNonceError):
        s.add_nonce(0, b"garbage", 3)  # a filled slot is never re-parsed


def test_lazy_signer_times_out_in_nonce_round() -> None:
    c = Committee(4)
    s = c.session()
    c.all_nonces(s, now=5, skip=(1, 3))
    with pytest.raises(InvalidNonceError):
        s.add_nonce(3, b"\x00" * 66, NONCE_DL)  # signer 3 only ever sends garbage
    assert s.tick(NONCE_DL) is S.COLLECTING_NONCES  # at the deadline: still on time
    assert s.tick(NONCE_DL + 0.001) is S.FAILED
    assert s.failed_signers == (1, 3)
    assert s.failure is not None
    assert s.failure.reason is FailureReason.NONCE_DEADLINE
    assert dict(s.failure.blame) == {1: Blame.NO_NONCE, 3: Blame.INVALID_NONCE}
    assert s.failure.at == NONCE_DL + 0.001
    with pytest.raises(DeadlinePassedError) as ei:
        s.add_nonce(1, c.nonces[1][1], NONCE_DL + 1)
    assert ei.value.code == "deadline-passed"
    with pytest.raises(WrongStateError):
        s.add_partial_sig(0, b"\x00" * 32, NONCE_DL + 1)
    with pytest.raises(WrongStateError):
        s.final_signature()


def test_late_nonce_fails_the_session_and_raises() -> None:
    c = Committee(2)
    s = c.session()
    s.add_nonce(0, c.nonces[0][1], 1)
    s.add_nonce(1, c.nonces[1][1], NONCE_DL)  # exactly at the deadline: accepted
    assert s.state is S.COLLECTING_PARTIAL_SIGS
    c2 = Committee(2)
    s2 = c2.session()
    s2.add_nonce(0, c2.nonces[0][1], 1)
    with pytest.raises(DeadlinePassedError):
        s2.add_nonce(1, c2.nonces[1][1], NONCE_DL + 1)
    assert s2.state is S.FAILED and s2.failed_signers == (1,)


def test_partial_sig_before_nonce_round_closes_is_wrong_state() -> None:
    c = Committee(2)
    s = c.session()
    with pytest.raises(WrongStateError) as ei:
        s.add_partial_sig(0, b"\x01" * 32, 1)
    assert ei.value.code == "wrong-state"


# ------------------------------------------------------------------------------ round 2


def _round2(n: int = 4) -> tuple[Committee, SigningSession, list[bytes]]:
    c = Committee(n)
    s = c.session()
    c.all_nonces(s)
    return c, s, [c.psig(s, i) for i in range(n)]


def test_nonce_after_round_one_is_wrong_state() -> None:
    c, s, _ = _round2()
    with pytest.raises(WrongStateError):
        s.add_nonce(0, c.nonces[0][1], 2)


def test_invalid_partial_sig_rejected_with_blame_state_unchanged() -> None:
    _, s, psigs = _round2()
    s.add_partial_sig(0, psigs[0], 120)
    flipped = bytes([psigs[2][0] ^ 0x80]) + psigs[2][1:]
    for bad in (flipped, psigs[1], psigs[2][:31], b"\xff" * 32, "x"):
        # another signer's valid psig, truncated, above n, wrong type: all fail to verify
        with pytest.raises(InvalidPartialSigError) as ei:
            s.add_partial_sig(2, bad, 121)  # type: ignore[arg-type]
        assert (ei.value.code, ei.value.signer_index) == ("invalid-partial-signature", 2)
    assert s.state is S.COLLECTING_PARTIAL_SIGS
    assert s.missing_partial_sigs == (1, 2, 3)
    # Decision: a bad psig rejects the contribution only; the signer may still deliver.
    for i in (2, 1, 3):
        s.add_partial_sig(i, psigs[i], 130)
    assert s.state is S.COMPLETE
    assert PublicKeyXOnly(s.output_key).verify(s.final_signature(), s.msg)
    assert [r.code for r in s.rejections] == ["invalid-partial-signature"] * 5


def test_duplicate_partial_sig() -> None:
    _, s, psigs = _round2()
    s.add_partial_sig(1, psigs[1], 120)
    assert s.add_partial_sig(1, psigs[1], 121) is S.COLLECTING_PARTIAL_SIGS  # idempotent
    with pytest.raises(DuplicatePartialSigError) as ei:
        s.add_partial_sig(1, psigs[2], 122)
    assert (ei.value.code, ei.value.signer_index) == ("duplicate-partial-signature", 1)
    with pytest.raises(UnknownSignerError):
        s.add_partial_sig(4, psigs[0], 122)


def test_lazy_signer_times_out_in_signature_round_with_blame() -> None:
    c, s, psigs = _round2(5)
    for i in (0, 2, 4):
        s.add_partial_sig(i, psigs[i], 150)
    bad = bytes([psigs[3][-1] ^ 1]) + psigs[3][1:]
    with pytest.raises(InvalidPartialSigError):
        s.add_partial_sig(3, bad, 160)  # signer 3 cheats and then goes silent
    assert s.tick(SIG_DL) is S.COLLECTING_PARTIAL_SIGS
    assert s.tick(SIG_DL + 1) is S.FAILED
    assert s.failure is not None and s.failure.reason is FailureReason.SIGNATURE_DEADLINE
    assert s.failed_signers == (1, 3)
    assert dict(s.failure.blame) == {1: Blame.NO_PARTIAL_SIG, 3: Blame.INVALID_PARTIAL_SIG}
    with pytest.raises(DeadlinePassedError):
        s.add_partial_sig(1, psigs[1], SIG_DL + 2)
    with pytest.raises(WrongStateError):
        s.add_nonce(1, c.nonces[1][1], SIG_DL + 2)  # the other round's failure: wrong state
    with pytest.raises(WrongStateError):
        s.abort(SIG_DL + 3)


def test_late_partial_sig_fails_the_session_and_raises() -> None:
    _, s, psigs = _round2(2)
    s.add_partial_sig(0, psigs[0], SIG_DL)
    with pytest.raises(DeadlinePassedError):
        s.add_partial_sig(1, psigs[1], SIG_DL + 0.5)
    assert s.state is S.FAILED and s.failed_signers == (1,)


@pytest.mark.parametrize("in_round", [1, 2])
def test_abort(in_round: int) -> None:
    c = Committee(2)
    s = c.session()
    if in_round == 2:
        c.all_nonces(s)
    s.abort(50, "reorg: the coinbase is gone")
    assert s.state is S.FAILED
    assert s.failure is not None and s.failure.reason is FailureReason.ABORTED
    assert s.failure.detail == "reorg: the coinbase is gone"
    assert s.failed_signers == ()


def test_invalid_time() -> None:
    c = Committee(2)
    s = c.session()
    for bad in (math.nan, math.inf, "5", None, True):
        with pytest.raises(InvalidTimeError):
            s.add_nonce(0, c.nonces[0][1], bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidTimeError):
            s.tick(bad)  # type: ignore[arg-type]
    assert s.state is S.COLLECTING_NONCES and s.pubnonces == {}


def test_errors_are_payouts_errors_with_codes() -> None:
    codes = {
        cls.code
        for cls in (
            UnknownSignerError, DuplicateNonceError, DuplicatePartialSigError,
            InvalidNonceError, InvalidPartialSigError, DeadlinePassedError, WrongStateError,
            SessionConfigError, InvalidPubkeyError, DuplicatePubkeyError, InvalidTimeError,
        )
    }  # fmt: skip
    assert len(codes) == 11
    e = InvalidPartialSigError("x", signer_index=3)
    assert isinstance(e, SessionError) and str(e) == "invalid-partial-signature: x"


# ------------------------------------------------------------------------------ ON_AGGREGATE


def _deferred(n: int = 4) -> tuple[Committee, SigningSession, list[bytes]]:
    c = Committee(n)
    s = c.session(psig_check=DEFER)
    c.all_nonces(s)
    return c, s, [c.psig(s, i) for i in range(n)]


def _tamper(psig: bytes, delta: int = 1) -> bytes:
    """A well-formed scalar (below n) that is not the signer's partial signature: s + delta."""
    return ((int.from_bytes(psig, "big") + delta) % m.N).to_bytes(32, "big")


class _CountVerify:
    """Counts BIP-327 PartialSigVerify calls made by the session module."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int | None] = []
        real = m.partial_sig_verify

        def spy(*a: Any, **kw: Any) -> bool:
            self.calls.append(kw.get("signer_index"))
            return real(*a, **kw)

        monkeypatch.setattr(session_mod.musig2, "partial_sig_verify", spy)


@pytest.mark.parametrize("check", list(PartialSigCheck))
def test_honest_round_verifies_partials_only_on_arrival_mode(
    check: PartialSigCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ON_AGGREGATE: no PartialSigVerify when everyone is honest (the final BIP-340 verify
    covers them all); ON_ARRIVAL: one per signer. Same signature either way."""
    c = Committee(5)
    s = c.session(psig_check=check)
    assert s.psig_check is check
    c.all_nonces(s)
    psigs = [c.psig(s, i) for i in range(5)]
    spy = _CountVerify(monkeypatch)
    for i in (2, 0, 4, 1):
        assert s.add_partial_sig(i, psigs[i], 150) is S.COLLECTING_PARTIAL_SIGS
    if check is DEFER:
        assert s.unverified_partial_sigs == (0, 1, 2, 4)
    else:
        assert s.unverified_partial_sigs == ()
    assert s.missing_partial_sigs == (3,)
    assert s.add_partial_sig(3, psigs[3], 151) is S.COMPLETE
    assert spy.calls == ([] if check is DEFER else [2, 0, 4, 1, 3])
    assert s.unverified_partial_sigs == () and s.rejections == ()
    assert PublicKeyXOnly(s.output_key).verify(s.final_signature(), s.msg)
    assert s.final_signature() == m.partial_sig_agg(psigs, s.session_context)  # type: ignore[arg-type]


def test_deferred_malformed_psig_is_refused_on_arrival() -> None:
    _, s, psigs = _deferred()
    n_bytes = m.N.to_bytes(32, "big")
    for bad in (n_bytes, b"\xff" * 32, psigs[1][:31], psigs[1] + b"\x00", "x", None):
        with pytest.raises(InvalidPartialSigError) as ei:
            s.add_partial_sig(1, bad, 120)  # type: ignore[arg-type]
        assert (ei.value.code, ei.value.signer_index) == ("invalid-partial-signature", 1)
    assert s.missing_partial_sigs == (0, 1, 2, 3) and s.unverified_partial_sigs == ()
    assert [r.code for r in s.rejections] == ["invalid-partial-signature"] * 6


def test_deferred_bad_psig_found_by_the_last_arrival_blames_its_signer() -> None:
    """Signer 1's tampered psig is accepted on arrival; signer 3's (valid, last) arrival fails
    the aggregate, which blames signer 1 alone: its slot is empty again, signer 3 gets no
    error, and signer 1 may still deliver."""
    _, s, psigs = _deferred()
    bad = _tamper(psigs[1])
    assert m.psig_well_formed(bad)
    s.add_partial_sig(0, psigs[0], 120)
    assert s.add_partial_sig(1, bad, 121) is S.COLLECTING_PARTIAL_SIGS  # not found out yet
    s.add_partial_sig(2, psigs[2], 122)
    assert s.missing_partial_sigs == (3,)
    assert s.add_partial_sig(3, psigs[3], 123) is S.COLLECTING_PARTIAL_SIGS
    assert s.missing_partial_sigs == (1,) and s.unverified_partial_sigs == ()
    assert [(r.signer_index, r.code, r.at) for r in s.rejections] == [
        (1, "invalid-partial-signature", 121.0)
    ]
    with pytest.raises(WrongStateError):
        s.final_signature()
    # Re-sending the value found bad is refused at once now.
    with pytest.raises(InvalidPartialSigError) as ei:
        s.add_partial_sig(1, bad, 124)
    assert ei.value.signer_index == 1 and s.missing_partial_sigs == (1,)
    # The others are verified now: re-sending them is idempotent, another value a duplicate.
    assert s.add_partial_sig(0, psigs[0], 124) is S.COLLECTING_PARTIAL_SIGS
    with pytest.raises(DuplicatePartialSigError):
        s.add_partial_sig(0, psigs[1], 124)
    assert s.add_partial_sig(1, psigs[1], 125) is S.COMPLETE
    assert PublicKeyXOnly(s.output_key).verify(s.final_signature(), s.msg)


def test_deferred_last_arrival_that_is_bad_raises_for_its_sender() -> None:
    _, s, psigs = _deferred()
    s.add_partial_sig(0, _tamper(psigs[0], 1), 120)
    s.add_partial_sig(1, psigs[1], 121)
    s.add_partial_sig(2, psigs[2], 122)
    with pytest.raises(InvalidPartialSigError) as ei:
        s.add_partial_sig(3, _tamper(psigs[3], 2), 123)  # +1 +2: they do not cancel out
    assert (ei.value.code, ei.value.signer_index) == ("invalid-partial-signature", 3)
    # Both culprits are rejected (the other one silently, with its arrival time).
    assert s.missing_partial_sigs == (0, 3)
    assert sorted((r.signer_index, r.at) for r in s.rejections) == [(0, 120.0), (3, 123.0)]
    assert s.state is S.COLLECTING_PARTIAL_SIGS


def test_deferred_bad_partials_that_cancel_out_still_give_the_honest_signature() -> None:
    """Two colluding signers shift their partials by +d and -d: each fails PartialSigVerify,
    but the sum, and so the final signature, is the honest one. ON_AGGREGATE completes with it
    (BIP-327: the final signature is what security rests on); ON_ARRIVAL refuses both."""
    c, s, psigs = _deferred(3)
    d = SigningSession(
        c.pks, s.msg, nonce_deadline=NONCE_DL, sig_deadline=SIG_DL, taproot_merkle_root=ROOT
    )
    c.all_nonces(d)
    shifted = [_tamper(psigs[0], 5), _tamper(psigs[1], -5), psigs[2]]
    for i, ps in enumerate(shifted):
        s.add_partial_sig(i, ps, 120)
    assert s.state is S.COMPLETE and s.rejections == ()
    assert s.final_signature() == m.partial_sig_agg(psigs, s.session_context)  # type: ignore[arg-type]
    for i in (0, 1):
        with pytest.raises(InvalidPartialSigError):
            d.add_partial_sig(i, shifted[i], 120)


def test_deferred_replacing_a_held_psig() -> None:
    """A different value for a slot holding an unverified psig verifies the held one first."""
    _, s, psigs = _deferred()
    # Junk first (anyone can post under index 2): the real psig replaces it.
    s.add_partial_sig(2, _tamper(psigs[2]), 120)
    assert s.add_partial_sig(2, psigs[2], 121) is S.COLLECTING_PARTIAL_SIGS
    assert [(r.signer_index, r.code, r.at) for r in s.rejections] == [
        (2, "invalid-partial-signature", 120.0)
    ]
    assert s.unverified_partial_sigs == (2,)
    # Real first: junk for that slot is a duplicate, and the real one is now verified.
    with pytest.raises(DuplicatePartialSigError) as ei:
        s.add_partial_sig(2, _tamper(psigs[2]), 122)
    assert (ei.value.code, ei.value.signer_index) == ("duplicate-partial-signature", 2)
    assert s.unverified_partial_sigs == ()
    for i in (0, 1, 3):
        s.add_partial_sig(i, psigs[i], 123)
    assert s.state is S.COMPLETE


def test_deferred_deadline_blames_an_unverified_bad_psig() -> None:
    _, s, psigs = _deferred(5)
    s.add_partial_sig(0, psigs[0], 150)
    s.add_partial_sig(3, _tamper(psigs[3]), 160)  # cheats, then goes silent
    s.add_partial_sig(4, psigs[4], 170)
    assert s.tick(SIG_DL) is S.COLLECTING_PARTIAL_SIGS
    assert s.unverified_partial_sigs == (0, 3, 4)  # nothing verified before the deadline
    assert s.tick(SIG_DL + 1) is S.FAILED
    assert s.failure is not None and s.failure.reason is FailureReason.SIGNATURE_DEADLINE
    assert dict(s.failure.blame) == {
        1: Blame.NO_PARTIAL_SIG, 2: Blame.NO_PARTIAL_SIG, 3: Blame.INVALID_PARTIAL_SIG,
    }  # fmt: skip
    assert [(r.signer_index, r.at) for r in s.rejections] == [(3, 160.0)]


@pytest.mark.parametrize("check", list(PartialSigCheck))
def test_retry_of_a_bad_value_costs_no_verification(
    check: PartialSigCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = Committee(3)
    s = c.session(psig_check=check)
    c.all_nonces(s)
    psigs = [c.psig(s, i) for i in range(3)]
    bad = _tamper(psigs[0])
    s.add_partial_sig(1, psigs[1], 120)
    s.add_partial_sig(2, psigs[2], 120)
    with pytest.raises(InvalidPartialSigError):
        s.add_partial_sig(0, bad, 121)  # ON_AGGREGATE: found out because it completes the set
    spy = _CountVerify(monkeypatch)
    for t in (122, 123):
        with pytest.raises(InvalidPartialSigError):
            s.add_partial_sig(0, bad, t)
    assert spy.calls == []
    assert [r.at for r in s.rejections] == [121.0, 122.0, 123.0]
    assert s.add_partial_sig(0, psigs[0], 124) is S.COMPLETE


def test_psig_check_must_be_known() -> None:
    c = Committee(2)
    with pytest.raises(SessionConfigError, match="psig_check"):
        c.session(psig_check="sometimes")
    assert c.session(psig_check="on-aggregate").psig_check is DEFER


# ------------------------------------------------------------------------------ property


# Weighted towards on time, so that most examples reach round 2 and its deadline.
_NONCE_T = st.one_of(st.none(), st.floats(0, 150), *[st.floats(0, NONCE_DL)] * 3)
_SIG_T = st.one_of(st.none(), st.floats(0, 250), *[st.floats(0, SIG_DL)] * 3)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=6),
    nonce_times=st.lists(_NONCE_T, min_size=6, max_size=6),
    sig_times=st.lists(_SIG_T, min_size=6, max_size=6),
    corrupt=st.sets(st.integers(0, 5)),
)
def test_random_schedules(
    n: int, nonce_times: list[float | None], sig_times: list[float | None], corrupt: set[int]
) -> None:
    """COMPLETE iff everyone delivers on time; otherwise FAILED blaming exactly the no-shows.

    Both verification strategies get the same schedule and must end the same way: same state,
    same blame, same signature. ``ON_AGGREGATE`` may only refuse a bad psig later.
    """
    c = Committee(n)
    s = c.session()
    d = SigningSession(
        c.pks, s.msg, nonce_deadline=NONCE_DL, sig_deadline=SIG_DL, taproot_merkle_root=ROOT,
        psig_check=DEFER,
    )  # fmt: skip
    both = (s, d)
    sched = sorted((t, i) for i, t in enumerate(nonce_times[:n]) if t is not None)
    for t, i in sched:
        try:
            for x in both:
                x.add_nonce(i, c.nonces[i][1], t)
        except DeadlinePassedError:
            break
    for x in both:
        x.tick(NONCE_DL + 1)
    on_time = {i for t, i in sched if t <= NONCE_DL}
    if on_time != set(range(n)):
        for x in both:
            assert x.state is S.FAILED
            assert set(x.failed_signers) == set(range(n)) - on_time
        return
    assert s.state is d.state is S.COLLECTING_PARTIAL_SIGS
    psigs = [c.psig(s, i) for i in range(n)]  # same keys, nonces, msg: valid for d as well
    sched2 = sorted((max(t, NONCE_DL + 1), i) for i, t in enumerate(sig_times[:n]) if t is not None)
    for t, i in sched2:
        value = psigs[i][::-1] if i in corrupt else psigs[i]
        try:
            if i in corrupt:
                with pytest.raises(InvalidPartialSigError):
                    s.add_partial_sig(i, value, t)
            else:
                s.add_partial_sig(i, value, t)
        except DeadlinePassedError:
            break
        try:
            d.add_partial_sig(i, value, t)
        except InvalidPartialSigError as e:
            assert i in corrupt and e.signer_index == i  # only ever the caller's own fault
    d.tick(SIG_DL + 1)
    s.tick(SIG_DL + 1)
    delivered = {i for t, i in sched2 if t <= SIG_DL and i not in corrupt}
    assert d.state is s.state
    assert d.unverified_partial_sigs == ()
    if delivered == set(range(n)):
        assert s.state is S.COMPLETE
        assert PublicKeyXOnly(s.output_key).verify(s.final_signature(), s.msg)
        assert d.final_signature() == s.final_signature()
    else:
        assert s.state is S.FAILED
        assert set(s.failed_signers) == set(range(n)) - delivered
        assert s.failure is not None and d.failure is not None
        assert dict(d.failure.blame) == dict(s.failure.blame)
        for i, why in s.failure.blame.items():
            sent_bad = i in corrupt and any(j == i and t <= SIG_DL for t, j in sched2)
            assert why is (Blame.INVALID_PARTIAL_SIG if sent_bad else Blame.NO_PARTIAL_SIG)
    # The same contributions were refused, whenever that was found out.
    key = sorted((r.signer_index, r.code, r.at) for r in s.rejections)
    assert sorted((r.signer_index, r.code, r.at) for r in d.rejections) == key
