"""Benchmark: one full MuSig2 (BIP-327) signing run through payouts.crypto.musig2.

A run is: KeySort + KeyAgg + BIP-341 taproot tweak, NonceGen for every signer, NonceAgg +
nonce processing, Sign for every signer, PartialSigVerify of every partial signature (the
coordinator's job), PartialSigAgg + one BIP-340 verify of the result. Key generation is outside
the timed part. Medians over many runs are reported per phase and in total.

Signers sign with ``verify=False`` here because the coordinator's "verify all partials" phase
already checks each partial signature once; ``partial_sign``'s default self-verify (a fault-attack
guard on the signer's machine) is timed separately as "sign (self-verify)".

For the ratio against BIP-327's ``reference.py`` (not on PyPI), the stand-in is btclib-ecc's
``ecc.musig2`` forced into pure-Python mode (``BTCLIB_ECC_NO_LIBSECP256K1=1``) in a subprocess,
running the same phases; it is itself much faster than reference.py (libs.md §1: 13 ms vs
1.45 s for 2 signers), so the ratio understates the gap to the real reference.

Run: ``.venv/bin/python benchmarks/bench_musig2.py [--runs-100 N] [--runs-5 N] [--runs-ref N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

PHASES = ("keyagg", "noncegen", "nonceagg", "sign", "verify", "aggregate")
ROOT = bytes(range(32))  # a stand-in script-tree root for the taproot tweak


def _timed(phases: dict[str, float], name: str, fn: Callable[[], object]) -> object:
    t0 = time.perf_counter_ns()
    out = fn()
    phases[name] = (time.perf_counter_ns() - t0) / 1e6
    return out


def run_wrapper(n: int, *, self_verify: bool = False) -> dict[str, float]:
    """One n-signer run through payouts.crypto.musig2; per-phase milliseconds."""
    from coincurve import PublicKeyXOnly

    from payouts.crypto import musig2 as m

    sks = [os.urandom(32) for _ in range(n)]
    pks = [m.individual_pubkey(sk) for sk in sks]
    msg = os.urandom(32)
    ph: dict[str, float] = {}
    t0, c0 = time.perf_counter_ns(), time.process_time_ns()
    order: list[bytes] = []

    def keyagg() -> m.KeyAggContext:
        order[:] = m.key_sort(pks)
        return m.key_agg(order).taproot_tweak(ROOT)

    ctx = _timed(ph, "keyagg", keyagg)
    assert isinstance(ctx, m.KeyAggContext)
    sk_of = dict(zip(pks, sks, strict=True))
    signers = [sk_of[pk] for pk in order]
    nonces = _timed(
        ph,
        "noncegen",
        lambda: [m.nonce_gen(sk, pk, ctx, msg) for sk, pk in zip(signers, order, strict=True)],
    )
    assert isinstance(nonces, list)
    session = _timed(
        ph, "nonceagg", lambda: m.SessionContext(m.nonce_agg([p for _, p in nonces]), ctx, msg)
    )
    assert isinstance(session, m.SessionContext)
    psigs = _timed(
        ph,
        "sign",
        lambda: [
            m.partial_sign(sn, sk, session, verify=self_verify)
            for (sn, _), sk in zip(nonces, signers, strict=True)
        ],
    )
    assert isinstance(psigs, list)
    oks = _timed(
        ph,
        "verify",
        lambda: [
            m.partial_sig_verify(ps, nonces[i][1], order[i], session, signer_index=i)
            for i, ps in enumerate(psigs)
        ],
    )
    assert oks == [True] * n

    def aggregate() -> bool:
        sig = m.partial_sig_agg(psigs, session)
        return bool(PublicKeyXOnly(ctx.xonly_pubkey).verify(sig, msg))

    assert _timed(ph, "aggregate", aggregate)
    ph["total"] = (time.perf_counter_ns() - t0) / 1e6
    ph["cpu"] = (time.process_time_ns() - c0) / 1e6
    return ph


def run_raw(n: int) -> dict[str, float]:
    """The floor: the same libsecp256k1 calls with no wrapper (no checks, no serialization).

    Reported beside the wrapper so that machine speed and wrapper overhead can be told apart.
    """
    from payouts.crypto.musig2 import individual_pubkey, tagged_hash
    from payouts.crypto.secp import CTX, check, ffi, lib

    pairs = sorted((individual_pubkey(sk), sk) for sk in (os.urandom(32) for _ in range(n)))
    pks, sks = [pk for pk, _ in pairs], [sk for _, sk in pairs]
    msg = os.urandom(32)
    t0, c0 = time.perf_counter_ns(), time.process_time_ns()
    pp = []
    for pk in pks:
        p = ffi.new("secp256k1_pubkey *")
        lib.secp256k1_ec_pubkey_parse(CTX, p, pk, 33)
        pp.append(p)
    cache = ffi.new("secp256k1_musig_keyagg_cache *")
    agg = ffi.new("secp256k1_xonly_pubkey *")
    lib.secp256k1_musig_pubkey_agg(CTX, agg, cache, ffi.new("secp256k1_pubkey *[]", pp), n)
    x = ffi.new("unsigned char[32]")
    lib.secp256k1_xonly_pubkey_serialize(CTX, x, agg)
    t = tagged_hash("TapTweak", bytes(x) + ROOT)
    lib.secp256k1_musig_pubkey_xonly_tweak_add(CTX, ffi.NULL, cache, t)
    sns, pns = [], []
    for sk, p in zip(sks, pp, strict=True):
        sn = ffi.new("secp256k1_musig_secnonce *")
        pn = ffi.new("secp256k1_musig_pubnonce *")
        lib.secp256k1_musig_nonce_gen(CTX, sn, pn, os.urandom(32), sk, p, msg, cache, ffi.NULL)
        sns.append(sn)
        pns.append(pn)
    an = ffi.new("secp256k1_musig_aggnonce *")
    lib.secp256k1_musig_nonce_agg(CTX, an, ffi.new("secp256k1_musig_pubnonce *[]", pns), n)
    ses = ffi.new("secp256k1_musig_session *")
    lib.secp256k1_musig_nonce_process(CTX, ses, an, msg, cache)
    ps = []
    for sk, sn in zip(sks, sns, strict=True):
        kp = ffi.new("secp256k1_keypair *")
        lib.secp256k1_keypair_create(CTX, kp, sk)
        p = ffi.new("secp256k1_musig_partial_sig *")
        lib.secp256k1_musig_partial_sign(CTX, p, sn, kp, cache, ses)
        ps.append(p)
    for i in range(n):
        lib.secp256k1_musig_partial_sig_verify(CTX, ps[i], pns[i], pp[i], cache, ses)
    out = ffi.new("unsigned char[64]")
    lib.secp256k1_musig_partial_sig_agg(
        CTX, out, ses, ffi.new("secp256k1_musig_partial_sig *[]", ps), n
    )
    total = (time.perf_counter_ns() - t0) / 1e6
    cpu = (time.process_time_ns() - c0) / 1e6
    # No per-call checks above (that is the point), so make sure nothing tripped an ARG_CHECK:
    # a pending illegal-argument message would otherwise surface in the next checked call.
    check(1, "raw CFFI floor")
    return {"total": total, "cpu": cpu}


def run_btclib(n: int) -> dict[str, float]:
    """The same run through btclib-ecc's ecc.musig2 (the BIP-327 reference stand-in)."""
    from btclib_ecc.ecc import musig2 as bm
    from btclib_ecc.ecc import ssa
    from btclib_ecc.hashes import tagged_hash

    sks = [int.from_bytes(os.urandom(32), "big") % (2**255) + 1 for _ in range(n)]
    pks = [bm.individual_pub_key(sk) for sk in sks]
    msg = os.urandom(32)
    ph: dict[str, float] = {}
    t0, c0 = time.perf_counter_ns(), time.process_time_ns()
    order: list[bytes] = []
    tweak: list[bytes] = []

    def keyagg() -> object:
        order[:] = bm.key_sort(pks)
        internal = bm.key_agg(order).x_only_pub_key
        tweak[:] = [tagged_hash(b"TapTweak", internal + ROOT)]
        return bm.key_agg_and_tweak(order, tweak, [True])

    ctx = _timed(ph, "keyagg", keyagg)
    agg_x = ctx.x_only_pub_key  # type: ignore[attr-defined]
    sk_of = dict(zip(pks, sks, strict=True))
    signers = [sk_of[pk] for pk in order]
    nonces = _timed(
        ph,
        "noncegen",
        lambda: [bm.nonce_gen(sk, pk, agg_x, msg) for sk, pk in zip(signers, order, strict=True)],
    )
    assert isinstance(nonces, list)
    session = _timed(
        ph,
        "nonceagg",
        lambda: bm.SessionContext(bm.nonce_agg([p for _, p in nonces]), order, tweak, [True], msg),
    )
    psigs = _timed(
        ph,
        "sign",
        lambda: [bm.sign(sn, sk, session) for (sn, _), sk in zip(nonces, signers, strict=True)],
    )
    assert isinstance(psigs, list)
    # One shared session context, so the values are computed once (the fair, fast spelling).
    oks = _timed(
        ph,
        "verify",
        lambda: [
            bm.partial_sig_verify_(ps, nonces[i][1], order[i], session)
            for i, ps in enumerate(psigs)
        ],
    )
    assert oks == [True] * n

    def aggregate() -> bool:
        sig = bm.partial_sig_agg(psigs, session).serialize()
        return bool(ssa.verify_(msg, agg_x, sig))

    assert _timed(ph, "aggregate", aggregate)
    ph["total"] = (time.perf_counter_ns() - t0) / 1e6
    ph["cpu"] = (time.process_time_ns() - c0) / 1e6
    return ph


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-key median over runs."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def bench(fn: Callable[[], dict[str, float]], runs: int, warmup: int = 2) -> dict[str, float]:
    """Median per phase of ``runs`` timed runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return medians([fn() for _ in range(runs)])


def btclib_in_subprocess(n: int, runs: int) -> dict[str, float]:
    """Run :func:`run_btclib` in pure-Python mode in a child interpreter (env set before import)."""
    env = {**os.environ, "BTCLIB_ECC_NO_LIBSECP256K1": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--btclib-worker", str(n), str(runs)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    out: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _fmt(label: str, r: dict[str, float]) -> str:
    cols = " ".join(f"{r[p]:>9.3f}" for p in (*PHASES, "total", "cpu"))
    return f"{label:<34} {cols}"


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the benchmark, print a table of medians (ms), and return it."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--runs-100", type=int, default=51)
    ap.add_argument("--runs-5", type=int, default=301)
    ap.add_argument("--runs-ref", type=int, default=21)
    ap.add_argument("--n-large", type=int, default=100)
    ap.add_argument("--btclib-worker", nargs=2, type=int, metavar=("N", "RUNS"))
    args = ap.parse_args(argv)

    if args.btclib_worker:
        from btclib_ecc.curves import is_libsecp256k1_serving

        assert not is_libsecp256k1_serving(), "btclib-ecc must run in pure-Python mode"
        n, runs = args.btclib_worker
        print(json.dumps(bench(lambda: run_btclib(n), runs, warmup=1)))
        return {}

    n_large = args.n_large
    results = {
        f"wrapper n={n_large}": bench(lambda: run_wrapper(n_large), args.runs_100),
        "wrapper n=5": bench(lambda: run_wrapper(5), args.runs_5),
        "wrapper n=5 (sign self-verify)": bench(
            lambda: run_wrapper(5, self_verify=True), args.runs_5
        ),
        "btclib-ecc pure Python n=5": btclib_in_subprocess(5, args.runs_ref),
    }
    floor = {
        f"raw CFFI floor n={n_large}": bench(lambda: run_raw(n_large), args.runs_100),
        "raw CFFI floor n=5": bench(lambda: run_raw(5), args.runs_5),
    }
    print(f"medians in ms ({sys.implementation.name} {sys.version.split()[0]})")
    print(f"{'':<34} " + " ".join(f"{p:>9}" for p in (*PHASES, "total", "cpu")))
    for label, r in results.items():
        print(_fmt(label, r))
    for label, r in floor.items():
        print(f"{label:<34} {'':>59} {r['total']:>9.3f} {r['cpu']:>9.3f}")
    results.update(floor)
    ref, ours = results["btclib-ecc pure Python n=5"], results["wrapper n=5"]
    print(
        "ratio n=5, btclib-ecc pure Python (reference.py stand-in) / wrapper: "
        f"{ref['total'] / ours['total']:.1f}x wall, {ref['cpu'] / ours['cpu']:.1f}x CPU"
    )
    large = results[f"wrapper n={n_large}"]
    verdict = "OK" if large["total"] <= 20 else "OVER"
    print(
        f"n={n_large}: {large['total']:.2f} ms wall, {large['cpu']:.2f} ms CPU "
        f"(target <= 20 ms wall: {verdict}); load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    return results


if __name__ == "__main__":
    main()
