"""A pool with miners, shares and a distribution, and a block found on it on the kernel node, in
a chosen settlement mode, recorded through the service with a settlement runner attached."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from payouts.accounting.shares import ShareBatch
from payouts.crypto import musig2 as mu
from payouts.crypto.schnorr import xonly_pubkey
from payouts.distribution.amounts import compute_outputs
from payouts.distribution.fitting import FittedDistribution
from payouts.node.kernel import KernelNode
from payouts.service import PoolService
from payouts.settlement.ctv import build_ctv_fanout
from payouts.settlement.lifecycle import FallbackSigner, LifecycleConfig
from payouts.settlement.modes import Musig2Mode, SettlementMode
from payouts.settlement.musig2.output import Musig2Output
from payouts.settlement.musig2.session import SigningSession
from payouts.settlement.musig2.spend import FallbackSpend, sign_fallback_spend
from payouts.settlement.runner import SettlementRunner
from payouts.store import repositories as repo
from payouts.store.ledger import get_block_by_hash
from payouts.tx.block import Block
from payouts.tx.hashes import hash160, sha256
from payouts.tx.transaction import Tx
from payouts.tx.txout import TxOut
from tests.lifecycle.helpers import build, submit, tip

FALLBACK_SK = sha256(b"api settlement tests: fallback key")
FALLBACK_DELAY = 120  # blocks (BIP-68); above maturity so "locked" and "mature" differ


def miner_sk(i: int) -> bytes:
    return sha256(b"api settlement tests: miner " + i.to_bytes(4, "big"))


def miner_script(i: int) -> bytes:
    """Alternating P2TR and P2WPKH payout scripts."""
    sk = miner_sk(i)
    if i % 2:
        return b"\x00\x14" + hash160(mu.individual_pubkey(sk))
    return b"\x51\x20" + xonly_pubkey(sk)


def musig2_mode(n: int) -> Musig2Mode:
    keys = mu.key_sort([mu.individual_pubkey(miner_sk(i)) for i in range(n)])
    return Musig2Mode(tuple(keys), FALLBACK_DELAY, xonly_pubkey(FALLBACK_SK), fee_rate=2)


def fallback_signer() -> FallbackSigner:
    def sign(out: Musig2Output, spend: FallbackSpend, session: SigningSession) -> Tx:
        return sign_fallback_spend(out, spend, FALLBACK_SK, session=session)

    return sign


def signer_keys(n: int) -> dict[bytes, bytes]:
    return {mu.individual_pubkey(miner_sk(i)): miner_sk(i) for i in range(n)}


@dataclass
class Found:
    runner: SettlementRunner
    block_id: int
    height: int
    block: Block
    fitted: FittedDistribution


def add_miners_and_shares(service: PoolService, n: int, tag: str = "s") -> None:
    for i in range(n):
        if repo.get_miner_by_account(service.engine, f"m{i}") is None:
            service.register_miner(f"m{i}", miner_script(i))
    ids = [service.miner_id(f"m{i}") for i in range(n)]
    k = 4 * n
    service.accountant.set_network_difficulty(10**6)  # TIDES window k·D covers every share
    service.ingest(ShareBatch(
        key=[f"{tag}{j}" for j in range(k)],
        miner_id=np.array([ids[j % n] for j in range(k)], dtype=np.int64),
        worker=["w"] * k, difficulty=np.array([1000 + 100 * (j % n) for j in range(k)],
                                              dtype=np.int64),
        job_id=["j"] * k, revenue=np.full(k, 312_500_000, dtype=np.int64),
        time_ms=np.arange(k, dtype=np.int64) * 1000 + 1_700_000_000_000,
    ))


def coinbase_outputs(mode: SettlementMode, fitted: FittedDistribution, revenue: int
                     ) -> tuple[TxOut, ...]:
    """What the JD server requires the coinbase to start with in ``mode``."""
    if mode.name == "coinbase":
        return compute_outputs(fitted.distribution, revenue).outputs
    if mode.name == "ctv":
        return build_ctv_fanout(fitted.distribution, revenue, mode.ctv).coinbase_outputs
    assert mode.musig2 is not None
    return mode.musig2.build(fitted.distribution, revenue).coinbase_outputs


def find_block(service: PoolService, node: KernelNode, mode: SettlementMode, *, n: int = 4,
               runner: SettlementRunner | None = None, signer: FallbackSigner | None = None,
               config: LifecycleConfig | None = None, tag: str = "s",
               track: bool = True) -> Found:
    """Shares from ``n`` miners, a distribution, and a block paying it mined on ``node`` and
    recorded through the service and tracked (with its coinbase) by the runner, as
    ``payouts.served.ServedPool.record_found_block`` does (``track=False``: as a process that
    died between the two writes left it)."""
    if runner is None:
        runner = SettlementRunner(service, node, mode=mode, interval=3600.0,
                                  fallback_signer=signer, config=config)
    add_miners_and_shares(service, n, tag)
    h = tip(node) + 1
    revenue = node.chain.subsidy(h)
    fitted = service.publish_distribution(revenue)
    block = build(node, coinbase_outputs(mode, fitted, revenue))
    submit(node, block)
    recorded = service.record_block(distribution_id=fitted.distribution.distribution_id,
                                    revenue=revenue, block_hash=block.hash, height=h)
    if track:
        runner.track(recorded.block, recorded.fitted, block.txs[0])
    rec = get_block_by_hash(service.engine, block.hash)
    assert rec is not None
    return Found(runner, rec.id, h, block, fitted)
