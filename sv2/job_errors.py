"""Why a job is refused, below the roles: :class:`JobRejected` and the codes that both the JD
server (``DeclareMiningJob.Error``) and the pool's ``SetCustomMiningJob`` check
(``SetCustomMiningJob.Error``, :mod:`sv2.custom_job`) answer with. Every code is documented in
docs/jds.md; the JD server's other codes are in :mod:`sv2.jds.errors`.

sv2-spec PR #194 (2026-06) removed the spec's error-code suggestions: codes are implementation
defined. ``invalid-mining-job-token`` is SRI's string (sv2-apps ``job-declaration``); the
distribution codes are PR #203 §7.3 verbatim.
"""

from __future__ import annotations

from payouts.errors import ValidationError

INVALID_TOKEN = "invalid-mining-job-token"
STALE_PAYOUT_DISTRIBUTION = "stale-payout-distribution"
INVALID_PAYOUT_DISTRIBUTION = "invalid-payout-distribution"
# extension 0x4003 (docs/extensions/0x4003-settlement-modes.md): the outputs of a ctv/musig2 job
INVALID_SETTLEMENT_OUTPUTS = "invalid-settlement-outputs"
SETTLEMENT_MODE_NOT_NEGOTIATED = "settlement-mode-not-negotiated"
# SetCustomMiningJob (05-Mining-Protocol.md §5.3.18): "Up to 8 bytes" of coinbase_prefix
MAX_COINBASE_PREFIX = 8
INVALID_PARAM = "invalid-job-param-value-"


def param_error(field: str) -> str:
    """``invalid-job-param-value-{field}`` with the spec's field name (05-Mining-Protocol.md
    §5.3.20 before PR #194 removed the suggested codes)."""
    return INVALID_PARAM + field


class JobRejected(ValidationError):
    """A declaration (or a per-job request, or a custom job) is refused with SV2 error
    ``code``; ``details`` goes to ``error_details`` (UTF-8). Raised before any state is
    written."""

    def __init__(self, code: str, details: str = "") -> None:
        super().__init__(details or code, code=code)
        self.details = details


__all__ = [
    "INVALID_PARAM",
    "INVALID_PAYOUT_DISTRIBUTION",
    "INVALID_SETTLEMENT_OUTPUTS",
    "INVALID_TOKEN",
    "MAX_COINBASE_PREFIX",
    "SETTLEMENT_MODE_NOT_NEGOTIATED",
    "STALE_PAYOUT_DISTRIBUTION",
    "JobRejected",
    "param_error",
]
