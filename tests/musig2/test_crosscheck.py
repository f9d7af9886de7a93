"""Random n-party sessions: libsecp256k1 (our wrapper) vs btclib-ecc vs coincurve's verifier."""

from __future__ import annotations

import os

from btclib_ecc.ecc import musig2 as bm
from coincurve import PublicKeyXOnly
from hypothesis import given, settings
from hypothesis import strategies as st

from payouts.crypto import musig2 as m

scalars = st.integers(min_value=1, max_value=m.N - 1).map(lambda k: k.to_bytes(32, "big"))
tweak_lists = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=m.N - 1).map(lambda k: k.to_bytes(32, "big")),
        st.booleans(),
    ),
    max_size=3,
)


@settings(max_examples=25, deadline=None)
@given(
    sks=st.lists(scalars, min_size=1, max_size=5),
    tweaks=tweak_lists,
    msg=st.binary(min_size=32, max_size=32),
    rands=st.lists(st.binary(min_size=32, max_size=32).filter(any), min_size=5, max_size=5),
    sort=st.booleans(),
)
def test_random_sessions_match_btclib_and_verify(
    sks: list[bytes], tweaks: list[tuple[bytes, bool]], msg: bytes, rands: list[bytes], sort: bool
) -> None:
    pks = [m.individual_pubkey(sk) for sk in sks]
    if sort:
        assert m.key_sort(pks) == bm.key_sort(pks)
        order = sorted(range(len(pks)), key=lambda i: pks[i])
        sks, pks = [sks[i] for i in order], [pks[i] for i in order]
    tw, xo = [t for t, _ in tweaks], [x for _, x in tweaks]
    ctx = m.key_agg(pks, tw, xo)
    ref_ctx = bm.key_agg_and_tweak(pks, tw, xo)
    assert ctx.xonly_pubkey == ref_ctx.x_only_pub_key

    nonces = [
        m.nonce_gen(sk, pk, ctx, msg, rand=r) for sk, pk, r in zip(sks, pks, rands, strict=False)
    ]
    ref_nonces = [
        bm.nonce_gen_(r, int.from_bytes(sk, "big"), pk, ctx.xonly_pubkey, msg)
        for sk, pk, r in zip(sks, pks, rands, strict=False)
    ]
    assert [p for _, p in nonces] == [p for _, p in ref_nonces]
    aggnonce = m.nonce_agg([p for _, p in nonces])
    assert aggnonce == bm.nonce_agg([p for _, p in ref_nonces])

    session = m.SessionContext(aggnonce, ctx, msg)
    ref_session = bm.SessionContext(aggnonce, pks, tw, xo, msg)
    psigs = [m.partial_sign(sn, sk, session) for (sn, _), sk in zip(nonces, sks, strict=True)]
    ref_psigs = [
        bm.sign(sn, int.from_bytes(sk, "big"), ref_session)
        for (sn, _), sk in zip(ref_nonces, sks, strict=True)
    ]
    assert psigs == ref_psigs
    for i, ps in enumerate(psigs):
        assert m.partial_sig_verify(ps, nonces[i][1], pks[i], session, signer_index=i)
    sig = m.partial_sig_agg(psigs, session)
    assert sig == bm.partial_sig_agg(psigs, ref_session).serialize()
    assert PublicKeyXOnly(ctx.xonly_pubkey).verify(sig, msg)


def test_large_committee_signature_verifies_with_coincurve() -> None:
    n = 60
    sks = [os.urandom(32) for _ in range(n)]
    pks = [m.individual_pubkey(sk) for sk in sks]
    ctx = m.key_agg(m.key_sort(pks)).taproot_tweak(b"")
    msg = os.urandom(32)
    nonces = {pk: m.nonce_gen(sk, pk, ctx, msg) for sk, pk in zip(sks, pks, strict=True)}
    session = m.SessionContext(m.nonce_agg([nonces[pk][1] for pk in ctx.pubkeys]), ctx, msg)
    by_pk = dict(zip(pks, sks, strict=True))
    psigs = [m.partial_sign(nonces[pk][0], by_pk[pk], session) for pk in ctx.pubkeys]
    sig = m.partial_sig_agg(psigs, session)
    assert PublicKeyXOnly(ctx.xonly_pubkey).verify(sig, msg)
    assert bm.key_agg(list(ctx.pubkeys)).x_only_pub_key == m.key_agg(ctx.pubkeys).xonly_pubkey
    # A single flipped bit in one partial signature is caught by PartialSigVerify.
    bad = bytes([psigs[7][0] ^ 1]) + psigs[7][1:]
    assert not m.partial_sig_verify(bad, nonces[ctx.pubkeys[7]][1], ctx.pubkeys[7], session)
