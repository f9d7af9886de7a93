"""The ``payouts`` command line: :func:`main` is the console entry point.

The typer application is :mod:`payouts.cli.root` (``payouts.cli.app`` loads it on first
use). ``payouts distribution amounts FILE -T N``, the check anyone runs on a coinbase, is
answered without loading the framework at all (:mod:`payouts.cli.amounts`).

A user error prints as one clear line and exits 2, with no traceback: engine errors
(:class:`~payouts.errors.PayoutsError`) as ``error: code: message``; usage errors (an unknown
option, a missing argument) with click's usage and message; ``payouts`` or a group with no
command prints the help and exits 2, as usage errors do.
"""

from __future__ import annotations

import sys
from typing import Any

from payouts.errors import PayoutsError


def fail(message: str) -> None:
    """``error: message`` on stderr (red on a terminal), exit 2."""
    red = sys.stderr.isatty()
    sys.stderr.write(f"\033[31merror: {message}\033[0m\n" if red else f"error: {message}\n")
    sys.exit(2)


def main() -> None:
    """Console entry point (module docstring)."""
    if sys.argv[1:3] == ["distribution", "amounts"]:
        from payouts.cli.amounts import fast_amounts

        try:
            if fast_amounts(sys.argv[3:]):
                return
        except PayoutsError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{exc.strerror or exc}")
    from payouts.cli.root import run

    run()


def __getattr__(name: str) -> Any:
    if name == "app":
        from payouts.cli.root import app

        return app
    raise AttributeError(name)
