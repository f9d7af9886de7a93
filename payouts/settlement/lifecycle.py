"""The settlement lifecycle: found → confirmed → mature → (fan-out | signing) → paid, with reorgs.

One :class:`SettlementLifecycle` drives every block the pool recorded (``blocks`` table) from
the node's state; :meth:`SettlementLifecycle.step` is idempotent and may run any number of
times, in any process, after any crash: all progress is in the store (``settlements``,
``settlement_txs``; :mod:`payouts.settlement.lifecycle_store`) and every tx is persisted before
it is broadcast. The rules are pure functions in :mod:`payouts.settlement.lifecycle_rules`;
docs/lifecycle.md has the state diagram.

Per block and step:

1. **Reorg check** — the node's active-chain hash at the block's height is compared with the
   block's hash. Different (or the height is above a tip that the block had reached) → the
   block is orphaned: store ``orphan_block`` (status + exact ledger reversal), every broadcast
   spend forgotten (:func:`~payouts.settlement.lifecycle_store.forget_broadcasts`), a musig2
   session aborted, the listener told. An orphaned block found again at its height (e.g.
   ``reconsiderblock``) is re-recorded (:func:`~payouts.settlement.lifecycle_store.revive_block`).
2. **Depth** — ``confirmed`` at ``confirmed_depth`` confirmations, ``mature`` at 100
   (:func:`~payouts.settlement.lifecycle_rules.coinbase_spendable`: tip ≥ height + 99).
3. **Mode action at maturity** — ``coinbase``: paid. ``ctv``: bind the fan-out to the coinbase
   outpoint, broadcast the tree level by level (a tx once its parent confirmed), with a CPFP
   child through the anchor from the fee wallet when the tx pays less than ``fee_rate``; paid
   when every tree tx is confirmed. ``musig2``: open the signing session (exposed through
   :meth:`SettlementLifecycle.session` to the API that collects nonces and partial sigs),
   broadcast the key-path spend when COMPLETE; after a FAILED session, sign the fallback
   (``fallback_signer``) and broadcast it once its BIP-68 lock allows; paid when confirmed.

A block without a ``settlements`` row (never tracked) walks found → confirmed → mature and is
reorg-checked but never marked paid: its payout is not known to the lifecycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from sqlalchemy import Engine

from payouts.errors import ValidationError
from payouts.node.interface import Node, NodeError
from payouts.settlement.ctv import CtvFanout
from payouts.settlement.lifecycle_fees import (
    FeeBumpError,
    FeeWallet,
    anchor_vout,
    build_cpfp_child,
    needs_bump,
)
from payouts.settlement.lifecycle_rules import (
    broadcastable,
    coinbase_spendable,
    confirmations,
    rebind,
    relative_lock_height,
    target_status,
)
from payouts.settlement.lifecycle_store import (
    REORG_REASON,
    NewTx,
    SettlementRow,
    TxRow,
    add_tx,
    bind_funding,
    create_settlement,
    delete_tx,
    forget_broadcasts,
    load_settlements,
    load_txs,
    revive_block,
    set_phase,
    set_tx_status,
)
from payouts.settlement.musig2.output import Musig2Output
from payouts.settlement.musig2.registry import SessionRegistry, StoredSession, session_id
from payouts.settlement.musig2.session import PartialSigCheck, SessionState, SigningSession
from payouts.settlement.musig2.spend import (
    FallbackSpend,
    build_fallback_spend,
    cooperative_spend,
    open_signing_session,
)
from payouts.states import BLOCK_STATUS_ORDER, BlockStatus, SettlementPhase, TxRole, TxStatus
from payouts.store.ledger import BlockRecord, list_blocks, orphan_block, set_block_status
from payouts.tx.block import Block
from payouts.tx.hashes import display_hex
from payouts.tx.transaction import OutPoint, Tx

# Node reject reasons that mean "this exact tx is already there": success for a re-broadcast.
_ALREADY = ("txn-already-in-mempool", "txn-already-known", "already in mempool", "already known")

FallbackSigner = Callable[[Musig2Output, FallbackSpend, SigningSession], Tx]
SessionFactory = Callable[[Musig2Output, OutPoint, float], SigningSession]
Musig2Resolver = Callable[[BlockRecord], Musig2Output | None]


class LifecycleListener(Protocol):
    """Who must hear about a block leaving or re-entering the chain or being paid (the
    accountant, the API's event stream). Every method is called after the store committed."""

    def on_orphaned(self, block: BlockRecord) -> None: ...

    def on_returned(self, block: BlockRecord) -> None: ...

    def on_paid(self, block: BlockRecord) -> None: ...


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """What one step did. ``kind``: confirmed, mature, paid, orphaned, returned, bound,
    broadcast, tx-confirmed, tx-unconfirmed, rejected, signing-started, signing-failed,
    conflict, untracked."""

    block_id: int
    kind: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SendResult:
    """One broadcast attempt and the node's answer (the API's broadcast actions report these).
    ``txids``: the tx, or the parent and its CPFP child sent as a package. ``result``:
    ``accepted``, ``already-known`` (same bytes already in the mempool) or ``rejected``
    (``reason``: the node's reject reason)."""

    block_id: int
    txids: tuple[bytes, ...]
    result: str
    reason: str = ""


class StepReport(list[LifecycleEvent]):
    """What one :meth:`SettlementLifecycle.step` did: the events, in order (the report *is*
    that list), and ``sent``, the node's answer to every broadcast the step made (the API's
    broadcast and fallback actions report these). Each step returns its own report: nothing is
    accumulated on the lifecycle between steps."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[SendResult] = []


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """``confirmed_depth``: confirmations for ``confirmed`` (1: in the active chain).
    ``fee_rate``: sat/vB a broadcast package must pay; a tx below it gets a CPFP child when a
    fee wallet is configured. ``watch_depth``: paid/orphaned blocks deeper than this below the
    tip are no longer reorg-checked. ``nonce_timeout``/``sig_timeout``: musig2 round deadlines
    (seconds after the session opens / after the nonce deadline). ``psig_check``: when the
    block's session verifies partial signatures (docs/musig2.md; on the aggregate by default:
    the same end and blame, a third of the CPU)."""

    confirmed_depth: int = 1
    fee_rate: int = 1
    watch_depth: int = 288
    nonce_timeout: float = 60.0
    sig_timeout: float = 60.0
    psig_check: PartialSigCheck = PartialSigCheck.ON_AGGREGATE

    def __post_init__(self) -> None:
        if self.confirmed_depth < 1 or self.fee_rate < 0 or self.watch_depth < 1:
            raise ValidationError("confirmed_depth ≥ 1, fee_rate ≥ 0, watch_depth ≥ 1")
        if not (self.nonce_timeout > 0 and self.sig_timeout > 0):
            raise ValidationError("musig2 timeouts must be positive")


@dataclass
class _ChainIndex:
    """Which tx of interest sits in which active-chain block: scanned from the node's blocks,
    cached by block hash (a reorged-out block simply stops being looked up)."""

    by_block: dict[bytes, tuple[frozenset[bytes], dict[OutPoint, bytes]]] = field(
        default_factory=dict
    )

    async def scan(
        self, node: Node, lo: int, tip: int
    ) -> tuple[dict[bytes, tuple[int, bytes]], dict[OutPoint, bytes]]:
        """(txid → (height, block hash), outpoint → spending txid) over heights lo..tip."""
        where: dict[bytes, tuple[int, bytes]] = {}
        spends: dict[OutPoint, bytes] = {}
        keep: set[bytes] = set()
        for h in range(max(lo, 1), tip + 1):
            bh = await node.block_hash(h)
            if bh is None:
                break
            keep.add(bh)
            hit = self.by_block.get(bh)
            if hit is None:
                raw = await node.get_block(bh)
                if raw is None:
                    continue
                block = Block.parse(raw)
                txids = frozenset(t.txid for t in block.txs)
                spent = {i.prevout: t.txid for t in block.txs[1:] for i in t.inputs}
                hit = self.by_block[bh] = (txids, spent)
            for txid in hit[0]:
                where[txid] = (h, bh)
            spends.update(hit[1])
        # Forget blocks outside the window (bounded memory).
        for bh in [b for b in self.by_block if b not in keep]:
            del self.by_block[bh]
        return where, spends


class SettlementLifecycle:
    """Drives every recorded block through its settlement (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        node: Node,
        *,
        config: LifecycleConfig | None = None,
        fee_wallet: FeeWallet | None = None,
        fallback_signer: FallbackSigner | None = None,
        session_factory: SessionFactory | None = None,
        musig2_resolver: Musig2Resolver | None = None,
        listener: LifecycleListener | None = None,
        clock: Callable[[], float] = time.time,
        sessions: SessionRegistry | None = None,
    ) -> None:
        self.engine = engine
        self.node = node
        self.config = config or LifecycleConfig()
        self.fee_wallet = fee_wallet
        self.fallback_signer = fallback_signer
        self.session_factory = session_factory
        self.musig2_resolver = musig2_resolver
        self.listener = listener
        self.clock = clock
        self._musig2: dict[int, Musig2Output] = {}
        # The signing sessions live in the store (one per block, id ``block-<id>``), so that the
        # API of every process serves them and a restart resumes them.
        self.sessions = sessions if sessions is not None else SessionRegistry(engine)
        self._index = _ChainIndex()
        self._warned: set[tuple[int, str]] = set()
        if fee_wallet is not None:
            # Restart: coins spent by persisted CPFP children stay reserved.
            fee_wallet.reserve(
                t.inputs[1].prevout
                for t in (Tx.parse(r.raw) for r in load_txs(engine) if r.role == TxRole.CPFP)
            )

    # -- tracking -----------------------------------------------------------------------------

    def track_coinbase(self, block_id: int) -> bool:
        """The block pays in its coinbase: paid at maturity. Idempotent (False if known)."""
        return create_settlement(self.engine, block_id, "coinbase")

    def track_ctv(self, block_id: int, fanout: CtvFanout) -> bool:
        """The block's coinbase carries ``fanout``'s commitment output (bound or not: the
        lifecycle binds it to the real coinbase outpoint). The txs are persisted now."""
        txs = [
            NewTx(TxRole.FANOUT, i, t.parent, t.level, t.tx.txid, t.tx.serialize())
            for i, t in enumerate(fanout.txs)
        ]
        out = fanout.commitment_output
        return create_settlement(
            self.engine,
            block_id,
            "ctv",
            funding_script=out.script,
            funding_value=out.value,
            txs=txs,
        )

    def track_musig2(self, block_id: int, output: Musig2Output) -> bool:
        """The block's coinbase carries ``output``. The output object is kept in memory (it
        holds the committee and params the session needs); after a restart it is asked of
        ``musig2_resolver`` unless a signed spend was already persisted."""
        self._musig2[block_id] = output
        return create_settlement(
            self.engine,
            block_id,
            "musig2",
            funding_script=output.txout.script,
            funding_value=output.txout.value,
        )

    def session(self, block_id: int) -> StoredSession | None:
        """The musig2 signing session of a block (stored: any process's API serves it), or
        None before maturity / after its block left the chain."""
        return self.sessions.get(session_id(block_id))

    # -- driving ------------------------------------------------------------------------------

    async def poll(self) -> StepReport:
        """:meth:`step` at the clock's now."""
        return await self.step(self.clock())

    async def step(self, now: float) -> StepReport:
        """Advance every block from the node's state; idempotent. Returns what it did."""
        events = StepReport()
        tip = (await self.node.tip()).height
        settlements = load_settlements(self.engine)
        for block in list_blocks(self.engine):
            s = settlements.get(block.id)
            if block.status == BlockStatus.ORPHANED:
                if block.height >= tip - self.config.watch_depth:
                    await self._maybe_return(block, events)
                continue
            if (
                block.status == BlockStatus.PAID
                and s is not None
                and s.paid_height is not None
                and s.paid_height < tip - self.config.watch_depth
            ):
                continue
            if not await self._in_chain(block, tip):
                self._orphan(block, events)
                continue
            if await self.node.block_hash(block.height) != block.block_hash:
                continue  # not seen yet (found, node behind): wait
            await self._advance(block, s, tip, now, events)
        return events

    async def _in_chain(self, block: BlockRecord, tip: int) -> bool:
        """False if the block left the active chain. A ``found`` block whose height the node
        has not reached yet is given the benefit of the doubt (it may still arrive)."""
        active = await self.node.block_hash(block.height)
        if active == block.block_hash:
            return True
        return active is None and block.status == BlockStatus.FOUND

    def _orphan(self, block: BlockRecord, events: StepReport) -> None:
        orphan_block(self.engine, block.id, REORG_REASON)
        forget_broadcasts(self.engine, block.id)
        # Its sighash commits to the coinbase outpoint: the session is gone with the block (a
        # signer's next call gets unknown-session); if the block comes back, a new one opens.
        self.sessions.discard(session_id(block.id))
        if self.fee_wallet is not None:
            # forget_broadcasts deleted the children: their coins are free again.
            self.fee_wallet.reserved.clear()
            self.fee_wallet.reserve(
                Tx.parse(r.raw).inputs[1].prevout
                for r in load_txs(self.engine) if r.role == TxRole.CPFP
            )
        events.append(LifecycleEvent(block.id, "orphaned", display_hex(block.block_hash)))
        if self.listener is not None:
            self.listener.on_orphaned(block)

    async def _maybe_return(self, block: BlockRecord, events: StepReport) -> None:
        if await self.node.block_hash(block.height) != block.block_hash:
            return
        revive_block(self.engine, block.id)
        events.append(LifecycleEvent(block.id, "returned", display_hex(block.block_hash)))
        if self.listener is not None:
            self.listener.on_returned(block)

    async def _advance(
        self,
        block: BlockRecord,
        s: SettlementRow | None,
        tip: int,
        now: float,
        events: StepReport,
    ) -> None:
        status = block.status
        if status in (BlockStatus.FOUND, BlockStatus.CONFIRMED):
            want = target_status(status, block.height, tip, self.config.confirmed_depth)
            for step_to in (BlockStatus.CONFIRMED, BlockStatus.MATURE):
                if BLOCK_STATUS_ORDER[step_to] <= BLOCK_STATUS_ORDER[status]:
                    continue
                if BLOCK_STATUS_ORDER[step_to] > BLOCK_STATUS_ORDER[want]:
                    break
                set_block_status(self.engine, block.id, step_to)
                events.append(LifecycleEvent(block.id, step_to, f"tip {tip}"))
                status = step_to
        if status not in (BlockStatus.MATURE, BlockStatus.PAID):
            return
        if s is None:
            if (block.id, "untracked") not in self._warned:
                self._warned.add((block.id, "untracked"))
                events.append(LifecycleEvent(block.id, "untracked", "no settlement recorded"))
            return
        if s.mode == "coinbase":
            if status == BlockStatus.MATURE:
                self._paid(block, tip, events)
            return
        funding = await self._funding(block, s, events)
        if funding is None:
            return
        if s.mode == "ctv":
            await self._drive_ctv(block, s, funding, status, tip, events)
        else:
            await self._drive_musig2(block, s, funding, status, tip, now, events)

    def _paid(self, block: BlockRecord, tip: int, events: StepReport) -> None:
        set_block_status(self.engine, block.id, BlockStatus.PAID)
        set_phase(self.engine, block.id, SettlementPhase.PAID, paid_height=tip)
        events.append(LifecycleEvent(block.id, "paid", f"tip {tip}"))
        if self.listener is not None:
            self.listener.on_paid(block)

    async def _funding(
        self, block: BlockRecord, s: SettlementRow, events: StepReport
    ) -> OutPoint | None:
        """The coinbase outpoint the payout spends; on first sight, bind the persisted
        fan-out txs to it (one store transaction)."""
        if s.funding_txid is not None and s.funding_vout is not None:
            return OutPoint(s.funding_txid, s.funding_vout)
        raw = await self.node.get_block(block.block_hash)
        if raw is None:
            return None
        coinbase = Block.parse(raw).txs[0]
        vout = next(
            (
                i
                for i, o in enumerate(coinbase.outputs)
                if o.script == s.funding_script and o.value == s.funding_value
            ),
            None,
        )
        if vout is None:
            key = (block.id, "conflict")
            if key not in self._warned:
                self._warned.add(key)
                events.append(
                    LifecycleEvent(block.id, "conflict", "coinbase lacks the settlement output")
                )
            return None
        funding = OutPoint(coinbase.txid, vout)
        rows = [r for r in load_txs(self.engine, block.id) if r.role == TxRole.FANOUT]
        rows.sort(key=lambda r: r.seq)
        bound = rebind([Tx.parse(r.raw) for r in rows], [r.parent_seq for r in rows], funding)
        bind_funding(
            self.engine,
            block.id,
            funding.txid,
            funding.n,
            [(r.id, t.txid, t.serialize()) for r, t in zip(rows, bound, strict=True)],
        )
        events.append(LifecycleEvent(block.id, "bound", str(funding)))
        return funding

    # -- broadcasting -------------------------------------------------------------------------

    async def _send(
        self, block: BlockRecord, raws: Sequence[bytes], events: StepReport
    ) -> bool:
        """Broadcast one tx or a parent+child package; "already there" counts as success."""
        txids = tuple(Tx.parse(r).txid for r in raws)
        try:
            if len(raws) == 1:
                await self.node.send_raw_transaction(raws[0])
            else:
                await self.node.submit_package(raws)
        except NodeError as e:
            if any(a in e.reason for a in _ALREADY):
                events.sent.append(SendResult(block.id, txids, "already-known", e.reason))
                return True
            events.sent.append(SendResult(block.id, txids, "rejected", e.reason))
            events.append(LifecycleEvent(block.id, "rejected", e.reason))
            return False
        events.sent.append(SendResult(block.id, txids, "accepted"))
        return True

    def _refresh(
        self,
        block: BlockRecord,
        rows: Sequence[TxRow],
        where: dict[bytes, tuple[int, bytes]],
        events: StepReport,
    ) -> list[TxRow]:
        """Mark rows confirmed (or back to broadcast after a payout-only reorg)."""
        out: list[TxRow] = []
        for r in rows:
            hit = where.get(r.txid)
            if hit is not None and (r.status != TxStatus.CONFIRMED or r.confirmed_block != hit[1]):
                set_tx_status(self.engine, r.id, TxStatus.CONFIRMED, height=hit[0],
                              block_hash=hit[1])
                events.append(LifecycleEvent(block.id, "tx-confirmed", display_hex(r.txid)))
                r = replace(r, status=TxStatus.CONFIRMED, confirmed_height=hit[0],
                            confirmed_block=hit[1])
            elif hit is None and r.status == TxStatus.CONFIRMED:
                set_tx_status(self.engine, r.id, TxStatus.BROADCAST)
                events.append(LifecycleEvent(block.id, "tx-unconfirmed", display_hex(r.txid)))
                r = replace(r, status=TxStatus.BROADCAST, confirmed_height=None,
                            confirmed_block=None)
            out.append(r)
        return out

    async def _drive_ctv(
        self,
        block: BlockRecord,
        s: SettlementRow,
        funding: OutPoint,
        status: BlockStatus,
        tip: int,
        events: StepReport,
    ) -> None:
        rows = load_txs(self.engine, block.id)
        # Every tree tx can only be mined from the block after maturity on.
        where, spends = await self._index.scan(self.node, block.height + 1, tip)
        rows = self._refresh(block, rows, where, events)
        tree = sorted((r for r in rows if r.role == TxRole.FANOUT), key=lambda r: r.seq)
        children = {r.seq: r for r in rows if r.role == TxRole.CPFP}
        confirmed = [r.status == TxStatus.CONFIRMED for r in tree]
        if all(confirmed):
            if status == BlockStatus.MATURE:
                self._paid(block, tip, events)
            return
        if s.phase != SettlementPhase.BROADCASTING:
            set_phase(self.engine, block.id, SettlementPhase.BROADCASTING)
        txs = [Tx.parse(r.raw) for r in tree]
        # Re-send what was sent and is not confirmed (the node may have lost it), then new.
        pending = [i for i, r in enumerate(tree) if r.status == TxStatus.BROADCAST]
        new = broadcastable(
            [r.parent_seq for r in tree], [r.status != TxStatus.PLANNED for r in tree], confirmed
        )
        for i in sorted(set(pending) | set(new)):
            tx = txs[i]
            spender = spends.get(tx.inputs[0].prevout)
            if spender is not None and spender != tx.txid:
                events.append(
                    LifecycleEvent(
                        block.id,
                        "conflict",
                        f"{tx.inputs[0].prevout} spent by {display_hex(spender)}",
                    )
                )
                continue
            value_in = s.funding_value if tree[i].parent_seq is None else None
            if value_in is None:
                parent = txs[tree[i].parent_seq or 0]
                value_in = parent.outputs[tx.inputs[0].prevout.n].value
            fee = value_in - tx.output_value()
            child = children.get(tree[i].seq)
            if child is not None and child.status != TxStatus.CONFIRMED:
                fee_in = Tx.parse(child.raw).inputs[1].prevout
                if await self.node.get_utxo(fee_in.txid, fee_in.n) is None:
                    # Its fee coin was spent elsewhere (e.g. by an earlier child that came back
                    # with a reorg): this child can never confirm; build a new one.
                    delete_tx(self.engine, child.id)
                    child = None
            if child is None and self._wants_child(tx, fee):
                child = await self._make_child(block, tree[i], tx, fee, events)
            raws = [tree[i].raw] if child is None else [tree[i].raw, child.raw]
            if await self._send(block, raws, events):
                if tree[i].status == TxStatus.PLANNED:
                    set_tx_status(self.engine, tree[i].id, TxStatus.BROADCAST)
                    events.append(LifecycleEvent(block.id, "broadcast", display_hex(tx.txid)))
                if child is not None and child.status == TxStatus.PLANNED:
                    set_tx_status(self.engine, child.id, TxStatus.BROADCAST)

    def _wants_child(self, tx: Tx, fee: int) -> bool:
        return (
            self.fee_wallet is not None
            and anchor_vout(tx) is not None
            and needs_bump(tx, fee, self.config.fee_rate)
        )

    async def _make_child(
        self, block: BlockRecord, row: TxRow, tx: Tx, fee: int, events: StepReport
    ) -> TxRow | None:
        wallet = self.fee_wallet
        assert wallet is not None
        while True:
            try:
                child, coin, _ = build_cpfp_child(tx, fee, wallet, self.config.fee_rate)
            except FeeBumpError as e:
                events.append(LifecycleEvent(block.id, "rejected", f"fee bump: {e}"))
                return None
            # Only a coin unspent in the active chain can fund a child; a spent one (by a
            # child that confirmed, forgotten by a reorg and back) is never offered again.
            if await self.node.get_utxo(coin.outpoint.txid, coin.outpoint.n) is not None:
                break
            wallet.coins = [c for c in wallet.coins if c.outpoint != coin.outpoint]
        # Persist before broadcast and reserve: a restart re-sends these exact bytes.
        add_tx(
            self.engine,
            block.id,
            NewTx(TxRole.CPFP, row.seq, row.seq, row.level, child.txid, child.serialize()),
        )
        wallet.reserve([coin.outpoint])
        return next(
            r for r in load_txs(self.engine, block.id)
            if r.role == TxRole.CPFP and r.seq == row.seq
        )

    # -- musig2 -------------------------------------------------------------------------------

    async def _drive_musig2(
        self,
        block: BlockRecord,
        s: SettlementRow,
        funding: OutPoint,
        status: BlockStatus,
        tip: int,
        now: float,
        events: StepReport,
    ) -> None:
        where, spends = await self._index.scan(self.node, block.height + 1, tip)
        rows = self._refresh(block, load_txs(self.engine, block.id), where, events)
        spend = next((r for r in rows if r.role in (TxRole.COOPERATIVE, TxRole.FALLBACK)), None)
        if spend is not None and spend.status == TxStatus.CONFIRMED:
            if status == BlockStatus.MATURE:
                self._paid(block, tip, events)
            return
        spender = spends.get(funding)
        if spender is not None and (spend is None or spender != spend.txid):
            # Someone else's spend of the output confirmed (a CTV exit has the cooperative
            # txid, so it is *not* this case): never broadcast a conflicting spend.
            key = (block.id, "spent")
            if key not in self._warned:
                self._warned.add(key)
                events.append(LifecycleEvent(
                    block.id, "conflict", f"{funding} spent by {display_hex(spender)}"))
            return
        if spend is None:
            spend = self._sign(block, funding, now, events)
            if spend is None:
                return
        tx = Tx.parse(spend.raw)
        if spend.role == TxRole.FALLBACK and tip + 1 < relative_lock_height(tx, [block.height]):
            return  # BIP-68: not before coinbase height + n
        if s.phase != SettlementPhase.BROADCASTING:
            set_phase(self.engine, block.id, SettlementPhase.BROADCASTING)
        if (await self._send(block, [spend.raw], events) and spend.status == TxStatus.PLANNED
                and set_tx_status(self.engine, spend.id, TxStatus.BROADCAST,
                                  was=TxStatus.PLANNED)):
            events.append(LifecycleEvent(block.id, "broadcast", f"{spend.role} {tx.txid_hex}"))

    def _sign(
        self, block: BlockRecord, funding: OutPoint, now: float, events: StepReport
    ) -> TxRow | None:
        """Open / tick the session; persist the cooperative spend when it completes, or the
        signed fallback after it failed. Returns the persisted row, or None to wait."""
        out = self._musig2.get(block.id)
        if out is None and self.musig2_resolver is not None:
            out = self.musig2_resolver(block)
            if out is not None:
                self._musig2[block.id] = out
        if out is None:
            key = (block.id, "no-output")
            if key not in self._warned:
                self._warned.add(key)
                events.append(LifecycleEvent(block.id, "untracked", "musig2 output unknown"))
            return None
        sid = session_id(block.id)
        if not self.sessions.exists(sid):
            if self.session_factory is not None:
                opened = self.session_factory(out, funding, now)
            else:
                nd = now + self.config.nonce_timeout
                opened = open_signing_session(
                    out, funding, nonce_deadline=nd, sig_deadline=nd + self.config.sig_timeout,
                    psig_check=self.config.psig_check)
            # Get-or-create: another process may have opened it first; then that one is used.
            if self.sessions.create(sid, opened, block_id=block.id)[1]:
                events.append(LifecycleEvent(block.id, "signing-started", str(funding)))
        session = self.sessions.tick(sid, now)
        state = session.state
        if state is SessionState.COMPLETE:
            tx = cooperative_spend(out, funding, session)
            role = TxRole.COOPERATIVE
        elif state is SessionState.FAILED:
            if self.fallback_signer is None:
                key = (block.id, "failed")
                if key not in self._warned:
                    self._warned.add(key)
                    events.append(LifecycleEvent(block.id, "signing-failed", "no fallback signer"))
                return None
            key = (block.id, "failed")
            if key not in self._warned:
                self._warned.add(key)
                events.append(LifecycleEvent(block.id, "signing-failed", "fallback"))
            tx = self.fallback_signer(out, build_fallback_spend(out, funding), session)
            role = TxRole.FALLBACK
        else:
            return None
        # Once per block whichever process gets here first (the unique (block, role, seq)).
        add_tx(self.engine, block.id, NewTx(role, 0, None, 0, tx.txid, tx.serialize()), once=True)
        return next(r for r in load_txs(self.engine, block.id) if r.role == role)


__all__ = [
    "FallbackSigner",
    "LifecycleConfig",
    "LifecycleEvent",
    "LifecycleListener",
    "Musig2Resolver",
    "SendResult",
    "SessionFactory",
    "SettlementLifecycle",
    "StepReport",
    "coinbase_spendable",
    "confirmations",
]
