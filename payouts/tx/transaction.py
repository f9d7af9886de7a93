"""Transactions: dataclasses, (de)serialization with and without witness, ids, weight, sigops.

Serialization follows Core's ``SerializeTransaction`` / ``UnserializeTransaction``
(primitives/transaction.h) and BIP-144: the extended format (marker 0x00, flag 0x01, witness
stacks after the outputs) is written only when some input has a non-empty witness. Parsing is
strict like Core's: truncated input, trailing bytes, an unknown flag or a superfluous witness
record are errors. Ids: ``txid`` = SHA256d of the non-witness serialization, ``wtxid`` of the
full one (BIP-141), both in internal byte order.

Written by hand (a ~25-line serializer, as libs.md §5 recommends) so that the bytes we commit to
in coinbases and CTV templates come from one small, reviewed place; outputs are
:class:`~payouts.tx.txout.TxOut`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from payouts.errors import ValidationError
from payouts.tx.compact import read_compact_size, ser_compact_size
from payouts.tx.hashes import display_hex, sha256d
from payouts.tx.output_scripts import legacy_sigops
from payouts.tx.txout import TxOut

WITNESS_SCALE_FACTOR = 4
SEQUENCE_FINAL = 0xFFFFFFFF
NULL_TXID = bytes(32)
NULL_INDEX = 0xFFFFFFFF


class TxDecodeError(ValidationError):
    """Raw bytes are not a well-formed transaction (or block)."""

    code = "tx-decode-error"


@dataclass(frozen=True, slots=True)
class OutPoint:
    """``COutPoint``: a txid in internal byte order and an output index."""

    txid: bytes
    n: int

    def __post_init__(self) -> None:
        if len(self.txid) != 32:
            raise ValueError("an outpoint txid is 32 bytes (internal byte order)")
        if not 0 <= self.n <= 0xFFFFFFFF:
            raise ValueError("an outpoint index is a uint32")

    def serialize(self) -> bytes:
        return self.txid + self.n.to_bytes(4, "little")

    @property
    def is_null(self) -> bool:
        """``COutPoint::IsNull``: the coinbase's outpoint."""
        return self.txid == NULL_TXID and self.n == NULL_INDEX

    def __str__(self) -> str:
        return f"{display_hex(self.txid)}:{self.n}"


NULL_OUTPOINT = OutPoint(NULL_TXID, NULL_INDEX)


@dataclass(frozen=True, slots=True)
class TxIn:
    """``CTxIn`` plus its witness stack (``CTxIn::scriptWitness``)."""

    prevout: OutPoint
    script_sig: bytes = b""
    sequence: int = SEQUENCE_FINAL
    witness: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.sequence <= 0xFFFFFFFF:
            raise ValueError("nSequence is a uint32")
        if not isinstance(self.witness, tuple):
            object.__setattr__(self, "witness", tuple(self.witness))

    def serialize(self) -> bytes:
        """Non-witness serialization: outpoint, scriptSig, nSequence."""
        return (
            self.prevout.serialize()
            + ser_compact_size(len(self.script_sig))
            + self.script_sig
            + self.sequence.to_bytes(4, "little")
        )

    def serialize_witness(self) -> bytes:
        """The witness stack as BIP-144 writes it: item count, then length-prefixed items."""
        return ser_compact_size(len(self.witness)) + b"".join(
            ser_compact_size(len(w)) + w for w in self.witness
        )


@dataclass(frozen=True, slots=True)
class Tx:
    """``CTransaction``. ``version`` is the signed int32 Core serializes (BIP-119 hashes it
    signed; BIP-68 reads it unsigned), ``locktime`` a uint32."""

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int = 0
    _cache: dict[str, bytes] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not -(1 << 31) <= self.version < (1 << 31):
            raise ValueError("nVersion is a signed int32")
        if not 0 <= self.locktime <= 0xFFFFFFFF:
            raise ValueError("nLockTime is a uint32")
        for name in ("inputs", "outputs"):
            if not isinstance(getattr(self, name), tuple):
                object.__setattr__(self, name, tuple(getattr(self, name)))

    # -- serialization ------------------------------------------------------------------------

    @property
    def has_witness(self) -> bool:
        """``CTransaction::HasWitness``."""
        return any(i.witness for i in self.inputs)

    def serialize(self, with_witness: bool = True) -> bytes:
        """``SerializeTransaction``: BIP-144 extended format iff ``with_witness`` and a witness
        is present (Core never writes an empty witness section)."""
        key = "wit" if with_witness and self.has_witness else "base"
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        parts = [(self.version & 0xFFFFFFFF).to_bytes(4, "little")]
        if key == "wit":
            parts.append(b"\x00\x01")
        parts.append(ser_compact_size(len(self.inputs)))
        parts.extend(i.serialize() for i in self.inputs)
        parts.append(ser_compact_size(len(self.outputs)))
        parts.extend(o.serialize() for o in self.outputs)
        if key == "wit":
            parts.extend(i.serialize_witness() for i in self.inputs)
        parts.append(self.locktime.to_bytes(4, "little"))
        raw = b"".join(parts)
        self._cache[key] = raw
        return raw

    def serialize_no_witness(self) -> bytes:
        return self.serialize(with_witness=False)

    @classmethod
    def parse(cls, raw: bytes) -> Tx:
        """Parse one transaction; the whole of ``raw`` must be consumed."""
        tx, pos = parse_tx_at(raw, 0)
        if pos != len(raw):
            raise TxDecodeError(f"{len(raw) - pos} trailing bytes after the transaction")
        return tx

    # -- ids ----------------------------------------------------------------------------------

    @property
    def txid(self) -> bytes:
        """``CTransaction::GetHash``: SHA256d of the non-witness serialization (internal order)."""
        return sha256d(self.serialize(with_witness=False))

    @property
    def wtxid(self) -> bytes:
        """``CTransaction::GetWitnessHash`` (BIP-141); equals the txid without witness."""
        return sha256d(self.serialize(with_witness=True))

    @property
    def txid_hex(self) -> str:
        return display_hex(self.txid)

    @property
    def wtxid_hex(self) -> str:
        return display_hex(self.wtxid)

    # -- size ---------------------------------------------------------------------------------

    @property
    def base_size(self) -> int:
        return len(self.serialize(with_witness=False))

    @property
    def total_size(self) -> int:
        return len(self.serialize(with_witness=True))

    @property
    def weight(self) -> int:
        """``GetTransactionWeight`` (BIP-141): base size × 3 + total size."""
        return self.base_size * (WITNESS_SCALE_FACTOR - 1) + self.total_size

    @property
    def vsize(self) -> int:
        """Virtual size: weight / 4 rounded up (BIP-141). Core's policy
        ``GetVirtualTransactionSize`` may raise it for sigop-heavy txs (``-bytespersigop``);
        that is policy and not counted here."""
        return (self.weight + WITNESS_SCALE_FACTOR - 1) // WITNESS_SCALE_FACTOR

    # -- consensus helpers --------------------------------------------------------------------

    @property
    def is_coinbase(self) -> bool:
        """``CTransaction::IsCoinBase``: exactly one input, with the null outpoint."""
        return len(self.inputs) == 1 and self.inputs[0].prevout.is_null

    def legacy_sigops(self) -> int:
        """``GetLegacySigOpCount`` (consensus/tx_verify.cpp): inaccurate-mode sigops of every
        scriptSig and scriptPubKey."""
        return sum(legacy_sigops(i.script_sig) for i in self.inputs) + sum(
            legacy_sigops(o.script) for o in self.outputs
        )

    def output_value(self) -> int:
        """``CTransaction::GetValueOut`` (without the MoneyRange checks)."""
        return sum(o.value for o in self.outputs)

    def with_input_witness(self, index: int, witness: Iterable[bytes]) -> Tx:
        """A copy of this tx whose input ``index`` carries ``witness`` (e.g. after signing)."""
        ins = list(self.inputs)
        old = ins[index]
        ins[index] = TxIn(old.prevout, old.script_sig, old.sequence, tuple(witness))
        return Tx(self.version, tuple(ins), self.outputs, self.locktime)


# -- parsing ----------------------------------------------------------------------------------


def _take(raw: bytes, pos: int, n: int, what: str) -> tuple[bytes, int]:
    end = pos + n
    if end > len(raw):
        raise TxDecodeError(f"truncated {what}: need {n} bytes at offset {pos}")
    return raw[pos:end], end


def read_count(raw: bytes, pos: int, what: str, min_item: int) -> tuple[int, int]:
    try:
        n, pos = read_compact_size(raw, pos)
    except ValueError as e:
        raise TxDecodeError(f"{what}: {e}") from None
    # Each item needs at least `min_item` bytes: a count beyond that is a truncation (and keeps
    # a hostile count from making us allocate or loop before we notice).
    if n * min_item > len(raw) - pos:
        raise TxDecodeError(f"truncated {what}: count {n} exceeds the remaining bytes")
    return n, pos


def _bytes(raw: bytes, pos: int, what: str) -> tuple[bytes, int]:
    n, pos = read_count(raw, pos, what, 1)
    return _take(raw, pos, n, what)


def parse_tx_at(raw: bytes, pos: int) -> tuple[Tx, int]:
    """``UnserializeTransaction`` (allow witness) starting at ``pos``; returns (tx, new_pos)."""
    head, pos = _take(raw, pos, 4, "nVersion")
    version = int.from_bytes(head, "little", signed=True)
    n_in, pos = read_count(raw, pos, "input count", 41)
    flags = 0
    if n_in == 0:
        # BIP-144: an empty vin is the marker; the next byte is the flag.
        fb, pos = _take(raw, pos, 1, "segwit flag")
        flags = fb[0]
        if flags == 0:
            raise TxDecodeError("segwit marker with a zero flag byte")
        n_in, pos = read_count(raw, pos, "input count", 41)
    prevs: list[tuple[OutPoint, bytes, int]] = []
    for _ in range(n_in):
        txid, pos = _take(raw, pos, 32, "outpoint")
        idx, pos = _take(raw, pos, 4, "outpoint index")
        script_sig, pos = _bytes(raw, pos, "scriptSig")
        seq, pos = _take(raw, pos, 4, "nSequence")
        outpoint = OutPoint(txid, int.from_bytes(idx, "little"))
        prevs.append((outpoint, script_sig, int.from_bytes(seq, "little")))
    n_out, pos = read_count(raw, pos, "output count", 9)
    outputs: list[TxOut] = []
    for _ in range(n_out):
        val, pos = _take(raw, pos, 8, "output value")
        script, pos = _bytes(raw, pos, "scriptPubKey")
        outputs.append(TxOut(int.from_bytes(val, "little", signed=True), script))
    witnesses: list[tuple[bytes, ...]] = [() for _ in prevs]
    if flags & 1:
        flags ^= 1
        for i in range(n_in):
            n_items, pos = read_count(raw, pos, "witness stack", 1)
            items = []
            for _ in range(n_items):
                item, pos = _bytes(raw, pos, "witness item")
                items.append(item)
            witnesses[i] = tuple(items)
        if not any(witnesses):
            raise TxDecodeError("superfluous witness record")
    if flags:
        raise TxDecodeError("unknown transaction optional data (flag byte)")
    lt, pos = _take(raw, pos, 4, "nLockTime")
    inputs = tuple(TxIn(p, s, q, w) for (p, s, q), w in zip(prevs, witnesses, strict=True))
    return Tx(version, inputs, tuple(outputs), int.from_bytes(lt, "little")), pos


def tx_outputs(values_scripts: Sequence[tuple[int, bytes]]) -> tuple[TxOut, ...]:
    """Convenience: build outputs from (value, script) pairs."""
    return tuple(TxOut(v, s) for v, s in values_scripts)
