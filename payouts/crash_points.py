"""Named points where the crash tests kill ``payouts serve`` (tests only).

``PAYOUTS_TEST_CRASH_AT=<name>`` (or ``<name>:<n>``, the n-th time the point is reached, 1 by
default) makes the process SIGKILL itself there: no ``finally``, no shutdown snapshot, exactly
what a power cut between two commits leaves. The variable is read once, at import; production
settings never set it (it is not a setting: nothing in the settings file or ``--help`` names
it). Used by tests/crash and benchmarks/crash_serve.py to reach windows a kill from outside
hits only by luck, e.g. between a block's commit and its settlement row (issue #13).
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "PAYOUTS_TEST_CRASH_AT"


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, nth = value.partition(":")
    return name, int(nth) if nth else 1


_target = _parse(os.environ.get(ENV))
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if ``PAYOUTS_TEST_CRASH_AT`` names ``name`` (and this is its n-th
    hit); otherwise nothing."""
    if _target is None or _target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _target[1]:
        print(f"crash point {name} reached: SIGKILL", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV", "crash_point"]
