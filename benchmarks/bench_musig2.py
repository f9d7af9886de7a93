"""Benchmark: one full MuSig2 (BIP-327) signing session through SigningSession.

A run is the whole protocol as the coordinator and the signers execute it, all in this process:
KeySort + opening the :class:`~payouts.settlement.musig2.session.SigningSession` (KeyAgg and
BIP-341 taproot tweak), NonceGen for every signer, ``add_nonce`` for every nonce (parse,
NonceAgg, nonce processing), Sign for every signer, ``add_partial_sig`` for every partial
signature (the coordinator's verification strategy, PartialSigAgg, one BIP-340 verify of the
result). Key generation is outside the timed part. Medians over many runs are reported per phase
and in total, for both strategies of :class:`~payouts.settlement.musig2.session.PartialSigCheck`:

* ``on-arrival``: PartialSigVerify of each partial as it arrives (n verifications);
* ``on-aggregate``: the final BIP-340 verify stands for all of them (BIP-327 "Partial Signature
  Verification"); partials are verified only to blame someone when it fails.

Signers sign with ``verify=False`` here; ``partial_sign``'s default self-verify (a fault-attack
guard on each signer's own machine) is timed separately as "signers self-verify".

Floors: the same libsecp256k1 calls through raw CFFI, no wrapper, no checks, once with a
PartialSigVerify per signer and once with one BIP-340 verify instead, so that machine speed and
wrapper overhead can be told apart.

For the ratio against BIP-327's ``reference.py`` (not on PyPI), the stand-in is btclib-ecc's
``ecc.musig2`` forced into pure-Python mode (``BTCLIB_ECC_NO_LIBSECP256K1=1``) in a subprocess,
running the same phases with the same two strategies (ratios are like for like); it is itself
much faster than reference.py (libs.md §1: 13 ms vs 1.45 s for 2 signers), so the ratio
understates the gap to the real reference.

Store-backed sessions (issue 15): the same 100-signer session with every ``add_nonce`` and
``add_partial_sig`` run through :class:`~payouts.settlement.musig2.registry.SessionRegistry`
(one transaction per contribution under the session's row lock, what changed written and
committed before the call returns), on SQLite (a file, ``synchronous=FULL``) and on PostgreSQL
(``$PAYOUTS_BENCH_POSTGRES_URL``, default the local test server; skipped if unreachable), once
from one registry (one process: the session stays in memory between calls) and once from two
registries on two engines taking turns (two processes: each call reads the other's writes back
from the rows). Taken in turn with the in-memory session, so the ratio is same-run.

Run: ``.venv/bin/python benchmarks/bench_musig2.py [--runs-100 N] [--runs-5 N] [--runs-ref N]
[--runs-store N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.summary import target  # noqa: E402  (after the sys.path line above)

PHASES = ("keyagg", "noncegen", "nonces", "sign", "psigs")
ROOT = bytes(range(32))  # a stand-in script-tree root for the taproot tweak
STRATEGIES = ("on-arrival", "on-aggregate")
TARGET_MS = 20.0


def _timed(phases: dict[str, float], name: str, fn: Callable[[], object]) -> object:
    t0 = time.perf_counter_ns()
    out = fn()
    phases[name] = (time.perf_counter_ns() - t0) / 1e6
    return out


def run_session(
    n: int, check: str, *, self_verify: bool = False, key_cached: bool = False
) -> dict[str, float]:
    """One n-signer session through SigningSession; per-phase milliseconds.

    ``key_cached``: the committee key was aggregated before (as when its coinbase output was
    built), so opening the session finds it in :func:`payouts.crypto.musig2.key_agg`'s cache.
    """
    from coincurve import PublicKeyXOnly

    from payouts.crypto import musig2 as m
    from payouts.settlement.musig2.session import PartialSigCheck, SessionState, SigningSession

    sks = [os.urandom(32) for _ in range(n)]
    pks = [m.individual_pubkey(sk) for sk in sks]
    msg = os.urandom(32)
    if key_cached:
        m.key_agg(m.key_sort(pks))
    ph: dict[str, float] = {}
    t0, c0 = time.perf_counter_ns(), time.process_time_ns()
    order: list[bytes] = []

    def open_session() -> SigningSession:
        order[:] = m.key_sort(pks)
        return SigningSession(
            order,
            msg,
            nonce_deadline=1.0,
            sig_deadline=2.0,
            taproot_merkle_root=ROOT,
            max_signers=n,
            psig_check=PartialSigCheck(check),
        )

    session = _timed(ph, "keyagg", open_session)
    assert isinstance(session, SigningSession)
    sk_of = dict(zip(pks, sks, strict=True))
    signers = [sk_of[pk] for pk in order]
    keyagg = session.keyagg
    nonces = _timed(
        ph,
        "noncegen",
        lambda: [m.nonce_gen(sk, pk, keyagg, msg) for sk, pk in zip(signers, order, strict=True)],
    )
    assert isinstance(nonces, list)

    def add_nonces() -> m.SessionContext | None:
        for i, (_, pn) in enumerate(nonces):
            session.add_nonce(i, pn, 0.0)
        return session.session_context

    ctx = _timed(ph, "nonces", add_nonces)
    assert isinstance(ctx, m.SessionContext)
    psigs = _timed(
        ph,
        "sign",
        lambda: [
            m.partial_sign(sn, sk, ctx, verify=self_verify)
            for (sn, _), sk in zip(nonces, signers, strict=True)
        ],
    )
    assert isinstance(psigs, list)

    def add_psigs() -> SessionState:
        for i, ps in enumerate(psigs):
            session.add_partial_sig(i, ps, 1.5)
        return session.state

    assert _timed(ph, "psigs", add_psigs) is SessionState.COMPLETE
    ph["total"] = (time.perf_counter_ns() - t0) / 1e6
    ph["cpu"] = (time.process_time_ns() - c0) / 1e6
    # Outside the timed part: the session's result is a valid signature under the output key.
    assert PublicKeyXOnly(session.output_key).verify(session.final_signature(), msg)
    return ph


def run_stored(n: int, check: str, registries: list[Any]) -> dict[str, float]:
    """:func:`run_session`'s protocol with every contribution through a store-backed registry
    (``registries`` take turns: one = one process, two = two processes on one database)."""
    from payouts.crypto import musig2 as m
    from payouts.settlement.musig2.session import PartialSigCheck, SessionState, SigningSession

    sks = [os.urandom(32) for _ in range(n)]
    pks = [m.individual_pubkey(sk) for sk in sks]
    msg = os.urandom(32)
    sid = os.urandom(8).hex()
    ph: dict[str, float] = {}
    t0, c0 = time.perf_counter_ns(), time.process_time_ns()
    order = m.key_sort(pks)

    def open_session() -> SigningSession:
        s = SigningSession(order, msg, nonce_deadline=1.0, sig_deadline=2.0,
                           taproot_merkle_root=ROOT, max_signers=n,
                           psig_check=PartialSigCheck(check))
        return registries[0].create(sid, s)[0]  # type: ignore[no-any-return]

    session = _timed(ph, "keyagg", open_session)
    assert isinstance(session, SigningSession)
    sk_of = dict(zip(pks, sks, strict=True))
    signers = [sk_of[pk] for pk in order]
    nonces = _timed(ph, "noncegen", lambda: [
        m.nonce_gen(sk, pk, session.keyagg, msg) for sk, pk in zip(signers, order, strict=True)])
    assert isinstance(nonces, list)

    def add_nonces() -> m.SessionContext | None:
        for i, (_, pn) in enumerate(nonces):
            registries[i % len(registries)].apply(
                sid, lambda s, i=i, pn=pn: s.add_nonce(i, pn, 0.0))
        ctx: m.SessionContext | None = registries[0].load(sid).session_context
        return ctx

    ctx = _timed(ph, "nonces", add_nonces)
    assert isinstance(ctx, m.SessionContext)
    psigs = _timed(ph, "sign", lambda: [
        m.partial_sign(sn, sk, ctx, verify=False) for (sn, _), sk in zip(nonces, signers,
                                                                          strict=True)])
    assert isinstance(psigs, list)

    def add_psigs() -> SessionState:
        state = SessionState.COLLECTING_PARTIAL_SIGS
        for i, ps in enumerate(psigs):
            state = registries[i % len(registries)].apply(
                sid, lambda s, i=i, ps=ps: s.add_partial_sig(i, ps, 1.5))
        return state

    assert _timed(ph, "psigs", add_psigs) is SessionState.COMPLETE
    ph["total"] = (time.perf_counter_ns() - t0) / 1e6
    ph["cpu"] = (time.process_time_ns() - c0) / 1e6
    return ph


def store_registries(tmp: Path) -> dict[str, list[Any]]:
    """Registries per store variant: SQLite file; PostgreSQL (a fresh schema) if reachable."""
    import sqlalchemy as sa

    from payouts.settlement.musig2.registry import SessionRegistry
    from payouts.store import migrate
    from payouts.store.engine import make_engine

    sqlite = make_engine(f"sqlite:///{tmp / 'bench.db'}")
    migrate.upgrade(sqlite)
    out: dict[str, list[Any]] = {
        "sqlite, one process": [SessionRegistry(sqlite)],
        "sqlite, two processes": [SessionRegistry(sqlite),
                                  SessionRegistry(make_engine(sqlite.url))],
    }
    url = os.environ.get("PAYOUTS_BENCH_POSTGRES_URL",
                         "postgresql+psycopg://root@127.0.0.1:5432/test")
    try:
        admin = sa.create_engine(url, connect_args={"connect_timeout": 3})
        schema = f"bench_musig_{os.getpid()}"
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as e:
        print(f"PostgreSQL at {url} unreachable ({e.__class__.__name__}): store runs on SQLite "
              "only", file=sys.stderr)
        return out
    pg_url = sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    pg = make_engine(pg_url)
    migrate.upgrade(pg)
    out["postgresql, one process"] = [SessionRegistry(pg)]
    out["postgresql, two processes"] = [SessionRegistry(pg), SessionRegistry(make_engine(pg_url))]
    _CLEANUP.append(lambda: _drop(admin, schema))
    return out


_CLEANUP: list[Callable[[], None]] = []


def _drop(admin: Any, schema: str) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run_raw(n: int, *, verify_partials: bool = True) -> dict[str, float]:
    """The floor: the same libsecp256k1 calls with no wrapper (no checks, no serialization).

    ``verify_partials``: a PartialSigVerify per signer (``on-arrival``), else one BIP-340
    verify of the aggregate signature (``on-aggregate``). Reported beside the sessions so that
    machine speed and wrapper overhead can be told apart.
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
    if verify_partials:
        for i in range(n):
            lib.secp256k1_musig_partial_sig_verify(CTX, ps[i], pns[i], pp[i], cache, ses)
    out = ffi.new("unsigned char[64]")
    lib.secp256k1_musig_partial_sig_agg(
        CTX, out, ses, ffi.new("secp256k1_musig_partial_sig *[]", ps), n
    )
    full = ffi.new("secp256k1_pubkey *")
    lib.secp256k1_musig_pubkey_get(CTX, full, cache)
    xq = ffi.new("secp256k1_xonly_pubkey *")
    lib.secp256k1_xonly_pubkey_from_pubkey(CTX, xq, ffi.NULL, full)
    ok = lib.secp256k1_schnorrsig_verify(CTX, out, msg, 32, xq)
    total = (time.perf_counter_ns() - t0) / 1e6
    cpu = (time.process_time_ns() - c0) / 1e6
    # No per-call checks above (that is the point), so make sure nothing tripped an ARG_CHECK:
    # a pending illegal-argument message would otherwise surface in the next checked call.
    check(ok, "raw CFFI floor")
    return {"total": total, "cpu": cpu}


def run_btclib(n: int, *, verify_partials: bool = True) -> dict[str, float]:
    """The same run through btclib-ecc's ecc.musig2 (the BIP-327 reference stand-in).

    ``verify_partials`` as in :func:`run_raw`; the final BIP-340 verify is timed either way.
    """
    from btclib_ecc.ecc import musig2 as bm
    from btclib_ecc.ecc import ssa
    from btclib_ecc.hashes import tagged_hash

    sks = [int.from_bytes(os.urandom(32), "big") % (2**255) + 1 for _ in range(n)]
    pks = [bm.individual_pub_key(sk) for sk in sks]
    msg = os.urandom(32)
    ph: dict[str, float] = {"psigs": 0.0}
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
        "nonces",
        lambda: bm.SessionContext(bm.nonce_agg([p for _, p in nonces]), order, tweak, [True], msg),
    )
    psigs = _timed(
        ph,
        "sign",
        lambda: [bm.sign(sn, sk, session) for (sn, _), sk in zip(nonces, signers, strict=True)],
    )
    assert isinstance(psigs, list)

    def collect() -> bool:
        if verify_partials:
            # One shared session context, so its values are computed once (the fast spelling).
            for i, ps in enumerate(psigs):
                assert bm.partial_sig_verify_(ps, nonces[i][1], order[i], session)
        sig = bm.partial_sig_agg(psigs, session).serialize()
        return bool(ssa.verify_(msg, agg_x, sig))

    assert _timed(ph, "psigs", collect)
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


def bench_together(
    fns: dict[str, Callable[[], dict[str, float]]], runs: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """:func:`bench` for several variants, their runs taken in turn (round robin).

    On a shared machine the load changes within seconds; taking turns exposes every variant to
    the same load, so that their ratios (session vs floor, one strategy vs the other) hold.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    runs_of: dict[str, list[dict[str, float]]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            runs_of[k].append(fn())
    return {k: medians(v) for k, v in runs_of.items()}


def btclib_in_subprocess(n: int, runs: int) -> dict[str, dict[str, float]]:
    """:func:`run_btclib` for both strategies, pure-Python mode, in a child interpreter (the
    environment variable must be set before btclib-ecc is imported)."""
    env = {**os.environ, "BTCLIB_ECC_NO_LIBSECP256K1": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--btclib-worker", str(n), str(runs)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    out: dict[str, dict[str, float]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _fmt(label: str, r: dict[str, float]) -> str:
    cols = " ".join(f"{r[p]:>9.3f}" if p in r else f"{'':>9}" for p in (*PHASES, "total", "cpu"))
    return f"{label:<44} {cols}"


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the benchmark, print a table of medians (ms), and return it."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--runs-100", type=int, default=51)
    ap.add_argument("--runs-5", type=int, default=301)
    ap.add_argument("--runs-ref", type=int, default=21)
    ap.add_argument("--n-large", type=int, default=100)
    ap.add_argument("--runs-store", type=int, default=11)
    ap.add_argument("--btclib-worker", nargs=2, type=int, metavar=("N", "RUNS"))
    args = ap.parse_args(argv)

    if args.btclib_worker:
        from btclib_ecc.curves import is_libsecp256k1_serving

        assert not is_libsecp256k1_serving(), "btclib-ecc must run in pure-Python mode"
        n, runs = args.btclib_worker
        print(
            json.dumps(
                {
                    c: bench(
                        lambda v=(c == "on-arrival"): run_btclib(n, verify_partials=v), runs, 1
                    )
                    for c in STRATEGIES
                }
            )
        )
        return {}

    big, r_big, r_5 = args.n_large, args.runs_100, args.runs_5
    results = bench_together(
        {
            **{f"session n={big} {c}": lambda c=c: run_session(big, c) for c in STRATEGIES},
            f"session n={big} on-aggregate, key cached": lambda: run_session(
                big, "on-aggregate", key_cached=True
            ),
            **{
                f"raw CFFI floor n={big} {c}": lambda c=c: run_raw(
                    big, verify_partials=c == "on-arrival"
                )
                for c in STRATEGIES
            },
        },
        r_big,
    )
    results.update(
        bench_together(
            {
                **{f"session n=5 {c}": lambda c=c: run_session(5, c) for c in STRATEGIES},
                "session n=5 on-aggregate, signers self-verify": lambda: run_session(
                    5, "on-aggregate", self_verify=True
                ),
                **{
                    f"raw CFFI floor n=5 {c}": lambda c=c: run_raw(
                        5, verify_partials=c == "on-arrival"
                    )
                    for c in STRATEGIES
                },
            },
            r_5,
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        stores = store_registries(Path(tmp))
        try:
            results.update(bench_together({
                f"session n={big} on-arrival, in memory": lambda: run_session(big, "on-arrival"),
                **{f"stored n={big} on-arrival, {k}": lambda r=r: run_stored(big, "on-arrival", r)
                   for k, r in stores.items()},
            }, args.runs_store, warmup=1))
        finally:
            for f in _CLEANUP:
                f()
    ref = btclib_in_subprocess(5, args.runs_ref)
    for c in STRATEGIES:
        results[f"btclib-ecc pure Python n=5 {c}"] = ref[c]

    print(f"medians in ms ({sys.implementation.name} {sys.version.split()[0]})")
    print(f"{'':<44} " + " ".join(f"{p:>9}" for p in (*PHASES, "total", "cpu")))
    for label, r in results.items():
        print(_fmt(label, r))
    for c in STRATEGIES:
        ref_c, ours = results[f"btclib-ecc pure Python n=5 {c}"], results[f"session n=5 {c}"]
        print(
            f"ratio n=5 {c}, btclib-ecc pure Python (reference.py stand-in) / session: "
            f"{ref_c['total'] / ours['total']:.1f}x wall, {ref_c['cpu'] / ours['cpu']:.1f}x CPU"
        )
    for c in STRATEGIES:
        large, floor = results[f"session n={big} {c}"], results[f"raw CFFI floor n={big} {c}"]
        verdict = "OK" if large["total"] <= TARGET_MS else "OVER"
        default = " (the API's default)" if c == "on-aggregate" else ""
        target(f"MuSig2 session, {big} signers, {c}{default}", large["total"], TARGET_MS, "ms",
               at_least=False, baseline=f"raw libsecp floor {floor['total']:.2f} ms")
        print(
            f"n={big} {c}: {large['total']:.2f} ms wall, {large['cpu']:.2f} ms CPU "
            f"(target <= {TARGET_MS:g} ms wall: {verdict}); raw floor {floor['total']:.2f} ms"
        )
    mem = results[f"session n={big} on-arrival, in memory"]
    for label, r in results.items():
        if label.startswith("stored"):
            print(f"{label}: {r['total']:.1f} ms wall ({r['total'] / mem['total']:.1f}x the "
                  f"in-memory session's {mem['total']:.2f} ms in the same run), "
                  f"{r['total'] / (2 * big):.2f} ms per contribution")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return results


if __name__ == "__main__":
    main()
