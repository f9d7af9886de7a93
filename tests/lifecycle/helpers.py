"""Shared helpers: mine blocks with a chosen coinbase on the kernel node, step the lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.kernel import KernelNode
from payouts.settlement.lifecycle import LifecycleEvent, SettlementLifecycle
from payouts.tx.block import Block
from payouts.tx.transaction import Tx
from payouts.tx.txout import TxOut

T = TypeVar("T")

MINER = bytes.fromhex("5120" + "ab" * 32)  # filler blocks' subsidies


def p2tr(i: int) -> bytes:
    return b"\x51\x20" + i.to_bytes(32, "big")


def make_dist(n: int) -> Distribution:
    payees = tuple(Payee(p2tr(i + 1), 1 + (i * 7) % 13, 330) for i in range(n))
    return Distribution(1, PoolPayout(bytes.fromhex("0014" + "11" * 20), 10), payees)


def build(node: KernelNode, outputs: Sequence[TxOut], txs: Sequence[Tx] = ()) -> Block:
    """A solved block on the node's tip with these coinbase outputs (not submitted)."""
    return node.chain.build_block(outputs, txs, extranonce=b"\x07\x07\x07\x07")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """pytest-asyncio is not a dependency: drive each coroutine with asyncio.run (the kernel
    node does its work inline, so a fresh loop per call is fine)."""
    return asyncio.run(coro)


def submit(node: KernelNode, block: Block) -> None:
    assert run(node.submit_block(block.serialize())) is None


def mine(node: KernelNode, n: int = 1) -> None:
    """``n`` blocks with the node's mempool (generatetoscript)."""
    run(node.generate_to_script(n, MINER))


def tip(node: KernelNode) -> int:
    return run(node.tip()).height


def mine_to(node: KernelNode, height: int) -> None:
    t = tip(node)
    assert t <= height
    mine(node, height - t)


def kinds(events: Sequence[LifecycleEvent]) -> list[str]:
    return [e.kind for e in events]


def step(lc: SettlementLifecycle, now: float = 0.0) -> list[str]:
    return kinds(run(lc.step(now)))
