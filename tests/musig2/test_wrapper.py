"""Behaviour of payouts.crypto.musig2 beyond the vectors: misuse, errors, nonce reuse."""

from __future__ import annotations

import copy
import os
import pickle
import resource
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from btclib_ecc.ecc import musig2 as bm
from coincurve import PublicKeyXOnly

from payouts.crypto import musig2 as m
from payouts.crypto import secp

from ._structs import dump_secnonce, load_secnonce

REPO = Path(__file__).resolve().parents[2]


def _sk(i: int) -> bytes:
    return (i + 1).to_bytes(32, "big") if i < 3 else m.tagged_hash("test-sk", bytes([i]))


def _setup(
    n: int = 3, msg: bytes = b"\x42" * 32, root: bytes | None = None
) -> tuple[
    list[bytes], list[bytes], m.KeyAggContext, list[tuple[m.SecNonce, bytes]], m.SessionContext
]:
    sks = [_sk(i) for i in range(n)]
    pks = [m.individual_pubkey(s) for s in sks]
    ctx = m.key_agg(pks)
    if root is not None:
        ctx = ctx.taproot_tweak(root)
    nonces = [m.nonce_gen(sk, pk, ctx, msg) for sk, pk in zip(sks, pks, strict=True)]
    session = m.SessionContext(m.nonce_agg([p for _, p in nonces]), ctx, msg)
    return sks, pks, ctx, nonces, session


def test_full_session_with_taproot_tweak_verifies() -> None:
    root = b"\x11" * 32
    sks, pks, ctx, nonces, session = _setup(4, root=root)
    psigs = [m.partial_sign(sn, sk, session) for (sn, _), sk in zip(nonces, sks, strict=True)]
    for i, ps in enumerate(psigs):
        assert m.partial_sig_verify(ps, nonces[i][1], pks[i], session, signer_index=i)
    sig = m.partial_sig_agg(psigs, session)
    assert len(sig) == 64
    assert PublicKeyXOnly(ctx.xonly_pubkey).verify(sig, session.msg)
    # The BIP-341 output key equals the internal key tweaked by hash_TapTweak(P || root).
    internal = m.key_agg(pks)
    out = PublicKeyXOnly(internal.xonly_pubkey)
    out.tweak_add(m.tagged_hash("TapTweak", internal.xonly_pubkey + root))
    assert out.format() == ctx.xonly_pubkey
    assert ctx.tweaks == ((m.tagged_hash("TapTweak", internal.xonly_pubkey + root), True),)
    assert internal.tweaks == ()  # tweaking returned a new context


def test_taproot_tweak_rejects_bad_root() -> None:
    with pytest.raises(m.MuSig2ValueError):
        m.key_agg([m.individual_pubkey(_sk(0))]).taproot_tweak(b"\x00" * 31)


def test_nonce_reuse_raises_at_python_level() -> None:
    sks, _, _, nonces, session = _setup()
    secnonce = nonces[0][0]
    m.partial_sign(secnonce, sks[0], session)
    assert secnonce.used
    with pytest.raises(m.NonceReuseError, match="already used"):
        m.partial_sign(secnonce, sks[0], session)


def test_nonce_reuse_caught_by_libsecp_arg_check_without_abort() -> None:
    """Bypass the Python flag: libsecp's own ARG_CHECK must come back as an exception."""
    sks, _, _, nonces, session = _setup()
    secnonce = nonces[0][0]
    m.partial_sign(secnonce, sks[0], session)
    secnonce._used = False  # simulate a replayed struct that escaped the Python guard
    with pytest.raises(m.NonceReuseError, match="secnonce_magic"):
        m.partial_sign(secnonce, sks[0], session)
    # The shared context is still healthy afterwards.
    _, _, _, _, fresh = _setup()
    assert isinstance(fresh, m.SessionContext)


def test_arg_check_raises_in_a_thread_that_never_saw_one() -> None:
    """The illegal-argument message is per thread (the callback runs in the caller's thread):
    a worker thread's first misuse raises there, and leaves nothing pending for anyone."""
    sks, _, _, nonces, session = _setup()
    secnonce = nonces[0][0]
    m.partial_sign(secnonce, sks[0], session)
    secnonce._used = False
    caught: list[BaseException] = []

    def worker() -> None:
        try:
            m.partial_sign(secnonce, sks[0], session)
        except BaseException as e:  # reported to the main thread below
            caught.append(e)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert len(caught) == 1 and isinstance(caught[0], m.NonceReuseError)
    assert "secnonce_magic" in str(caught[0])
    secp.check(1, "main thread after the worker's misuse")  # nothing pending here


def test_zeroed_secnonce_struct_is_rejected() -> None:
    sks, _, _, nonces, session = _setup()
    secnonce = nonces[0][0]
    secnonce.wipe()
    assert secnonce.used
    secnonce._used = False
    with pytest.raises(m.NonceReuseError):
        m.partial_sign(secnonce, sks[0], session)


REUSE_SCRIPT = textwrap.dedent(
    """
    import sys
    from payouts.crypto import musig2 as m
    from payouts.crypto.secp import ffi, lib
    sk = (1).to_bytes(32, "big"); pk = m.individual_pubkey(sk)
    ctx = m.key_agg([pk]); msg = bytes(32)
    sn, pn = m.nonce_gen(sk, pk, ctx, msg)
    session = m.SessionContext(m.nonce_agg([pn]), ctx, msg)
    m.partial_sign(sn, sk, session)
    if sys.argv[1] == "raw-default-callback":
        # Control: a fresh context keeps libsecp's default illegal callback, i.e. abort().
        raw = lib.secp256k1_context_create(lib.SECP256K1_CONTEXT_NONE)
        kp = ffi.new("secp256k1_keypair *"); assert lib.secp256k1_keypair_create(raw, kp, sk)
        ps = ffi.new("secp256k1_musig_partial_sig *")
        lib.secp256k1_musig_partial_sign(raw, ps, sn._struct, kp, ctx.cache, session.raw)
        print("not reached"); sys.exit(0)
    for attempt in ("python-guard", "libsecp-arg-check"):
        if attempt == "libsecp-arg-check":
            sn._used = False
        try:
            m.partial_sign(sn, sk, session)
        except m.NonceReuseError as e:
            print(attempt, "raised", type(e).__name__)
    print("survived")
    """
)


def _run_reuse(mode: str) -> subprocess.CompletedProcess[str]:
    def no_core() -> None:  # the control run aborts: keep core dumps out of the tree
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return subprocess.run(
        [sys.executable, "-c", REUSE_SCRIPT, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=no_core,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_interpreter_survives_nonce_reuse_in_subprocess() -> None:
    proc = _run_reuse("wrapper")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == [
        "python-guard raised NonceReuseError",
        "libsecp-arg-check raised NonceReuseError",
        "survived",
    ]


def test_control_default_callback_would_abort() -> None:
    """Without the raising callback the same reuse kills the process (SIGABRT, exit 134)."""
    proc = _run_reuse("raw-default-callback")
    assert proc.returncode in (-6, 134), (proc.returncode, proc.stdout, proc.stderr)
    assert "illegal argument" in proc.stderr
    assert "not reached" not in proc.stdout


def test_secnonce_cannot_be_copied_or_pickled() -> None:
    sn, _ = m.nonce_gen(_sk(0), m.individual_pubkey(_sk(0)))
    for op in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be copied"):
            op(sn)
    assert "used=False" in repr(sn)


def test_checks_before_signing_leave_the_nonce_unused() -> None:
    sks, _, _, nonces, session = _setup()
    secnonce = nonces[0][0]
    with pytest.raises(m.MuSig2ValueError, match="does not match nonce_gen"):
        m.partial_sign(secnonce, sks[1], session)
    with pytest.raises(m.MuSig2ValueError, match="range"):
        m.partial_sign(secnonce, bytes(32), session)
    with pytest.raises(m.MuSig2ValueError, match="32 bytes"):
        m.partial_sign(secnonce, b"\x01" * 31, session)
    with pytest.raises(TypeError):
        m.partial_sign(b"\x00" * 97, sks[0], session)  # type: ignore[arg-type]
    assert not secnonce.used
    assert len(m.partial_sign(secnonce, sks[0], session)) == 32


def test_signer_not_in_key_list_is_refused() -> None:
    outsider = _sk(7)
    pk = m.individual_pubkey(outsider)
    _, _, ctx, _, session = _setup()
    sn, _ = m.nonce_gen(outsider, pk, ctx, session.msg)
    with pytest.raises(m.MuSig2ValueError, match="must be included"):
        m.partial_sign(sn, outsider, session)
    assert not sn.used


def test_message_must_be_32_bytes() -> None:
    sk = _sk(0)
    pk = m.individual_pubkey(sk)
    ctx = m.key_agg([pk])
    _, pn = m.nonce_gen(sk, pk, ctx)
    for bad in (b"", b"\x00" * 31, b"\x00" * 38):
        with pytest.raises(m.MuSig2ValueError, match="32-byte"):
            m.SessionContext(m.nonce_agg([pn]), ctx, bad)
        with pytest.raises(m.MuSig2ValueError, match="msg"):
            m.nonce_gen(sk, pk, ctx, bad)


def test_nonce_gen_randomness() -> None:
    sk = _sk(0)
    pk = m.individual_pubkey(sk)
    # Default: os.urandom, so two calls differ.
    assert m.nonce_gen(sk, pk)[1] != m.nonce_gen(sk, pk)[1]
    # Injected: deterministic, and equal to the BIP-327 reference algorithm (btclib-ecc).
    rand = b"\x07" * 32
    sn, pn = m.nonce_gen(sk, pk, rand=rand, extra_in=b"\x09" * 32)
    _, pn2 = m.nonce_gen(sk, pk, rand=rand, extra_in=b"\x09" * 32)
    assert pn == pn2
    ref_sec, ref_pub = bm.nonce_gen_(rand, int.from_bytes(sk, "big"), pk, None, None, b"\x09" * 32)
    assert pn == ref_pub
    assert dump_secnonce(sn) == bytes(ref_sec)
    with pytest.raises(m.MuSig2ValueError, match="nonce generation failed"):
        m.nonce_gen(sk, pk, rand=bytes(32))  # libsecp refuses all-zero session randomness
    with pytest.raises(m.MuSig2ValueError, match="extra_in"):
        m.nonce_gen(sk, pk, extra_in=b"\x01" * 8)
    # A seckey that does not belong to pubkey is not checked here (neither BIP-327 NonceGen nor
    # libsecp does); partial_sign refuses it before the nonce is spent.
    with pytest.raises(m.MuSig2ValueError, match="pubkey"):
        m.nonce_gen(sk, pk[1:])


def test_loaded_secnonce_signs_like_the_reference() -> None:
    """The test-only struct loader is faithful: same 97 bytes, same psig as btclib-ecc."""
    sks, pks, _, nonces, session = _setup()
    raw97 = dump_secnonce(nonces[1][0])
    psig = m.partial_sign(load_secnonce(raw97, nonces[1][1]), sks[1], session)
    ref_ctx = bm.SessionContext(session.aggnonce, pks, [], [], session.msg)
    assert psig == bm.sign(bytearray(raw97), int.from_bytes(sks[1], "big"), ref_ctx)


def test_contribution_blame_for_malformed_lengths() -> None:
    pk = m.individual_pubkey(_sk(0))
    uncompressed_prefix = b"\x04" + pk[1:]
    for bad, idx in ((pk[:32], 1), (uncompressed_prefix, 1), (pk + b"\x00" * 32, 1)):
        with pytest.raises(m.InvalidContributionError) as ei:
            m.key_agg([pk, bad])
        assert (ei.value.signer, ei.value.contrib) == (idx, "pubkey")
    with pytest.raises(m.InvalidContributionError) as ei:
        m.key_sort([pk, pk[:-1]])
    assert (ei.value.signer, ei.value.contrib) == (1, "pubkey")
    _, _, _, nonces, session = _setup()
    with pytest.raises(m.InvalidContributionError) as ei:
        m.nonce_agg([nonces[0][1], nonces[1][1][:65]])
    assert (ei.value.signer, ei.value.contrib) == (1, "pubnonce")
    with pytest.raises(m.InvalidContributionError) as ei:
        m.SessionContext(session.aggnonce[:-1], session.keyagg, session.msg)
    assert (ei.value.signer, ei.value.contrib) == (None, "aggnonce")
    assert "aggregator" in str(ei.value)
    with pytest.raises(m.InvalidContributionError) as ei:
        m.partial_sig_agg([b"\x01" * 32, b"\x01" * 31], session)
    assert (ei.value.signer, ei.value.contrib) == (1, "psig")
    pk0 = session.keyagg.pubkeys[0]
    assert not m.partial_sig_verify(b"\x01" * 31, nonces[0][1], pk0, session)
    with pytest.raises(m.InvalidContributionError) as ei:
        m.partial_sig_verify(b"\x01" * 32, nonces[0][1], pk0[:5], session, signer_index=4)
    assert (ei.value.signer, ei.value.contrib) == (4, "pubkey")


def test_argument_errors() -> None:
    pk = m.individual_pubkey(_sk(0))
    with pytest.raises(m.MuSig2ValueError):
        m.key_agg([])
    with pytest.raises(m.MuSig2ValueError):
        m.key_agg([pk], [b"\x01" * 32], [])
    with pytest.raises(m.MuSig2ValueError):
        m.nonce_agg([])
    with pytest.raises(m.MuSig2ValueError):
        m.individual_pubkey(bytes(32))
    _, _, _, _, session = _setup()
    with pytest.raises(m.MuSig2ValueError):
        m.partial_sig_agg([], session)


def test_plain_and_xonly_pubkey_views() -> None:
    pks = [m.individual_pubkey(_sk(i)) for i in range(3)]
    ctx = m.key_agg(pks)
    assert ctx.plain_pubkey[0] in (2, 3)
    assert ctx.plain_pubkey[1:] == ctx.xonly_pubkey
    assert ctx.contains(pks[0]) and not ctx.contains(m.individual_pubkey(_sk(9)))
    assert bm.key_agg(pks).x_only_pub_key == ctx.xonly_pubkey


def test_key_agg_is_computed_once_per_committee() -> None:
    """The committee's KeyAgg is shared (output build, JD check, session) and stays correct."""
    pks = [m.individual_pubkey(_sk(i)) for i in range(4)]
    first = m.key_agg(pks)
    again = m.key_agg([bytearray(k) for k in pks])  # same keys, other container: same context
    assert again is first
    assert m.key_agg(pks[::-1]) is not first  # order matters (KeyAgg does not sort)
    assert m.key_agg(pks[::-1]).xonly_pubkey != first.xonly_pubkey
    assert first.xonly_pubkey == bm.key_agg(pks).x_only_pub_key
    # Tweaking a shared context leaves it untouched for the next user.
    tweaked = m.key_agg(pks, [b"\x07" * 32], [True])
    assert tweaked is not first and tweaked.xonly_pubkey != first.xonly_pubkey
    assert first.tweaks == () and m.key_agg(pks).xonly_pubkey == first.xonly_pubkey
    # A failure is raised every time, never remembered as a result.
    bad = [*pks[:3], b"\x02" + b"\x00" * 31 + b"\x07"]  # x=7: not on the curve
    for _ in range(2):
        with pytest.raises(m.InvalidContributionError) as ei:
            m.key_agg(bad)
        assert (ei.value.signer, ei.value.contrib) == (3, "pubkey")


def test_check_pubnonce_and_psig_well_formed() -> None:
    _, _, _, nonces, session = _setup()
    m.check_pubnonce(nonces[0][1], 0)
    for bad in (nonces[0][1][:65], b"\x04" + nonces[0][1][1:], "00" * 66, None):
        with pytest.raises(m.InvalidContributionError) as ei:
            m.check_pubnonce(bad, 2)
        assert (ei.value.signer, ei.value.contrib) == (2, "pubnonce")
    n_minus_1, n = (m.N - 1).to_bytes(32, "big"), m.N.to_bytes(32, "big")
    assert m.psig_well_formed(n_minus_1) and m.psig_well_formed(bytearray(32))
    for bad_psig in (n, b"\xff" * 32, n_minus_1[:31], n_minus_1 + b"\x00", "00" * 32, None):
        assert not m.psig_well_formed(bad_psig)
    # The same boundary as libsecp's parse, which PartialSigAgg applies.
    m.partial_sig_agg([n_minus_1], session)
    with pytest.raises(m.InvalidContributionError):
        m.partial_sig_agg([n], session)
