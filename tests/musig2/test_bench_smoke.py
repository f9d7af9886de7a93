"""The MuSig2 benchmark runs end to end (tiny sizes; the numbers themselves are not asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_musig2.py"


def test_bench_main_smoke() -> None:
    spec = importlib.util.spec_from_file_location("bench_musig2", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--runs-100", "1", "--runs-5", "1", "--runs-ref", "1", "--n-large", "7",
                    "--runs-store", "1"])
    rows = {f"session n={n} {c}" for n in (7, 5) for c in mod.STRATEGIES}
    rows |= {f"raw CFFI floor n={n} {c}" for n in (7, 5) for c in mod.STRATEGIES}
    rows |= {f"btclib-ecc pure Python n=5 {c}" for c in mod.STRATEGIES}
    rows |= {
        "session n=7 on-aggregate, key cached",
        "session n=5 on-aggregate, signers self-verify",
    }
    rows.add("session n=7 on-arrival, in memory")
    stored = {k for k in res if k.startswith("stored n=7 on-arrival, ")}
    # PostgreSQL rows only where a server answers; SQLite always.
    assert {"stored n=7 on-arrival, sqlite, one process",
            "stored n=7 on-arrival, sqlite, two processes"} <= stored
    assert stored <= {f"stored n=7 on-arrival, {db}, {p}" for db in ("sqlite", "postgresql")
                      for p in ("one process", "two processes")}
    assert set(res) == rows | stored
    assert all(r["total"] > 0 for r in res.values())
    # Every session row times the coordinator's round 2 (its verification strategy included).
    assert all(r["psigs"] > 0 for k, r in res.items() if k.startswith("session"))
