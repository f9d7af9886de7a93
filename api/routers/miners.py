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

import numpy as np
from fastapi import APIRouter, Depends, Request

from api import store
from api.deps import get_service
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
from payouts.crypto import bip322, schnorr
from payouts.distribution.settle import settle_block
from payouts.errors import DuplicateKeyError, UnknownMinerError
from payouts.service import PoolService
from payouts.settlement.lifecycle_store import load_settlements, load_txs
from payouts.settlement.payout_view import exit_path, landings
from payouts.store import repositories as repo
from payouts.store.ledger import export_ledger, get_block, list_blocks, miner_balance
from payouts.tx.address import AddressError, address_to_script, script_to_address
from payouts.tx.hashes import tagged_hash
from payouts.tx.output_scripts import ScriptType, classify
from payouts.tx.transaction import Tx

router = APIRouter(prefix="/v1/miners", tags=["miners"], dependencies=[Depends(rate_limited)])

#: Output types a payout may go to (all five the engine can put in a coinbase).
ALLOWED_SCRIPT_TYPES = frozenset(
    {ScriptType.P2WPKH, ScriptType.P2TR, ScriptType.P2WSH, ScriptType.P2SH, ScriptType.P2PKH}
)
CHALLENGE_TTL = timedelta(minutes=10)
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


def _miner(service: PoolService, account: str) -> repo.MinerRecord:
    m = repo.get_miner_by_account(service.engine, account)
    if m is None:
        raise UnknownMinerError(f"no miner account {account!r}")
    return m


def _miner_out(m: repo.MinerRecord, network: str) -> MinerOut:
    return MinerOut(
        account=m.account, address=_address_of(m.payout_script, network),
        payout_script=m.payout_script.hex(),
        musig_pubkey=m.musig_pubkey.hex() if m.musig_pubkey else None, created_at=m.created_at,
    )


def _usable_challenge(service: PoolService, nonce: str, purpose: str,
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
def issue_challenge(body: ChallengeRequest, request: Request) -> ChallengeResponse:
    """Issue a one-time message to sign with BIP-322 (valid 10 minutes)."""
    service = get_service(request)
    network = service.settings.network
    _payout_script(body.address, network)
    current = None
    existing = repo.get_miner_by_account(service.engine, body.account)
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
def register(body: RegisterRequest, request: Request) -> MinerOut:
    """Register an account and its payout address (BIP-322 proof of the address)."""
    service = get_service(request)
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
def rotate(account: str, body: RotateRequest, request: Request) -> MinerOut:
    """Change the payout address: signatures by the NEW and by the CURRENT address."""
    service = get_service(request)
    network = service.settings.network
    miner = _miner(service, account)
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
    return _miner_out(_miner(service, account), network)


@router.get("/{account}", response_model=MinerOut, responses=problem_responses(404, 429))
def get_miner(account: str, request: Request) -> MinerOut:
    service = get_service(request)
    return _miner_out(_miner(service, account), service.settings.network)


@router.get("/{account}/balance", response_model=BalanceOut,
            responses=problem_responses(404, 429))
async def balance(account: str, request: Request) -> BalanceOut:
    """What the owed-balance ledger holds for the miner (satoshis).

    The hot read: one indexed query (miner row and ledger sum together) run inline; a thread
    hop would cost more than the sub-millisecond query it offloads."""
    service = get_service(request)
    found = miner_balance(service.engine, account)
    if found is None:
        raise UnknownMinerError(f"no miner account {account!r}")
    _, script, owed = found
    return BalanceOut(account=account, address=_address_of(script, service.settings.network),
                      owed_sats=owed)


def _entries(service: PoolService, miner_id: int) -> list[LedgerEntryOut]:
    # export_ledger reads the whole ledger: fine at pool sizes (one line per owed payee per
    # block); a per-miner query belongs in the store if it grows.
    return [
        LedgerEntryOut(id=e["id"], block_id=e["block_id"], block_hash=e["block_hash"],
                       amount=e["amount"], reason=e["reason"], created_at=e["created_at"])
        for e in export_ledger(service.engine) if e["miner_id"] == miner_id
    ]


@router.get("/{account}/ledger", response_model=MinerLedgerOut,
            responses=problem_responses(404, 429))
def ledger(account: str, request: Request) -> MinerLedgerOut:
    service = get_service(request)
    m = _miner(service, account)
    entries = _entries(service, m.id)
    return MinerLedgerOut(account=m.account, owed_sats=sum(e.amount for e in entries),
                          entries=entries)


def _sum_i64(values: np.ndarray) -> int:
    """Exact Σ of int64 values ≥ 0 (split in 32-bit halves so no partial sum overflows)."""
    hi = int(np.sum(values >> 32, dtype=np.int64))
    lo = int(np.sum(values & 0xFFFFFFFF, dtype=np.int64))
    return (hi << 32) + lo


@router.get("/{account}/shares", response_model=MinerSharesOut,
            responses=problem_responses(404, 429))
def shares(account: str, request: Request) -> MinerSharesOut:
    """The miner's shares in the current window and its hashrate estimate (integers)."""
    service = get_service(request)
    m = _miner(service, account)
    acc = service.accountant
    window = acc.window
    start, end = window.start, window.end
    log = acc.log
    ids, codes = log.miners.sorted_ids, log.miners.sorted_codes
    pos = int(np.searchsorted(ids, m.id))
    code = int(codes[pos]) if pos < len(ids) and int(ids[pos]) == m.id else None
    count, diff, t_min, t_max = 0, 0, None, None
    for piece in log.pieces(start, end):
        if len(piece.time_ms):
            lo, hi = int(piece.time_ms.min()), int(piece.time_ms.max())
            t_min = lo if t_min is None else min(t_min, lo)
            t_max = hi if t_max is None else max(t_max, hi)
        if code is not None:
            mask = piece.codes == code
            count += int(mask.sum())
            diff += _sum_i64(piece.difficulty[mask])
    weights = acc.weights()
    w_ids = weights.miner_ids.tolist()
    weight = weights.weights[w_ids.index(m.id)] if m.id in w_ids else 0
    window_ms = (t_max - t_min) if t_min is not None and t_max is not None else 0
    # One share's time span is 0: count it as 1 s so the estimate stays finite and integer.
    hashrate = diff * (1 << 32) * 1000 // max(window_ms, 1000)
    return MinerSharesOut(
        account=m.account, scheme=service.settings.accounting.scheme,
        window_shares=end - start, miner_shares=count, miner_difficulty=str(diff),
        miner_weight=str(weight), window_total_weight=str(acc.total_weight),
        window_ms=window_ms, hashrate_hs=hashrate,
    )


@router.get("/{account}/payouts", response_model=PayoutHistoryOut,
            responses=problem_responses(404, 429))
def payouts(account: str, request: Request) -> PayoutHistoryOut:
    """Payout history: the miner's ledger entries and every block whose distribution paid it,
    with ``paid_sats`` and where it landed (``payout_txid``/``payout_vout``): the coinbase
    output (coinbase mode), the fan-out tree's leaf (ctv), the spend tx once broadcast
    (musig2). Without a known landing, ``paid_sats`` is the coinbase-mode amount."""
    service = get_service(request)
    m = _miner(service, account)
    settlements = load_settlements(service.engine)
    blocks = []
    for b in list_blocks(service.engine):
        if b.distribution_id is None:
            continue
        fitted = service.distribution(b.distribution_id)
        if m.account not in fitted.accounts:
            continue
        s = settlements.get(b.id)
        landed = landings(b, fitted, s, load_txs(service.engine, b.id) if s else []).get(
            m.account)
        blocks.append(BlockOut(
            id=b.id, height=b.height, block_hash=b.block_hash[::-1].hex(),
            distribution_id=b.distribution_id, revenue=b.revenue, status=b.status,
            created_at=b.created_at,
            # Coinbase amounts depend only on the distribution and the revenue.
            paid_sats=landed.amount if landed is not None
            else settle_block(fitted, b.revenue).paid.get(m.account, 0),
            payout_txid=landed.txid[::-1].hex() if landed is not None else None,
            payout_vout=landed.vout if landed is not None else None,
            payout_status=landed.status if landed is not None else None,
        ))
    return PayoutHistoryOut(account=m.account, entries=_entries(service, m.id), blocks=blocks)


@router.get("/{account}/payouts/{block_id}/exit-path", response_model=ExitPathOut,
            responses=problem_responses(404, 409, 429))
def exit_path_of(account: str, block_id: int, request: Request) -> ExitPathOut:
    """CTV payouts: the transactions to broadcast, in order, to claim the miner's output alone
    (each spends the previous one; the first spends the coinbase's BIP-119 commitment output).
    Anyone may broadcast them; no signature is needed. 409 ``not-ctv-settlement`` for a block
    settled otherwise, 404 ``no-payout-in-block`` when the block does not pay this miner."""
    service = get_service(request)
    m = _miner(service, account)
    block = get_block(service.engine, block_id)
    if block is None:
        raise Problem(404, "unknown-block", f"block {block_id} does not exist")
    s = load_settlements(service.engine).get(block_id)
    if s is None or s.mode != "ctv":
        raise Problem(409, "not-ctv-settlement",
                      f"block {block_id} does not settle through a CTV fan-out "
                      f"({s.mode + ' mode' if s else 'not tracked'})")
    if s.funding_txid is None or s.funding_vout is None:
        raise Problem(409, "exit-path-not-ready",
                      f"block {block_id}'s fan-out is not bound to its coinbase yet")
    if block.distribution_id is None:
        raise Problem(404, "no-payout-in-block", f"block {block_id} has no distribution")
    path = exit_path(service.distribution(block.distribution_id), m.account, s,
                     load_txs(service.engine, block_id))
    if path is None:
        raise Problem(404, "no-payout-in-block",
                      f"block {block_id} pays {account!r} nothing through its fan-out")
    last = path.txs[-1]
    out = Tx.parse(last.raw).outputs[path.vout]
    return ExitPathOut(
        account=m.account, block_id=block.id, block_hash=block.block_hash[::-1].hex(),
        funding_txid=path.funding.txid[::-1].hex(), funding_vout=path.funding.n,
        funding_value=path.funding_value,
        transactions=[ExitTxOut(txid=r.txid[::-1].hex(), level=r.level, status=r.status,
                                raw=r.raw.hex()) for r in path.txs],
        output=ExitOutputOut(txid=last.txid[::-1].hex(), vout=path.vout, amount=path.amount,
                             script=out.script.hex()),
    )
