"""Every ``code`` an API problem can carry, with what it means: the ``code`` enum of the one
``Problem`` component of the OpenAPI document (:mod:`api.contract`).

A code is the engine error's (:attr:`payouts.errors.PayoutsError.code`) or the API check's.
tests/api/test_contract.py reads every code literal in ``payouts/`` and ``api/`` and fails when
one is neither listed here nor in :data:`NOT_FROM_THE_API` (raised only where no request
reaches: the CLI, start-up, the background loops).
"""

from __future__ import annotations

CODES: dict[str, str] = {
    # requests
    "invalid-request": "the request does not match its schema (errors lists each problem; row "
    "names the share batch row)",
    "malformed-body": "the body is not JSON (or, sent as one, not a complete Arrow IPC stream)",
    "unsupported-media-type": "a body in a content type the operation does not take",
    "request-too-large": "the body exceeds the server's limit (2 MiB)",
    "not-found": "no such path",
    "method-not-allowed": "the path exists, not with this method",
    "rate-limited": "too many requests from this client (retry_after seconds, Retry-After)",
    "internal-error": "a bug: the server log has the traceback",
    "store-unreachable": "the database does not answer",
    "metrics-elsewhere": "/metrics is served on its own address ([metrics] listen)",
    # a cluster of several processes (docs/deployment.md)
    "not-leader": "only the cluster's leader answers this; this process is a frontend",
    "no-window-yet": "no leader has published the window yet (just elected, or none): retry",
    "no-leader": "no leader answered the forwarded request in time (failover): retry",
    "stale-leader": "this process was leader, another one was elected since: it wrote nothing",
    # operator tokens
    "missing-token": "no Authorization: Bearer token",
    "invalid-token": "unknown token",
    "token-expired": "the token expired",
    "token-revoked": "the token was revoked",
    "insufficient-scope": "the token lacks required_scope",
    # share batches
    "invalid-input": "bad input (generic)",
    "column-length-mismatch": "a column is not as long as key (column)",
    "invalid-difficulty": "a share's difficulty is out of range (row, key)",
    "invalid-revenue": "a share's revenue is out of range (row, key)",
    "duplicate-key": "a key twice in one batch (row, key), or an account registered twice",
    "unknown-miner": "no such miner account (row, key in a share batch)",
    # miners
    "address-type-not-allowed": "the address type cannot receive payouts",
    "address-wrong-network": "the address is for another network",
    "invalid-address": "not an address",
    "unsupported-address": "an address form the engine does not pay",
    "unknown-challenge": "no such challenge nonce",
    "challenge-mismatch": "the challenge was issued for another account, purpose or address",
    "challenge-used": "the challenge was used already",
    "challenge-expired": "the challenge expired",
    "bip322-malformed": "the signature cannot be decoded (the message names the formats the "
    "address type accepts)",
    "bip322-invalid": "the signature does not verify for this address and message",
    "bip322-unsupported": "a signature format this address type cannot use (or proof of funds)",
    "musig-proof-required": "musig_pubkey and musig_proof go together",
    "invalid-musig-proof": "musig_proof is not a BIP-340 signature by musig_pubkey",
    "rotation-not-possible": "the current payout script has no address to sign with",
    "account-auth-failed": "current_signature is not by the account's current address",
    "address-changed": "the payout address changed concurrently",
    "no-payout-in-block": "the block does not pay this miner",
    "not-ctv-settlement": "the block is not settled in ctv mode",
    "exit-path-not-ready": "the fan-out of the block is not built yet",
    # distributions and blocks
    "no-distribution": "nothing published yet",
    "unknown-distribution": "no such distribution",
    "zero-revenue": "the revenue is zero",
    "zero-weight": "a weight is zero",
    "budget-too-small": "the coinbase budget cannot hold the pool output",
    "unsatisfiable-distribution": "the additional outputs take the whole revenue",
    "coinbase-budget-exceeded": "the outputs exceed the coinbase budget",
    "coinbase-size-class-exceeded": "the outputs exceed the coinbase size class",
    "ctv-not-active": "CTV (BIP-119) is not active on the node",
    "ctv-invalid-params": "fan-out parameters out of range",
    "ctv-revenue-too-small": "the revenue cannot pay the fan-out tree",
    "ctv-tree-nonstandard": "the fan-out tree would not be standard",
    "invalid-ctv": "a CTV commitment does not match",
    "invalid-coinbase": "a coinbase does not pay the distribution",
    "invalid-settlement-mode": "a settlement mode the engine does not know",
    "musig2-invalid-params": "musig2 parameters out of range",
    "musig2-no-committee": "no musig2 committee configured",
    "musig2-payout-nonstandard": "the musig2 payout tx would not be standard",
    "musig2-revenue-too-small": "the revenue cannot pay the musig2 payout tx",
    "invalid-config": "a setting cannot be used",
    "mode-change-needs-restart": "the running server settles in another mode (mode)",
    "unknown-block": "no such block",
    "untracked-block": "the block has no settlement",
    "block-orphaned": "the block left the active chain",
    "block-rejected": "the node rejected the block",
    "tx-decode-error": "a transaction cannot be decoded",
    # settlement actions
    "settlement-not-running": "this server runs no settlement lifecycle",
    "not-mature": "the coinbase is not spendable yet (mature_at_tip)",
    "not-in-active-chain": "the block is not in the node's active chain",
    "nothing-to-broadcast": "nothing is waiting to be sent",
    "fallback-locked": "the fallback's timelock has not passed (valid_from_height)",
    "fallback-unavailable": "this server cannot sign the fallback",
    "signing-complete": "the committee has signed already",
    "fee-bump-impossible": "no fee wallet can bump this transaction",
    # MuSig2 sessions
    "unknown-session": "no such signing session",
    "too-many-sessions": "the session limit is reached",
    "unknown-signer": "no such signer index (signer_index)",
    "signer-auth-failed": "auth is not by the signer's key (signer_index)",
    "wrong-state": "the session is not in the state this step needs",
    "deadline-passed": "the session's deadline passed",
    "duplicate-nonce": "this signer's nonce is in already (signer_index)",
    "duplicate-partial-signature": "this signer's partial signature is in already",
    "duplicate-pubkey": "a committee key twice",
    "invalid-nonce": "not a public nonce (signer_index)",
    "invalid-partial-signature": "the partial signature does not verify (signer_index)",
    "invalid-pubkey": "not a public key",
    "invalid-sighash": "not a 32-byte sighash",
    "invalid-session-config": "session parameters out of range",
    "invalid-time": "a deadline that cannot be",
    "musig2-session-error": "the signing session failed",
    "musig2-spend-error": "the musig2 spend cannot be built",
    "payouts-error": "an engine error without a specific code",
}

#: Code literals in the sources that no API request can meet, and where they are raised.
NOT_FROM_THE_API: dict[str, str] = {
    "snapshot-unusable": "start-up: an accounting snapshot that cannot be read",
    "implausible-difficulty": "the chain follower: a node reporting an impossible difficulty",
    "invalid-block-transition": "the settlement lifecycle's own state checks",
    "ledger-negative": "the owed ledger's own invariant checks",
    "ledger-overdraft": "the owed ledger's own invariant checks",
    "non-increasing-distribution-id": "the store's own invariant check",
    "invalid-scope": "payouts tokens create",
    "unknown-token": "payouts tokens revoke",
}

__all__ = ["CODES", "NOT_FROM_THE_API"]
