"""``PartialSigCheck.ON_AGGREGATE`` sessions judged by Bitcoin Core's consensus code
(libbitcoinkernel, in-memory regtest): the signature it completes with pays out, and a signer it
blames leads to the same fallback as with ``ON_ARRIVAL``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from payouts.crypto import musig2 as m
from payouts.node.kernel_chain import KernelChain
from payouts.settlement.musig2.errors import InvalidPartialSigError, WrongStateError
from payouts.settlement.musig2.output import Musig2Output
from payouts.settlement.musig2.session import (
    Blame,
    FailureReason,
    PartialSigCheck,
    SessionState,
    SigningSession,
)
from payouts.settlement.musig2.spend import (
    build_fallback_spend,
    cooperative_sighash,
    cooperative_spend,
    sign_fallback_spend,
)
from payouts.tx.transaction import OutPoint
from tests.musig2_settlement.helpers import FALLBACK_SK, MINER
from tests.musig2_settlement.test_kernel import DELAY, assert_paid, fund, mine

NONCE_DL, SIG_DL = 100.0, 200.0


@pytest.fixture
def chain() -> Iterator[KernelChain]:
    with KernelChain() as c:
        yield c


def deferred_session(out: Musig2Output, funding: OutPoint) -> SigningSession:
    """``open_signing_session`` with the other verification strategy."""
    return SigningSession(
        out.committee.pubkeys,
        cooperative_sighash(out, funding),
        nonce_deadline=NONCE_DL,
        sig_deadline=SIG_DL,
        taproot_merkle_root=out.merkle_root,
        max_signers=out.params.max_signers,
        psig_check=PartialSigCheck.ON_AGGREGATE,
    )


def _tamper(psig: bytes) -> bytes:
    return ((int.from_bytes(psig, "big") + 1) % m.N).to_bytes(32, "big")


def _round2(s: SigningSession, sks: dict[bytes, bytes]) -> list[bytes]:
    """Both rounds on the signers' side; returns every signer's valid psig (not yet sent)."""
    secnonces = []
    for i, pk in enumerate(s.pubkeys):
        sn, pn = m.nonce_gen(sks[pk], pk, s.keyagg, s.msg)
        secnonces.append(sn)
        s.add_nonce(i, pn, 1.0)
    ctx = s.session_context
    assert ctx is not None
    return [m.partial_sign(sn, sks[pk], ctx) for sn, pk in zip(secnonces, s.pubkeys, strict=True)]


def test_hundred_signers_one_blamed_then_redelivers_spend_accepted(chain: KernelChain) -> None:
    f = fund(chain, 100, ctv=False)
    s = deferred_session(f.out, f.funding)
    psigs = _round2(s, f.world.sks)
    bad = 41
    for i, ps in enumerate(psigs[:-1]):
        s.add_partial_sig(i, _tamper(ps) if i == bad else ps, 2.0)  # nothing refused yet
    assert s.missing_partial_sigs == (99,)
    # The last (valid) arrival fails the aggregate: signer 41 alone is found out, not the caller.
    assert s.add_partial_sig(99, psigs[99], 3.0) is SessionState.COLLECTING_PARTIAL_SIGS
    assert s.missing_partial_sigs == (bad,)
    assert [(r.signer_index, r.code) for r in s.rejections] == [(bad, "invalid-partial-signature")]
    assert s.add_partial_sig(bad, psigs[bad], 4.0) is SessionState.COMPLETE
    tx = cooperative_spend(f.out, f.funding, s)
    assert chain.verify_spend(tx)
    mine(chain, [tx])
    assert_paid(chain, tx, f.out.split.outputs)


def test_blamed_signer_never_redelivers_then_fallback(chain: KernelChain) -> None:
    f = fund(chain, 20, ctv=False)
    s = deferred_session(f.out, f.funding)
    psigs = _round2(s, f.world.sks)
    bad = 7
    for i, ps in enumerate(psigs):
        if i == 19:
            with pytest.raises(InvalidPartialSigError) as e:  # the caller's own is bad too
                s.add_partial_sig(i, _tamper(_tamper(ps)), 2.0)
            assert e.value.signer_index == 19
        else:
            s.add_partial_sig(i, _tamper(ps) if i == bad else ps, 2.0)
    assert s.missing_partial_sigs == (bad, 19)
    s.add_partial_sig(19, psigs[19], 3.0)  # 19 repairs; 7 stays silent
    assert s.tick(SIG_DL + 1) is SessionState.FAILED
    assert s.failure is not None and s.failure.reason is FailureReason.SIGNATURE_DEADLINE
    assert dict(s.failure.blame) == {bad: Blame.INVALID_PARTIAL_SIG}
    with pytest.raises(WrongStateError):
        cooperative_spend(f.out, f.funding, s)
    chain.mine_empty(DELAY - 100, MINER)  # fallback window open
    fb = sign_fallback_spend(f.out, build_fallback_spend(f.out, f.funding), FALLBACK_SK, session=s)
    mine(chain, [fb])
    assert_paid(chain, fb, build_fallback_spend(f.out, f.funding).outputs)
