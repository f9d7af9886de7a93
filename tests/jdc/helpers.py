"""Fixtures for the JD client tests: a Node on a shared libbitcoinkernel chain (KernelChain),
so a JDS and a JDC can each have their own mempool view of one chain, and a JDS on loopback."""

from __future__ import annotations

import hashlib
from typing import Any

from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.kernel_chain import KernelChain
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
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


# A witness script that drops 400 stack items (200 OP_2DROP: within the 201-opcode limit)
# and leaves OP_TRUE: 400 items of 520 bytes (the largest a v0 witness item may be) make a
# ~209,000-byte, consensus-valid transaction that is almost all witness (weight ~1 per byte).
BIG_WITNESS_SCRIPT = b"\x6d" * 200 + b"\x51"
BIG_WITNESS_WSH = b"\x00\x20" + hashlib.sha256(BIG_WITNESS_SCRIPT).digest()


def big_witness_txs(chain: KernelChain, n: int, height: int = 1) -> list[Tx]:
    """``n`` transactions of ~209 kB each (~0.21 MWU), spendable on ``chain``: a funding tx
    spending block ``height``'s coinbase into ``n`` P2WSH outputs is mined first, then each
    output is spent with 400 × 520-byte witness items. 19 of them are a ~4 MB block's worth of
    transactions, what a witness-heavy mainnet block carries."""
    cb = chain.blocks[height - 1].txs[0]
    value = cb.outputs[0].value // n
    funding = Tx(
        2,
        (TxIn(OutPoint(cb.txid, 0), b"", 0xFFFFFFFD, (b"\x51",)),),
        tuple(TxOut(value, BIG_WITNESS_WSH) for _ in range(n)),
        0,
    )
    chain.mine_block([TxOut(chain.subsidy(chain.tip_height + 1), OP_TRUE_WSH)], [funding])
    return [
        Tx(
            2,
            (
                TxIn(
                    OutPoint(funding.txid, i),
                    b"",
                    0xFFFFFFFD,
                    (*[bytes([i]) * 520] * 400, BIG_WITNESS_SCRIPT),
                ),
            ),
            (TxOut(value - 5_000, OP_TRUE_WSH),),
            0,
        )
        for i in range(n)
    ]


async def start_server(node: Any, dist: Distribution, **kwargs: Any) -> JobDeclarationServer:
    limits = kwargs.pop("limits", JdsLimits(handshake_timeout=5.0, idle_timeout=30.0))
    srv = JobDeclarationServer(
        identity=IDENTITY, node=node, distribution_source=dist, limits=limits, **kwargs
    )
    await srv.start()
    return srv
