"""Crash job: ``payouts serve`` killed with SIGKILL at random points of every lifecycle stage
(issue #13).

    python -m benchmarks.crash_serve [--kills 5] [--rounds 2] [--seed 13] [--max-delay 0.4]
                                     [--postgres]

A bitcoind regtest node (regtest/harness.py; the binary from ``$BITCOIND``, PATH or the cache
regtest/build.py fills) and a ``payouts serve`` process in musig2 mode. Each round takes one
block through found → confirmed → mature → signing → broadcast → paid and another through found
→ confirmed → reorg → mature → fallback → paid, with ``--kills`` SIGKILLs at ``uniform(0,
--max-delay)`` s after each stage's action (the first round adds the two crash points between a
found block's commits). Share batches are posted throughout. At the end, on chain and in the
store: every block paid exactly once, every ledger line written once per time its block was in
the chain, every acknowledged share stored once (regtest/crash_serve.py). Prints the kills per
stage; exit 1 on any failure. ``tests/crash/test_crash_loop.py`` is the short version.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.crash_serve",
                                 description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--kills", type=int, default=5, help="random kills per stage and round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of two blocks each")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--max-delay", type=float, default=0.4,
                    help="a kill lands uniform(0, this) seconds after the stage's action")
    ap.add_argument("--postgres", action="store_true",
                    help="the store on PostgreSQL (127.0.0.1:5432, database test, a fresh "
                         "schema) instead of SQLite")
    args = ap.parse_args(argv)
    from regtest.crash_serve import run_crash_rounds
    from regtest.harness import RegtestNode

    t0 = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f} s] {line}", flush=True)

    url = _postgres_schema() if args.postgres else None
    with RegtestNode() as node, tempfile.TemporaryDirectory(prefix="crash-serve-") as tmp:
        say(f"bitcoind {node.version} on {node.rpc_url}; payouts serve in {tmp}; "
            f"store {'PostgreSQL' if url else 'SQLite'}; {args.kills} kills per stage, "
            f"{args.rounds} rounds, seed {args.seed}")
        try:
            report = run_crash_rounds(node, Path(tmp), kills=args.kills, rounds=args.rounds,
                                      seed=args.seed, max_delay=args.max_delay,
                                      database_url=url, say=say)
        except AssertionError as e:
            print(f"FAIL: {e}", file=sys.stderr)
            return 1
    for line in report.lines():
        print(line)
    print("PASS: every block paid exactly once, every ledger line once, every acknowledged "
          "share stored once")
    return 0


def _postgres_schema() -> str:
    """A fresh schema on the local PostgreSQL, as the tests make them."""
    import secrets

    import sqlalchemy as sa

    base = os.environ.get("PAYOUTS_TEST_POSTGRES_URL",
                          "postgresql+psycopg://root@127.0.0.1:5432/test")
    schema = f"crash_serve_{secrets.token_hex(4)}"
    with sa.create_engine(base).begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.engine.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


if __name__ == "__main__":
    sys.exit(main())
