"""Typed errors with stable, machine-readable codes.

Every rejection the engine makes carries a ``code`` (kebab-case, stable across releases, used in
API problem types and SV2 error strings) and a human message. Raising one of these must leave no
state changed: callers validate fully before writing.
"""

from __future__ import annotations


class PayoutsError(Exception):
    """Base class: ``code`` is stable and specific, ``message`` is for people."""

    code: str = "payouts-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

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
