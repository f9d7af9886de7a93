"""Coinbase transactions: BIP-34 height, extranonce space, BIP-141 witness commitment.

The coinbase scriptSig is laid out as

    BIP-34 height push  ||  [push of the pool tag]  ||  push opcode  ||  <extranonce>

so that the extranonce is the last thing in the scriptSig and the serialized coinbase splits
cleanly into ``prefix || extranonce || suffix``: exactly the ``coinbase_tx_prefix`` /
``coinbase_tx_suffix`` pair Stratum V2's DeclareMiningJob carries (segwit serialization), and
the stripped pair a mining job needs to recompute the txid. The push opcode in front of the
extranonce keeps the scriptSig a well-formed push-only script (not required by consensus for a
coinbase, but explorers and Core's ``ScriptToAsmStr`` then decode it).

Consensus rules enforced here before anything is built (Core ``CheckTransaction``
``bad-cb-length``: scriptSig 2..100 bytes; ``ContextualCheckBlock`` ``bad-cb-height``: the
scriptSig starts with ``CScript() << nHeight``). The witness commitment follows BIP-141 /
Core's ``GenerateCoinbaseCommitment``: output script ``OP_RETURN 0x24 aa21a9ed || commitment``
with commitment = SHA256d(witness merkle root || witness reserved value), appended as the last
output, and the coinbase witness is the single 32-byte reserved value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payouts.errors import ValidationError
from payouts.tx.compact import ser_compact_size
from payouts.tx.hashes import sha256d
from payouts.tx.merkle import witness_merkle_root
from payouts.tx.script import bip34_height, push_data
from payouts.tx.transaction import NULL_OUTPOINT, SEQUENCE_FINAL, Tx, TxIn
from payouts.tx.txout import TxOut

MIN_COINBASE_SCRIPTSIG = 2
MAX_COINBASE_SCRIPTSIG = 100
WITNESS_COMMITMENT_HEADER = bytes.fromhex("6a24aa21a9ed")
WITNESS_RESERVED_VALUE = bytes(32)
COIN = 100_000_000
HALVING_INTERVAL_MAINNET = 210_000
HALVING_INTERVAL_REGTEST = 150


class CoinbaseError(ValidationError):
    code = "invalid-coinbase"


def block_subsidy(height: int, halving_interval: int = HALVING_INTERVAL_MAINNET) -> int:
    """``GetBlockSubsidy`` (validation.cpp): 50 BTC halved every interval, 0 after 64 halvings."""
    halvings = height // halving_interval
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


def witness_commitment(wtxids: Sequence[bytes], reserved: bytes = WITNESS_RESERVED_VALUE) -> bytes:
    """BIP-141 commitment: SHA256d(witness merkle root || reserved value). ``wtxids`` are the
    block's non-coinbase wtxids in block order."""
    return sha256d(witness_merkle_root(wtxids) + reserved)


def witness_commitment_output(commitment: bytes) -> TxOut:
    """The 0-value ``OP_RETURN aa21a9ed<commitment>`` output (47 bytes, 188 WU)."""
    if len(commitment) != 32:
        raise CoinbaseError("a witness commitment is 32 bytes")
    return TxOut(0, WITNESS_COMMITMENT_HEADER + commitment)


def find_witness_commitment(tx: Tx) -> int | None:
    """``GetWitnessCommitmentIndex``: the *last* output matching the commitment pattern."""
    found = None
    for i, o in enumerate(tx.outputs):
        if len(o.script) >= 38 and o.script[:6] == WITNESS_COMMITMENT_HEADER:
            found = i
    return found


@dataclass(frozen=True, slots=True)
class CoinbaseParts:
    """A coinbase split around its extranonce.

    ``prefix``/``suffix``: segwit serialization (SV2 DeclareMiningJob ``coinbase_tx_prefix`` /
    ``coinbase_tx_suffix``); ``stripped_prefix``/``stripped_suffix``: the non-witness
    serialization whose SHA256d is the txid. Equal to the segwit ones when no witness.
    """

    prefix: bytes
    suffix: bytes
    stripped_prefix: bytes
    stripped_suffix: bytes
    extranonce_size: int

    def serialize(self, extranonce: bytes) -> bytes:
        self._check(extranonce)
        return self.prefix + extranonce + self.suffix

    def txid(self, extranonce: bytes) -> bytes:
        self._check(extranonce)
        return sha256d(self.stripped_prefix + extranonce + self.stripped_suffix)

    def tx(self, extranonce: bytes) -> Tx:
        return Tx.parse(self.serialize(extranonce))

    def _check(self, extranonce: bytes) -> None:
        if len(extranonce) != self.extranonce_size:
            raise CoinbaseError(
                f"extranonce is {len(extranonce)} bytes, this coinbase reserves "
                f"{self.extranonce_size}"
            )


def coinbase_script_sig_prefix(height: int, tag: bytes, extranonce_size: int, *,
                               script_prefix: bytes | None = None) -> bytes:
    """The scriptSig bytes before the extranonce: height push (or ``script_prefix``, a
    Template Provider's ``NewTemplate.coinbase_prefix``, placed as sent: sv2-spec §7.2; it
    must start with the BIP-34 height push), tag push, extranonce push op."""
    if not 0 <= extranonce_size <= 75:
        # A single direct-push opcode keeps the extranonce at a fixed offset; 75 is its max.
        raise CoinbaseError("extranonce_size must be 0..75 bytes")
    start = bip34_height(height)
    if script_prefix is not None:
        if not script_prefix.startswith(start):
            raise CoinbaseError(
                f"coinbase prefix {script_prefix.hex()} does not start with the BIP-34 height "
                f"push of height {height} ({start.hex()}; bad-cb-height)")
        start = script_prefix
    head = start + (push_data(tag) if tag else b"")
    if extranonce_size:
        head += bytes((extranonce_size,))
    total = len(head) + extranonce_size
    if not MIN_COINBASE_SCRIPTSIG <= total <= MAX_COINBASE_SCRIPTSIG:
        raise CoinbaseError(
            f"coinbase scriptSig would be {total} bytes; consensus allows 2..100 (bad-cb-length)"
        )
    return head


def build_coinbase_parts(
    height: int,
    outputs: Sequence[TxOut],
    *,
    extranonce_size: int = 8,
    tag: bytes = b"",
    commitment: bytes | None = None,
    version: int = 2,
    locktime: int = 0,
    sequence: int = SEQUENCE_FINAL,
    script_prefix: bytes | None = None,
    witness_reserved: bytes = WITNESS_RESERVED_VALUE,
) -> CoinbaseParts:
    """Build a coinbase paying ``outputs`` at ``height`` with ``extranonce_size`` bytes of
    extranonce space. If ``commitment`` (see :func:`witness_commitment`) is given, the
    commitment output is appended last and the input gets the 32-byte reserved value as its
    witness, making this a segwit coinbase; without it no witness is written (legal only for
    blocks without witness data). ``script_prefix``: the scriptSig's start as a Template
    Provider sent it (:func:`coinbase_script_sig_prefix`); ``witness_reserved``: the 32-byte
    witness reserved value the ``commitment`` was computed with (BIP-141; sv2-tp sends it in
    ``RequestTransactionData.Success.excess_data``)."""
    if len(witness_reserved) != 32:
        raise CoinbaseError("the witness reserved value is 32 bytes (BIP-141)")
    if not outputs and commitment is None:
        raise CoinbaseError("a coinbase needs at least one output (bad-txns-vout-empty)")
    for i, o in enumerate(outputs):
        if o.value < 0:
            raise CoinbaseError(f"output {i} has a negative value")
    head = coinbase_script_sig_prefix(height, tag, extranonce_size, script_prefix=script_prefix)
    outs = list(outputs)
    if commitment is not None:
        outs.append(witness_commitment_output(commitment))
    script_len = len(head) + extranonce_size
    ver = (version & 0xFFFFFFFF).to_bytes(4, "little")
    body_in = b"\x01" + NULL_OUTPOINT.serialize() + ser_compact_size(script_len) + head
    outputs_ser = ser_compact_size(len(outs)) + b"".join(o.serialize() for o in outs)
    tail = sequence.to_bytes(4, "little") + outputs_ser
    lt = locktime.to_bytes(4, "little")
    stripped_prefix = ver + body_in
    stripped_suffix = tail + lt
    if commitment is None:
        return CoinbaseParts(
            stripped_prefix, stripped_suffix, stripped_prefix, stripped_suffix, extranonce_size
        )
    witness = b"\x01" + ser_compact_size(32) + witness_reserved
    return CoinbaseParts(
        ver + b"\x00\x01" + body_in,
        tail + witness + lt,
        stripped_prefix,
        stripped_suffix,
        extranonce_size,
    )


def build_coinbase(
    height: int,
    outputs: Sequence[TxOut],
    extranonce: bytes = b"",
    *,
    tag: bytes = b"",
    commitment: bytes | None = None,
    version: int = 2,
    locktime: int = 0,
) -> Tx:
    """The coinbase as a :class:`Tx` with ``extranonce`` filled in (see
    :func:`build_coinbase_parts`)."""
    parts = build_coinbase_parts(
        height,
        outputs,
        extranonce_size=len(extranonce),
        tag=tag,
        commitment=commitment,
        version=version,
        locktime=locktime,
    )
    script_sig = coinbase_script_sig_prefix(height, tag, len(extranonce)) + extranonce
    witness = (WITNESS_RESERVED_VALUE,) if commitment is not None else ()
    outs = list(outputs)
    if commitment is not None:
        outs.append(witness_commitment_output(commitment))
    txin = TxIn(NULL_OUTPOINT, script_sig, SEQUENCE_FINAL, witness)
    tx = Tx(version, (txin,), tuple(outs), locktime)
    # Two constructions of the same bytes: a cheap self-check that prefix/suffix stay in sync.
    assert tx.serialize() == parts.serialize(extranonce)
    return tx
