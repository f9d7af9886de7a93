"""A bitcoind regtest chain for the settlement-lifecycle integration tests.

:class:`Chain` wraps one :class:`~payouts.node.bitcoind.BitcoindNode` (one event loop for the
whole module, so the RPC client keeps its connection) and mines blocks the way a JD client does
in ``payouts demo``: ``getblocktemplate`` → :func:`sv2.template.JobTemplate.from_block_template`
→ :func:`sv2.job_coinbase.build_job_coinbase` (the payout outputs of the settlement mode, PR #203
§5 order, witness commitment last) → :func:`sv2.solution.solve` → ``submitblock``. Every block,
coinbase and spend is therefore judged by Bitcoin Core itself.

Payouts are checked twice against the node's UTXO set: ``gettxout`` on each (txid, vout), and
``scantxoutset`` on each payee's script, which must list that very outpoint with the exact amount.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.bitcoind import BitcoindNode
from payouts.node.rpc import btc_to_sats
from payouts.settlement.lifecycle import LifecycleEvent, SettlementLifecycle
from payouts.settlement.modes import SettlementMode
from payouts.tx.block import Block
from payouts.tx.hashes import sha256
from payouts.tx.transaction import OutPoint, Tx
from payouts.tx.txout import TxOut
from regtest.harness import RegtestNode
from sv2.job_coinbase import JobCoinbase, build_job_coinbase
from sv2.solution import solve
from sv2.template import JobTemplate

T = TypeVar("T")

# Filler blocks pay a script nobody in the tests owns: their coins never mix with payouts.
BURN = bytes.fromhex("0014") + sha256(b"tests/node lifecycle: filler blocks")[:20]
POOL_SCRIPT = bytes.fromhex("0014") + sha256(b"tests/node lifecycle: pool")[:20]


def p2tr(tag: str, i: int) -> bytes:
    """A distinct P2TR script per (test, payee): module tests share one chain, and a script used
    by one test only makes its ``scantxoutset`` answer that test's outputs alone."""
    return b"\x51\x20" + sha256(f"{tag}/{i}".encode())


def distribution(tag: str, n: int, distribution_id: int = 1) -> Distribution:
    """``n`` payees with unequal weights, plus the pool payout."""
    payees = tuple(Payee(p2tr(tag, i), 3 + (i * 7) % 11, 330) for i in range(n))
    return Distribution(distribution_id, PoolPayout(POOL_SCRIPT, 200), payees)


@dataclass(frozen=True, slots=True)
class Mined:
    """A block the node accepted, with the JD client's view of its coinbase."""

    block: Block
    height: int
    revenue: int  # T: the template's coinbase value
    coinbase: JobCoinbase

    @property
    def hash(self) -> bytes:
        return self.block.hash

    @property
    def coinbase_tx(self) -> Tx:
        return self.block.txs[0]


class Chain:
    """A bitcoind regtest node driven synchronously from tests (``run`` awaits on one loop)."""

    def __init__(self, regtest: RegtestNode) -> None:
        self.regtest = regtest
        self.runner = asyncio.Runner()
        self.node: BitcoindNode = regtest.node()

    def close(self) -> None:
        try:
            self.run(self.node.aclose())
        finally:
            self.runner.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    # -- chain --------------------------------------------------------------------------------

    def tip(self) -> int:
        return self.run(self.node.tip()).height

    def mine(self, n: int = 1, script: bytes = BURN) -> list[bytes]:
        """``n`` blocks with the mempool's txs (generatetodescriptor raw(script))."""
        return self.run(self.node.generate_to_script(n, script))

    def mine_to(self, height: int) -> None:
        t = self.tip()
        assert t <= height, f"tip {t} is already past {height}"
        if height > t:
            self.mine(height - t)

    def block(self, block_hash: bytes) -> Block:
        raw = self.run(self.node.get_block(block_hash))
        assert raw is not None, f"the node does not know block {block_hash[::-1].hex()}"
        return Block.parse(raw)

    def fund(self, script: bytes) -> tuple[OutPoint, int]:
        """One block whose coinbase pays ``script`` (mature 100 blocks later)."""
        (h,) = self.mine(1, script)
        cb = self.block(h).txs[0]
        assert cb.outputs[0].script == script
        return OutPoint(cb.txid, 0), cb.outputs[0].value

    def mine_payout_block(self, dist: Distribution, mode: SettlementMode) -> Mined:
        """What the demo's JD client does, minus the wire: our coinbase around the node's
        template, solved and accepted through ``submitblock``."""
        template = JobTemplate.from_block_template(self.run(self.node.block_template()))
        coinbase = build_job_coinbase(dist, template, mode)
        solution = solve(template, coinbase)
        reason = self.run(self.node.submit_block(solution.block.serialize()))
        assert reason is None, f"bitcoind rejected our block: {reason}"
        assert self.run(self.node.tip()).block_hash == solution.block_hash
        return Mined(solution.block, template.height, template.revenue, coinbase)

    # -- payouts ------------------------------------------------------------------------------

    def assert_landed(
        self, txid: bytes, outputs: Sequence[TxOut], vouts: Iterable[int] | None = None
    ) -> None:
        """Every non-zero output of ``txid`` (or those at ``vouts``) is unspent in the active
        chain with its exact amount and script (``gettxout``), and ``scantxoutset`` finds it
        under its script."""
        expected: dict[tuple[bytes, int], TxOut] = {}
        wanted = None if vouts is None else set(vouts)
        for vout, out in enumerate(outputs):
            if out.value == 0 or (wanted is not None and vout not in wanted):
                continue  # a 0-value anchor may already be spent by its CPFP child
            utxo = self.run(self.node.get_utxo(txid, vout))
            assert utxo is not None, f"{txid[::-1].hex()}:{vout} is not in the UTXO set"
            assert (utxo.value, utxo.script) == (out.value, out.script), f"output {vout} differs"
            expected[(txid, vout)] = out
        found = self.scan(o.script for o in expected.values())
        for key, out in expected.items():
            assert found.get(key) == (out.value, out.script), (
                f"scantxoutset lacks {key[0][::-1].hex()}:{key[1]} = {out.value} sat"
            )

    def scan(self, scripts: Iterable[bytes]) -> dict[tuple[bytes, int], tuple[int, bytes]]:
        """``scantxoutset`` over ``raw(<script>)`` descriptors: (txid, vout) → (sat, script)."""
        descs = sorted({f"raw({s.hex()})" for s in scripts})
        if not descs:
            return {}
        res = self.run(self.node.scan_tx_out_set(descs))
        assert res.get("success") is True, res
        return {
            (bytes.fromhex(u["txid"])[::-1], int(u["vout"])): (
                btc_to_sats(u["amount"]),
                bytes.fromhex(u["scriptPubKey"]),
            )
            for u in res["unspents"]
        }

    # -- lifecycle ----------------------------------------------------------------------------

    def events(self, lc: SettlementLifecycle, now: float = 0.0) -> list[LifecycleEvent]:
        return self.run(lc.step(now))

    def step(self, lc: SettlementLifecycle, now: float = 0.0) -> list[str]:
        return [e.kind for e in self.events(lc, now)]


__all__ = [
    "BURN",
    "POOL_SCRIPT",
    "Chain",
    "Mined",
    "distribution",
    "p2tr",
]
