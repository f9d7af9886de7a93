"""Coinbase-only mode (sv2-spec 06-Job-Declaration-Protocol.md §6.1, the mode PR #121 made of
"async mining"; extension 0x0003, PR #203 §2 and §6): the pool's check of a
``SetCustomMiningJob`` that no ``DeclareMiningJob`` preceded, against the payout distribution
alone. Below the roles: the pool's Mining Protocol server calls it through
:class:`~sv2.custom_job.CustomJobChecker` with the JD server's state, importing neither role.

A JD client whose ``SetupConnection`` to the JD server lacked ``DECLARE_TX_DATA`` mines in
Coinbase-only mode: its ``AllocateMiningJobToken.Success`` token goes straight into
``SetCustomMiningJob`` with the ``distribution_id`` TLV (0x0003, 0x01). The pool never sees the
transactions, so it rebuilds the coinbase from the message (§5.3.18: the scriptSig is
``coinbase_prefix`` then the channel's extranonce prefix and the miner's extranonce; BIP-141
serialization with a zero witness reserved value when the last output is the witness
commitment), takes T as the sum of its outputs (the message has no
``coinbase_tx_value_remaining`` since PR #138) and recomputes the distribution's outputs at T
with :func:`sv2.payout_check.check_payout_outputs`, the code the JD server's Full-Template
check runs.

Checks, in order; the first failure is the answer (the token checks are the checker's):

=======================================  ==================================================
check                                    error_code
=======================================  ==================================================
token: a live Coinbase-only token this   ``invalid-mining-job-token``
user allocated, not used yet
the ``distribution_id`` TLV is sent      ``invalid-payout-distribution`` (PR #203 §6)
``prev_hash`` is not a tip the pool      ``invalid-job-param-value-prev_hash``
saw replaced
``nbits`` equals the pool's template's   ``invalid-job-param-value-nbits``
on the same ``prev_hash``
``version`` >= 4 (BIP-65; Core's          ``invalid-job-param-value-version``
``bad-version``)
``min_ntime`` at most 2 h past the pool's  ``invalid-job-param-value-min_ntime``
clock (Core's ``time-too-new``)
``coinbase_prefix``: 1-8 bytes starting  ``invalid-job-param-value-coinbase_prefix``
with a minimal BIP-34 height push (the
pool template's height on the same
``prev_hash``); scriptSig 2-100 bytes
the outputs decode, the last one is the  ``invalid-job-param-value-coinbase_tx_outputs``
witness commitment, 0 < T <= 21M BTC
the distribution is still accepted       ``stale-payout-distribution`` /
(grace window, no settlement since)      ``invalid-payout-distribution`` (never published)
a non-``coinbase`` mode needs 0x4003 on  ``settlement-mode-not-negotiated``
the token's JD connection
payout outputs recomputed at T, then     ``invalid-payout-distribution`` (``coinbase``
0-valued outputs only                    mode), ``invalid-settlement-outputs`` (0x4003
                                         modes), ``unsatisfiable-distribution`` (F >= T)
=======================================  ==================================================

Crediting (:func:`credited_revenue`): the fees in T cannot be checked without the
transactions, so shares are value-weighted by at most what the pool's own newest template on
the same ``prev_hash`` earns, and without one by the block subsidy plus the fees of the pool's
newest template.
"""

from __future__ import annotations

from dataclasses import dataclass

from payouts.errors import ValidationError
from payouts.settlement.modes import ExpectedOutputs
from payouts.tx.coinbase import WITNESS_COMMITMENT_HEADER, WITNESS_RESERVED_VALUE, block_subsidy
from payouts.tx.compact import read_compact_size, ser_compact_size
from payouts.tx.consensus import MAX_FUTURE_BLOCK_TIME, MIN_BLOCK_VERSION
from payouts.tx.merkle import merkle_path
from payouts.tx.script import bip34_height
from payouts.tx.transaction import NULL_OUTPOINT, Tx, TxIn
from payouts.tx.txout import MAX_MONEY, TxOut
from sv2.declared_job import DeclaredCoinbase, DeclaredJob, KnownTx
from sv2.distribution_book import DistributionBook
from sv2.job_errors import (
    INVALID_PAYOUT_DISTRIBUTION,
    MAX_COINBASE_PREFIX,
    SETTLEMENT_MODE_NOT_NEGOTIATED,
    JobRejected,
    param_error,
)
from sv2.messages.mining import SetCustomMiningJob
from sv2.messages.payouts import distribution_id_of
from sv2.payout_check import check_payout_outputs, distribution_rule
from sv2.template import read_txouts

MODE = "coinbase-only"
MAX_SCRIPT_SIG = 100  # consensus: a coinbase scriptSig is 2..100 bytes (bad-cb-length)


@dataclass(frozen=True, slots=True)
class CoinbaseOnlyGrant:
    """What the JD server knows of a live Coinbase-only token: the user it was allocated to,
    and whether that JD connection negotiated 0x4003 (settlement modes): without it only
    ``coinbase``-mode distributions can be settled (docs/extensions/0x4003 §2, §8)."""

    user_identifier: str
    settlement_modes: bool


def bip34_height_of(script: bytes) -> int | None:
    """The height a scriptSig's BIP-34 push names, if it starts with one in Core's minimal
    form (``CScript() << nHeight``: OP_0, OP_1..OP_16, or a CScriptNum push of 1-8 bytes)."""
    if not script:
        return None
    op = script[0]
    if op == 0:
        return 0
    if 0x51 <= op <= 0x60:
        return op - 0x50
    if 1 <= op <= 8 and len(script) > op:
        n = int.from_bytes(script[1 : 1 + op], "little")
        if bip34_height(n) == script[: 1 + op]:  # minimal and positive, as Core writes it
            return n
    return None


def is_witness_commitment(o: TxOut) -> bool:
    """BIP-141: an output whose script starts ``OP_RETURN 0x24 aa21a9ed``."""
    return len(o.script) >= 38 and o.script[:6] == WITNESS_COMMITMENT_HEADER


def rebuild_coinbase(msg: SetCustomMiningJob, extranonce_size: int) -> DeclaredCoinbase:
    """The coinbase ``msg`` describes, with ``extranonce_size`` zero bytes of extranonce (the
    channel's prefix plus what its miner rolls) after ``coinbase_prefix`` (§5.3.18), in the
    serialization a declaration has (BIP-141 marker, flag and witness kept, sv2-spec §3.7.2)."""
    raw = bytes(msg.coinbase_tx_outputs)
    try:
        count, pos = read_compact_size(raw, 0)
        outputs, pos = read_txouts(raw, pos, count)
    except (ValueError, IndexError, ValidationError) as exc:
        raise JobRejected(param_error("coinbase_tx_outputs"), f"undecodable: {exc}") from None
    if pos != len(raw) or not outputs:
        raise JobRejected(
            param_error("coinbase_tx_outputs"), "trailing bytes or no outputs in the vector"
        )
    prefix = bytes(msg.coinbase_prefix)
    script_len = len(prefix) + extranonce_size
    if not 2 <= script_len <= MAX_SCRIPT_SIG:
        raise JobRejected(
            param_error("coinbase_prefix"),
            f"the scriptSig would be {script_len} bytes; consensus allows 2..{MAX_SCRIPT_SIG}",
        )
    v = msg.coinbase_tx_version
    version = v - (1 << 32) if v >= 1 << 31 else v  # U32 on the wire, Core's signed int32
    witness = (WITNESS_RESERVED_VALUE,) if is_witness_commitment(outputs[-1]) else ()
    txin = TxIn(NULL_OUTPOINT, prefix + bytes(extranonce_size),
                msg.coinbase_tx_input_n_sequence, witness)
    tx = Tx(version, (txin,), tuple(outputs), msg.coinbase_tx_locktime)
    full = tx.serialize()
    head = full[:4] + (b"\x00\x01" if witness else b"") + b"\x01" + NULL_OUTPOINT.serialize()
    head += ser_compact_size(script_len) + prefix
    return DeclaredCoinbase(tx, head, full[len(head) + extranonce_size :], extranonce_size)


def check_coinbase_only(
    msg: SetCustomMiningJob,
    *,
    connection_id: int,
    user_identity: str,
    extranonce_size: int,
    book: DistributionBook,
    expected: ExpectedOutputs,
    now: float,
    pool_job: DeclaredJob | None,
    stale_tip: bool,
    settlement_modes: bool = False,
    wall_time: float | None = None,
) -> DeclaredJob:
    """The job a Coinbase-only ``msg`` commits the pool to (checks after the token's, in the
    module docstring's order). ``pool_job``: the pool's own newest job (its template);
    ``stale_tip``: ``msg.prev_hash`` is a tip the pool saw replaced; ``settlement_modes``: the
    token's JD connection negotiated 0x4003; ``wall_time``: the pool's clock (unix seconds)
    for the ``min_ntime`` bound (None: not checked). The job's ``revenue`` is
    the T the coinbase claims (what a found block pays); :func:`credited_revenue` is what its
    shares are credited at. Raises :class:`~sv2.job_errors.JobRejected`."""
    sent = distribution_id_of(msg)
    if sent is None:
        raise JobRejected(
            INVALID_PAYOUT_DISTRIBUTION,
            "Coinbase-only: SetCustomMiningJob must carry the distribution_id TLV (PR #203 §6)",
        )
    if stale_tip:
        raise JobRejected(param_error("prev_hash"), "a tip the chain already left")
    same = pool_job if pool_job is not None and pool_job.prev_hash == msg.prev_hash else None
    if same is not None and msg.nbits != same.bits:
        raise JobRejected(param_error("nbits"), f"the tip's next block needs {same.bits:#010x}")
    # No declaration to compare these with: what consensus refuses outright is refused
    # here, so no share is credited on a job whose blocks could never be valid.
    signed_version = msg.version - (1 << 32) if msg.version >= 1 << 31 else msg.version
    if signed_version < MIN_BLOCK_VERSION:
        raise JobRejected(param_error("version"),
                          f"block version {signed_version} is below {MIN_BLOCK_VERSION} (BIP-65)")
    if wall_time is not None and msg.min_ntime > wall_time + MAX_FUTURE_BLOCK_TIME:
        raise JobRejected(param_error("min_ntime"),
                          f"{msg.min_ntime} is more than {MAX_FUTURE_BLOCK_TIME} s past the "
                          "pool's clock: every block of the job would be time-too-new")
    prefix = bytes(msg.coinbase_prefix)
    height = bip34_height_of(prefix)
    if not 1 <= len(prefix) <= MAX_COINBASE_PREFIX or height is None or (
        same is not None and height != same.height
    ):
        raise JobRejected(
            param_error("coinbase_prefix"),
            "must be 1-8 bytes starting with the BIP-34 push of the next block's height",
        )
    coinbase = rebuild_coinbase(msg, extranonce_size)
    outputs = coinbase.tx.outputs
    if not is_witness_commitment(outputs[-1]):
        raise JobRejected(
            param_error("coinbase_tx_outputs"), "the last output must be the witness commitment"
        )
    revenue = sum(o.value for o in outputs)
    if not 0 < revenue <= MAX_MONEY:
        raise JobRejected(param_error("coinbase_tx_outputs"), f"the coinbase claims {revenue}")
    published = book.lookup(sent, now)  # stale- / invalid-payout-distribution
    if published.mode.name != "coinbase" and not settlement_modes:
        raise JobRejected(
            SETTLEMENT_MODE_NOT_NEGOTIATED,
            f"distribution {sent} settles in {published.mode.name} mode; negotiate 0x4003",
        )
    payouts = check_payout_outputs(outputs, revenue, distribution_rule(published, expected))
    # The pool holds the transactions only when they are its own template's (a JD client on a
    # node with the same mempool); with them, a block found on this job can be rebuilt here.
    txs: tuple[KnownTx, ...] = ()
    if same is not None and tuple(msg.merkle_path) == tuple(
        merkle_path([bytes(32), *(k.txid for k in same.txs)], 0)
    ):
        txs = same.txs
    return DeclaredJob(
        connection_id=connection_id,
        request_id=msg.request_id,
        token=bytes(msg.mining_job_token),
        user_identifier=user_identity,
        prev_hash=msg.prev_hash,
        bits=msg.nbits,
        version=msg.version,
        height=height,
        coinbase=coinbase,
        txs=txs,
        revenue=revenue,
        payout_outputs=payouts,
        distribution_id=published.distribution_id,
        mode=published.mode.name,
        distribution=published.distribution,
        fitted=published.fitted,
    )


def credited_revenue(
    claimed: int, height: int, prev_hash: bytes, pool_job: DeclaredJob | None, halving: int
) -> int:
    """The T a Coinbase-only job's shares are value-weighted by. The JD client claims T, but
    without its transactions the pool cannot check the fees in it: a client claiming fees it
    does not have would be credited more per share (its block would be invalid,
    ``bad-cb-amount``, but its shares would still count). So T is capped at what the pool's own
    newest template on the same ``prev_hash`` earns, the best revenue the pool knows to be
    real there; on another tip (one the pool has not seen yet) at the block subsidy plus the
    fees of the pool's newest template."""
    if pool_job is not None and pool_job.prev_hash == prev_hash:
        return min(claimed, pool_job.revenue)
    fees = 0
    if pool_job is not None:
        fees = max(0, pool_job.revenue - block_subsidy(pool_job.height, halving))
    return min(claimed, block_subsidy(height, halving) + fees)


__all__ = [
    "MODE",
    "CoinbaseOnlyGrant",
    "bip34_height_of",
    "check_coinbase_only",
    "credited_revenue",
    "is_witness_commitment",
    "rebuild_coinbase",
]
