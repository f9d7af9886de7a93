"""Typed errors with stable, machine-readable codes.

Every rejection the engine makes carries a ``code`` (kebab-case, stable across releases, used in
API problem types and SV2 error strings), a human message and, where a machine can use it, its
``context`` (e.g. the ``row`` and ``key`` of the share that sank a batch); the API turns all
three into one problem+json body. Raising one of these must leave no state changed: callers
validate fully before writing.
"""

from __future__ import annotations

#: What an error's ``context`` may hold: plain JSON scalars.
ContextValue = int | str


class PayoutsError(Exception):
    """Base class: ``code`` is stable and specific, ``message`` is for people, ``context`` is
    for machines (members of the API's problem body; ``None`` values are left out)."""

    code: str = "payouts-error"

    def __init__(
        self, message: str, *, code: str | None = None, **context: ContextValue | None
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.context: dict[str, ContextValue] = {
            k: v for k, v in context.items() if v is not None
        }

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ValidationError(PayoutsError):
    """Input rejected before anything was written."""

    code = "invalid-input"


class UnknownMinerError(ValidationError):
    code = "unknown-miner"


class InvalidDifficultyError(ValidationError):
    code = "invalid-difficulty"


class InvalidRevenueError(ValidationError):
    code = "invalid-revenue"


class DuplicateKeyError(ValidationError):
    code = "duplicate-key"


class ZeroRevenueError(ValidationError):
    code = "zero-revenue"


class ZeroWeightError(ValidationError):
    code = "zero-weight"


class UnsatisfiableDistributionError(ValidationError):
    """sv2-spec PR #203 (revision c1babf7, 2026-09): the fixed ``additional_outputs`` sum to
    the template revenue T or more, so nothing is left to split by weight (not even the pool
    payout's share): the distribution cannot be satisfied by this template, and a JD client
    falls back instead of declaring a coinbase with a 0-sat or negative pool payout."""

    code = "unsatisfiable-distribution"


class BudgetTooSmallError(ValidationError):
    code = "budget-too-small"


class ConfigError(PayoutsError):
    code = "invalid-config"


# -- share batches (payouts.accounting.validate) ---------------------------------------------


class ColumnLengthError(ValidationError):
    """A columnar share batch whose ``column`` is not as long as its ``key`` column."""

    code = "column-length-mismatch"

    def __init__(self, column: str, length: int, rows: int) -> None:
        super().__init__(f"column {column} has {length} values, key has {rows}", column=column)
        self.column = column


class ShareRowError(ValidationError):
    """A share batch refused because of one row: ``row`` (0-based) and that row's idempotency
    ``key`` (``None`` when the key itself is not a string) travel with the error. The whole
    batch is refused; the subclasses keep the specific code of the rule the row broke."""

    def __init__(self, message: str, *, row: int, key: object) -> None:
        key_text = key if isinstance(key, str) else None
        super().__init__(message, row=row, key=key_text)
        self.row = row
        self.key = key_text


class ShareDifficultyError(ShareRowError, InvalidDifficultyError):
    """A share's target difficulty is out of range."""


class ShareRevenueError(ShareRowError, InvalidRevenueError):
    """A share's template revenue is out of range."""


class DuplicateShareKeyError(ShareRowError, DuplicateKeyError):
    """A key appears twice in one batch."""


class UnknownShareMinerError(ShareRowError, UnknownMinerError):
    """A share names a miner (id or account) that is not registered."""


class ForwardedError(PayoutsError):
    """An error another process raised on this one's behalf (the cluster's leader answering a
    forwarded request, docs/deployment.md), carried over unchanged: its ``code``, ``message``
    and ``context``, and ``status`` when the error fixed its own (an operator action's 409, an
    internal error's 500); None: the status its code has."""

    def __init__(self, message: str, *, code: str, status: int | None = None,
                 **context: ContextValue | None) -> None:
        super().__init__(message, code=code, **context)
        self.status = status
