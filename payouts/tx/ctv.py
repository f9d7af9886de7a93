"""BIP-119 OP_CHECKTEMPLATEVERIFY: the default template hash and CTV scripts.

``standard_template_hash`` is BIP-119's ``get_default_check_template_hash`` (Core/inquisition
``GetDefaultCheckTemplateVerifyHash`` in script/interpreter.cpp): a single, untagged SHA256 of

    nVersion (int32 LE, signed) || nLockTime || [sha256(ser_string(scriptSig_i)...) if any
    scriptSig is non-empty] || uint32 #inputs || sha256(nSequence_i...) || uint32 #outputs ||
    sha256(CTxOut_i...) || uint32 input index

It commits to everything that fixes the txid except the outpoints, so a fan-out can be committed
to before the coinbase that funds it (whose txid changes with the extranonce) is known.
Written in-house (~20 lines) because no maintained Python library has it (libs.md §4).

Never emit a bare CTV output on a chain where CTV is not active: there ``<32B> OP_NOP4`` is
anyone-can-spend (architecture invariant 4). libbitcoinkernel does not enforce CTV either.
"""

from __future__ import annotations

from payouts.crypto.taproot import TapLeaf
from payouts.errors import ValidationError
from payouts.tx.compact import ser_compact_size
from payouts.tx.hashes import sha256
from payouts.tx.script import OP_CHECKTEMPLATEVERIFY
from payouts.tx.transaction import Tx

CTV_HASH_SIZE = 32


class CtvError(ValidationError):
    code = "invalid-ctv"


def standard_template_hash(tx: Tx, input_index: int) -> bytes:
    """BIP-119 DefaultCheckTemplateVerifyHash of ``tx`` for the input at ``input_index``.

    ``input_index`` is hashed as a uint32 and, as in the BIP, need not be a valid input
    (the vectors use 0xffffffff); it must fit 32 bits.
    """
    if not 0 <= input_index <= 0xFFFFFFFF:
        raise CtvError("the CTV input index is a uint32")
    parts = [
        tx.version.to_bytes(4, "little", signed=True),
        tx.locktime.to_bytes(4, "little"),
    ]
    if any(i.script_sig for i in tx.inputs):
        parts.append(
            sha256(b"".join(ser_compact_size(len(i.script_sig)) + i.script_sig for i in tx.inputs))
        )
    parts += [
        len(tx.inputs).to_bytes(4, "little"),
        sha256(b"".join(i.sequence.to_bytes(4, "little") for i in tx.inputs)),
        len(tx.outputs).to_bytes(4, "little"),
        sha256(b"".join(o.serialize() for o in tx.outputs)),
        input_index.to_bytes(4, "little"),
    ]
    return sha256(b"".join(parts))


def ctv_script(template_hash: bytes) -> bytes:
    """``<32-byte hash> OP_CHECKTEMPLATEVERIFY`` (``0x20 || hash || 0xb3``): the bare CTV
    scriptPubKey BIP-119 defines, and the same bytes as a P2WSH witness script or tapleaf."""
    if len(template_hash) != CTV_HASH_SIZE:
        raise CtvError("a CTV template hash is 32 bytes")
    return bytes((CTV_HASH_SIZE,)) + template_hash + bytes((OP_CHECKTEMPLATEVERIFY,))


def bare_ctv_script(template_hash: bytes) -> bytes:
    """The bare CTV output script (inquisition ``TxoutType::TX_BARE_DEFAULT_CTV_HASH``)."""
    return ctv_script(template_hash)


def ctv_tapleaf(template_hash: bytes) -> TapLeaf:
    """A tapscript leaf (version 0xc0) ``<hash> OP_CHECKTEMPLATEVERIFY``. After OP_CTV the hash
    stays on the stack as the single true element BIP-342's clean-stack rule wants."""
    return TapLeaf(ctv_script(template_hash))


def parse_ctv_script(script: bytes) -> bytes | None:
    """The committed hash if ``script`` is exactly ``<32B> OP_CTV`` (inquisition's
    ``IsPayToBareDefaultCheckTemplateVerifyHash`` pattern), else None."""
    if len(script) == 34 and script[0] == CTV_HASH_SIZE and script[33] == OP_CHECKTEMPLATEVERIFY:
        return script[1:33]
    return None
