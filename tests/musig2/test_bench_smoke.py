"""The MuSig2 benchmark runs end to end (tiny sizes; the numbers themselves are not asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_musig2.py"


def test_bench_main_smoke(capsys: object) -> None:
    spec = importlib.util.spec_from_file_location("bench_musig2", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--runs-100", "1", "--runs-5", "1", "--runs-ref", "1", "--n-large", "7"])
    assert set(res) == {
        "wrapper n=7",
        "wrapper n=5",
        "wrapper n=5 (sign self-verify)",
        "btclib-ecc pure Python n=5",
        "raw CFFI floor n=7",
        "raw CFFI floor n=5",
    }
    assert all(r["total"] > 0 for r in res.values())
