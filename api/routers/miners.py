"""Miner endpoints (public, rate limited): challenges, registration, address rotation, reads.

Miners hold no API credentials. Every write is authorised by signatures over a one-time
challenge message the server issued (BIP-322 for addresses, BIP-340 for a MuSig2 key):

* register: a BIP-322 signature by the payout address over the registration message;
* rotate: BIP-322 signatures over the rotation message by the NEW address (proves the miner
  controls where payouts will go) AND by the CURRENT address (proves the request comes from the
  account's owner). Without the current address's key nobody can redirect an account's payouts.
"""

from __future__ import annotations

import functools
from datetime import UTC, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path

from api import store
from api.deps import ServiceDep
from api.problems import Problem, problem_responses
from api.ratelimit import rate_limited
from api.schemas import (
    BalanceOut,
    BlockOut,
    ChallengeRequest,
    ChallengeResponse,
    ExitOutputOut,
    ExitPathOut,
    ExitTxOut,
    LedgerEntryOut,
    MinerLedgerOut,
    MinerOut,
    MinerSharesOut,
    PayoutHistoryOut,
    RegisterRequest,
    RotateRequest,
)
from payouts.accounting.shares import ACCOUNT_MAX
from payouts.crypto import bip322, schnorr
from payouts.errors import DuplicateKeyError, UnknownMinerError
from payouts.service import PoolService
from payouts.store import repositories as repo
from payouts.tx.address import AddressError, address_to_script, script_to_address
from payouts.tx.hashes import display_hex, tagged_hash
from payouts.tx.output_scripts import ScriptType, classify
from payouts.tx.transaction import Tx
from payouts.views import MinerLedger

router = APIRouter(prefix="/v1/miners", tags=["miners"], dependencies=[Depends(rate_limited)])

#: Output types a payout may go to (all five the engine can put in a coinbase).
ALLOWED_SCRIPT_TYPES = frozenset(
    {ScriptType.P2WPKH, ScriptType.P2TR, ScriptType.P2WSH, ScriptType.P2SH, ScriptType.P2PKH}
)
CHALLENGE_TTL = timedelta(minutes=10)
# Path parameters are bounded like the values they name: an account as registration allows it
# (no NUL byte reaches PostgreSQL), a block id within int64 (the store's ids).
AccountPath = Annotated[str, Path(min_length=1, max_length=ACCOUNT_MAX,
                                  pattern=r"^[A-Za-z0-9._-]+$",
                                  description="the miner's account (its Stratum user identity)")]
BlockIdPath = Annotated[int, Path(ge=1, le=2**62, description="the block's id")]
MUSIG_PROOF_TAG = "payouts.dev/musig2-key-proof"


def challenge_message(c: store.Challenge, network: str, current_address: str | None) -> str:
    """The exact text a miner signs. Binds network, account, address(es), nonce and expiry."""
    expires = c.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if c.purpose == "register":
        head = ["payouts.dev miner registration", f"network: {network}",
                f"account: {c.account}", f"address: {c.address}"]
    else:
        head = ["payouts.dev payout address rotation", f"network: {network}",
                f"account: {c.account}", f"current address: {current_address}",
                f"new address: {c.address}"]
    return "\n".join([*head, f"nonce: {c.nonce}", f"expires: {expires}"])


def musig_proof_message(account: str, nonce: str, musig_pubkey_hex: str) -> bytes:
    """32-byte message the MuSig2 key signs (BIP-340) to prove possession at registration."""
    text = f"{account}\n{nonce}\n{musig_pubkey_hex.lower()}"
    return tagged_hash(MUSIG_PROOF_TAG, text.encode())


def _payout_script(address: str, network: str) -> bytes:
    script = address_to_script(address, network)  # WrongNetworkError -> address-wrong-network
    if classify(script) not in ALLOWED_SCRIPT_TYPES:
        raise Problem(422, "address-type-not-allowed", f"{address!r} is not an allowed type")
    return script


@functools.lru_cache(maxsize=65_536)
def _address_of(script: bytes, network: str) -> str | None:
    # Cached: bech32 encoding is a visible share of a balance read, and scripts rarely change.
    try:
        return script_to_address(script, network)
    except AddressError:
        return None


def _miner_out(m: repo.MinerRecord, network: str) -> MinerOut:
    return MinerOut(
        account=m.account, address=_address_of(m.payout_script, network),
        payout_script=m.payout_script.hex(),
        musig_pubkey=m.musig_pubkey.hex() if m.musig_pubkey else None, created_at=m.created_at,
    )


def _usable_challenge(service: PoolService, nonce: str, purpose: store.ChallengePurpose,
                      account: str) -> store.Challenge:
    c = store.get_challenge(service.engine, nonce)
    if c is None:
        raise Problem(404, "unknown-challenge", "no such challenge; request one first")
    if c.purpose != purpose or c.account != account:
        raise Problem(422, "challenge-mismatch",
                      f"challenge was issued for {c.purpose} of account {c.account!r}")
    if c.used:
        raise Problem(409, "challenge-used", "challenge already used; request a new one")
    if c.expires_at <= store.now_utc():
        raise Problem(422, "challenge-expired", "challenge expired; request a new one")
    return c


@router.post("/challenges", status_code=201, response_model=ChallengeResponse,
             responses=problem_responses(404, 409, 422, 429))
def issue_challenge(body: ChallengeRequest, service: ServiceDep) -> ChallengeResponse:
    """Issue a one-time message to sign with BIP-322 (valid 10 minutes)."""
    network = service.settings.network
    _payout_script(body.address, network)
    current = None
    existing = service.find_miner(body.account)
    if body.purpose == "register" and existing is not None:
        raise DuplicateKeyError(f"miner account {body.account!r} already exists")
    if body.purpose == "rotate":
        if existing is None:
            raise UnknownMinerError(f"no miner account {body.account!r}")
        current = _address_of(existing.payout_script, network)
        if current is None:
            raise Problem(409, "rotation-not-possible",
                          "the current payout script has no address; an operator must change it")
    ttl = CHALLENGE_TTL
    c = store.create_challenge(service.engine, body.purpose, body.account, body.address, ttl)
    return ChallengeResponse(
        nonce=c.nonce, purpose=c.purpose, account=c.account, address=c.address,
        message=challenge_message(c, network, current), expires_at=c.expires_at,
    )


@router.post("", status_code=201, response_model=MinerOut,
             responses=problem_responses(404, 409, 422, 429))
def register(body: RegisterRequest, service: ServiceDep) -> MinerOut:
    """Register an account and its payout address (BIP-322 proof of the address)."""
    network = service.settings.network
    c = _usable_challenge(service, body.nonce, "register", body.account)
    if c.address != body.address:
        raise Problem(422, "challenge-mismatch", "address differs from the challenge's")
    script = _payout_script(body.address, network)
    bip322.verify(body.address, challenge_message(c, network, None), body.signature, network)
    musig: bytes | None = None
    if (body.musig_pubkey is None) != (body.musig_proof is None):
        raise Problem(422, "musig-proof-required", "give musig_pubkey and musig_proof together")
    if body.musig_pubkey is not None and body.musig_proof is not None:
        musig = bytes.fromhex(body.musig_pubkey)
        msg = musig_proof_message(body.account, body.nonce, body.musig_pubkey)
        if not schnorr.verify(bytes.fromhex(body.musig_proof), msg, musig[-32:]):
            raise Problem(422, "invalid-musig-proof",
                          "musig_proof is not a BIP-340 signature by musig_pubkey")
    if not store.mark_used(service.engine, c.nonce):
        raise Problem(409, "challenge-used", "challenge already used; request a new one")
    record = service.register_miner(body.account, script, musig)
    return _miner_out(record, network)


@router.post("/{account}/address", response_model=MinerOut,
             responses=problem_responses(403, 404, 409, 422, 429))
def rotate(account: AccountPath, body: RotateRequest, service: ServiceDep) -> MinerOut:
    """Change the payout address: signatures by the NEW and by the CURRENT address."""
    network = service.settings.network
    miner = service.miner(account)
    c = _usable_challenge(service, body.nonce, "rotate", account)
    current = _address_of(miner.payout_script, network)
    if current is None:
        raise Problem(409, "rotation-not-possible", "the current payout script has no address")
    message = challenge_message(c, network, current)
    try:
        bip322.verify(current, message, body.current_signature, network)
    except bip322.Bip322Error as e:
        raise Problem(403, "account-auth-failed",
                      f"current_signature is not a valid signature by the account's current "
                      f"address ({e.message})") from None
    new_script = _payout_script(c.address, network)
    bip322.verify(c.address, message, body.new_signature, network)
    store.rotate_address(service.engine, account, miner.payout_script, new_script, c.nonce)
    return _miner_out(service.miner(account), network)


@router.get("/{account}", response_model=MinerOut, responses=problem_responses(404, 429))
def get_miner(account: AccountPath, service: ServiceDep) -> MinerOut:
    """The miner's payout address and script, and its MuSig2 key when it has one."""
    return _miner_out(service.miner(account), service.settings.network)


@router.get("/{account}/balance", response_model=BalanceOut,
            responses=problem_responses(404, 429))
async def balance(account: AccountPath, service: ServiceDep) -> BalanceOut:
    """What the owed-balance ledger holds for the miner (satoshis).

    The hot read: one indexed query (miner row and ledger sum together). A well-formed request
    is answered before this route by :mod:`api.fast_reads` (same bytes); this route serves the
    rest (the 404 of an unknown account) and documents the operation."""
    script, owed = service.balance(account)
    return BalanceOut(account=account, address=_address_of(script, service.settings.network),
                      owed_sats=owed)


def _entries(ledger: MinerLedger) -> list[LedgerEntryOut]:
    return [
        LedgerEntryOut(id=e["id"], block_id=e["block_id"], block_hash=e["block_hash"],
                       amount=e["amount"], reason=e["reason"], created_at=e["created_at"])
        for e in ledger.entries
    ]


@router.get("/{account}/ledger", response_model=MinerLedgerOut,
            responses=problem_responses(404, 429))
def ledger(account: AccountPath, service: ServiceDep) -> MinerLedgerOut:
    """The miner's owed-balance ledger lines (credits and payments) and their sum."""
    found = service.miner_ledger(account)
    return MinerLedgerOut(account=found.miner.account, owed_sats=found.owed,
                          entries=_entries(found))


@router.get("/{account}/shares", response_model=MinerSharesOut,
            responses=problem_responses(404, 429))
def shares(account: AccountPath, service: ServiceDep) -> MinerSharesOut:
    """The miner's shares in the current window and its hashrate estimate (integers)."""
    found = service.miner_shares(account)
    st = found.stats
    return MinerSharesOut(
        account=found.miner.account, scheme=found.scheme, window_shares=st.window_shares,
        miner_shares=st.shares, miner_difficulty=str(st.difficulty),
        miner_weight=str(st.weight), window_total_weight=str(st.total_weight),
        window_ms=st.span_ms, hashrate_hs=st.hashrate_hs,
    )


@router.get("/{account}/payouts", response_model=PayoutHistoryOut,
            responses=problem_responses(404, 429))
def payouts(account: AccountPath, service: ServiceDep) -> PayoutHistoryOut:
    """Payout history: the miner's ledger entries and every block whose distribution paid it,
    with ``paid_sats`` and where it landed (``payout_txid``/``payout_vout``): the coinbase
    output (coinbase mode), the fan-out tree's leaf (ctv), the spend tx once broadcast
    (musig2). Without a known landing, ``paid_sats`` is the coinbase-mode amount."""
    history = service.payout_history(account)
    blocks = [
        BlockOut.of(p.block, paid_sats=p.paid_sats) if p.landing is None else BlockOut.of(
            p.block, paid_sats=p.paid_sats, payout_txid=p.landing.txid,
            payout_vout=p.landing.vout, payout_status=p.landing.status)
        for p in history.blocks
    ]
    return PayoutHistoryOut(account=history.ledger.miner.account,
                            entries=_entries(history.ledger), blocks=blocks)


@router.get("/{account}/payouts/{block_id}/exit-path", response_model=ExitPathOut,
            responses=problem_responses(404, 409, 429))
def exit_path_of(account: AccountPath, block_id: BlockIdPath,
                 service: ServiceDep) -> ExitPathOut:
    """CTV payouts: the transactions to broadcast, in order, to claim the miner's output alone
    (each spends the previous one; the first spends the coinbase's BIP-119 commitment output).
    Anyone may broadcast them; no signature is needed. 409 ``not-ctv-settlement`` for a block
    settled otherwise, 404 ``no-payout-in-block`` when the block does not pay this miner."""
    found = service.exit_path(account, block_id)
    path = found.path
    last = path.txs[-1]
    out = Tx.parse(last.raw).outputs[path.vout]
    return ExitPathOut(
        account=found.miner.account, block_id=found.block.id,
        block_hash=display_hex(found.block.block_hash),
        funding_txid=display_hex(path.funding.txid), funding_vout=path.funding.n,
        funding_value=path.funding_value,
        transactions=[ExitTxOut(txid=display_hex(r.txid), level=r.level, status=r.status,
                                raw=r.raw.hex()) for r in path.txs],
        output=ExitOutputOut(txid=display_hex(last.txid), vout=path.vout, amount=path.amount,
                             script=out.script.hex()),
    )
