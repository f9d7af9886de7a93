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


class JobRejected(ValidationError):
    """A declaration (or a per-job request, or a custom job) is refused with SV2 error
    ``code``; ``details`` goes to ``error_details`` (UTF-8). Raised before any state is
    written."""

    def __init__(self, code: str, details: str = "") -> None:
        super().__init__(details or code, code=code)
        self.details = details


__all__ = [
    "INVALID_PAYOUT_DISTRIBUTION",
    "INVALID_TOKEN",
    "STALE_PAYOUT_DISTRIBUTION",
    "JobRejected",
]
