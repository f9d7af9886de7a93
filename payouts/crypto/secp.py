"""One shared libsecp256k1 context with an illegal-argument callback that raises.

coincurve 21 exposes the musig and ellswift modules only as raw CFFI. Its global context keeps
libsecp256k1's default illegal callback, which calls ``abort()``: reusing a MuSig2 secret nonce
would kill the whole process (exit 134). We install a callback that records the message, and
:func:`check` turns it into a Python exception, so a misuse is an error, never a crash.
"""

from __future__ import annotations

import threading
from typing import Any

from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

CTX: Any = GLOBAL_CONTEXT.ctx


class _Local(threading.local):
    # A class default, so that check() in a thread that never saw an illegal argument finds
    # None without a missed lookup (an AttributeError raised and caught: ~5x slower per call).
    illegal: str | None = None


_local = _Local()


class SecpError(ValueError):
    """libsecp256k1 rejected an argument or returned failure."""


# coincurve's cdef drops `const`, so the callback type must be taken from the setter itself.
_CB_TYPE = ffi.typeof(lib.secp256k1_context_set_illegal_callback).args[1]


@ffi.callback(_CB_TYPE)  # type: ignore[untyped-decorator]
def _illegal(message: Any, data: Any) -> None:
    _local.illegal = ffi.string(message).decode(errors="replace")


lib.secp256k1_context_set_illegal_callback(CTX, _illegal, ffi.NULL)


def clear() -> None:
    """Forget a pending illegal-argument message, so it cannot be blamed on a later call."""
    _local.illegal = None


def call(what: str, fn: Any, *args: Any) -> int:
    """Call a libsecp256k1 function and :func:`check` its result, with a clean slate."""
    clear()
    ok = int(fn(*args))
    check(ok, what)
    return ok


def check(ok: int, what: str) -> None:
    """Raise :class:`SecpError` if the call failed or tripped an ARG_CHECK."""
    illegal = _local.illegal
    if illegal is not None:
        _local.illegal = None
        raise SecpError(f"{what}: illegal argument ({illegal})")
    if ok != 1:
        raise SecpError(f"{what} failed")


__all__ = ["CTX", "SecpError", "call", "check", "clear", "ffi", "lib"]
