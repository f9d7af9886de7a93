"""The template a job is built on, from a node or from a Template Provider: below the roles,
because the JD client declares on it, the Template Distribution client receives it and our
Template Provider sends it.

Two sources, one shape (:class:`JobTemplate`):

- :meth:`JobTemplate.from_block_template`: a :class:`~payouts.node.interface.BlockTemplate`
  (``getblocktemplate`` decoded, or the kernel node's); T is ``coinbase_value`` (subsidy + fees)
  and the only template output is the BIP-141 witness commitment over the template's wtxids;
- :meth:`JobTemplate.from_tdp`: Template Distribution messages (sv2-spec
  07-Template-Distribution-Protocol.md §7.2-§7.5): ``NewTemplate`` (T =
  ``coinbase_tx_value_remaining``; ``coinbase_tx_outputs`` is ``coinbase_tx_outputs_count``
  TxOuts concatenated, *without* a CompactSize count, the witness commitment last),
  ``SetNewPrevHash`` (prev hash, time, nBits) and ``RequestTransactionData.Success`` (the
  transactions, whose wtxids DeclareMiningJob carries).

The reverse, :meth:`JobTemplate.new_template` / :meth:`JobTemplate.set_new_prev_hash`, is what
our own Template Provider (:mod:`sv2.tdp.server`) sends. A JD client takes its templates from a
:class:`TemplateSource`: :class:`NodeTemplates` (a node) or
:class:`sv2.tdp.TemplateDistributionClient` (a TP).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from payouts.errors import ValidationError
from payouts.node.interface import BlockTemplate, Node
from payouts.tx.block import bits_to_target
from payouts.tx.coinbase import (
    WITNESS_COMMITMENT_HEADER,
    WITNESS_RESERVED_VALUE,
    witness_commitment,
    witness_commitment_output,
)
from payouts.tx.compact import read_compact_size
from payouts.tx.merkle import merkle_path, root_from_path
from payouts.tx.script import bip34_height
from payouts.tx.transaction import SEQUENCE_FINAL, Tx
from payouts.tx.txout import TxOut
from sv2.messages.template_distribution import NewTemplate, SetNewPrevHash

if TYPE_CHECKING:
    from sv2.solution import Solution


class TemplateError(ValidationError):
    """A template the client cannot declare a job on."""

    code = "invalid-template"


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """Everything needed to build, declare and mine one job.

    ``revenue`` is T (PR #203 §5): what the coinbase distributes. ``outputs`` are the template's
    own coinbase outputs, carried unchanged after the payout outputs (PR #203 output order,
    the witness commitment last). ``transactions`` are in block order, coinbase excluded.
    """

    version: int
    prev_hash: bytes  # internal byte order
    height: int
    bits: int
    time: int
    revenue: int
    outputs: tuple[TxOut, ...]
    transactions: tuple[Tx, ...]
    coinbase_version: int = 2
    coinbase_sequence: int = SEQUENCE_FINAL
    coinbase_locktime: int = 0
    template_id: int | None = None  # the TP's id, for SubmitSolution
    # NewTemplate.coinbase_prefix as the TP sent it (§7.2: the scriptSig starts with it); empty
    # when the template came from a node: the BIP-34 height push alone.
    coinbase_prefix: bytes = b""
    # The coinbase witness reserved value the template's witness commitment was computed with
    # (BIP-141): sv2-tp sends it in RequestTransactionData.Success.excess_data; a node's
    # getblocktemplate commitment uses zeros (Core's GenerateCoinbaseCommitment).
    witness_reserved: bytes = WITNESS_RESERVED_VALUE

    def __post_init__(self) -> None:
        if len(self.prev_hash) != 32:
            raise TemplateError("prev_hash is 32 bytes")
        if self.revenue <= 0:
            raise TemplateError(f"template revenue must be positive, got {self.revenue}")
        if self.height < 1:
            raise TemplateError("a template builds a block at height >= 1")
        if self.coinbase_prefix and not self.coinbase_prefix.startswith(
                bip34_height(self.height)):
            raise TemplateError("coinbase_prefix does not start with the BIP-34 height push")
        if len(self.witness_reserved) != 32:
            raise TemplateError("the witness reserved value is 32 bytes (BIP-141)")

    @property
    def script_prefix(self) -> bytes:
        """What the coinbase scriptSig starts with: the TP's ``coinbase_prefix`` as sent, else
        the BIP-34 height push."""
        return self.coinbase_prefix or bip34_height(self.height)

    @property
    def wtxids(self) -> tuple[bytes, ...]:
        """DeclareMiningJob.wtxid_list (sv2-spec §6.4.4, PR #171): internal byte order."""
        return tuple(t.wtxid for t in self.transactions)

    @property
    def txids(self) -> tuple[bytes, ...]:
        return tuple(t.txid for t in self.transactions)

    def merkle_path(self) -> list[bytes]:
        """The coinbase's merkle path (SV2 ``merkle_path``); the coinbase leaf is a placeholder
        because the path never includes it."""
        return merkle_path([bytes(32), *self.txids], 0)

    def merkle_root(self, coinbase_txid: bytes) -> bytes:
        return root_from_path(coinbase_txid, self.merkle_path(), 0)

    @classmethod
    def from_block_template(cls, t: BlockTemplate) -> JobTemplate:
        """From a node's ``block_template()``: the witness commitment is computed here over the
        template's wtxids (what Core's ``default_witness_commitment`` holds)."""
        txs = tuple(x.tx for x in t.transactions)
        commitment = witness_commitment_output(witness_commitment([x.wtxid for x in txs]))
        return cls(
            version=t.version,
            prev_hash=t.prev_hash,
            height=t.height,
            bits=t.bits,
            time=t.curtime,
            revenue=t.coinbase_value,
            outputs=(commitment,),
            transactions=txs,
        )

    @classmethod
    def from_tdp(
        cls,
        new_template: NewTemplate,
        prev_hash: SetNewPrevHash,
        transactions: Sequence[bytes | Tx],
        excess_data: bytes = b"",
    ) -> JobTemplate:
        """From TDP messages. ``transactions`` is ``RequestTransactionData.Success
        .transaction_list`` (raw) or parsed txs. The block height is read from the BIP-34 push
        at the start of ``NewTemplate.coinbase_prefix``, which the coinbase scriptSig then
        starts with exactly as sent (§7.2: it may hold more than the height); the merkle path
        the TP sent is checked against the transactions (a mismatch means the list belongs to
        another template).

        ``excess_data`` (``RequestTransactionData.Success``): where sv2-tp carries the 32-byte
        coinbase witness reserved value (reference/interop.md); empty means zeros. The
        template's witness commitment is checked against the transactions' wtxids and that
        value: a coinbase built with any other value would make the block invalid
        (``bad-witness-merkle-match``).

        A future template (``future_template``) needs the SetNewPrevHash that names it; a
        non-future one uses the last SetNewPrevHash received (sv2-spec §7.2)."""
        # §7.2/§7.3: a future template becomes active only through the SetNewPrevHash naming
        # it; a non-future one builds on the last SetNewPrevHash, whatever template it named.
        if new_template.future_template and prev_hash.template_id != new_template.template_id:
            raise TemplateError(
                f"future template {new_template.template_id} was not activated: "
                f"SetNewPrevHash names template {prev_hash.template_id}"
            )
        txs = tuple(x if isinstance(x, Tx) else Tx.parse(bytes(x)) for x in transactions)
        outputs = parse_template_outputs(
            new_template.coinbase_tx_outputs, new_template.coinbase_tx_outputs_count
        )
        tmpl = cls(
            version=new_template.version,
            prev_hash=prev_hash.prev_hash,
            height=height_from_coinbase_prefix(new_template.coinbase_prefix),
            bits=prev_hash.n_bits,
            time=prev_hash.header_timestamp,
            revenue=new_template.coinbase_tx_value_remaining,
            outputs=outputs,
            transactions=txs,
            coinbase_version=new_template.coinbase_tx_version,
            coinbase_sequence=new_template.coinbase_tx_input_sequence,
            coinbase_locktime=new_template.coinbase_tx_locktime,
            template_id=new_template.template_id,
            coinbase_prefix=bytes(new_template.coinbase_prefix),
            witness_reserved=_witness_reserved(excess_data),
        )
        if tuple(new_template.merkle_path) != tuple(tmpl.merkle_path()):
            raise TemplateError("the transactions do not match NewTemplate.merkle_path")
        commitment = find_witness_commitment_output(outputs)
        if commitment is not None and commitment != witness_commitment(
                tmpl.wtxids, tmpl.witness_reserved):
            raise TemplateError(
                "the template's witness commitment does not match its transactions with the "
                f"witness reserved value {tmpl.witness_reserved.hex()} (excess_data)")
        return tmpl

    def new_template(self, template_id: int, *, future: bool) -> NewTemplate:
        """This template as a TP's ``NewTemplate`` (sv2-spec §7.2): ``coinbase_prefix`` is the
        BIP-34 height push, ``coinbase_tx_outputs`` the template's outputs without a count
        prefix (witness commitment last), T = ``revenue``."""
        return NewTemplate(
            template_id=template_id,
            future_template=future,
            version=self.version & 0xFFFFFFFF,
            coinbase_tx_version=self.coinbase_version,
            coinbase_prefix=self.script_prefix,
            coinbase_tx_input_sequence=self.coinbase_sequence,
            coinbase_tx_value_remaining=self.revenue,
            coinbase_tx_outputs_count=len(self.outputs),
            coinbase_tx_outputs=b"".join(o.serialize() for o in self.outputs),
            coinbase_tx_locktime=self.coinbase_locktime,
            merkle_path=tuple(self.merkle_path()),
        )

    def set_new_prev_hash(self, template_id: int) -> SetNewPrevHash:
        """The TDP ``SetNewPrevHash`` (sv2-spec §7.3) activating ``template_id`` on this
        template's tip; ``target`` is the nBits target as a U256 (little-endian)."""
        return SetNewPrevHash(
            template_id=template_id,
            prev_hash=self.prev_hash,
            header_timestamp=self.time,
            n_bits=self.bits,
            target=bits_to_target(self.bits).to_bytes(32, "little"),
        )


class TemplateSource(Protocol):
    """Where a JD client gets its templates (issue #4: "from a node's getblocktemplate, or a
    Template Provider's NewTemplate") and where a found block goes besides the JDS."""

    async def template(self) -> JobTemplate:
        """The current best template (waits for one if there is none yet)."""
        ...

    async def submit_solution(self, template: JobTemplate, solution: Solution) -> str | None:
        """Hand a solved block over: ``None`` if it was accepted (a node) or sent (a TP's
        SubmitSolution has no reply, sv2-spec §7.7); else the reject reason."""
        ...


class NodeTemplates:
    """Templates from a node's ``block_template()`` (getblocktemplate or the kernel's)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def template(self) -> JobTemplate:
        return JobTemplate.from_block_template(await self.node.block_template())

    async def submit_solution(self, template: JobTemplate, solution: Solution) -> str | None:
        return await self.node.submit_block(solution.block.serialize())


def _witness_reserved(excess_data: bytes) -> bytes:
    """The coinbase witness reserved value in ``RequestTransactionData.Success.excess_data``
    (sv2-tp: exactly 32 bytes; empty: zeros, as Core's getblocktemplate)."""
    data = bytes(excess_data)
    if not data:
        return WITNESS_RESERVED_VALUE
    if len(data) != 32:
        raise TemplateError(
            f"RequestTransactionData.Success.excess_data is {len(data)} bytes; a Template "
            "Provider sends the 32-byte coinbase witness reserved value there")
    return data


def find_witness_commitment_output(outputs: Sequence[TxOut]) -> bytes | None:
    """The 32-byte commitment of the last BIP-141 commitment output, if any."""
    for o in reversed(outputs):
        if len(o.script) >= 38 and o.script[:6] == WITNESS_COMMITMENT_HEADER:
            return o.script[6:38]
    return None


def read_txouts(raw: bytes, pos: int, count: int) -> tuple[list[TxOut], int]:
    """``count`` serialized TxOuts back to back from ``pos`` (8-byte amount, CompactSize script
    length, script); returns them and the position after. ``ValueError`` when they do not fit
    in ``raw``. The SV2 ``coinbase_tx_outputs`` fields carry them with or without a count in
    front (the three encodings of reference/sv2.md §1.6)."""
    out: list[TxOut] = []
    for _ in range(count):
        if pos + 8 > len(raw):
            raise ValueError("truncated amount")
        value = int.from_bytes(raw[pos : pos + 8], "little")
        n, p = read_compact_size(raw, pos + 8)
        if p + n > len(raw):
            raise ValueError("truncated script")
        out.append(TxOut(value, bytes(raw[p : p + n])))
        pos = p + n
    return out, pos


def parse_template_outputs(raw: bytes, count: int) -> tuple[TxOut, ...]:
    """``NewTemplate.coinbase_tx_outputs``: ``count`` TxOuts back to back, no CompactSize count
    (sv2-spec §7.2)."""
    try:
        out, pos = read_txouts(raw, 0, count)
    except ValueError as exc:
        raise TemplateError(f"NewTemplate.coinbase_tx_outputs: {exc}") from None
    if pos != len(raw):
        raise TemplateError(
            f"NewTemplate.coinbase_tx_outputs has {len(raw) - pos} bytes after {count} outputs"
        )
    return tuple(out)


def height_from_coinbase_prefix(prefix: bytes) -> int:
    """The BIP-34 height a ``coinbase_prefix`` starts with (``CScript() << nHeight``: OP_1..
    OP_16 for 1..16, else a minimal CScriptNum push)."""
    if not prefix:
        raise TemplateError("NewTemplate.coinbase_prefix is empty (no BIP-34 height)")
    op = prefix[0]
    if 0x51 <= op <= 0x60:
        return op - 0x50
    if not 1 <= op <= 8 or len(prefix) < 1 + op:
        raise TemplateError("NewTemplate.coinbase_prefix does not start with a BIP-34 height")
    n = int.from_bytes(prefix[1 : 1 + op], "little")
    if prefix[op] & 0x80:
        raise TemplateError("negative BIP-34 height")
    return n


__all__ = [
    "JobTemplate",
    "NodeTemplates",
    "TemplateError",
    "TemplateSource",
    "height_from_coinbase_prefix",
    "parse_template_outputs",
    "read_txouts",
]
