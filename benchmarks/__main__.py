"""Run every benchmark module in turn: ``python -m benchmarks [name ...]``.

Each module runs in its own interpreter so one benchmark's memory peak or warm caches cannot
flatter another's. Output goes to the terminal and to ``benchmarks/last-run.md``, and ends with
one table of every target the modules reported (:mod:`benchmarks.summary`): measured value,
margin, load average during it, same-run baseline.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import summary

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, " \
           f"Python {platform.python_version()}"


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in HERE.glob("bench_*.py"))
    out = [f"# make bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
           f"machine: {machine()}", ""]
    print("\n".join(out), flush=True)
    failed = []
    targets: list[dict[str, object]] = []
    for name in names:
        module = name if name.startswith("bench_") else f"bench_{name}"
        header = f"## {module}"
        print(header, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}"],
                              capture_output=True, text=True)
        text, rows = summary.split(proc.stdout + (proc.stderr if proc.returncode else ""))
        targets += rows
        print(text, flush=True)
        print(f"({module}: {time.perf_counter() - t0:.1f}s, exit {proc.returncode})\n", flush=True)
        out += [header, "```", text.rstrip(), "```", ""]
        if proc.returncode:
            failed.append(module)
    if targets:
        closing = summary.table(targets)  # type: ignore[arg-type]
        print("## summary: every target of this run\n\n" + closing, flush=True)
        out += ["## summary: every target of this run", "", closing, ""]
    (HERE / "last-run.md").write_text("\n".join(out) + "\n")
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
