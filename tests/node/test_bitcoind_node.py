"""BitcoindNode against a real bitcoind -regtest started by the harness (marker ``bitcoind``).

One node per module; the tests share its chain, so each reads the tip it needs. Where the
kernel backend gives the same answer, the test says so (reason-string parity).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path

import pytest

from payouts.node.bitcoind import BitcoindNode
from payouts.node.interface import Node, NodeError
from payouts.node.kernel import KernelNode
from payouts.node.kernel_chain import solve
from payouts.tx.block import Block, BlockHeader
from payouts.tx.coinbase import build_coinbase, witness_commitment
from payouts.tx.merkle import merkle_root
from payouts.tx.transaction import OutPoint, Tx
from payouts.tx.txout import TxOut
from regtest.harness import RegtestError, RegtestNode
from tests.node.test_kernel_node import OTHER, P2TR, spend

pytestmark = pytest.mark.bitcoind
COIN = 100_000_000


def with_node(regtest: RegtestNode, body: Callable[[BitcoindNode], Awaitable[None]]) -> None:
    async def main() -> None:
        node = regtest.node()
        try:
            await body(node)
        finally:
            await node.aclose()

    asyncio.run(main())


async def ensure_height(node: BitcoindNode, height: int) -> None:
    tip = await node.tip()
    if tip.height < height:
        await node.generate_to_script(height - tip.height, P2TR)


async def coinbase_prev(node: BitcoindNode, height: int) -> tuple[OutPoint, TxOut]:
    h = await node.block_hash(height)
    assert h is not None
    raw = await node.get_block(h)
    assert raw is not None
    cb = Block.parse(raw).txs[0]
    return OutPoint(cb.txid, 0), cb.outputs[0]


async def block_from_template(node: BitcoindNode, script: bytes, delta: int = 0) -> Block:
    """A block built entirely with payouts.tx around bitcoind's template."""
    t = await node.block_template()
    txs = [x.tx for x in t.transactions]
    cb = build_coinbase(
        t.height,
        [TxOut(t.coinbase_value + delta, script)],
        b"\x00" * 8,
        tag=b"/payouts-test/",
        commitment=witness_commitment([x.wtxid for x in txs]),
    )
    all_txs = (cb, *txs)
    header = BlockHeader(
        t.version, t.prev_hash, merkle_root([x.txid for x in all_txs]), t.curtime, t.bits, 0
    )
    return Block(solve(header), all_txs)


def test_generate_and_chain_queries(regtest: RegtestNode) -> None:
    async def body(node: BitcoindNode) -> None:
        assert isinstance(node, Node)
        hashes = await node.generate_to_script(101, P2TR)
        assert len(hashes) == 101
        tip = await node.tip()
        assert tip.height >= 101 and tip.bits == 0x207FFFFF
        assert await node.block_hash(tip.height) == tip.block_hash
        assert await node.block_height(hashes[0]) == tip.height - 100
        assert await node.block_hash(10**6) is None
        assert await node.get_block(b"\x42" * 32) is None
        # Exact, from nBits (bitcoind's getdifficulty float would be 4.656542373906925e-10).
        assert await node.network_difficulty() == Fraction(65535, 140737471578112)
        # Core computes the same ratio in doubles (GetDifficulty): equal up to its rounding.
        core = float(await node.get_difficulty())
        assert abs(float(await node.network_difficulty()) - core) <= 4e-16 * core

    with_node(regtest, body)


def test_template_decode(regtest: RegtestNode) -> None:
    async def body(node: BitcoindNode) -> None:
        await ensure_height(node, 101)
        tip = await node.tip()
        t = await node.block_template()
        assert t.height == tip.height + 1 and t.prev_hash == tip.block_hash
        assert t.bits == 0x207FFFFF
        assert t.coinbase_value == 50 * COIN + t.fees  # regtest halving is at 150
        assert t.curtime > tip.median_time_past

    with_node(regtest, body)


def test_deployment_ctv(regtest: RegtestNode) -> None:
    async def body(node: BitcoindNode) -> None:
        active = await node.deployment_active("checktemplateverify")
        assert active is regtest.is_inquisition  # Core: no CTV; Inquisition: active
        assert await node.deployment_active("taproot") is True

    with_node(regtest, body)


def test_submit_block_built_with_payouts_tx(regtest: RegtestNode) -> None:
    async def body(node: BitcoindNode) -> None:
        await ensure_height(node, 101)
        greedy = await block_from_template(node, OTHER, delta=1)
        assert await node.submit_block(greedy.serialize()) == "bad-cb-amount"
        assert await node.submit_block(b"\x00" * 10) == "Block decode failed"
        block = await block_from_template(node, OTHER)
        assert await node.submit_block(block.serialize()) is None
        assert (await node.tip()).block_hash == block.hash
        assert await node.get_block(block.hash) == block.serialize()
        assert await node.submit_block(block.serialize()) == "duplicate"
        utxo = await node.get_utxo(block.txs[0].txid, 0)
        assert utxo is not None and utxo.is_coinbase and utxo.script == OTHER
        assert utxo.value == block.txs[0].outputs[0].value and utxo.confirmations == 1

    with_node(regtest, body)


def test_spend_after_maturity_mempool_and_mining(regtest: RegtestNode) -> None:
    async def body(node: BitcoindNode) -> None:
        await ensure_height(node, 101)
        op, out = await coinbase_prev(node, 1)
        tx = spend([(op, out)], [TxOut(out.value - 10_000, OTHER)])
        [res] = await node.test_mempool_accept([tx.serialize()])
        assert res.allowed and res.fee == 10_000 and res.txid == tx.txid
        assert await node.send_raw_transaction(tx.serialize()) == tx.txid
        assert await node.mempool_txs([tx.wtxid, bytes(32)]) == [tx, None]
        # Core does full RBF: a conflicting spend paying more would replace ours (the kernel
        # backend has no RBF and always says txn-mempool-conflict); one paying less is refused.
        richer = spend([(op, out)], [TxOut(out.value - 20_000, OTHER)])
        [res] = await node.test_mempool_accept([richer.serialize()])
        assert res.allowed
        poorer = spend([(op, out)], [TxOut(out.value - 5_000, OTHER)])
        [res] = await node.test_mempool_accept([poorer.serialize()])
        assert not res.allowed and res.reason is not None and "insufficient fee" in res.reason
        t = await node.block_template()
        assert [(x.tx, x.fee) for x in t.transactions] == [(tx, 10_000)]
        (h,) = await node.generate_to_script(1, OTHER)
        assert await node.mempool_txs([tx.wtxid]) == [None]
        raw = await node.get_block(h)
        assert raw is not None and Block.parse(raw).txs[1] == tx
        assert (await node.get_utxo(tx.txid, 0)) is not None

    with_node(regtest, body)


def test_reject_reasons_match_the_kernel_backend(regtest: RegtestNode) -> None:
    """The same bad transactions, same reason strings, on both backends."""

    async def reasons(node: Node, tip_height: int, script_case: bool) -> list[str]:
        op1, out1 = await prev_of(node, 2)
        yop, yout = await prev_of(node, tip_height)  # a coinbase at the tip: far from mature
        cases: list[Tx] = [
            spend([(OutPoint(b"\x11" * 32, 0), out1)], [TxOut(1000, OTHER)]),
            spend([(yop, yout)], [TxOut(yout.value - 1000, OTHER)]),
            spend([(op1, out1)], [TxOut(out1.value + 1, OTHER)]),
        ]
        if script_case:
            good = spend([(op1, out1)], [TxOut(out1.value - 1000, OTHER)])
            sig = bytearray(good.inputs[0].witness[0])
            sig[5] ^= 1
            cases.append(good.with_input_witness(0, [bytes(sig)]))
        out = []
        for tx in cases:
            with pytest.raises(NodeError) as ei:
                await node.send_raw_transaction(tx.serialize())
            out.append(ei.value.reason.split(" ")[0].rstrip(","))
        return out

    async def body(node: BitcoindNode) -> None:
        await ensure_height(node, 105)
        tip = (await node.tip()).height
        core = await reasons(node, tip, True)
        with KernelNode() as k:
            await k.generate(tip, P2TR)
            kern = await reasons(k, tip, True)
        assert (
            core[:3]
            == kern[:3]
            == [
                "bad-txns-inputs-missingorspent",
                "bad-txns-premature-spend-of-coinbase",
                "bad-txns-in-belowout",
            ]
        )
        # Script failures: "mandatory-script-verify-flag-failed" in Core <= 29; newer Core
        # says "mempool-script-verify-flag-failed". Same meaning; both end in the flag.
        assert core[3].endswith("script-verify-flag-failed")
        assert kern[3] == "mandatory-script-verify-flag-failed"

    with_node(regtest, body)


async def prev_of(node: Node, height: int) -> tuple[OutPoint, TxOut]:
    """Coinbase output of block ``height`` on either backend."""
    if isinstance(node, BitcoindNode):
        return await coinbase_prev(node, height)
    assert isinstance(node, KernelNode)
    cb = node.chain.blocks[height - 1].txs[0]
    return OutPoint(cb.txid, 0), cb.outputs[0]


def core_major(regtest: RegtestNode) -> int:
    """The major version in the node's subversion ("/Satoshi:28.1.0(inquisition)/" -> 28)."""
    m = re.search(r"Satoshi:(\d+)\.", regtest.version)
    assert m is not None, regtest.version
    return int(m.group(1))


@pytest.mark.parametrize("version", [3, 2])
def test_package_with_zero_fee_parent(regtest: RegtestNode, version: int) -> None:
    if version != 3 and core_major(regtest) < 31:
        pytest.skip(
            f"{regtest.version}: before Core 31 (bitcoin/bitcoin#33892) only a TRUC (v3) parent "
            "may be below the min relay fee in a package"
        )

    async def body(node: BitcoindNode) -> None:
        await ensure_height(node, 105)
        op, out = await coinbase_prev(node, 3 + (version == 2))  # a fresh coin per case
        # The parent pays no fee: the child does.
        parent = spend([(op, out)], [TxOut(out.value, P2TR)], version=version)
        child = spend(
            [(OutPoint(parent.txid, 0), parent.outputs[0])],
            [TxOut(parent.outputs[0].value - 50_000, OTHER)],
            version=version,
        )
        with pytest.raises(NodeError, match="fee"):  # alone, the parent is below min relay fee
            await node.send_raw_transaction(parent.serialize())
        txids = await node.submit_package([parent.serialize(), child.serialize()])
        assert txids == [parent.txid, child.txid]
        assert await node.mempool_txs([parent.wtxid, child.wtxid]) == [parent, child]
        await node.generate_to_script(1, OTHER)

    with_node(regtest, body)


def test_invalidate_and_reconsider(regtest: RegtestNode) -> None:
    async def body(node: BitcoindNode) -> None:
        a, b = await node.generate_to_script(2, OTHER)
        await node.invalidate_block(a)
        assert await node.block_height(a) is None and await node.block_height(b) is None
        await node.reconsider_block(a)
        assert (await node.tip()).block_hash == b

    with_node(regtest, body)


def test_rpc_errors_are_clear(regtest: RegtestNode) -> None:
    async def body(node: BitcoindNode) -> None:
        with pytest.raises(NodeError, match=r"TX decode failed.*RPC error -22"):
            await node.send_raw_transaction(b"\x00\x01")
        bad = BitcoindNode.from_url(regtest.rpc_url, user="payouts", password="wrong")
        with pytest.raises(NodeError, match="HTTP 401"):
            await bad.tip()
        gone = BitcoindNode.from_url("http://127.0.0.1:9", user="u", password="p", timeout=2)
        with pytest.raises(NodeError, match="cannot reach bitcoind"):
            await gone.tip()

    with_node(regtest, body)


def test_harness_always_stops_the_node(bitcoind_path: Path) -> None:
    rt = RegtestNode(bitcoind_path)
    with pytest.raises(RuntimeError, match="test body failed"), rt:
        proc, datadir = rt.proc, rt.datadir
        assert proc is not None and datadir is not None and datadir.is_dir()
        assert rt.call("getblockcount") == 0
        assert rt.is_inquisition is ("(inquisition)" in rt.version)  # only a CTV-enforcing build
        raise RuntimeError("test body failed")
    assert proc is not None and datadir is not None
    assert proc.poll() is not None  # stopped despite the exception
    assert not datadir.exists() and rt.proc is None


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (Linux: its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue  # closed between the listing and the read (the node keeps working)
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # state LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_harness_binds_only_the_ports_it_chose(bitcoind_path: Path) -> None:
    """Listening (to link nodes), a node binds its RPC and P2P ports and nothing else: not
    regtest's 18444, and not the Tor onion target on the P2P port + 1 that Core 28 (Bitcoin
    Inquisition 28.x) binds by default even with -listenonion=0."""
    for extra in ((), ("-listen=1",)):
        with RegtestNode(bitcoind_path, extra_args=extra) as rt:
            assert rt.proc is not None
            want = {rt.rpc_port, rt.p2p_port} if extra else {rt.rpc_port}
            assert listening_ports(rt.proc.pid) == want


def test_harness_start_failure_reports_the_log(bitcoind_path: Path) -> None:
    with (
        pytest.raises(RegtestError, match="exited with code") as ei,
        RegtestNode(bitcoind_path, extra_args=("-nosuchoption=1",)),
    ):
        pass
    assert "nosuchoption" in str(ei.value)
