"""One JD server connection as a sans-I/O session (sv2-spec 06-Job-Declaration-Protocol.md,
Full-Template mode, with extensions 0x0003 (PR #203), 0x4002 (the PR #202 per-job adapter)
and 0x4003 (settlement modes)). docs/jds.md describes the behaviour and every error code.

A :class:`JdsSession` holds what one connection knows -- set up or not, the extension
negotiation (:class:`ExtensionState`), the negotiated set, the declaration waiting for its
missing transactions, the latest accepted job, the connection's counters -- and is given the
state all connections of a server share (:class:`JdsShared`: tokens, published distributions,
transaction store, found blocks, counters). It never touches a socket or the node.

Design (h11 style, as :mod:`sv2.connection` below it): :meth:`JdsSession.receive` takes one
item the connection decoded and returns a generator. The generator *yields* a typed request
whenever the declaration pipeline needs the node (:mod:`sv2.jds.steps`: ``NeedTip``,
``NeedTemplate``, ``NeedMempoolTxs``, ``SubmitBlock``) and expects the answer through
``send()`` (or the node's :class:`~payouts.node.interface.NodeError` through ``throw()``);
when the message is handled it *returns* the outputs, in order: messages to send,
:data:`~sv2.session.CLOSE`, and :class:`~sv2.declared_job.FoundBlock` for a block the node
accepted. A protocol violation raises :class:`~sv2.session.Disconnect`. Generators rather
than callbacks or an ``async`` session: the handler reads top to bottom as the protocol does,
the asyncio driver (:class:`sv2.jds.server.JobDeclarationServer`) is one loop for every
message, and a test drives a session with canned node answers and no event loop or socket
(:func:`~sv2.jds.steps.run_step`; both drivers advance a step with
:func:`~sv2.jds.steps.resume`).

Messages of one connection are handled one at a time, in order. While a generator waits for
the node, the driver may push a new distribution (:meth:`JdsSession.distribution_update`);
shared state is only touched between yields.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from payouts.errors import ValidationError
from payouts.node.interface import ChainTip, NodeError
from payouts.node.submit import Submitted
from payouts.settlement.modes import ExpectedOutputs
from payouts.tx.coinbase import HALVING_INTERVAL_MAINNET, block_subsidy
from payouts.tx.compact import ser_compact_size
from payouts.tx.hashes import display_hex
from payouts.tx.transaction import Tx
from payouts.tx.txout import MAX_MONEY, TxOut
from sv2.block_rebuild import rebuild_block
from sv2.connection import HandshakeComplete, MalformedMessage, Received, UnknownMessage
from sv2.declared_job import DeclaredJob, FoundBlock, KnownTx
from sv2.distribution_book import DistributionBook
from sv2.domain_messages import distribution_message, mode_to_message
from sv2.jds import errors as E
from sv2.jds.declaring import (
    BoundOutputs,
    PendingDeclaration,
    check_provided,
    declared_job,
    payout_rule_for,
)
from sv2.jds.errors import JobRejected
from sv2.jds.state import TxStore
from sv2.jds.steps import (
    NeedMempoolTxs,
    NeedTemplate,
    NeedTip,
    NodeRequest,
    Output,
    Step,
    SubmitBlock,
)
from sv2.jds.tokens import Kind, TokenBook
from sv2.jds.validation import (
    check_height,
    check_wtxid_list,
    parse_declared_coinbase,
    validate_declaration,
)
from sv2.messages import SetupConnection, SetupConnectionError, SetupConnectionSuccess
from sv2.messages import job_declaration as jd
from sv2.messages.base import Message
from sv2.messages.common import JD_FLAG_DECLARE_TX_DATA, PROTOCOL_JOB_DECLARATION
from sv2.messages.extensions import (
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
)
from sv2.messages.payouts import (
    EXT_NON_CUSTODIAL_PAYOUTS,
    EXT_PER_JOB_PAYOUTS,
    RequestPayoutOutputs,
    RequestPayoutOutputsError,
    RequestPayoutOutputsSuccess,
)
from sv2.messages.settlement import EXT_SETTLEMENT_MODES
from sv2.session import CLOSE, SV2_VERSION, Disconnect, check_setup
from sv2.version_bits import version_matches

log = logging.getLogger(__name__)


# -- what the connections of one server share -------------------------------------------------


@dataclass(slots=True)
class JdsShared:
    """The state every connection of one JD server shares; the server owns it and gives it to
    each session. ``expected`` is the payout rule of a settlement mode (what a declaration's
    first outputs must be for a distribution and T); ``halving`` the chain's subsidy halving
    interval."""

    tokens: TokenBook
    book: DistributionBook
    txs: TxStore
    expected: ExpectedOutputs
    supported: tuple[int, ...]
    required: tuple[int, ...]
    clock: Callable[[], float]
    stats: dict[str, int] = field(default_factory=dict)
    found_blocks: list[FoundBlock] = field(default_factory=list)
    halving: int = HALVING_INTERVAL_MAINNET
    coinbase_only: bool = False  # accept JD connections without DECLARE_TX_DATA (a pool checks)


class ExtensionState(enum.Enum):
    """Where a connection is in the extension negotiation (extension 0x0001, §4)."""

    NONE = "none"  # no RequestExtensions yet
    RETRY = "retry"  # refused for lack of required extensions: one more request allowed
    DONE = "done"  # negotiated (or skipped): no more RequestExtensions


class JdsSession:
    """One JD client connection, sans-I/O (see the module docstring)."""

    def __init__(self, connection_id: int, shared: JdsShared) -> None:
        self.id = connection_id
        self.shared = shared
        self.setup = False
        self.ext_state = ExtensionState.NONE
        self.negotiated: frozenset[int] = frozenset()
        self.pending: PendingDeclaration | None = None
        self.latest_job: DeclaredJob | None = None
        self.coinbase_only = False  # set up without DECLARE_TX_DATA (§6.1 Coinbase-only mode)
        self.stats: dict[str, int] = {}

    def count(self, key: str) -> None:
        """One more ``key`` on this connection and on the server (/metrics reads those)."""
        sh = self.shared.stats
        sh[key] = sh.get(key, 0) + 1
        self.stats[key] = self.stats.get(key, 0) + 1

    _count = count

    # -- entry points ---------------------------------------------------------------------------

    def receive(self, item: Received) -> Step:
        """Handle one item the connection decoded (a message, or an event of
        :mod:`sv2.connection`)."""
        if isinstance(item, UnknownMessage):
            # sv2-spec §3.4: a non-channel message of an unknown extension is discarded.
            self._count("unknown-messages")
            return []
        if isinstance(item, MalformedMessage):
            raise Disconnect(f"malformed {item.frame.msg_type:#04x}: {item.error.reason}")
        if isinstance(item, HandshakeComplete):
            return []
        return (yield from self._dispatch(item))

    def distribution_update(self) -> list[Message]:
        """What to push after a distribution was published: SetPayoutDistribution (and, with
        0x4003, SetSettlementMode) for a client that negotiated 0x0003 (PR #203 §3.1); else
        nothing."""
        cur = self.shared.book.current
        if cur is None or EXT_NON_CUSTODIAL_PAYOUTS not in self.negotiated:
            return []
        out: list[Message] = [distribution_message(cur.distribution)]
        if EXT_SETTLEMENT_MODES in self.negotiated:
            out.append(mode_to_message(cur.mode, cur.distribution_id))
        return out

    def closed(self) -> None:
        """The connection ended: its tokens go (SRI drops a connection's tokens too)."""
        self.shared.tokens.drop_owner(self.id)

    # -- dispatch -------------------------------------------------------------------------------

    def _dispatch(self, msg: Message) -> Step:
        if not self.setup:
            if not isinstance(msg, SetupConnection):
                raise Disconnect(f"{msg.NAME} before SetupConnection")
            return self._on_setup(msg)
        if isinstance(msg, SetupConnection):
            raise Disconnect("second SetupConnection")
        if isinstance(msg, RequestExtensions):
            return self._on_request_extensions(msg)
        if self.ext_state is ExtensionState.RETRY or (
            self.ext_state is ExtensionState.NONE and self.shared.required
        ):
            # 0x0001 §4.6: a client that does not (re)request the required extensions MUST
            # be disconnected.
            raise Disconnect(f"{msg.NAME} without negotiating the required extensions")
        if self.ext_state is ExtensionState.NONE:
            self.ext_state = ExtensionState.DONE  # a client that skips negotiation gets none
        if isinstance(msg, jd.AllocateMiningJobToken):
            return self._on_allocate(msg)
        if isinstance(msg, jd.DeclareMiningJob):
            return (yield from self._on_declare(msg))
        if isinstance(msg, jd.ProvideMissingTransactionsSuccess):
            return (yield from self._on_provided(msg))
        if isinstance(msg, jd.PushSolution):
            return (yield from self._on_push_solution(msg))
        if isinstance(msg, RequestPayoutOutputs):
            if EXT_PER_JOB_PAYOUTS not in self.negotiated:
                self._count("ignored-not-negotiated")  # 0x0001: not to be used; discard
                return []
            return self._on_request_payout_outputs(msg)
        raise Disconnect(f"{msg.NAME} is not a message a JD client sends")

    def _on_setup(self, msg: SetupConnection) -> list[Output]:
        """sv2-spec §3.6 / §6.1: protocol JD, version 2 in range; ``DECLARE_TX_DATA`` chooses
        the mode. Set: Full-Template. Clear: Coinbase-only, accepted only when the pool beside
        this server checks such jobs (``JdsShared.coinbase_only``; SRI's JDS refuses it with
        ``missing-declare-tx-data-flag``, and so does this one otherwise). Any other flag bit is
        unsupported."""
        error = check_setup(msg, PROTOCOL_JOB_DECLARATION, supported_flags=JD_FLAG_DECLARE_TX_DATA)
        if error is None and not msg.flags & JD_FLAG_DECLARE_TX_DATA and (
            not self.shared.coinbase_only
        ):
            # flags 0, as SRI's JDS sends
            error = SetupConnectionError(flags=0, error_code=E.SETUP_MISSING_DECLARE_TX_DATA)
        if error is not None:
            self._count(f"setup-error:{error.error_code}")
            return [error, CLOSE]  # SRI disconnects after SetupConnection.Error
        self.setup = True
        self.coinbase_only = not msg.flags & JD_FLAG_DECLARE_TX_DATA
        if self.coinbase_only:
            self._count("coinbase-only-connections")
        return [SetupConnectionSuccess(used_version=SV2_VERSION, flags=0)]

    def _on_request_extensions(self, msg: RequestExtensions) -> list[Output]:
        if self.ext_state is ExtensionState.DONE:
            raise Disconnect("extensions negotiated twice")
        sh = self.shared
        requested = list(dict.fromkeys(msg.requested_extensions))
        ok = [e for e in requested if e in sh.supported]
        if EXT_SETTLEMENT_MODES in ok and EXT_NON_CUSTODIAL_PAYOUTS not in ok:
            ok.remove(EXT_SETTLEMENT_MODES)  # 0x4003 refers to 0x0003 distributions
        missing = [e for e in sh.required if e not in requested]
        unsupported = [e for e in requested if e not in ok]
        if missing or (requested and not ok):
            out: list[Output] = [
                RequestExtensionsError(
                    request_id=msg.request_id,
                    unsupported_extensions=tuple(unsupported),
                    required_extensions=tuple(missing),
                )
            ]
            if missing:
                if self.ext_state is ExtensionState.RETRY:
                    out.append(CLOSE)  # retried and still without them
                self.ext_state = ExtensionState.RETRY
            else:
                self.ext_state = ExtensionState.DONE
            return out
        self.ext_state = ExtensionState.DONE
        self.negotiated = frozenset(ok)
        # PR #203 §3.1: the distribution is the first message after the negotiation.
        return [
            RequestExtensionsSuccess(request_id=msg.request_id, supported_extensions=tuple(ok)),
            *self.distribution_update(),
        ]

    def _on_allocate(self, msg: jd.AllocateMiningJobToken) -> list[Output]:
        sh = self.shared
        # A Coinbase-only connection's token names no declaration to come: the pool checks
        # its SetCustomMiningJob against the distribution alone (sv2.coinbase_only).
        kind: Kind = "coinbase-only" if self.coinbase_only else "allocated"
        rec = sh.tokens.issue(self.id, kind, sh.clock(), user_identifier=msg.user_identifier)
        if self.coinbase_only:
            rec.extra["settlement_modes"] = EXT_SETTLEMENT_MODES in self.negotiated
        if EXT_NON_CUSTODIAL_PAYOUTS in self.negotiated:
            outputs = ser_compact_size(0)  # PR #203 §2: empty (an empty output vector)
        else:
            cur = sh.book.current
            assert cur is not None
            pool = TxOut(0, cur.distribution.pool_payout.script)  # §6.4.3: value 0
            outputs = ser_compact_size(1) + pool.serialize()
        self._count("tokens-allocated")
        return [
            jd.AllocateMiningJobTokenSuccess(
                request_id=msg.request_id, mining_job_token=rec.token, coinbase_tx_outputs=outputs
            )
        ]

    # -- PR #202 per-job adapter ----------------------------------------------------------------

    def _on_request_payout_outputs(self, msg: RequestPayoutOutputs) -> list[Output]:
        sh = self.shared
        try:
            rec = sh.tokens.peek(msg.mining_job_token, self.id, "allocated", sh.clock())
            if rec.bound_outputs is not None:
                raise JobRejected(E.PAYOUT_OUTPUTS_ALREADY_REQUESTED)
            cur = sh.book.current
            if cur is None:
                raise JobRejected(E.NO_PAYOUT_DISTRIBUTION)
            value = msg.available_payout_value
            if not 0 < value <= MAX_MONEY:
                raise JobRejected(E.INVALID_PAYOUT_VALUE, f"{value} sat")
            try:
                outs = tuple(sh.expected(cur.mode, cur.distribution, value))
            except ValidationError as exc:
                raise JobRejected(E.INVALID_PAYOUT_VALUE, exc.message) from None
        except JobRejected as exc:
            self._count(f"payout-outputs-error:{exc.code}")
            return [RequestPayoutOutputsError(request_id=msg.request_id, error_code=exc.code)]
        rec.bound_outputs = BoundOutputs(value, outs, cur.distribution_id, cur.mode.name)
        raw = ser_compact_size(len(outs)) + b"".join(o.serialize() for o in outs)
        return [RequestPayoutOutputsSuccess(request_id=msg.request_id, coinbase_tx_outputs=raw)]

    # -- DeclareMiningJob -----------------------------------------------------------------------

    def _reject(self, request_id: int, exc: JobRejected) -> jd.DeclareMiningJobError:
        self._count(f"declare-rejected:{exc.code}")
        log.info("JDS connection %d: DeclareMiningJob %d rejected: %s", self.id, request_id, exc)
        details = exc.details.encode("utf-8")[:0xFFFF]
        return jd.DeclareMiningJobError(
            request_id=request_id, error_code=exc.code, error_details=details
        )

    def _on_declare(self, msg: jd.DeclareMiningJob) -> Step:
        out: list[Output] = []
        if self.pending is not None:
            old, self.pending = self.pending, None
            out.append(
                self._reject(
                    old.msg.request_id, JobRejected(E.JOB_SUPERSEDED, "a newer declaration")
                )
            )
        sh = self.shared
        now = sh.clock()
        try:
            rec = sh.tokens.consume(msg.mining_job_token, self.id, "allocated", now)
            rule, published, mode = payout_rule_for(
                msg, rec, self.negotiated, sh.book, sh.expected, now
            )
            coinbase = parse_declared_coinbase(msg.coinbase_tx_prefix, msg.coinbase_tx_suffix)
            check_wtxid_list(msg.wtxid_list)
            tip: ChainTip = yield NeedTip()
            height = check_height(coinbase, tip.height)
            if sh.txs.template_prev_hash != tip.block_hash:
                # A new tip (or none loaded yet): the store still holds the txs the last block
                # mined, so this declaration waits for the new template, as it always did. On
                # the current tip the background refresh keeps the store fresh.
                yield NeedTemplate(tip)
            resolved, missing = yield from self._resolve(msg.wtxid_list)
        except JobRejected as exc:
            out.append(self._reject(msg.request_id, exc))
            return out
        except NodeError as exc:
            out.append(
                self._reject(msg.request_id, JobRejected(E.INTERNAL_ERROR, f"node: {exc.reason}"))
            )
            return out
        pending = PendingDeclaration(
            msg, rec, rule, published, mode, coinbase, tip, height, resolved, missing
        )
        if missing:
            self.pending = pending
            self._count("missing-tx-requests")
            out.append(
                jd.ProvideMissingTransactions(
                    request_id=msg.request_id, unknown_tx_position_list=tuple(missing)
                )
            )
            return out
        out.append(self._finish(pending, []))
        return out

    def _resolve(
        self, wtxids: Sequence[bytes]
    ) -> Generator[NodeRequest, Any, tuple[list[KnownTx | None], list[int]]]:
        """Each wtxid from the store, else from the node's mempool; the positions of those
        still unknown."""
        store = self.shared.txs
        resolved: list[KnownTx | None] = list(map(store.by_wtxid.get, wtxids))
        missing = [i for i, k in enumerate(resolved) if k is None]
        if missing:
            found: list[Tx | None] = yield NeedMempoolTxs(tuple(wtxids[i] for i in missing))
            still = []
            for i, tx in zip(missing, found, strict=True):
                if tx is None or tx.wtxid != wtxids[i]:
                    still.append(i)
                    continue
                k = KnownTx.of(tx, fee=store.derive_fee(tx))
                store.add(k)
                resolved[i] = k
            missing = still
        return resolved, missing

    def _on_provided(self, msg: jd.ProvideMissingTransactionsSuccess) -> Step:
        p = self.pending
        if p is None or msg.request_id != p.msg.request_id:
            # A late answer for a superseded job (stratum #860): nothing to do.
            self._count("stale-provided-txs")
            return []
        self.pending = None
        try:
            staged = check_provided(p, msg.transaction_list, self.shared.txs)
            tip: ChainTip = yield NeedTip()
            if tip.block_hash != p.tip.block_hash:
                raise JobRejected(E.STALE_CHAIN_TIP, "the tip moved while transactions were sent")
        except JobRejected as exc:
            return [self._reject(p.msg.request_id, exc)]
        except NodeError as exc:
            return [
                self._reject(p.msg.request_id, JobRejected(E.INTERNAL_ERROR, f"node: {exc.reason}"))
            ]
        return [self._finish(p, staged)]

    def _finish(
        self, p: PendingDeclaration, staged: list[KnownTx]
    ) -> jd.DeclareMiningJobSuccess | jd.DeclareMiningJobError:
        """Checks 5-8 (:func:`~sv2.jds.validation.validate_declaration`), then accept."""
        sh = self.shared
        txs = [k for k in p.resolved if k is not None]
        assert len(txs) == len(p.resolved)
        try:
            v = validate_declaration(
                p.coinbase,
                txs,
                height=p.height,
                subsidy=block_subsidy(p.height, sh.halving),
                rule=p.rule,
                trees=sh.txs.trees,
            )
        except JobRejected as exc:
            return self._reject(p.msg.request_id, exc)
        rec = sh.tokens.issue(
            self.id, "declared", sh.clock(), user_identifier=p.token.user_identifier
        )
        job = declared_job(self.id, p, v, txs, rec.token)
        rec.job = job
        self.latest_job = job
        sh.txs.add_all(staged)  # v32x: commit supplied txs only after validation passed
        self._count("declare-accepted")
        return jd.DeclareMiningJobSuccess(
            request_id=p.msg.request_id, new_mining_job_token=rec.token
        )

    # -- PushSolution ---------------------------------------------------------------------------

    def _on_push_solution(self, msg: jd.PushSolution) -> Step:
        """§6.4.9: rebuild the block of the most recent accepted declaration on this
        connection and submit it. There is no error message for PushSolution: problems are
        counted and logged."""
        job = self.latest_job
        if job is None:
            self._count("solution-without-job")
            return []
        if msg.prev_hash != job.prev_hash or msg.nbits != job.bits:
            self._count("solution-mismatch")
            log.info("JDS connection %d: PushSolution for another tip/target", self.id)
            return []
        if len(msg.extranonce) != job.coinbase.extranonce_size:
            self._count("solution-bad-extranonce")
            return []
        if not version_matches(job.version, msg.version):
            # The miner may roll the BIP323 general-purpose bits only (sv2-spec §5.3.18, the
            # same rule as SetCustomMiningJob): other bits are not the job that was declared.
            self._count("solution-bad-version")
            log.info(
                "JDS connection %d: PushSolution version %#010x differs from the declared "
                "%#010x outside the BIP323 general-purpose bits",
                self.id,
                msg.version,
                job.version,
            )
            return []
        block = rebuild_block(
            job, msg.extranonce, version=msg.version, ntime=msg.ntime, nonce=msg.nonce
        )
        if not block.meets_target():
            self._count("solution-bad-pow")
            return []
        raw = block.serialize()
        try:
            submitted: Submitted = yield SubmitBlock(raw, block.block_hash)
        except NodeError as exc:
            submitted = Submitted(f"node error: {exc.reason}")
        if not submitted.found:
            self._count("blocks-rejected")
            log.warning(
                "JDS: block %s rejected by the node: %s", display_hex(block.block_hash),
                submitted.reason,
            )
            return []
        # Found, also when the node already had it ("duplicate": the JD client's Template
        # Provider propagated it first, §7.7): the pool records it once, by hash.
        self._count("blocks-found")
        if submitted.already_known:
            self._count("blocks-already-known")
        found = FoundBlock(block.block_hash, job.height, raw, block.coinbase, job)
        self.shared.found_blocks.append(found)
        return [found]


__all__ = ["ExtensionState", "JdsSession", "JdsShared"]
