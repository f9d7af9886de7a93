"""Request and response bodies. Amounts are integer satoshis; weights (which can exceed 2^53,
the largest integer a JavaScript JSON reader keeps exactly) are decimal strings. Statuses,
phases, roles and modes are the engine's own sets (:mod:`payouts.states`); txids and block
hashes are hex in display order (:func:`payouts.tx.hashes.display_hex`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from api.store import ChallengePurpose
from payouts.accounting.shares import ACCOUNT_MAX, JOB_ID_MAX, KEY_MAX, WORKER_MAX
from payouts.states import (
    BlockStatus,
    ModeName,
    Scheme,
    SettlementPhase,
    TxRole,
    TxStatus,
)
from payouts.store.ledger import BlockRecord
from payouts.tx.hashes import display_hex
from payouts.tx.txout import MAX_MONEY

Account = Annotated[
    str, StringConstraints(min_length=1, max_length=ACCOUNT_MAX, pattern=r"^[A-Za-z0-9._-]+$")
]
Address = Annotated[str, StringConstraints(min_length=1, max_length=90)]
Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
Signature = Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _one_of(values: Iterable[str]) -> str:
    *head, last = [str(v) for v in values]
    return f"{', '.join(head)} or {last}"


# -- miners ------------------------------------------------------------------------------------


class ChallengeRequest(_In):
    account: Account
    address: Address = Field(description="the payout address to prove (new address to rotate)")
    purpose: ChallengePurpose = "register"


class ChallengeResponse(BaseModel):
    nonce: str
    purpose: ChallengePurpose
    account: str
    address: str
    message: str = Field(description="sign exactly this text (UTF-8) with BIP-322")
    expires_at: datetime


class RegisterRequest(_In):
    account: Account
    address: Address
    nonce: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    signature: Signature = Field(description="BIP-322 signature of the challenge message")
    musig_pubkey: Annotated[str, StringConstraints(pattern=r"^([0-9a-fA-F]{64}|[0-9a-fA-F]{66})$")
                            ] | None = None
    musig_proof: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{128}$")] | None = Field(
        None, description="BIP-340 signature by musig_pubkey over the musig proof message"
    )


class RotateRequest(_In):
    nonce: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    new_signature: Signature = Field(description="BIP-322 by the NEW address over the message")
    current_signature: Signature = Field(
        description="BIP-322 by the CURRENT address over the same message (account auth)"
    )


class MinerOut(BaseModel):
    account: str
    address: str | None
    payout_script: str
    musig_pubkey: str | None
    created_at: datetime


class BalanceOut(BaseModel):
    account: str
    address: str | None
    owed_sats: int = Field(description="what the owed-balance ledger holds for the miner")


class LedgerEntryOut(BaseModel):
    id: int
    block_id: int | None
    block_hash: str | None
    amount: int
    reason: str
    created_at: str


class MinerLedgerOut(BaseModel):
    account: str
    owed_sats: int
    entries: list[LedgerEntryOut]


class MinerSharesOut(BaseModel):
    account: str
    scheme: Scheme
    window_shares: int
    miner_shares: int
    miner_difficulty: str = Field(description="Σ target difficulty of the miner's window shares")
    miner_weight: str
    window_total_weight: str
    window_ms: int = Field(description="time span of the window (last − first share time)")
    hashrate_hs: int = Field(description="Σ difficulty·2^32 / window seconds (integer H/s)")


class BlockOut(BaseModel):
    id: int
    height: int
    block_hash: str
    distribution_id: int | None
    revenue: int
    status: BlockStatus
    created_at: datetime
    paid_sats: int | None = Field(None, description="this miner's output (history)")
    payout_txid: str | None = Field(
        None, description="where it landed: the coinbase (coinbase mode), the fan-out tx (ctv), "
        "the spend tx once broadcast (musig2)")
    payout_vout: int | None = None
    payout_status: TxStatus | BlockStatus | None = Field(
        None, description=f"{', '.join(TxStatus)}; the block's status for coinbase mode")

    @classmethod
    def of(cls, b: BlockRecord, *, paid_sats: int | None = None, payout_txid: bytes | None = None,
           payout_vout: int | None = None,
           payout_status: TxStatus | BlockStatus | None = None) -> BlockOut:
        return cls(
            id=b.id, height=b.height, block_hash=display_hex(b.block_hash),
            distribution_id=b.distribution_id, revenue=b.revenue, status=b.status,
            created_at=b.created_at, paid_sats=paid_sats,
            payout_txid=None if payout_txid is None else display_hex(payout_txid),
            payout_vout=payout_vout, payout_status=payout_status,
        )


class PayoutHistoryOut(BaseModel):
    account: str
    entries: list[LedgerEntryOut]
    blocks: list[BlockOut]


# -- operators ---------------------------------------------------------------------------------

MAX_BATCH = 10_000


class ShareBatchIn(_In):
    """Columnar share batch: equal-length columns, row i = the i-th element of each."""

    key: list[Annotated[str, StringConstraints(min_length=1, max_length=KEY_MAX)]] = Field(
        max_length=MAX_BATCH, description="idempotency key per share (unique pool-wide)"
    )
    account: list[Account] = Field(max_length=MAX_BATCH)
    worker: list[Annotated[str, StringConstraints(max_length=WORKER_MAX)]] = Field(
        max_length=MAX_BATCH)
    # StrictInt: a JSON number only (true, "100" and 1.0 are refused, not taken as 1 and 100)
    difficulty: list[Annotated[StrictInt, Field(ge=1, lt=2**63)]] = Field(max_length=MAX_BATCH)
    job_id: list[Annotated[str, StringConstraints(max_length=JOB_ID_MAX)]] = Field(
        max_length=MAX_BATCH)
    revenue: list[Annotated[StrictInt, Field(ge=0, lt=2**63)]] = Field(max_length=MAX_BATCH)
    time_ms: list[Annotated[StrictInt, Field(ge=0, lt=2**63)]] = Field(max_length=MAX_BATCH)


class IngestOut(BaseModel):
    received: int
    accepted: int
    duplicates: int


class WindowMinerOut(BaseModel):
    account: str
    weight: str


class WindowOut(BaseModel):
    scheme: Scheme
    share_count: int
    total_weight: str
    network_difficulty: str | None = Field(
        description="the node's network difficulty, exactly: an integer or a fraction 'p/q' "
        "(regtest's is 65535/140737471578112); null before the node reported one")
    network_difficulty_approx: float | None = Field(
        description="the same as a float, for display only")
    network_bits: str | None = Field(description="the next block's nBits (hex) it comes from")
    window_difficulty: str = Field(
        description="the difficulty the window uses, exactly: the node's, or [accounting] "
        "pin_difficulty on a test network")
    difficulty_pinned: bool
    miners: list[WindowMinerOut]


class PublishRequest(_In):
    estimated_revenue: StrictInt = Field(gt=0, le=MAX_MONEY)


class WeightedScriptOut(BaseModel):
    script: str = Field(description="scriptPubKey, hex")
    weight: str = Field(description="decimal string (exact beyond 2^53)")


class PayeeOut(WeightedScriptOut):
    dust_limit: int


class AdditionalOutputOut(BaseModel):
    script: str
    amount: int = Field(description="satoshis, paid before the weights split the rest")


class DroppedOut(BaseModel):
    """Candidates with no room in the coinbase, as columns (row i across them)."""

    account: list[str]
    script: list[str]
    weight: list[str]
    owed: list[int]


class DistributionOut(BaseModel):
    """A published distribution: what the JD server pushes (PR #203 SetPayoutDistribution:
    pool_payout, payouts, additional_outputs) plus how it was fitted: each payee's account,
    what it earned in the window (weight) and was owed (sat), the pool fee's weight, and the
    candidates dropped (credited to the owed ledger)."""

    distribution_id: int
    pool_payout: WeightedScriptOut
    payouts: list[PayeeOut]
    additional_outputs: list[AdditionalOutputOut]
    accounts: list[str]
    earned: list[str]
    owed: list[int]
    fee_weight: str
    dropped: DroppedOut


class WirePoolPayout(BaseModel):
    script: str
    weight: int


class WirePayee(WirePoolPayout):
    dust_limit: int


class WireDistributionOut(BaseModel):
    """The distribution every JD client receives (sv2-spec PR #203 SetPayoutDistribution, in
    the JSON form `payouts distribution amounts` reads): weights as JSON integers, no
    accounts."""

    distribution_id: int
    pool_payout: WirePoolPayout
    payouts: list[WirePayee]
    additional_outputs: list[AdditionalOutputOut]


class LedgerLineOut(BaseModel):
    id: int
    miner_id: int
    account: str
    block_id: int | None
    block_hash: str | None = Field(description="hex, or null for a line of no block")
    amount: int = Field(description="satoshis: + credited (owed to the miner), − paid")
    reason: str
    created_at: str = Field(description="ISO 8601, UTC")


class NodeHealthOut(BaseModel):
    reachable: bool | None = Field(description="null: not asked yet")
    error: str | None = Field(description="why the node cannot be reached")
    tip_height: int | None
    tip_hash: str | None
    checked_at: float | None = Field(description="Unix time of the node's last answer")


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="ok; degraded: the API and the store answer, the node does not")
    network: str
    node: NodeHealthOut | None = Field(
        None, description="present when the node cannot be reached: what the chain follower "
        "last saw of it (the error, the last tip)")


class ConfigOut(BaseModel):
    fee_bps: int
    mode: ModeName
    max_outputs_bytes: int
    max_sigops: int
    ctv_fanout_arity: int
    ctv_fee_rate: int
    network: str


class ConfigPatch(_In):
    """Any subset; validated with the same rules as the TOML file."""

    fee_bps: int | None = Field(None, ge=0, le=10_000)
    mode: ModeName | None = None
    max_outputs_bytes: int | None = Field(None, ge=43, le=1_000_000)
    max_sigops: int | None = Field(None, ge=0, le=80_000)
    ctv_fanout_arity: int | None = Field(None, ge=2, le=1000)
    ctv_fee_rate: int | None = Field(None, ge=0, le=100_000)


# -- musig2 ------------------------------------------------------------------------------------


class SessionCreate(_In):
    sighash: Hex32
    pubkeys: list[Annotated[str, StringConstraints(pattern=r"^0[23][0-9a-fA-F]{64}$")]] = Field(
        min_length=1, max_length=100, description="33-byte committee keys, signer-index order"
    )
    taproot_merkle_root: Annotated[str, StringConstraints(pattern=r"^([0-9a-fA-F]{64})?$")
                                   ] | None = Field(
        None, description="omit: plain aggregate; \"\": BIP-86 key; 64 hex: script tree root"
    )
    nonce_timeout_s: float = Field(60.0, gt=0, le=3600)
    sig_timeout_s: float = Field(60.0, gt=0, le=3600)
    partial_sig_check: Literal["on-aggregate", "on-arrival"] = Field(
        "on-aggregate", description="when partial signatures are verified (docs/musig2.md): "
        "on-aggregate (default) checks the final signature once and verifies partials only to "
        "blame a signer when it fails (a bad partial is accepted on its POST, then refused when "
        "the set is complete: that signer is missing again); on-arrival verifies each partial "
        "on its POST (422 invalid-partial-signature). Same end, same blame.")


class SessionOut(BaseModel):
    id: str
    state: str
    sighash: str
    pubkeys: list[str]
    output_key: str
    taproot_merkle_root: str | None = Field(
        None, description="the taproot tweak signers apply to the aggregate key: null none, "
        "\"\" BIP-86, else the script tree's merkle root (hex)")
    nonce_deadline: float
    sig_deadline: float
    missing_nonces: list[int]
    missing_partial_sigs: list[int]
    aggnonce: str | None
    signature: str | None
    failure: str | None
    failed_signers: dict[int, str]
    partial_sig_check: str = Field(description="on-aggregate or on-arrival (SessionCreate)")


class NonceIn(_In):
    signer_index: int = Field(ge=0, lt=100)
    pubnonce: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{132}$")]
    auth: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{128}$")] = Field(
        description="BIP-340 signature by the signer's key over the nonce auth message"
    )


class PartialSigIn(_In):
    signer_index: int = Field(ge=0, lt=100)
    psig: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]


# -- settlements -------------------------------------------------------------------------------


class SettlementTxOut(BaseModel):
    txid: str
    role: TxRole = Field(description=_one_of(TxRole))
    seq: int = Field(description="index in the fan-out tree (0 for a musig2 spend)")
    parent_seq: int | None
    level: int
    status: TxStatus = Field(description=_one_of(TxStatus))
    confirmed_height: int | None
    raw: str = Field(description="the transaction, hex (what is broadcast)")


class SettlementOut(BaseModel):
    block_id: int
    height: int
    block_hash: str
    status: BlockStatus = Field(description=f"the block's: {', '.join(BlockStatus)}")
    mode: ModeName
    phase: SettlementPhase = Field(description=_one_of(SettlementPhase))
    funding_txid: str | None = Field(
        None, description="the coinbase txid (the payout spends or is its output)")
    funding_vout: int | None = None
    funding_value: int | None = None
    paid_height: int | None = None
    signing_session: str | None = Field(
        None, description="id of the open MuSig2 session (GET /v1/musig2/sessions/{id})")
    txs: list[SettlementTxOut] = Field(default_factory=list)


class BroadcastResultOut(BaseModel):
    txids: list[str] = Field(description="the tx, or a parent and its CPFP child (a package)")
    result: Literal["accepted", "already-known", "rejected"]
    reason: str = Field("", description="the node's reject reason")


class LifecycleEventOut(BaseModel):
    kind: str
    detail: str


class ActionOut(BaseModel):
    settlement: SettlementOut
    events: list[LifecycleEventOut]
    results: list[BroadcastResultOut]


class ExitTxOut(BaseModel):
    txid: str
    level: int
    status: TxStatus
    raw: str


class ExitOutputOut(BaseModel):
    txid: str
    vout: int
    amount: int
    script: str


class ExitPathOut(BaseModel):
    account: str
    block_id: int
    block_hash: str
    funding_txid: str = Field(description="the coinbase txid; vout below is the commitment")
    funding_vout: int
    funding_value: int
    transactions: list[ExitTxOut] = Field(
        description="broadcast in this order (each spends the previous one's output); the "
        "first spends the coinbase's CTV commitment output")
    output: ExitOutputOut = Field(description="the miner's output (the last tx's)")
