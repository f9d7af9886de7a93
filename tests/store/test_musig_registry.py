"""MuSig2 signing sessions in the store (payouts.settlement.musig2.registry), on SQLite and
PostgreSQL: a session stored by one registry is the same session in every other one on the
same database (two engines stand for two processes), contributions split between them complete
it, a new registry (a restarted process) resumes it from the rows, a repeated post writes
nothing and a conflicting one is refused with the session's code; PostgreSQL also with two
processes' worth of threads racing on one session."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from payouts.crypto import musig2 as m
from payouts.crypto.schnorr import verify
from payouts.settlement.musig2.errors import (
    DeadlinePassedError,
    DuplicateNonceError,
    DuplicatePartialSigError,
    InvalidPartialSigError,
)
from payouts.settlement.musig2.registry import SessionRegistry, UnknownSessionError
from payouts.settlement.musig2.session import (
    Blame,
    FailureReason,
    PartialSigCheck,
    SessionState,
    SigningSession,
)
from payouts.store.engine import make_engine
from payouts.store.ledger import record_block
from tests.store.conftest import count

ROOT = bytes(range(32))


class Committee:
    """n signers with their keys; they run both rounds on their own side."""

    def __init__(self, n: int) -> None:
        sks = [os.urandom(32) for _ in range(n)]
        by_pk = {m.individual_pubkey(sk): sk for sk in sks}
        self.pubkeys = m.key_sort(list(by_pk))
        self.sks = [by_pk[pk] for pk in self.pubkeys]
        self.msg = os.urandom(32)
        self.secnonces: dict[int, m.SecNonce] = {}

    def session(self, check: PartialSigCheck = PartialSigCheck.ON_ARRIVAL) -> SigningSession:
        return SigningSession(self.pubkeys, self.msg, nonce_deadline=100.0, sig_deadline=200.0,
                              taproot_merkle_root=ROOT, psig_check=check)

    def nonce(self, s: SigningSession, i: int) -> bytes:
        sn, pn = m.nonce_gen(self.sks[i], self.pubkeys[i], s.keyagg, self.msg)
        self.secnonces[i] = sn
        return pn

    def psig(self, s: SigningSession, i: int) -> bytes:
        assert s.session_context is not None
        return m.partial_sign(self.secnonces[i], self.sks[i], s.session_context)


@pytest.fixture
def other(engine: Engine) -> Iterator[Engine]:
    """A second engine on the same database: another process's view of the store."""
    e = make_engine(engine.url.render_as_string(hide_password=False))
    yield e
    e.dispose()


def test_contributions_split_between_two_registries_complete_one_session(
    engine: Engine, other: Engine
) -> None:
    a, b = SessionRegistry(engine), SessionRegistry(other)
    c = Committee(5)
    opened, created = a.create("s1", c.session())
    assert created
    # B opening "the same" session gets A's (get-or-create), not a second one.
    later = SigningSession(c.pubkeys, c.msg, nonce_deadline=500.0, sig_deadline=600.0,
                           taproot_merkle_root=ROOT)
    seen, created_b = b.create("s1", later)
    assert not created_b and seen.nonce_deadline == 100.0 and count(engine, "musig_sessions") == 1
    for i in range(5):
        reg = a if i % 2 else b
        reg.apply("s1", lambda s, i=i: s.add_nonce(i, c.nonce(opened, i), 1.0))
    sa, sb = a.load("s1"), b.load("s1")
    assert sa is not None and sb is not None
    assert sa.state is sb.state is SessionState.COLLECTING_PARTIAL_SIGS
    assert sa.aggnonce == sb.aggnonce is not None
    for i in range(5):
        reg = b if i % 2 else a
        reg.apply("s1", lambda s, i=i: s.add_partial_sig(i, c.psig(sa, i), 2.0))
    done_a, done_b = a.load("s1"), b.load("s1")
    assert done_a is not None and done_b is not None
    assert done_a.state is done_b.state is SessionState.COMPLETE
    assert done_a.final_signature() == done_b.final_signature()
    assert verify(done_b.final_signature(), c.msg, done_b.output_key)


def test_restart_resumes_mid_round_from_the_rows(engine: Engine) -> None:
    c = Committee(4)
    reg = SessionRegistry(engine)
    first, _ = reg.create("s2", c.session())
    for i in range(4):
        reg.apply("s2", lambda s, i=i: s.add_nonce(i, c.nonce(first, i), 1.0))
    ctx_first = reg.load("s2")
    assert ctx_first is not None
    reg.apply("s2", lambda s: s.add_partial_sig(0, c.psig(ctx_first, 0), 2.0))
    # A new process: nothing in memory, everything read back (round-1 context included).
    fresh = SessionRegistry(engine)
    s = fresh.load("s2")
    assert s is not None and s is not ctx_first
    assert s.state is SessionState.COLLECTING_PARTIAL_SIGS
    assert s.missing_partial_sigs == (1, 2, 3) and s.aggnonce == ctx_first.aggnonce
    for i in (1, 2, 3):
        fresh.apply("s2", lambda s, i=i: s.add_partial_sig(i, c.psig(s, i), 3.0))
    assert fresh.load("s2").state is SessionState.COMPLETE  # type: ignore[union-attr]


def test_repeat_is_a_no_op_conflict_is_refused_and_recorded(engine: Engine, other: Engine) -> None:
    c = Committee(3)
    a, b = SessionRegistry(engine), SessionRegistry(other)
    s, _ = a.create("s3", c.session())
    pn = c.nonce(s, 0)
    a.apply("s3", lambda s: s.add_nonce(0, pn, 1.0))
    version = _version(engine, "s3")
    b.apply("s3", lambda s: s.add_nonce(0, pn, 1.5))  # a retry through another process
    assert _version(engine, "s3") == version  # nothing written
    other_pn = m.nonce_gen(c.sks[0], c.pubkeys[0], s.keyagg, c.msg)[1]
    with pytest.raises(DuplicateNonceError) as e:
        b.apply("s3", lambda s: s.add_nonce(0, other_pn, 2.0))
    assert e.value.code == "duplicate-nonce" and e.value.signer_index == 0
    seen = a.load("s3")
    assert seen is not None and seen.pubnonces[0] == pn
    assert [(r.signer_index, r.code) for r in seen.rejections] == [(0, "duplicate-nonce")]
    with pytest.raises(UnknownSessionError):
        a.apply("nope", lambda s: s.tick(1.0))


def test_deadline_failure_and_blame_are_kept(engine: Engine, other: Engine) -> None:
    c = Committee(3)
    a, b = SessionRegistry(engine), SessionRegistry(other)
    a.create("s4", c.session())
    for i in range(3):
        a.apply("s4", lambda s, i=i: s.add_nonce(i, c.nonce(s, i), 1.0))
    ready = a.load("s4")
    assert ready is not None
    bad = bytes(31) + b"\x01"
    with pytest.raises(InvalidPartialSigError):
        b.apply("s4", lambda s: s.add_partial_sig(1, bad, 2.0))
    a.apply("s4", lambda s: s.add_partial_sig(0, c.psig(ready, 0), 3.0))
    # Too late: the call fails the session (kept) and is refused.
    with pytest.raises(DeadlinePassedError):
        b.apply("s4", lambda s: s.add_partial_sig(2, c.psig(ready, 2), 250.0))
    failed = SessionRegistry(engine).load("s4")
    assert failed is not None and failed.state is SessionState.FAILED
    assert failed.failure is not None and failed.failure.reason is FailureReason.SIGNATURE_DEADLINE
    assert dict(failed.failure.blame) == {1: Blame.INVALID_PARTIAL_SIG, 2: Blame.NO_PARTIAL_SIG}
    assert failed.failure.at == 250.0


def test_on_aggregate_culprit_found_after_resume(engine: Engine, other: Engine) -> None:
    """ON_AGGREGATE: unverified partials are stored as such; the one whose arrival completes
    the set finds the bad one even in another process, and the culprit's slot is emptied."""
    c = Committee(3)
    a, b = SessionRegistry(engine), SessionRegistry(other)
    a.create("s5", c.session(PartialSigCheck.ON_AGGREGATE))
    for i in range(3):
        a.apply("s5", lambda s, i=i: s.add_nonce(i, c.nonce(s, i), 1.0))
    ready = a.load("s5")
    assert ready is not None
    good = [c.psig(ready, i) for i in range(3)]
    wrong = ((int.from_bytes(good[1], "big") + 1) % m.N).to_bytes(32, "big")
    a.apply("s5", lambda s: s.add_partial_sig(0, good[0], 2.0))
    a.apply("s5", lambda s: s.add_partial_sig(1, wrong, 2.0))
    assert b.load("s5").unverified_partial_sigs == (0, 1)  # type: ignore[union-attr]
    b.apply("s5", lambda s: s.add_partial_sig(2, good[2], 3.0))
    after = a.load("s5")
    assert after is not None and after.missing_partial_sigs == (1,)
    assert after.state is SessionState.COLLECTING_PARTIAL_SIGS
    with pytest.raises(InvalidPartialSigError):  # the same bad value again: refused at once
        b.apply("s5", lambda s: s.add_partial_sig(1, wrong, 4.0))
    with pytest.raises(DuplicatePartialSigError):
        b.apply("s5", lambda s: s.add_partial_sig(0, good[2], 4.0))
    a.apply("s5", lambda s: s.add_partial_sig(1, good[1], 5.0))
    assert b.load("s5").state is SessionState.COMPLETE  # type: ignore[union-attr]


def test_one_session_per_block_and_discard(engine: Engine, other: Engine) -> None:
    block = record_block(engine, height=1, block_hash=os.urandom(32), revenue=1)
    c = Committee(2)
    a, b = SessionRegistry(engine), SessionRegistry(other)
    _, created = a.create("block-x", c.session(), block_id=block.id)
    assert created
    with pytest.raises(UnknownSessionError):  # same block under another id: refused
        b.create("block-y", c.session(), block_id=block.id)
    assert count(engine, "musig_sessions") == 1
    assert b.discard("block-x") and not a.exists("block-x")
    assert count(engine, "musig_committee") == 0
    with pytest.raises(UnknownSessionError):
        a.apply("block-x", lambda s: s.tick(1.0))


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_racing_threads_of_two_processes_lose_nothing(engine: Engine, other: Engine) -> None:
    """20 signers' nonces and then partials posted at once through two registries (two
    engines, i.e. two processes' connections): every contribution is in, the aggregation ran
    once (one final signature, the version counts one write per contribution)."""
    n = 20
    c = Committee(n)
    a, b = SessionRegistry(engine), SessionRegistry(other)
    s, _ = a.create("race", c.session())
    nonces = [c.nonce(s, i) for i in range(n)]
    errors: list[BaseException] = []

    def post(i: int, fn: str) -> None:
        reg = a if i % 2 else b
        try:
            if fn == "nonce":
                reg.apply("race", lambda s: s.add_nonce(i, nonces[i], 1.0))
            else:
                reg.apply("race", lambda s: s.add_partial_sig(i, psigs[i], 2.0))
        except BaseException as e:  # reported below
            errors.append(e)

    for fn in ("nonce", "psig"):
        if fn == "psig":
            ready = a.load("race")
            assert ready is not None
            psigs = [c.psig(ready, i) for i in range(n)]
        threads = [threading.Thread(target=post, args=(i, fn)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    done = b.load("race")
    assert done is not None and done.state is SessionState.COMPLETE
    assert verify(done.final_signature(), c.msg, done.output_key)
    assert _version(engine, "race") == 2 * n  # one write per contribution, none to open
    assert count(engine, "musig_nonces") == n and count(engine, "musig_partial_sigs") == n


def _version(engine: Engine, sid: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            f"SELECT version FROM musig_sessions WHERE id = '{sid}'").scalar_one())
