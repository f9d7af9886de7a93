"""Server-side state shared by all connections: published distributions (with the PR #203
grace window) and the transactions the server knows.

``SetPayoutDistribution`` <-> :class:`~payouts.distribution.Distribution`: the amount fields of
``pool_payout`` and ``payouts`` carry *weights*; ``additional_outputs`` carry fixed satoshi
amounts (PR #203 as of 2026-09-09, the revision :mod:`sv2.messages.payouts` implements).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from payouts.distribution.fitting import FittedDistribution
from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.node.interface import BlockTemplate
from payouts.settlement.modes import SettlementMode
from payouts.tx.transaction import Tx
from sv2.jds import errors as E
from sv2.jds.errors import JobRejected
from sv2.jds.validation import KnownTx, WitnessTrees

# -- SetPayoutDistribution <-> Distribution ---------------------------------------------------


# -- published distributions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    distribution: Distribution
    fitted: FittedDistribution | None
    mode: SettlementMode
    published_at: float
    after_settlement: bool  # PR #203 §10: no grace for what came before

    @property
    def distribution_id(self) -> int:
        return self.distribution.distribution_id


class DistributionBook:
    """The current distribution, the one before it (grace window, PR #203 §7.2) and the ids
    ever published (to tell ``stale`` from ``unknown``)."""

    MAX_REMEMBERED_IDS = 100_000

    def __init__(self, grace_period: float) -> None:
        if grace_period < 0:
            raise ValueError("grace period cannot be negative")
        self.grace_period = grace_period
        self.current: Published | None = None
        self.previous: Published | None = None
        self._seen: OrderedDict[int, None] = OrderedDict()

    def publish(self, p: Published) -> None:
        if self.current is not None and p.distribution_id <= self.current.distribution_id:
            raise ValidationError(
                f"distribution_id must increase strictly (PR #203 §3.1): {p.distribution_id} "
                f"after {self.current.distribution_id}"
            )
        self.previous, self.current = self.current, p
        self._seen[p.distribution_id] = None
        while len(self._seen) > self.MAX_REMEMBERED_IDS:
            self._seen.popitem(last=False)

    def lookup(self, distribution_id: int, now: float) -> Published:
        """The distribution a declaration names, if still accepted; else
        ``stale-payout-distribution`` (older than the grace window allows, or invalidated by a
        settlement) or ``invalid-payout-distribution`` (never published)."""
        cur = self.current
        if cur is not None and distribution_id == cur.distribution_id:
            return cur
        if distribution_id not in self._seen:
            raise JobRejected(
                E.INVALID_PAYOUT_DISTRIBUTION, f"distribution {distribution_id} was never published"
            )
        prev = self.previous
        if (
            cur is not None
            and prev is not None
            and distribution_id == prev.distribution_id
            and not cur.after_settlement
            and now - cur.published_at <= self.grace_period
        ):
            return prev
        raise JobRejected(
            E.STALE_PAYOUT_DISTRIBUTION,
            f"distribution {distribution_id} is no longer accepted"
            + (f" (current: {cur.distribution_id})" if cur else ""),
        )


# -- known transactions -----------------------------------------------------------------------


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
