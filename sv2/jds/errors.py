"""Error codes of the JD server (every one is documented in docs/jds.md).

sv2-spec PR #194 (2026-06) removed the spec's error-code suggestions: codes are implementation
defined. Where SRI's JDS (sv2-apps ``pool-apps/jd-server``) has a code for the same failure we
use SRI's string, so that SRI's JD client reacts the same way; PR #203 (0x0003) and PR #202
(per-job adapter) codes are used verbatim; the rest are ours, one per distinct failure. The
codes the pool's SetCustomMiningJob check shares (and :class:`JobRejected`) live below the
roles in :mod:`sv2.job_errors`; the SetupConnection codes every server shares in
:mod:`sv2.session`. Both are re-exported here, so ``E.<CODE>`` names every code this server
sends.
"""

from __future__ import annotations

from sv2.job_errors import INVALID_PAYOUT_DISTRIBUTION as INVALID_PAYOUT_DISTRIBUTION
from sv2.job_errors import INVALID_SETTLEMENT_OUTPUTS as INVALID_SETTLEMENT_OUTPUTS
from sv2.job_errors import INVALID_TOKEN as INVALID_TOKEN
from sv2.job_errors import SETTLEMENT_MODE_NOT_NEGOTIATED as SETTLEMENT_MODE_NOT_NEGOTIATED
from sv2.job_errors import STALE_PAYOUT_DISTRIBUTION as STALE_PAYOUT_DISTRIBUTION
from sv2.job_errors import JobRejected as JobRejected
from sv2.session import SETUP_UNSUPPORTED_FLAGS as SETUP_UNSUPPORTED_FLAGS
from sv2.session import SETUP_UNSUPPORTED_PROTOCOL as SETUP_UNSUPPORTED_PROTOCOL
from sv2.session import SETUP_VERSION_MISMATCH as SETUP_VERSION_MISMATCH

# SetupConnection.Error (SRI's JDS); the codes every server shares are in sv2.session
SETUP_MISSING_DECLARE_TX_DATA = "missing-declare-tx-data-flag"

# DeclareMiningJob.Error -- SRI job-declaration/src/lib.rs (INVALID_TOKEN: sv2.job_errors)
INVALID_COINBASE_TX = "invalid-coinbase-tx"
INVALID_COINBASE_TX_INPUT = "invalid-coinbase-tx-input"
STALE_CHAIN_TIP = "stale-chain-tip"
MISSING_TXS = "missing-txs"
INTERNAL_ERROR = "internal-error"
# -- PR #203 §7.3: STALE_PAYOUT_DISTRIBUTION, INVALID_PAYOUT_DISTRIBUTION (sv2.job_errors)
# -- PR #202 §4 (per-job adapter, extension 0x4002 here)
STALE_PAYOUT_OUTPUTS = "stale-payout-outputs"
INVALID_PAYOUT_OUTPUTS = "invalid-payout-outputs"
# -- extension 0x4003 (docs/extensions/0x4003-settlement-modes.md)
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
RATE_LIMITED = "rate-limited"  # [jds] declarations_per_address_per_sec, over all JD servers

# RequestPayoutOutputs.Error (extension 0x4002)
PAYOUT_OUTPUTS_ALREADY_REQUESTED = "payout-outputs-already-requested"
INVALID_PAYOUT_VALUE = "invalid-payout-value"
NO_PAYOUT_DISTRIBUTION = "no-payout-distribution"
