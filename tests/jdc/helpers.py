"""Fixtures for the JD client tests: a Node on a shared libbitcoinkernel chain (KernelChain),
so a JDS and a JDC can each have their own mempool view of one chain, and a JDS on loopback."""

from __future__ import annotations

import hashlib
from typing import Any

from payouts.distribution.model import Distribution, Payee, PoolPayout, TxOut
from payouts.node.kernel_chain import KernelChain
from payouts.tx.transaction import OutPoint, Tx, TxIn
from sv2.authority import authority_public_key
from sv2.jds import JdsLimits, JobDeclarationServer
from sv2.noise import ServerIdentity
from tests.jds.helpers import KernelTestNode

OP_TRUE_WSH = b"\x00\x20" + hashlib.sha256(b"\x51").digest()  # P2WSH(OP_TRUE), spendable here
AUTHORITY_SK = bytes.fromhex("22" * 32)
AUTHORITY_PK = authority_public_key(AUTHORITY_SK)
IDENTITY = ServerIdentity.signed_by(AUTHORITY_SK, validity_s=86400)


def p2wpkh(i: int) -> bytes:
    return b"\x00\x14" + hashlib.sha256(i.to_bytes(4, "little")).digest()[:20]


def p2pkh(i: int) -> bytes:
    return (
        b"\x76\xa9\x14"
        + hashlib.sha256(b"pkh" + i.to_bytes(4, "little")).digest()[:20]
        + b"\x88\xac"
    )


def p2tr(i: int) -> bytes:
    return b"\x51\x20" + hashlib.sha256(b"tr" + i.to_bytes(4, "little")).digest()


POOL_SCRIPT = p2wpkh(424_242)


def make_distribution(dist_id: int = 1, payees: int = 5, pool_weight: int = 100) -> Distribution:
    return Distribution(
        distribution_id=dist_id,
        pool_payout=PoolPayout(POOL_SCRIPT, pool_weight),
        payouts=tuple(
            Payee(p2wpkh(i) if i % 2 else p2tr(i), 1_000 + 37 * i + dist_id, 330)
            for i in range(payees)
        ),
    )


# One adapter for both suites: the JDS tests' kernel-backed test node.
ChainNode = KernelTestNode


def setup_chain(chain: KernelChain, blocks: int = 101) -> None:
    """Mature coinbases to spend (P2WSH(OP_TRUE))."""
    chain.mine_empty(blocks, OP_TRUE_WSH)


def fee_tx(chain: KernelChain, height: int, fee: int = 1_000) -> Tx:
    """Spend block ``height``'s coinbase, paying ``fee``."""
    cb = chain.blocks[height - 1].txs[0]
    txin = TxIn(OutPoint(cb.txid, 0), b"", 0xFFFFFFFD, (b"\x51",))
    return Tx(2, (txin,), (TxOut(cb.outputs[0].value - fee, OP_TRUE_WSH),), 0)


async def start_server(node: Any, dist: Distribution, **kwargs: Any) -> JobDeclarationServer:
    limits = kwargs.pop("limits", JdsLimits(handshake_timeout=5.0, idle_timeout=30.0))
    srv = JobDeclarationServer(
        identity=IDENTITY, node=node, distribution_source=dist, limits=limits, **kwargs
    )
    await srv.start()
    return srv
