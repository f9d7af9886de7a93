"""CPU time of the ``payouts`` command line (issue #14: ``payouts --help`` and ``payouts
distribution amounts`` on a small file in <= 150 ms of CPU), against the command line before
issue #14 (commit BASELINE_REF, extracted with ``git archive`` into a temporary folder).

Each command runs ``--runs`` times in a fresh interpreter; the CPU time (user + system) of the
child comes from ``os.wait4``; the minimum is reported (the least disturbed by other load on the
machine) with the median beside it. ``python -m benchmarks.bench_cli [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REF = "0365092"  # main before issue #14: every command imported at start
BUDGET_S = 0.150

DISTRIBUTION = {
    "distribution_id": 3,
    "pool_payout": {"script": "0014" + "a1" * 20, "weight": 13374693877552},
    "payouts": [{"script": "0014" + f"{i:02x}" * 20, "weight": 65536 * (i + 1) * 10**6}
                for i in range(12)],
    "additional_outputs": [],
}


def cpu_seconds(argv: list[str], cwd: Path) -> float:
    """CPU time (user + system) of one run of ``argv`` in ``cwd``."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode} in {cwd}")
    return usage.ru_utime + usage.ru_stime


def measure(argv: list[str], cwd: Path, runs: int) -> tuple[float, float]:
    samples = [cpu_seconds(argv, cwd) for _ in range(runs)]
    return min(samples), statistics.median(samples)


def baseline_tree(into: Path, ref: str = BASELINE_REF) -> Path | None:
    """The sources at ``ref``, or None outside a git checkout that has it."""
    archive = into / "baseline.tar"
    with archive.open("wb") as f:
        done = subprocess.run(["git", "archive", ref], cwd=ROOT, stdout=f,
                              stderr=subprocess.DEVNULL)
    if done.returncode != 0:
        return None
    tree = into / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dist = Path(tmp) / "distribution.json"
        dist.write_text(json.dumps(DISTRIBUTION))
        commands = {
            "payouts --help": ["--help"],
            "payouts distribution amounts (12 payees)":
                ["distribution", "amounts", str(dist), "-T", "5000000000"],
        }
        trees = {"now": ROOT}
        base = baseline_tree(Path(tmp))
        if base is not None:
            trees[f"before (#14, {BASELINE_REF})"] = base
        print(f"CPU time, min (median) of {args.runs} runs, budget {BUDGET_S * 1000:.0f} ms")
        over = []
        for label, argv in commands.items():
            cells = []
            for tree_label, tree in trees.items():
                best, mid = measure([sys.executable, "-m", "payouts", *argv], tree, args.runs)
                cells.append(f"{tree_label}: {best * 1000:.0f} ms ({mid * 1000:.0f})")
                if tree is ROOT and best > BUDGET_S:
                    over.append(label)
            print(f"  {label:44} " + "   ".join(cells))
        if over:
            print(f"over budget: {', '.join(over)}")


if __name__ == "__main__":
    main()
