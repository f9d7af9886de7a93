"""The synchronous steps of the JD server's declaration pipeline (sv2-spec
06-Job-Declaration-Protocol.md §6.4.4-§6.4.8), used by :class:`sv2.jds.session.JdsSession`
between its node requests:

- :func:`payout_rule_for`: which outputs a ``DeclareMiningJob`` must start with -- the PR #202
  set bound to its token (extension 0x4002), the distribution its ``distribution_id`` TLV names
  (0x0003, PR #203 §6-§7; in that distribution's settlement mode, 0x4003), or the pool payout
  output alone (base spec);
- :class:`PendingDeclaration`: a declaration waiting for ``ProvideMissingTransactions.Success``;
- :func:`check_provided`: the SRI v32x checks of the transactions a client supplied;
- :func:`declared_job`: the :class:`~sv2.declared_job.DeclaredJob` an accepted declaration
  becomes.

Nothing here touches the node or a socket; every failure is a
:class:`~sv2.jds.errors.JobRejected` raised before any shared state changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payouts.node.interface import ChainTip
from payouts.settlement.modes import ExpectedOutputs
from payouts.tx.transaction import Tx, TxDecodeError
from payouts.tx.txout import TxOut
from sv2.declared_job import DeclaredCoinbase, DeclaredJob, KnownTx
from sv2.distribution_book import DistributionBook, Published
from sv2.jds import errors as E
from sv2.jds.errors import JobRejected
from sv2.jds.state import TxStore
from sv2.jds.tokens import TokenRecord
from sv2.jds.validation import PayoutRule, ValidatedDeclaration
from sv2.messages.job_declaration import DeclareMiningJob
from sv2.messages.payouts import (
    EXT_NON_CUSTODIAL_PAYOUTS,
    distribution_id_of,
)
from sv2.messages.settlement import EXT_SETTLEMENT_MODES
from sv2.payout_check import distribution_rule


@dataclass(frozen=True, slots=True)
class BoundOutputs:
    """A PR #202 output set, bound to one allocated token (single use)."""

    value: int
    outputs: tuple[TxOut, ...]
    distribution_id: int
    mode: str


@dataclass(slots=True)
class PendingDeclaration:
    """A declaration waiting for ProvideMissingTransactions.Success."""

    msg: DeclareMiningJob
    token: TokenRecord
    rule: PayoutRule
    published: Published | None
    mode: str
    coinbase: DeclaredCoinbase
    tip: ChainTip
    height: int
    resolved: list[KnownTx | None]
    missing: list[int]  # positions into wtxid_list


def payout_rule_for(
    msg: DeclareMiningJob,
    rec: TokenRecord,
    negotiated: frozenset[int],
    book: DistributionBook,
    expected: ExpectedOutputs,
    now: float,
) -> tuple[PayoutRule, Published | None, str]:
    """The rule the declaration's first outputs must follow, the distribution behind it and
    the job's mode name (``per-job``, the distribution's mode, or ``pool``)."""
    tlv_id = distribution_id_of(msg)
    bound: BoundOutputs | None = rec.bound_outputs
    if bound is not None:
        if tlv_id is not None and tlv_id != bound.distribution_id:
            raise JobRejected(
                E.INVALID_PAYOUT_OUTPUTS,
                f"distribution_id {tlv_id} differs from the requested set's "
                f"{bound.distribution_id}",
            )
        try:
            published = book.lookup(bound.distribution_id, now)
        except JobRejected:
            raise JobRejected(
                E.STALE_PAYOUT_OUTPUTS, "the distribution behind this output set expired"
            ) from None
        outs = bound.outputs
        rule = PayoutRule(
            E.INVALID_PAYOUT_OUTPUTS,
            lambda _t: outs,
            "per-job payout outputs",
            fixed_revenue=bound.value,
        )
        return rule, published, "per-job"
    if EXT_NON_CUSTODIAL_PAYOUTS in negotiated:
        if tlv_id is None:
            raise JobRejected(
                E.INVALID_PAYOUT_DISTRIBUTION,
                "0x0003 is negotiated: DeclareMiningJob needs the distribution_id TLV",
            )
        p = book.lookup(tlv_id, now)
        if p.mode.name != "coinbase" and EXT_SETTLEMENT_MODES not in negotiated:
            raise JobRejected(
                E.SETTLEMENT_MODE_NOT_NEGOTIATED,
                f"distribution {tlv_id} settles in {p.mode.name} mode; negotiate 0x4003",
            )
        return distribution_rule(p, expected), p, p.mode.name
    if tlv_id is not None:
        raise JobRejected(
            E.EXTENSION_NOT_NEGOTIATED,
            "distribution_id TLV from a client that did not negotiate 0x0003 (PR #203 §2)",
        )
    cur = book.current
    assert cur is not None
    script = cur.distribution.pool_payout.script

    def pool_only(t: int) -> Sequence[TxOut]:
        return (TxOut(t, script),)

    return PayoutRule(E.INVALID_POOL_PAYOUT, pool_only, "pool payout (base spec)"), None, "pool"


def check_provided(
    p: PendingDeclaration, raw_txs: Sequence[bytes], store: TxStore
) -> list[KnownTx]:
    """SRI v32x hardening: supplied txs must parse, not be coinbases, be among the requested
    positions, and not repeat; every requested one must come. Fills ``p.resolved`` and returns
    the supplied transactions, for the store once the declaration is accepted."""
    wanted = {p.msg.wtxid_list[i]: i for i in p.missing}
    got: dict[bytes, Tx] = {}
    for n, raw in enumerate(raw_txs):
        try:
            tx = Tx.parse(raw)
        except (TxDecodeError, ValueError) as exc:
            raise JobRejected(E.INVALID_PROVIDED_TXS, f"transaction {n}: {exc}") from None
        if tx.is_coinbase:
            raise JobRejected(E.COINBASE_TX_PROVIDED, f"transaction {n} is a coinbase")
        w = tx.wtxid
        if w in got:
            raise JobRejected(E.DUPLICATE_PROVIDED_TX, f"transaction {n} repeats an earlier one")
        if w not in wanted:
            raise JobRejected(E.UNDECLARED_TX, f"transaction {n} was not requested")
        got[w] = tx
    absent = [i for w, i in wanted.items() if w not in got]
    if absent:
        raise JobRejected(E.MISSING_TXS, f"positions {absent[:10]} were not provided")
    # Fees: parents may be other txs of this job.
    local = {k.txid: k.tx for k in p.resolved if k is not None}
    local.update((tx.txid, tx) for tx in got.values())
    staged = []
    for w, i in wanted.items():
        tx = got[w]
        k = KnownTx.of(tx, fee=store.derive_fee(tx, local))
        p.resolved[i] = k
        staged.append(k)
    return staged


def declared_job(
    connection_id: int,
    p: PendingDeclaration,
    v: ValidatedDeclaration,
    txs: Sequence[KnownTx],
    token: bytes,
) -> DeclaredJob:
    """The record of an accepted declaration, named by its DeclareMiningJob.Success
    ``token``."""
    pub = p.published
    return DeclaredJob(
        connection_id=connection_id,
        request_id=p.msg.request_id,
        token=token,
        user_identifier=p.token.user_identifier,
        prev_hash=p.tip.block_hash,
        bits=p.tip.bits,
        version=p.msg.version,
        height=v.height,
        coinbase=v.coinbase,
        txs=tuple(txs),
        revenue=v.revenue,
        payout_outputs=v.payout_outputs,
        distribution_id=pub.distribution_id if pub is not None else None,
        mode=p.mode,
        distribution=pub.distribution if pub is not None else None,
        fitted=pub.fitted if pub is not None else None,
    )


__all__ = [
    "BoundOutputs",
    "PendingDeclaration",
    "check_provided",
    "declared_job",
    "payout_rule_for",
]
