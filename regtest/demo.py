"""``payouts demo``: the whole mission on a real chain, end to end, in one command.

Simulated miners' share history goes to the pool service (durable store + share log); the pool
publishes a distribution; a Stratum V2 JD server, the pool's Mining Protocol endpoint and a JD
client talk over loopback TCP with Noise: the client opens an extended channel, declares a job
whose coinbase pays the miners, sends SetCustomMiningJob, and CPU-hashes a share that the pool
checks by rebuilding its header and credits through the Mining Protocol. On regtest a share
meets nBits (powLimit) too, so that share is the round's block, submitted and recorded by the
pool. (Only the history is simulated: every regtest share is a block, so a window of thousands
of real shares would be thousands of blocks.) Then the chain matures (100 blocks) and
the payouts are settled and checked on chain: ``coinbase`` mode pays in the coinbase itself;
``musig2`` mode signs the cooperative key-path spend with the payees' MuSig2 committee;
``ctv`` mode runs only on a node that enforces BIP-119 (the embedded kernel does not).

Every block and spend is judged by Bitcoin Core's consensus code: libbitcoinkernel in-process
(``--node kernel``, the default) or a bitcoind regtest node (``--node bitcoind``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from payouts.accounting.shares import AccountShareBatch, ShareBatch
from payouts.crypto import musig2 as mu
from payouts.crypto.schnorr import xonly_pubkey
from payouts.distribution.fitting import FittedDistribution
from payouts.distribution.model import Distribution
from payouts.node.interface import Node
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.ctv import P2A_SCRIPT, CtvFanout, CtvParams, ctv_settlement
from payouts.settlement.ctv_commit import commitment_script
from payouts.settlement.modes import Musig2Mode, SettlementMode
from payouts.settlement.musig2.output import choose_committee
from payouts.settlement.musig2.session import SessionState
from payouts.settlement.musig2.spend import cooperative_spend, open_signing_session
from payouts.tx.address import script_to_address
from payouts.tx.block import Block
from payouts.tx.ctv import standard_template_hash
from payouts.tx.hashes import display_hex, hash160, sha256
from payouts.tx.output_scripts import classify
from payouts.tx.transaction import OutPoint, Tx
from payouts.tx.txout import TxOut
from sv2.jdc import JobDeclarationClient, JobTemplate
from sv2.jdc.pool_channel import PoolChannel
from sv2.jds import JobDeclarationServer
from sv2.jds.server import FoundBlock
from sv2.mining.events import AcceptedShare
from sv2.mining.server import MiningServer
from sv2.mining.shared import MiningPolicy
from sv2.mining.targets import difficulty_unit
from sv2.noise import ServerIdentity

MODES = ("coinbase", "ctv", "musig2")
DEMO_NETWORK_DIFFICULTY = 1 << 24  # regtest's is 1: TIDES needs a D comparable to share diffs
MUSIG2_FALLBACK_DELAY = 144
BURN = bytes.fromhex("0014") + sha256(b"payouts demo: maturity blocks")[:20]


@dataclass
class Miner:
    account: str
    seckey: bytes
    script: bytes
    hashrate: int  # relative
    shares: int = 0
    difficulty: int = 0

    @property
    def pubkey(self) -> bytes:
        return mu.individual_pubkey(self.seckey)


@dataclass
class ModeResult:
    mode: str
    status: str  # "paid" | "skipped: ..."
    height: int = 0
    block_hash: str = ""
    coinbase_bytes: int = 0
    coinbase_weight: int = 0
    payout_txid: str = ""
    # account -> (payout txid, vout, sat)
    landed: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    seconds: float = 0.0


def make_miners(n: int, seed: int) -> list[Miner]:
    """Deterministic miners with a mix of payout script types (P2TR, P2WPKH, one P2PKH)."""
    rng = random.Random(seed)
    miners = []
    for i in range(n):
        sk = sha256(f"payouts demo miner {seed}/{i}".encode())
        pk = mu.individual_pubkey(sk)
        if i % 3 == 0:
            script = b"\x51\x20" + xonly_pubkey(sk)
        elif i == n - 1:
            script = bytes.fromhex("76a914") + hash160(pk) + bytes.fromhex("88ac")
        else:
            script = b"\x00\x14" + hash160(pk)
        miners.append(Miner(f"miner-{i + 1:02d}", sk, script, rng.randint(1, 20)))
    return miners


def simulate_shares(
    miners: Sequence[Miner], ids: dict[str, int], revenue: int, n: int, seed: int, tag: str
) -> ShareBatch:
    """``n`` shares split by hashrate; share difficulty from a vardiff-like ladder."""
    rng = random.Random(f"{seed}/{tag}")
    weights = [m.hashrate for m in miners]
    chosen = rng.choices(range(len(miners)), weights=weights, k=n)
    diffs = [1 << rng.randint(14, 18) for _ in chosen]
    for i, d in zip(chosen, diffs, strict=True):
        miners[i].shares += 1
        miners[i].difficulty += d
    return ShareBatch(
        key=[f"{tag}-{j}" for j in range(n)],
        miner_id=np.array([ids[miners[i].account] for i in chosen], dtype=np.int64),
        worker=[f"{miners[i].account}.rig{j % 3}" for j, i in enumerate(chosen)],
        difficulty=np.array(diffs, dtype=np.int64),
        job_id=[f"{tag}-job{j // 50}" for j in range(n)],
        revenue=np.full(n, revenue, dtype=np.int64),
        time_ms=np.arange(n, dtype=np.int64) * 1000 + 1_760_000_000_000,
    )


@contextlib.asynccontextmanager
async def open_node(kind: str, console: Console) -> AsyncIterator[Node]:
    if kind == "kernel":
        from payouts.node.kernel import KernelNode

        with KernelNode() as kernel:
            yield kernel
        return
    from regtest.harness import RegtestNode

    console.print("[dim]starting a bitcoind regtest node (building it once if needed)…[/]")
    with RegtestNode() as proc:
        console.print(f"[dim]bitcoind {proc.version} on {proc.rpc_url}[/]")
        node = proc.node()
        try:
            yield node
        finally:
            await node.aclose()


class Demo:
    def __init__(
        self, node: Node, console: Console, *, n_miners: int, shares: int, seed: int, data_dir: Path
    ) -> None:
        self.node, self.console, self.seed, self.shares = node, console, seed, shares
        self.miners = make_miners(n_miners, seed)
        self.pool_sk = sha256(f"payouts demo pool {seed}".encode())
        self.pool_script = b"\x00\x14" + hash160(mu.individual_pubkey(self.pool_sk))
        self.settings = Settings(
            data_dir=data_dir,
            network="regtest",
            accounting={"scheme": "tides", "tides_k": 8},
            pool={"payout_script": self.pool_script.hex(), "fee_bps": 200},
            distribution={"max_outputs_bytes": 6_500},
        )
        self.service = PoolService(self.settings)
        self.service.accountant.set_network_difficulty(DEMO_NETWORK_DIFFICULTY)
        self.ids = {
            m.account: self.service.register_miner(m.account, m.script, m.pubkey).id
            for m in self.miners
        }
        self.found: asyncio.Queue[FoundBlock] = asyncio.Queue()
        self.t0 = time.perf_counter()

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.t0:6.2f}s[/] {text}")

    async def on_block(self, found: FoundBlock) -> None:
        await self.found.put(found)

    async def mine_round(
        self, mode_name: str
    ) -> tuple[FoundBlock, FittedDistribution, SettlementMode]:
        template = await self.node.block_template()
        batch = simulate_shares(
            self.miners, self.ids, template.coinbase_value, self.shares, self.seed, mode_name
        )
        result = self.service.ingest(batch)
        self.say(
            f"{result.accepted} shares ingested (durable); window holds "
            f"{self.service.accountant.share_count} shares"
        )
        fitted = self.service.publish_distribution(estimated_revenue=template.coinbase_value)
        d = fitted.distribution
        self.say(
            f"distribution {d.distribution_id}: {len(d.payouts)} payees, "
            f"{len(fitted.dropped)} credited to the owed ledger"
        )
        mode = self.mode_for(mode_name, fitted)
        authority_sk = sha256(f"payouts demo authority {self.seed}".encode())
        server = JobDeclarationServer(
            identity=ServerIdentity.signed_by(authority_sk, validity_s=3600),
            node=self.node,
            distribution_source=fitted,
            mode=mode,
            on_block=self.on_block,
        )
        await server.start()
        host, port = server.address
        self.say(f"JD server listening on {host}:{port} (Noise NX, extensions 0x0003, 0x4003)")
        # The pool's Mining Protocol endpoint beside it (sv2.mining): the block of this round
        # is found by a share, proven by work, and credited through it.
        miner = max(self.miners, key=lambda m: m.hashrate)
        credited: list[int] = []

        async def on_shares(shares: Sequence[AcceptedShare]) -> None:
            batch = AccountShareBatch(
                key=[a.key for a in shares], account=[a.account for a in shares],
                worker=[a.worker for a in shares], difficulty=[a.difficulty for a in shares],
                job_id=[str(a.job_id) for a in shares], revenue=[a.revenue for a in shares],
                time_ms=[a.time_ms for a in shares])
            credited.append(self.service.ingest_accounts(batch).accepted)

        mp = MiningServer(
            identity=server.noise_identity, node=self.node, jds=server,
            policy=MiningPolicy(difficulty_unit=difficulty_unit("regtest"), initial_difficulty=1),
            known_user=lambda a: a in self.ids, on_shares=on_shares, on_block=self.on_block,
            flush_interval=0.02)
        await mp.start()
        mp_host, mp_port = mp.address
        try:
            async with PoolChannel(
                mp_host, mp_port, xonly_pubkey(authority_sk), user_identity=miner.account
            ) as pool:
                self.say(
                    f"Mining Protocol: {miner.account} opened extended channel "
                    f"{pool.channel.channel_id} on {mp_host}:{mp_port} (extranonce prefix "
                    f"{pool.channel.extranonce_prefix.hex()})"
                )
                async with JobDeclarationClient(
                    host, port, xonly_pubkey(authority_sk), node=self.node,
                    user_identifier=miner.account, extranonce_size=pool.full_extranonce_size,
                ) as client:
                    c = client.constraints
                    assert c is not None and client.distribution is not None
                    self.say(
                        f"JD client: distribution {client.distribution.distribution_id} "
                        f"received, mode {client.mode_for(d.distribution_id).name}; "
                        f"CoinbaseOutputConstraints {c.max_additional_size} bytes, "
                        f"{c.max_additional_sigops} sigops"
                    )
                    job_template = JobTemplate.from_block_template(
                        await self.node.block_template())
                    job = await client.declare_job(job_template)
                    self.say(
                        f"DeclareMiningJob accepted: T = {job_template.revenue:,} sat, "
                        f"{len(job_template.transactions)} txs"
                    )
                    job_id = await pool.set_custom_job(job)
                    await pool.mine(job, job_id, shares=1)
                    await pool.wait_answers(1)
                    assert pool.channel.accepted == 1, pool.channel.errors
                    self.say(
                        f"SetCustomMiningJob accepted (job {job_id}); a CPU-found share "
                        f"credited to {miner.account} at difficulty "
                        f"{pool.channel.accepted_difficulty}, and it meets regtest's nBits"
                    )
                    found = await asyncio.wait_for(self.found.get(), timeout=30)
        finally:
            await mp.stop()
            await server.stop()
        assert sum(credited) == 1, "the share was not credited"
        tip = await self.node.tip()
        assert tip.block_hash == found.block_hash, "the node's tip is not the pushed block"
        self.service.record_block(
            distribution_id=d.distribution_id,
            revenue=found.revenue,
            block_hash=found.block_hash,
            height=found.height,
        )
        self.say(f"block {display_hex(found.block_hash)[:16]}… accepted at height {found.height}")
        return found, fitted, mode

    def mode_for(self, name: str, fitted: FittedDistribution) -> SettlementMode:
        if name == "coinbase":
            return SettlementMode()
        if name == "ctv":
            # Each fan-out tx pays its own fee (2 sat/vB), so a real node relays it alone.
            return SettlementMode("ctv", CtvParams(arity=4, fee_rate=2))
        registered = {m.script: m.pubkey for m in self.miners}
        committee = choose_committee(fitted.distribution, registered)
        return SettlementMode(
            "musig2",
            musig2=Musig2Mode(
                committee.pubkeys, MUSIG2_FALLBACK_DELAY, xonly_pubkey(self.pool_sk), 1, False
            ),
        )

    async def mature(self) -> None:
        await self.node.generate_to_script(100, BURN)
        self.say("100 blocks mined: the coinbase is mature")

    async def check_outputs(
        self, txid: bytes, outputs: Sequence[TxOut]
    ) -> dict[bytes, tuple[int, int]]:
        """Every output exists in the node's UTXO set with the exact amount."""
        landed: dict[bytes, tuple[int, int]] = {}
        for vout, out in enumerate(outputs):
            utxo = await self.node.get_utxo(txid, vout)
            if out.value == 0 and utxo is None:
                continue
            assert utxo is not None, f"output {vout} of {display_hex(txid)} is missing"
            assert (utxo.value, utxo.script) == (out.value, out.script), f"output {vout} differs"
            landed.setdefault(out.script, (vout, out.value))
        return landed

    async def run_mode(self, name: str) -> ModeResult:
        start = time.perf_counter()
        self.console.rule(f"[bold]{name} mode")
        if name == "ctv" and not await self.node.deployment_active("checktemplateverify"):
            reason = (
                "the node does not enforce BIP-119 CTV; a CTV output would be "
                "anyone-can-spend (use --node bitcoind with a Bitcoin Inquisition $BITCOIND)"
            )
            self.say(f"skipped: {reason}")
            return ModeResult(name, f"skipped: {reason}")
        found, fitted, mode = await self.mine_round(name)
        coinbase = found.coinbase
        res = ModeResult(
            name,
            "paid",
            found.height,
            display_hex(found.block_hash),
            len(coinbase.serialize()),
            coinbase.weight,
        )
        await self.mature()
        if name == "coinbase":
            landed = await self.check_outputs(coinbase.txid, coinbase.outputs)
            res.payout_txid = coinbase.txid_hex
        elif name == "musig2":
            spend = await self.musig2_spend(found, fitted, mode)
            landed = await self.check_outputs(spend.txid, spend.outputs)
            res.payout_txid = spend.txid_hex
        else:
            landed = await self.ctv_unroll(found, fitted, mode)
            res.payout_txid = "(tree)"
        for m in self.miners:
            if m.script in landed:
                vout, sat = landed[m.script]
                res.landed[m.account] = (res.payout_txid, vout, sat)
        pool = landed.get(self.pool_script)
        if pool:
            res.landed["(pool)"] = (res.payout_txid, *pool)
        self.say(f"settled on chain: {len(res.landed)} outputs checked against the node")
        res.seconds = time.perf_counter() - start
        return res

    async def musig2_spend(
        self, found: FoundBlock, fitted: FittedDistribution, mode: SettlementMode
    ) -> Tx:
        assert mode.musig2 is not None
        out = mode.musig2.build(fitted.distribution, found.revenue)
        funding = OutPoint(found.coinbase.txid, 0)
        session = open_signing_session(out, funding, nonce_deadline=60.0, sig_deadline=120.0)
        keys = {m.pubkey: m.seckey for m in self.miners}
        secnonces = {}
        for i, pk in enumerate(session.pubkeys):  # each signer, on its own machine in real life
            sn, pn = mu.nonce_gen(keys[pk], pk, session.keyagg, session.msg)
            secnonces[i] = sn
            session.add_nonce(i, pn, now=1.0)
        ctx = session.session_context
        assert ctx is not None
        for i, pk in enumerate(session.pubkeys):
            session.add_partial_sig(i, mu.partial_sign(secnonces[i], keys[pk], ctx), now=2.0)
        assert session.state is SessionState.COMPLETE
        tx = cooperative_spend(out, funding, session)
        self.say(
            f"MuSig2: {len(session.pubkeys)} signers, nonces and partial signatures verified,"
            f" key-path signature aggregated"
        )
        await self.node.send_raw_transaction(tx.serialize())
        await self.node.generate_to_script(1, BURN)
        self.say(f"payout tx {tx.txid_hex[:16]}… ({tx.vsize} vB) mined")
        return tx

    async def ctv_unroll(
        self, found: FoundBlock, fitted: FittedDistribution, mode: SettlementMode
    ) -> dict[bytes, tuple[int, int]]:
        """Broadcast the fan-out level by level, one block per level, and check the result on
        the node: every tx in its level's block, every inner output spent by exactly its
        committed child (:func:`check_ctv_spends`), every payee's leaf unspent with its exact
        amount (:func:`check_ctv_exits`)."""
        active = await self.node.deployment_active("checktemplateverify")
        fan = ctv_settlement(fitted.distribution, found.revenue, mode.ctv, ctv_active=active)
        assert found.coinbase.outputs[0] == fan.commitment_output, "coinbase commitment differs"
        bound = fan.bind(OutPoint(found.coinbase.txid, 0))
        for level in sorted({t.level for t in bound.txs}):
            sent = [t.tx for t in bound.txs if t.level == level]
            for tx in sent:
                await self.node.send_raw_transaction(tx.serialize())
            [block_hash] = await self.node.generate_to_script(1, BURN)
            raw = await self.node.get_block(block_hash)
            assert raw is not None, f"block {display_hex(block_hash)} is missing"
            mined = {tx.txid for tx in Block.parse(raw).txs}
            for tx in sent:
                assert tx.txid in mined, f"fan-out tx {tx.txid_hex} not mined at level {level}"
        await check_ctv_spends(self.node, bound)
        landed = await check_ctv_exits(self.node, bound, fitted.distribution)
        self.say(
            f"CTV fan-out: {len(bound.txs)} txs in {bound.depth} levels confirmed; every inner "
            f"output spent by its committed child, {len(bound.exits)} leaves unspent"
        )
        return landed


async def check_ctv_spends(node: Node, fan: CtvFanout) -> None:
    """Each fan-out tx spends exactly the output committing to it (BIP-119): the output
    carries its template hash and value, the tx still hashes to that template, its only
    input is that outpoint, and the node no longer has the outpoint unspent. The tx was
    mined (:meth:`Demo.ctv_unroll`) and its txid commits to its input, so on chain that output
    was spent by this tx and no other. Every other output is a leaf or the anchor."""
    accounted = {(e.path[-1], e.vout) for e in fan.exits}
    for i, t in enumerate(fan.txs):
        if t.parent is None:
            spent, committed = fan.funding, fan.commitment_output
        else:
            parent = fan.txs[t.parent].tx
            spent = OutPoint(parent.txid, t.parent_vout)
            committed = parent.outputs[t.parent_vout]
            accounted.add((t.parent, t.parent_vout))
        name = f"fan-out tx {i} ({t.tx.txid_hex})"
        assert committed == TxOut(t.value, commitment_script(t.template_hash, fan.form)), (
            f"{name}: its parent's output does not commit to it"
        )
        assert standard_template_hash(t.tx, 0) == t.template_hash, f"{name}: not its template"
        prevouts = [txin.prevout for txin in t.tx.inputs]
        assert prevouts == [spent], f"{name}: spends another output"
        utxo = await node.get_utxo(spent.txid, spent.n)
        assert utxo is None, f"{name}: the output committing to it is still unspent"
    anchor = None if fan.anchor_value is None else TxOut(fan.anchor_value, P2A_SCRIPT)
    for i, t in enumerate(fan.txs):
        for vout, out in enumerate(t.tx.outputs):
            if (i, vout) not in accounted:
                assert out == anchor, f"output {vout} of fan-out tx {i} is unaccounted for"
    paid = sum(e.output.value for e in fan.exits) + fan.tree_cost
    assert paid == fan.commitment_output.value, "the tree does not conserve the commitment"


async def check_ctv_exits(
    node: Node, fan: CtvFanout, dist: Distribution
) -> dict[bytes, tuple[int, int]]:
    """Each payee's (and the pool's) leaf is in the node's UTXO set with exactly the amount
    (:attr:`CtvFanout.payout`) and script the distribution gives it."""
    payouts = fan.payout
    landed: dict[bytes, tuple[int, int]] = {}
    for e in fan.exits:
        tx = fan.txs[e.path[-1]].tx
        if e.payee is None:
            want = TxOut(payouts.pool_amount, dist.pool_payout.script)
        else:
            want = TxOut(payouts.payee_amounts[e.payee], dist.payouts[e.payee].script)
        assert tx.outputs[e.vout] == e.output == want, f"leaf {e} is not the payout {want}"
        utxo = await node.get_utxo(tx.txid, e.vout)
        assert utxo is not None, f"output {e.vout} of {tx.txid_hex} is missing"
        assert (utxo.value, utxo.script) == (want.value, want.script), (
            f"output {e.vout} of {tx.txid_hex} differs"
        )
        landed.setdefault(want.script, (e.vout, want.value))
    return landed


def short(text: str, head: int = 10, tail: int = 6) -> str:
    return text if len(text) <= head + tail + 1 else f"{text[:head]}…{text[-tail:]}"


def render(console: Console, demo: Demo, results: Sequence[ModeResult]) -> None:
    paid = [r for r in results if r.status == "paid"]
    total = sum(m.difficulty for m in demo.miners) or 1
    table = Table(title="Miners: work submitted and where each payout landed (sat @ vout)")
    for col in ("miner", "payout address", "type", "shares", "work"):
        table.add_column(
            col, justify="left" if col in ("miner", "payout address", "type") else "right"
        )
    for r in paid:
        table.add_column(f"{r.mode}", justify="right")
    owed = demo.service.owed()
    table.add_column("owed", justify="right")
    for m in demo.miners:
        row = [
            m.account,
            short(script_to_address(m.script, "regtest")),
            classify(m.script).value,
            f"{m.shares:,}",
            f"{100 * m.difficulty / total:.1f}%",
        ]
        row += [
            f"{r.landed[m.account][2]:,} @{r.landed[m.account][1]}"
            if m.account in r.landed
            else "-"
            for r in paid
        ]
        row.append(f"{owed.get(m.account, 0):,}")
        table.add_row(*row)
    pool_row = ["(pool)", short(script_to_address(demo.pool_script, "regtest")), "p2wpkh", "", ""]
    pool_row += [
        f"{r.landed['(pool)'][2]:,} @{r.landed['(pool)'][1]}" if "(pool)" in r.landed else "-"
        for r in paid
    ]
    table.add_row(*pool_row, "")
    console.print(table)
    blocks = Table(title="Settlements (every output checked in the node's UTXO set)")
    for col in ("mode", "status", "height", "block", "coinbase", "payout txid", "outputs", "time"):
        blocks.add_column(col)
    for r in results:
        if r.status != "paid":
            blocks.add_row(r.mode, "skipped", "", "", "", "", "", "")
            continue
        blocks.add_row(
            r.mode,
            r.status,
            str(r.height),
            short(r.block_hash, 8, 4),
            f"{r.coinbase_bytes:,} B, {r.coinbase_weight:,} WU",
            r.payout_txid,
            str(len(r.landed)),
            f"{r.seconds:.2f}s",
        )
    console.print(blocks)
    for r in results:
        if r.status != "paid":
            console.print(f"[yellow]{r.mode}[/]: {r.status}")


async def run(
    modes: Sequence[str],
    node_kind: str,
    *,
    miners: int = 12,
    shares: int = 2_000,
    seed: int = 7,
    console: Console | None = None,
    data_dir: Path | None = None,
) -> list[ModeResult]:
    """Run the demo; returns one result per mode (also printed). Raises on any failed check."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and docs: don't wrap the tables at 80 columns
            console = Console(width=150)
    with tempfile.TemporaryDirectory(prefix="payouts-demo-") as tmp:
        async with open_node(node_kind, console) as node:
            await node.generate_to_script(1, BURN)
            demo = Demo(
                node,
                console,
                n_miners=miners,
                shares=shares,
                seed=seed,
                data_dir=data_dir or Path(tmp),
            )
            what = "libbitcoinkernel in-process" if node_kind == "kernel" else "bitcoind"
            console.print(
                f"[bold]payouts demo[/] on [bold]{node_kind}[/] ({what}), "
                f"{miners} miners, modes: {', '.join(modes)}"
            )
            results = [await demo.run_mode(m) for m in modes]
            render(console, demo, results)
            console.print(f"done in {time.perf_counter() - demo.t0:.2f}s")
            return results


def selected_modes(mode: str) -> tuple[str, ...]:
    return MODES if mode == "all" else (mode,)


__all__: list[str] = ["MODES", "ModeResult", "run", "selected_modes"]
