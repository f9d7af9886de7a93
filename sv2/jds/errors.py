"""Error codes of the JD server (every one is documented in docs/jds.md).

sv2-spec PR #194 (2026-06) removed the spec's error-code suggestions: codes are implementation
defined. Where SRI's JDS (sv2-apps ``pool-apps/jd-server``) has a code for the same failure we
use SRI's string, so that SRI's JD client reacts the same way; PR #203 (0x0003) and PR #202
(per-job adapter) codes are used verbatim; the rest are ours, one per distinct failure.
"""

from __future__ import annotations

from payouts.errors import ValidationError

# SetupConnection.Error (SRI common-messages, sv2-tp)
SETUP_UNSUPPORTED_PROTOCOL = "unsupported-protocol"
SETUP_VERSION_MISMATCH = "protocol-version-mismatch"
SETUP_UNSUPPORTED_FLAGS = "unsupported-feature-flags"
SETUP_MISSING_DECLARE_TX_DATA = "missing-declare-tx-data-flag"

# DeclareMiningJob.Error -- SRI job-declaration/src/lib.rs
INVALID_TOKEN = "invalid-mining-job-token"
INVALID_COINBASE_TX = "invalid-coinbase-tx"
INVALID_COINBASE_TX_INPUT = "invalid-coinbase-tx-input"
STALE_CHAIN_TIP = "stale-chain-tip"
MISSING_TXS = "missing-txs"
INTERNAL_ERROR = "internal-error"
# -- PR #203 §7.3
STALE_PAYOUT_DISTRIBUTION = "stale-payout-distribution"
INVALID_PAYOUT_DISTRIBUTION = "invalid-payout-distribution"
# -- PR #202 §4 (per-job adapter, extension 0x4002 here)
STALE_PAYOUT_OUTPUTS = "stale-payout-outputs"
INVALID_PAYOUT_OUTPUTS = "invalid-payout-outputs"
# -- extension 0x4003 (docs/extensions/0x4003-settlement-modes.md)
INVALID_SETTLEMENT_OUTPUTS = "invalid-settlement-outputs"
SETTLEMENT_MODE_NOT_NEGOTIATED = "settlement-mode-not-negotiated"
# -- ours
EXTENSION_NOT_NEGOTIATED = "extension-not-negotiated"
INVALID_POOL_PAYOUT = "invalid-pool-payout"
INVALID_COINBASE_VALUE = "invalid-coinbase-value"
INVALID_WITNESS_COMMITMENT = "invalid-witness-commitment"
DUPLICATE_WTXID = "duplicate-wtxid"
TOO_MANY_TRANSACTIONS = "too-many-transactions"
BLOCK_WEIGHT_EXCEEDED = "block-weight-exceeded"
BLOCK_SIGOPS_EXCEEDED = "block-sigops-exceeded"
INVALID_PROVIDED_TXS = "invalid-provided-transactions"
UNDECLARED_TX = "undeclared-transaction"
DUPLICATE_PROVIDED_TX = "duplicate-provided-transaction"
COINBASE_TX_PROVIDED = "coinbase-transaction-provided"
JOB_SUPERSEDED = "job-superseded"

# RequestPayoutOutputs.Error (extension 0x4002)
PAYOUT_OUTPUTS_ALREADY_REQUESTED = "payout-outputs-already-requested"
INVALID_PAYOUT_VALUE = "invalid-payout-value"
NO_PAYOUT_DISTRIBUTION = "no-payout-distribution"


class JobRejected(ValidationError):
    """A declaration (or a per-job request) is refused with SV2 error ``code``; ``details``
    goes to ``error_details`` (UTF-8). Raised before any server state is written."""

    def __init__(self, code: str, details: str = "") -> None:
        super().__init__(details or code, code=code)
        self.details = details
