"""Shared fixtures for the musig2 settlement tests: deterministic payees, keys, signing."""

from __future__ import annotations

from dataclasses import dataclass, field

from payouts.crypto import musig2 as m
from payouts.crypto.schnorr import xonly_pubkey
from payouts.distribution.model import AdditionalOutput, Distribution, Payee, PoolPayout
from payouts.settlement.musig2.output import Musig2Params
from payouts.settlement.musig2.session import SessionState, SigningSession
from payouts.tx.hashes import sha256

POOL_SCRIPT = bytes.fromhex("0014" + "11" * 20)
FALLBACK_SK = sha256(b"musig2-test fallback key")
FALLBACK_XONLY = xonly_pubkey(FALLBACK_SK)
MINER = bytes.fromhex("5120" + "ab" * 32)  # filler blocks' subsidies


def payee_sk(i: int) -> bytes:
    return sha256(b"musig2-test payee " + i.to_bytes(4, "big"))


def p2tr_of(sk: bytes) -> bytes:
    return b"\x51\x20" + xonly_pubkey(sk)


@dataclass
class World:
    """``n_keyed`` payees with a registered key, ``n_plain`` without one."""

    n_keyed: int
    n_plain: int = 3
    additional: bool = False
    sks: dict[bytes, bytes] = field(default_factory=dict)  # pubkey33 -> seckey
    registered: dict[bytes, bytes] = field(default_factory=dict)  # script -> pubkey33
    dist: Distribution | None = None

    def __post_init__(self) -> None:
        payees = []
        for i in range(self.n_keyed + self.n_plain):
            sk = payee_sk(i)
            script = p2tr_of(sk)
            # distinct, partly tied weights so the ranking's tie-break is exercised
            payees.append(Payee(script, 1_000 + (i * 37) % 11 * 100, 330))
            if i < self.n_keyed:
                pk = m.individual_pubkey(sk)
                self.sks[pk] = sk
                self.registered[script] = pk
        extra = (AdditionalOutput(bytes.fromhex("6a04cafe0001"), 0),) if self.additional else ()
        self.dist = Distribution(7, PoolPayout(POOL_SCRIPT, 5_000), tuple(payees), extra)

    @property
    def distribution(self) -> Distribution:
        assert self.dist is not None
        return self.dist


def params(**kw: int) -> Musig2Params:
    return Musig2Params(FALLBACK_XONLY, **kw)


def run_session(
    session: SigningSession,
    sks: dict[bytes, bytes],
    *,
    now: float = 0.0,
    skip_nonce: frozenset[int] = frozenset(),
    skip_psig: frozenset[int] = frozenset(),
) -> None:
    """Every signer (except the lazy ones) does both BIP-327 rounds on its own side."""
    secnonces: dict[int, m.SecNonce] = {}
    for i, pk in enumerate(session.pubkeys):
        if i in skip_nonce:
            continue
        sn, pn = m.nonce_gen(sks[pk], pk, session.keyagg, session.msg)
        secnonces[i] = sn
        session.add_nonce(i, pn, now)
    if session.state is not SessionState.COLLECTING_PARTIAL_SIGS:
        return
    ctx = session.session_context
    assert ctx is not None
    for i, pk in enumerate(session.pubkeys):
        if i in skip_psig:
            continue
        session.add_partial_sig(i, m.partial_sign(secnonces[i], sks[pk], ctx), now)
