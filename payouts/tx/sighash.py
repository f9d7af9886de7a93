"""BIP-341 signature hash (``SignatureHashSchnorr`` in Core's script/interpreter.cpp).

Implements ``SigMsg(hash_type, ext_flag)`` for key-path spends (ext_flag 0) and the BIP-342
tapscript extension (ext_flag 1: tapleaf hash, key version 0, codeseparator position), with
all six non-default hash types and the optional annex. Written in-house because embit 0.8.0
gets SINGLE and ANYONECANPAY wrong and python-bitcoinlib has no taproot sighash (libs.md §5);
checked against the 7 ``keyPathSpending`` cases of BIP-341's wallet-test-vectors.json and
against libbitcoinkernel's verifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payouts.errors import ValidationError
from payouts.tx.compact import ser_compact_size
from payouts.tx.hashes import sha256, tagged_hash
from payouts.tx.transaction import Tx
from payouts.tx.txout import TxOut

SIGHASH_DEFAULT = 0x00
SIGHASH_ALL = 0x01
SIGHASH_NONE = 0x02
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80
VALID_TAPROOT_HASH_TYPES = frozenset({0x00, 0x01, 0x02, 0x03, 0x81, 0x82, 0x83})
TAPSCRIPT_KEY_VERSION = 0x00


class SighashError(ValidationError):
    code = "invalid-sighash"


@dataclass(frozen=True, slots=True)
class TaprootSighashCache:
    """The per-transaction SHA256s of BIP-341 (``PrecomputedTransactionData``): computed once so
    signing n inputs costs O(n), not O(n²)."""

    sha_prevouts: bytes
    sha_amounts: bytes
    sha_scriptpubkeys: bytes
    sha_sequences: bytes
    sha_outputs: bytes

    @classmethod
    def build(cls, tx: Tx, spent_outputs: Sequence[TxOut]) -> TaprootSighashCache:
        if len(spent_outputs) != len(tx.inputs):
            raise SighashError(
                f"{len(spent_outputs)} spent outputs for {len(tx.inputs)} inputs; BIP-341 "
                "commits to every spent output"
            )
        return cls(
            sha256(b"".join(i.prevout.serialize() for i in tx.inputs)),
            sha256(b"".join(o.value.to_bytes(8, "little") for o in spent_outputs)),
            sha256(b"".join(ser_compact_size(len(o.script)) + o.script for o in spent_outputs)),
            sha256(b"".join(i.sequence.to_bytes(4, "little") for i in tx.inputs)),
            sha256(b"".join(o.serialize() for o in tx.outputs)),
        )


def taproot_sigmsg(
    tx: Tx,
    input_index: int,
    spent_outputs: Sequence[TxOut],
    hash_type: int = SIGHASH_DEFAULT,
    *,
    annex: bytes | None = None,
    leaf_hash: bytes | None = None,
    codesep_pos: int = 0xFFFFFFFF,
    cache: TaprootSighashCache | None = None,
) -> bytes:
    """The BIP-341 ``SigMsg`` (with the BIP-342 extension when ``leaf_hash`` is given), prefixed
    by the epoch byte 0x00: the preimage of the TapSighash tagged hash."""
    if hash_type not in VALID_TAPROOT_HASH_TYPES:
        raise SighashError(f"hash_type 0x{hash_type:02x} is not valid for taproot")
    if not 0 <= input_index < len(tx.inputs):
        raise SighashError(f"input index {input_index} out of range")
    if annex is not None and annex[:1] != b"\x50":
        raise SighashError("an annex starts with 0x50")
    c = cache or TaprootSighashCache.build(tx, spent_outputs)
    out_type = SIGHASH_ALL if hash_type == SIGHASH_DEFAULT else hash_type & 0x03
    anyone = bool(hash_type & SIGHASH_ANYONECANPAY)
    ext_flag = 0 if leaf_hash is None else 1
    m = [
        b"\x00",  # epoch
        bytes((hash_type,)),
        (tx.version & 0xFFFFFFFF).to_bytes(4, "little"),
        tx.locktime.to_bytes(4, "little"),
    ]
    if not anyone:
        m += [c.sha_prevouts, c.sha_amounts, c.sha_scriptpubkeys, c.sha_sequences]
    if out_type == SIGHASH_ALL:
        m.append(c.sha_outputs)
    m.append(bytes((ext_flag * 2 + (annex is not None),)))  # spend_type
    if anyone:
        txin, spent = tx.inputs[input_index], spent_outputs[input_index]
        m += [
            txin.prevout.serialize(),
            spent.value.to_bytes(8, "little"),
            ser_compact_size(len(spent.script)) + spent.script,
            txin.sequence.to_bytes(4, "little"),
        ]
    else:
        m.append(input_index.to_bytes(4, "little"))
    if annex is not None:
        m.append(sha256(ser_compact_size(len(annex)) + annex))
    if out_type == SIGHASH_SINGLE:
        if input_index >= len(tx.outputs):
            # Core: SignatureHashSchnorr returns false, so any signature fails.
            raise SighashError("SIGHASH_SINGLE without a matching output")
        m.append(sha256(tx.outputs[input_index].serialize()))
    if leaf_hash is not None:
        m += [leaf_hash, bytes((TAPSCRIPT_KEY_VERSION,)), codesep_pos.to_bytes(4, "little")]
    return b"".join(m)


def taproot_sighash(
    tx: Tx,
    input_index: int,
    spent_outputs: Sequence[TxOut],
    hash_type: int = SIGHASH_DEFAULT,
    *,
    annex: bytes | None = None,
    leaf_hash: bytes | None = None,
    codesep_pos: int = 0xFFFFFFFF,
    cache: TaprootSighashCache | None = None,
) -> bytes:
    """BIP-341 signature hash: ``hash_TapSighash(0x00 || SigMsg(hash_type, ext_flag))``.
    Key-path when ``leaf_hash`` is None; BIP-342 script-path otherwise."""
    msg = taproot_sigmsg(
        tx,
        input_index,
        spent_outputs,
        hash_type,
        annex=annex,
        leaf_hash=leaf_hash,
        codesep_pos=codesep_pos,
        cache=cache,
    )
    return tagged_hash("TapSighash", msg)
