"""The closing table of ``make bench``: every target, its measured value, the margin, the load
average while it was measured and the same-run baseline it is compared with.

A benchmark module calls :func:`target` once per target; the line it prints (``TARGET {json}``)
is read back by ``python -m benchmarks`` (:mod:`benchmarks.__main__`), which leaves it out of
the module's own output and prints the table at the end of the run (and into last-run.md).
"""

from __future__ import annotations

import json
import os
from typing import Any

PREFIX = "TARGET "


def target(name: str, measured: float, bound: float, unit: str, *, at_least: bool,
           baseline: str = "", load: float | None = None) -> None:
    """Report one target: ``measured`` against ``bound`` (a floor when ``at_least``, else a
    ceiling); ``baseline`` says what it was compared with in the same run; ``load`` is the
    1-minute load average while it ran (default: now)."""
    margin = (measured - bound) / bound if at_least else (bound - measured) / bound
    print(PREFIX + json.dumps({
        "name": name, "measured": measured, "bound": bound, "unit": unit, "at_least": at_least,
        "margin": margin, "ok": margin >= 0, "baseline": baseline,
        "load": os.getloadavg()[0] if load is None else load}), flush=True)


def _fmt(x: float, unit: str) -> str:
    if unit == "%":
        return f"{x:.0%}"
    if unit == "x":
        return f"{x:.2f}x"
    return f"{x:,.1f} {unit}" if abs(x) < 1000 else f"{x:,.0f} {unit}"


def table(rows: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    out = ["| target | measured | bound | margin | load (1 min) | same-run baseline | |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        sign = ">=" if r["at_least"] else "<="
        out.append(f"| {r['name']} | {_fmt(r['measured'], r['unit'])} | {sign} "
                   f"{_fmt(r['bound'], r['unit'])} | {r['margin']:+.0%} | {r['load']:.2f} | "
                   f"{r['baseline']} | {'OK' if r['ok'] else 'MISSED'} |")
    return "\n".join(out)


def split(text: str) -> tuple[str, list[dict[str, Any]]]:
    """A module's output without its target lines, and the targets."""
    kept, rows = [], []
    for line in text.splitlines():
        if line.startswith(PREFIX):
            rows.append(json.loads(line[len(PREFIX):]))
        else:
            kept.append(line)
    return "\n".join(kept) + ("\n" if text.endswith("\n") else ""), rows
