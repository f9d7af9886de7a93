"""The JD server's transaction store, shared by all its connections: the transactions it can
resolve a declaration's wtxids to (the node's template, mempool look-ups, transactions clients
supplied). The published distributions the connections share are in
:mod:`sv2.distribution_book` (below the roles: the pool's Mining Protocol server reads them
too)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from payouts.node.interface import BlockTemplate
from payouts.tx.transaction import Tx
from sv2.declared_job import KnownTx
from sv2.jds.validation import WitnessTrees


@dataclass(frozen=True, slots=True)
class PreparedTemplate:
    """A node template with its transactions' precomputed data and witness tree, ready for
    :meth:`TxStore.install_template`."""

    prev_hash: bytes
    known: tuple[KnownTx, ...]
    levels: list[bytes]  # the template's witness tree (WitnessTrees levels)
    hashed: int


class TxStore:
    """Transactions the server can resolve wtxids to: the node's template (fees and sigops
    exact), node mempool look-ups, and transactions clients supplied for accepted jobs. Weight,
    sigop cost and wtxid are computed once, when a transaction enters (:class:`KnownTx`), so
    validating a declaration only sums them; ``trees`` holds the witness tree of the current
    template, built when the template is loaded, for declarations to reuse."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self.by_wtxid: dict[bytes, KnownTx] = {}
        self.by_txid: dict[bytes, KnownTx] = {}
        self.template_prev_hash: bytes | None = None
        self.template_at = float("-inf")
        self.trees = WitnessTrees()

    def __len__(self) -> int:
        return len(self.by_wtxid)

    def clear(self) -> None:
        self.by_wtxid.clear()
        self.by_txid.clear()
        self.template_prev_hash = None
        self.template_at = float("-inf")

    def add(self, k: KnownTx) -> None:
        if len(self.by_wtxid) >= self.max_entries and k.wtxid not in self.by_wtxid:
            # Crude but bounded: jobs hold their own references, so dropping the index only
            # costs later look-ups.
            self.by_wtxid.clear()
            self.by_txid.clear()
        old = self.by_wtxid.get(k.wtxid)
        if old is not None and old.fee is not None and k.fee is None:
            return  # keep the entry that knows its fee
        self.by_wtxid[k.wtxid] = k
        self.by_txid[k.txid] = k

    def add_template(self, template: BlockTemplate, now: float) -> None:
        """Load the node's template (the server's template refresh, in two steps)."""
        self.install_template(self.prepare_template(template), now)

    def prepare_template(self, template: BlockTemplate) -> PreparedTemplate:
        """The expensive part of loading a template -- wtxid, weight and sigop cost of every
        transaction, and the template's witness tree -- computed without changing the store,
        so the server can run it in a worker thread while declarations go on."""
        known = tuple(KnownTx.of(t.tx, fee=t.fee, sigops=t.sigops) for t in template.transactions)
        # A JD client on a node with the same mempool declares these in this order.
        levels, hashed = self.trees.build_template([k.wtxid for k in known])
        return PreparedTemplate(template.prev_hash, known, levels, hashed)

    def install_template(self, prepared: PreparedTemplate, now: float) -> None:
        """Make a prepared template current. A template on another tip than the loaded one
        first empties the store: the txs the new block mined are gone (accepted jobs keep
        their own references)."""
        if self.template_prev_hash != prepared.prev_hash:
            self.clear()
        for k in prepared.known:
            self.add(k)
        self.trees.install_template(prepared.levels, prepared.hashed)
        self.template_prev_hash = prepared.prev_hash
        self.template_at = now

    def get(self, wtxid: bytes) -> KnownTx | None:
        return self.by_wtxid.get(wtxid)

    def derive_fee(self, tx: Tx, local: Mapping[bytes, Tx] | None = None) -> int | None:
        """Σ spent values − Σ outputs when every spent output belongs to a transaction we hold
        (``local``: txid -> tx of the same job), else None."""
        spent = 0
        for txin in tx.inputs:
            txid, n = txin.prevout.txid, txin.prevout.n
            parent: Tx | None = local.get(txid) if local else None
            if parent is None:
                k = self.by_txid.get(txid)
                parent = k.tx if k is not None else None
            if parent is None or n >= len(parent.outputs):
                return None
            spent += parent.outputs[n].value
        fee = spent - tx.output_value()
        return fee if fee >= 0 else None

    def add_all(self, ks: Iterable[KnownTx]) -> None:
        for k in ks:
            self.add(k)
