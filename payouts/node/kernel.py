"""``KernelNode``: the embedded default backend, an in-memory regtest node on libbitcoinkernel.

Blocks are validated by Bitcoin Core's own code (``ChainstateManager::ProcessNewBlock``
through :class:`~payouts.node.kernel_chain.KernelChain`); transactions enter a small Python
mempool (:mod:`payouts.node.kernel_mempool`) after Core-like checks and kernel script
verification with ALL flags. It is enough to run the whole settlement lifecycle in seconds on a
fresh machine; its limits, stated once here and in ``docs/regtest.md``:

- **No CTV.** libbitcoinkernel has no BIP-119 flag: ``OP_CHECKTEMPLATEVERIFY`` executes as
  ``OP_NOP4``, so a spend that violates its template is accepted.
  :meth:`KernelNode.deployment_active` reports ``checktemplateverify`` as inactive so that the
  engine refuses CTV settlement (architecture invariant 4).
- **In memory only, regtest only.** Everything is gone when the node is closed.
- **Consensus, not policy.** No dust/standardness/TRUC/min-fee/RBF rules (see the mempool
  module); a conflicting spend is always rejected with ``txn-mempool-conflict``.
- **invalidate/reconsider are emulated** by replaying every known block into a fresh kernel
  chainstate without the invalidated branch (the kernel API has no ``InvalidateBlock``); this
  costs ~0.5 ms per block. Natural reorgs (a branch with more work) are the kernel's own.
- ``get_block`` does not know the genesis block's bytes (we never built it).

Threading: every call is synchronous Python + kernel work of well under a millisecond per
input or small block, so the async methods run it inline on the event-loop thread, which
also serializes access (pbk objects are not documented as thread-safe). An ``RLock`` guards
the state anyway so that the synchronous helpers may be called from a worker thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from fractions import Fraction
from types import TracebackType

from payouts.node.interface import (
    BlockTemplate,
    ChainTip,
    MempoolAcceptResult,
    NodeError,
    TemplateTx,
    Utxo,
)
from payouts.node.kernel_chain import (
    BLOCK_VERSION,
    REGTEST_BITS,
    BlockRejectedError,
    KernelChain,
    solve,
)
from payouts.node.kernel_mempool import (
    Mempool,
    MempoolEntry,
    MempoolReject,
    _mtp,
)
from payouts.tx.block import Block, BlockHeader, difficulty_from_bits
from payouts.tx.coinbase import build_coinbase, witness_commitment
from payouts.tx.consensus import MAX_BLOCK_SIGOPS_COST, MAX_BLOCK_WEIGHT
from payouts.tx.hashes import display_hex
from payouts.tx.merkle import merkle_root
from payouts.tx.transaction import OutPoint, Tx, TxDecodeError
from payouts.tx.txout import TxOut

COINBASE_RESERVED_WEIGHT = 4_000  # Core's block assembler keeps this for the coinbase
COINBASE_RESERVED_SIGOPS = 400
# Deployments that are buried (always active) on regtest in Core >= 28.
_ACTIVE_ON_REGTEST = frozenset(
    {"bip34", "bip65", "bip66", "csv", "segwit", "taproot", "cltv", "dersig", "heightincb"}
)
_NOT_ACTIVE_MARK = "valid but not on the active chain"


class KernelNode:
    """The :class:`~payouts.node.interface.Node` interface on an in-memory kernel chain.

    Use as a (sync or async) context manager, or call :meth:`close`. Pass ``chain`` to wrap an
    existing :class:`KernelChain` (then the caller keeps ownership of it).
    """

    network = "regtest"

    def __init__(self, chain: KernelChain | None = None) -> None:
        self._owns_chain = chain is None
        self.chain = chain if chain is not None else KernelChain()
        self.mempool = Mempool()
        self._lock = threading.RLock()
        self._known: dict[bytes, Block] = {b.hash: b for b in self.chain.blocks}
        self._height_of: dict[bytes, int] = {}  # every known block's height (any branch)
        for h, b in enumerate(self.chain.blocks, start=1):
            self._height_of[b.hash] = h
        self._invalid: set[bytes] = set()  # invalidate_block roots

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_chain:
            self.chain.close()

    async def aclose(self) -> None:
        """:meth:`close`, as the :class:`~payouts.node.interface.Node` interface has it."""
        self.close()

    def __enter__(self) -> KernelNode:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> KernelNode:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- Node: chain --------------------------------------------------------------------------

    async def tip(self) -> ChainTip:
        with self._lock:
            c = self.chain
            times = c.times
            return ChainTip(
                c.tip_height, c.tip_hash, REGTEST_BITS, times[-1], _mtp(times, c.tip_height)
            )

    async def network_difficulty(self) -> Fraction:
        """Regtest's powLimit target (``nBits 0x207fffff``), exactly: about 4.66e-10."""
        return difficulty_from_bits(REGTEST_BITS)

    async def deployment_active(self, name: str) -> bool:
        """Buried regtest deployments are active; ``checktemplateverify`` is **False**: the
        kernel does not enforce CTV (no BIP-119 flag), so a bare CTV output would be
        anyone-can-spend under these rules and CTV settlement must be refused."""
        return name.lower() in _ACTIVE_ON_REGTEST

    async def block_hash(self, height: int) -> bytes | None:
        with self._lock:
            hashes = self.chain.active_hashes()
            return hashes[height] if 0 <= height < len(hashes) else None

    async def block_height(self, block_hash: bytes) -> int | None:
        with self._lock:
            h = self._height_of.get(block_hash)
            if h is None and block_hash == self.chain.active_hashes()[0]:
                return 0
            if h is None or h > self.chain.tip_height:
                return None
            return h if self.chain.blocks[h - 1].hash == block_hash else None

    async def get_block(self, block_hash: bytes) -> bytes | None:
        block = self._known.get(block_hash)
        return None if block is None else block.serialize()

    async def get_utxo(self, txid: bytes, n: int) -> Utxo | None:
        with self._lock:
            hit = self.chain.utxos.get(OutPoint(txid, n))
            if hit is None:
                return None
            out, height, is_cb = hit
            return Utxo(out.value, out.script, height, is_cb, self.chain.tip_height - height + 1)

    # -- Node: mempool ------------------------------------------------------------------------

    async def send_raw_transaction(self, raw_tx: bytes) -> bytes:
        with self._lock:
            tx = _decode_tx(raw_tx)
            try:
                entry = self.mempool.check(self.chain, tx)
            except MempoolReject as e:
                raise NodeError(str(e)) from None
            self.mempool.add(entry)
            return tx.txid

    async def test_mempool_accept(self, raw_txs: Sequence[bytes]) -> list[MempoolAcceptResult]:
        """Checks in order against a scratch copy of the mempool, so a child may spend a
        parent from the same list (Core's package semantics); nothing is kept."""
        with self._lock:
            scratch = self.mempool.copy()
            results: list[MempoolAcceptResult] = []
            for raw in raw_txs:
                tx = _decode_tx(raw)
                try:
                    entry = scratch.check(self.chain, tx)
                except MempoolReject as e:
                    results.append(MempoolAcceptResult(tx.txid, tx.wtxid, False, str(e)))
                    continue
                scratch.add(entry)
                results.append(
                    MempoolAcceptResult(tx.txid, tx.wtxid, True, None, entry.fee, tx.vsize)
                )
            return results

    async def submit_package(self, raw_txs: Sequence[bytes]) -> list[bytes]:
        """All or nothing: every tx is checked (parents first) before any is added."""
        with self._lock:
            scratch = self.mempool.copy()
            txids = []
            for raw in raw_txs:
                tx = _decode_tx(raw)
                try:
                    scratch.add(scratch.check(self.chain, tx))
                except MempoolReject as e:
                    raise NodeError(f"package rejected: {display_hex(tx.txid)}: {e}") from None
                txids.append(tx.txid)
            self.mempool = scratch
            return txids

    async def mempool_txs(self, wtxids: Sequence[bytes]) -> list[Tx | None]:
        with self._lock:
            out: list[Tx | None] = []
            for w in wtxids:
                txid = self.mempool.by_wtxid.get(w)
                out.append(None if txid is None else self.mempool.entries[txid].tx)
            return out

    # -- Node: templates and blocks -----------------------------------------------------------

    def template_entries(self) -> list[MempoolEntry]:
        """Mempool txs for the next block: ancestors before descendants, within the block's
        weight and sigop budgets (a tx that does not fit is left out with its descendants)."""
        chosen: list[MempoolEntry] = []
        taken: set[bytes] = set()
        weight = COINBASE_RESERVED_WEIGHT
        sigops = COINBASE_RESERVED_SIGOPS
        for txid, entry in self._topological():
            if not entry.parents <= taken:
                continue
            w = entry.tx.weight
            if weight + w > MAX_BLOCK_WEIGHT or sigops + entry.sigops > MAX_BLOCK_SIGOPS_COST:
                continue
            weight += w
            sigops += entry.sigops
            taken.add(txid)
            chosen.append(entry)
        return chosen

    def _topological(self) -> list[tuple[bytes, MempoolEntry]]:
        """Arrival order is already topological, except after a reorg re-adds block txs;
        a depth-first pass makes it so in every case."""
        entries = self.mempool.entries
        done: set[bytes] = set()
        order: list[tuple[bytes, MempoolEntry]] = []

        def visit(txid: bytes) -> None:
            if txid in done:
                return
            done.add(txid)
            for parent in sorted(entries[txid].parents):
                if parent in entries:
                    visit(parent)
            order.append((txid, entries[txid]))

        for txid in list(entries):
            visit(txid)
        return order

    async def block_template(self) -> BlockTemplate:
        with self._lock:
            c = self.chain
            entries = self.template_entries()
            height = c.tip_height + 1
            fees = sum(e.fee for e in entries)
            return BlockTemplate(
                version=BLOCK_VERSION,
                prev_hash=c.tip_hash,
                height=height,
                bits=REGTEST_BITS,
                # Strictly above the median time past and deterministic (the kernel chain's
                # header times are synthetic, counted up from the regtest genesis).
                curtime=max(c.times[-11:]) + 1,
                coinbase_value=c.subsidy(height) + fees,
                transactions=tuple(TemplateTx(e.tx, e.fee, e.sigops) for e in entries),
            )

    async def submit_block(self, raw_block: bytes) -> str | None:
        """``submitblock``: None when the block became the tip, else Core's BIP-22 result
        ("duplicate", "duplicate-invalid", "inconclusive" for a valid side-chain block) or
        the reject reason ("bad-cb-amount", "high-hash", ...)."""
        with self._lock:
            return self._submit(raw_block)

    def _submit(self, raw_block: bytes) -> str | None:
        try:
            block = Block.parse(raw_block)
        except (TxDecodeError, ValueError):
            return "Block decode failed"
        h = block.hash
        if h in self._known:
            if self._is_active(h):
                return "duplicate"
            return (
                "duplicate-invalid" if self._descends_from_invalid(h) else "duplicate-inconclusive"
            )
        if self._descends_from_invalid(block.header.prev_hash):
            return "bad-prevblk"
        before = self.chain.active_hashes()
        try:
            self.chain.submit_block(raw_block)
        except BlockRejectedError as e:
            # A side-branch block with no more work is stored, not connected: the kernel
            # reports no check at all (NOT_CHECKED) or VALID-but-not-active. Core's
            # submitblock says "inconclusive"; full validation happens if it becomes active.
            if e.reason.startswith(_NOT_ACTIVE_MARK) or e.reason == "NOT_CHECKED":
                self._remember(block)
                return "inconclusive"
            if "MISSING_PREV" in e.reason:
                return "prev-blk-not-found"  # Core's word for an unknown parent
            if self.chain.active_hashes() != before:  # pragma: no cover - defensive
                self._after_chain_change(before)
            return e.reason
        self._remember(block)
        if block.header.prev_hash == before[-1]:
            self.chain.record(block, self.chain.tip_height)
        else:
            self.chain.resync(self._known)  # the kernel reorganised onto another branch
        self._after_chain_change(before)
        return None

    def _remember(self, block: Block) -> None:
        prev = block.header.prev_hash
        parent_height = self._height_of.get(prev, 0)  # genesis is the only unknown parent
        self._known[block.hash] = block
        self._height_of[block.hash] = parent_height + 1

    def _is_active(self, block_hash: bytes) -> bool:
        h = self._height_of.get(block_hash)
        return (
            h is not None
            and 0 < h <= len(self.chain.blocks)
            and (self.chain.blocks[h - 1].hash == block_hash)
        )

    def _descends_from_invalid(self, block_hash: bytes) -> bool:
        while block_hash in self._known:
            if block_hash in self._invalid:
                return True
            block_hash = self._known[block_hash].header.prev_hash
        return False

    def _after_chain_change(self, before: list[bytes]) -> None:
        """Re-admit the mempool against the new chain, as Core does after connecting or
        disconnecting blocks: mined txs and now-conflicting spends drop out; txs of blocks
        that left the active chain come back (first, as they are older)."""
        after = set(self.chain.active_hashes())
        returning: list[Tx] = []
        for bh in before[1:]:
            if bh not in after and bh in self._known:
                returning.extend(self._known[bh].txs[1:])
        candidates = returning + [e.tx for e in self.mempool.entries.values()]
        self.mempool = Mempool()
        for tx in candidates:
            # Mined, conflicted, or its parent went away: silently dropped, as in Core.
            with contextlib.suppress(MempoolReject):
                self.mempool.add(self.mempool.check(self.chain, tx))

    # -- regtest helpers ----------------------------------------------------------------------

    async def generate_to_script(self, n: int, script: bytes) -> list[bytes]:
        with self._lock:
            return [self.generate_one(script).hash for _ in range(n)]

    async def generate(self, n: int, script: bytes) -> list[bytes]:
        """Alias of :meth:`generate_to_script` (``generatetoaddress`` on a script)."""
        return await self.generate_to_script(n, script)

    def generate_one(self, script: bytes, txs: Sequence[Tx] | None = None) -> Block:
        """Mine one block on the tip with the template's txs (or ``txs``), paying subsidy +
        fees to ``script``; raises NodeError if the kernel refuses it."""
        with self._lock:
            c = self.chain
            if txs is None:
                entries = self.template_entries()
                txs, fees = [e.tx for e in entries], sum(e.fee for e in entries)
            else:
                fees = c.fees(txs)
            block = c.build_block([TxOut(c.subsidy(c.tip_height + 1) + fees, script)], txs)
            reason = self._submit(block.serialize())
            if reason is not None:
                raise NodeError(f"generated block rejected: {reason}")
            return block

    def build_block_on(
        self,
        parent: bytes,
        script: bytes,
        txs: Sequence[Tx] = (),
        *,
        fees: int = 0,
        tag: bytes = b"/payouts-fork/",
    ) -> Block:
        """A solved block on any known ``parent`` (tip or not): builds competing branches for
        reorg tests. ``fees`` is added to the coinbase value; not submitted."""
        with self._lock:
            if parent == self.chain.active_hashes()[0]:
                height = 1
            elif parent in self._height_of:
                height = self._height_of[parent] + 1
            else:
                raise NodeError("unknown parent block")
            cb = build_coinbase(
                height,
                [TxOut(self.chain.subsidy(height) + fees, script)],
                b"\x00" * 4,
                tag=tag,
                commitment=witness_commitment([t.wtxid for t in txs]),
            )
            all_txs = (cb, *txs)
            t = max([self.chain.times[0], *(b.header.time for b in self._known.values())]) + 1
            header = BlockHeader(
                BLOCK_VERSION, parent, merkle_root([x.txid for x in all_txs]), t, REGTEST_BITS, 0
            )
            return Block(solve(header), all_txs)

    async def invalidate_block(self, block_hash: bytes) -> None:
        """Emulated: replay every known block not descending from an invalidated one into a
        fresh kernel chainstate; the kernel then picks the most-work remaining branch.
        ``self.chain`` is then a new :class:`KernelChain` owned (and closed) by this node."""
        with self._lock:
            if block_hash not in self._known:
                raise NodeError("Block not found")
            self._invalid.add(block_hash)
            self._rebuild()

    async def reconsider_block(self, block_hash: bytes) -> None:
        with self._lock:
            if block_hash not in self._known:
                raise NodeError("Block not found")
            self._invalid.discard(block_hash)
            self._rebuild()

    def _rebuild(self) -> None:
        before = self.chain.active_hashes()
        fresh = KernelChain()
        # Known blocks by height; within a height, arrival order (dict order) so that the
        # first-seen branch wins ties as in Core.
        order = sorted(self._known.values(), key=lambda b: self._height_of[b.hash])
        for block in order:
            if self._descends_from_invalid(block.hash):
                continue
            # A side-branch block "fails" (valid, not active) but stays known to the kernel.
            with contextlib.suppress(BlockRejectedError):
                fresh.submit_block(block.serialize())
        fresh.resync(self._known)
        if self._owns_chain:
            self.chain.close()
        self._owns_chain = True
        self.chain = fresh
        self._after_chain_change(before)


def _decode_tx(raw: bytes) -> Tx:
    try:
        return Tx.parse(raw)
    except (TxDecodeError, ValueError):
        raise NodeError("TX decode failed") from None


__all__ = ["KernelNode"]
