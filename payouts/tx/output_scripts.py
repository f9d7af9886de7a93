"""Script classification, dust limits and sigop cost of output scripts.

Dust: Bitcoin Core's ``GetDustThreshold`` (policy/policy.cpp) at the default
``DUST_RELAY_TX_FEE`` of 3,000 sat/kvB: (output size + size of the input that spends it) × 3,
where the spending input is 148 bytes for non-witness outputs and 32+4+1+107/4+4 = 67 vbytes for
witness programs. That gives P2PKH 546, P2SH 540, P2WPKH 294, P2WSH/P2TR 330, P2A 240.
Sigops: ``GetLegacySigOpCount`` (inaccurate mode) × WITNESS_SCALE_FACTOR, which is what the
coinbase outputs cost against the block's 80,000 sigop-cost limit (BIP-141).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from payouts.tx.script import (
    OP_0,
    OP_1,
    OP_16,
    OP_CHECKMULTISIG,
    OP_CHECKMULTISIGVERIFY,
    OP_CHECKSIG,
    OP_CHECKSIGVERIFY,
    OP_CHECKTEMPLATEVERIFY,
    OP_DUP,
    OP_EQUAL,
    OP_EQUALVERIFY,
    OP_HASH160,
    OP_PUSHDATA1,
    OP_PUSHDATA2,
    OP_PUSHDATA4,
    OP_RETURN,
)

if TYPE_CHECKING:  # NumPy is loaded by output_costs alone (a CLI reading one script needs none)
    import numpy as np
    import numpy.typing as npt

DUST_RELAY_FEE_PER_KVB = 3000
WITNESS_SCALE_FACTOR = 4

MAX_PUBKEYS_PER_MULTISIG = 20


class ScriptType(StrEnum):
    P2PKH = "p2pkh"
    P2SH = "p2sh"
    P2WPKH = "p2wpkh"
    P2WSH = "p2wsh"
    P2TR = "p2tr"
    P2A = "p2a"
    WITNESS_UNKNOWN = "witness_unknown"
    BARE_CTV = "bare_ctv"
    NULL_DATA = "nulldata"
    NONSTANDARD = "nonstandard"


def witness_program(script: bytes) -> tuple[int, bytes] | None:
    """(version, program) if ``script`` is a witness program (BIP-141 ``IsWitnessProgram``)."""
    if not 4 <= len(script) <= 42:
        return None
    v = script[0]
    if v != OP_0 and not OP_1 <= v <= OP_16:
        return None
    if script[1] + 2 != len(script) or not 2 <= script[1] <= 40:
        return None
    return (0 if v == OP_0 else v - 0x50), script[2:]


# The common payout templates: (type, length, fixed bytes by offset). Both the one-script fast
# path (:func:`_standard`) and the column path (:func:`output_costs`) read this table, so they
# cannot disagree.
_TEMPLATES: tuple[tuple[ScriptType, int, tuple[tuple[int, int], ...]], ...] = (
    (ScriptType.P2WPKH, 22, ((0, OP_0), (1, 20))),
    (ScriptType.P2TR, 34, ((0, OP_1), (1, 32))),
    (ScriptType.P2WSH, 34, ((0, OP_0), (1, 32))),
    (ScriptType.P2PKH, 25, ((0, OP_DUP), (1, OP_HASH160), (2, 20), (23, OP_EQUALVERIFY),
                            (24, OP_CHECKSIG))),
    (ScriptType.P2SH, 23, ((0, OP_HASH160), (1, 20), (22, OP_EQUAL))),
)


def _standard(script: bytes) -> ScriptType | None:
    """The common payout templates by length and fixed bytes: the fast path of :func:`classify`."""
    n = len(script)
    for kind, length, fixed in _TEMPLATES:
        if n == length and all(script[at] == byte for at, byte in fixed):
            return kind
    return None


# Core's GetDustThreshold and the sigop cost of the standard templates (same formula as below).
_DUST = {ScriptType.P2WPKH: 294, ScriptType.P2WSH: 330, ScriptType.P2TR: 330,
         ScriptType.P2PKH: 546, ScriptType.P2SH: 540}
_SIGOPS = {ScriptType.P2WPKH: 0, ScriptType.P2WSH: 0, ScriptType.P2TR: 0,
           ScriptType.P2PKH: 4, ScriptType.P2SH: 0}


def classify(script: bytes) -> ScriptType:
    fast = _standard(script)
    if fast is not None:
        return fast
    if (
        len(script) == 25
        and script[:3] == bytes((OP_DUP, OP_HASH160, 20))
        and script[23:] == bytes((OP_EQUALVERIFY, OP_CHECKSIG))
    ):
        return ScriptType.P2PKH
    if len(script) == 23 and script[:2] == bytes((OP_HASH160, 20)) and script[22] == OP_EQUAL:
        return ScriptType.P2SH
    if len(script) == 34 and script[0] == 0x20 and script[33] == OP_CHECKTEMPLATEVERIFY:
        return ScriptType.BARE_CTV
    if script[:1] == bytes((OP_RETURN,)):
        return ScriptType.NULL_DATA
    wp = witness_program(script)
    if wp is not None:
        version, program = wp
        if version == 0 and len(program) == 20:
            return ScriptType.P2WPKH
        if version == 0 and len(program) == 32:
            return ScriptType.P2WSH
        if version == 1 and len(program) == 32:
            return ScriptType.P2TR
        if version == 1 and program == b"\x4e\x73":
            return ScriptType.P2A
        return ScriptType.WITNESS_UNKNOWN
    return ScriptType.NONSTANDARD


def output_size(script: bytes) -> int:
    length = len(script)
    return 8 + (1 if length < 0xFD else 3) + length


def dust_limit(script: bytes) -> int:
    """Core's ``GetDustThreshold`` at 3,000 sat/kvB; 0 for unspendable OP_RETURN outputs."""
    fast = _standard(script)
    if fast is not None:
        return _DUST[fast]
    if classify(script) is ScriptType.NULL_DATA:
        return 0
    spend = 32 + 4 + 1 + (107 // WITNESS_SCALE_FACTOR) + 4 if witness_program(script) else 148
    return (output_size(script) + spend) * DUST_RELAY_FEE_PER_KVB // 1000


def legacy_sigops(script: bytes) -> int:
    """``CScript::GetSigOpCount(false)``: CHECKSIG counts 1, CHECKMULTISIG counts 20."""
    count, i, n = 0, 0, len(script)
    while i < n:
        op = script[i]
        i += 1
        if 0x01 <= op <= 0x4B:
            i += op
        elif op == OP_PUSHDATA1:
            i += 1 + (script[i] if i < n else 0)
        elif op == OP_PUSHDATA2:
            i += 2 + (int.from_bytes(script[i : i + 2], "little") if i + 2 <= n else 0)
        elif op == OP_PUSHDATA4:
            i += 4 + (int.from_bytes(script[i : i + 4], "little") if i + 4 <= n else 0)
        elif op in (OP_CHECKSIG, OP_CHECKSIGVERIFY):
            count += 1
        elif op in (OP_CHECKMULTISIG, OP_CHECKMULTISIGVERIFY):
            count += MAX_PUBKEYS_PER_MULTISIG
    return count


def sigop_cost(script: bytes) -> int:
    """Sigop cost of an output script in a block (legacy sigops × 4)."""
    fast = _standard(script)
    if fast is not None:
        return _SIGOPS[fast]
    return legacy_sigops(script) * WITNESS_SCALE_FACTOR


def output_costs(
    scripts: Sequence[bytes],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(:func:`output_size`, :func:`sigop_cost`, :func:`dust_limit`) of every script, as columns.

    A distribution classifies every candidate (100,000 of them in milliseconds): the templates
    of ``_TEMPLATES`` are recognised on all scripts at once from their lengths and the bytes at
    the fixed offsets of one concatenated buffer; only other scripts take the per-script path.
    """
    import numpy as np

    n = len(scripts)
    lengths = np.fromiter(map(len, scripts), dtype=np.int64, count=n)
    sizes = 8 + np.where(lengths < 0xFD, 1, 3) + lengths
    sigops = np.zeros(n, dtype=np.int64)
    dusts = np.zeros(n, dtype=np.int64)
    buffer = np.frombuffer(b"".join(scripts), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    known = np.zeros(n, dtype=np.bool_)
    for kind, length, fixed in _TEMPLATES:
        match = lengths == length
        rows = starts[match]
        for at, byte in fixed:
            match[match] = buffer[rows + at] == byte
            rows = starts[match]
        sigops[match] = _SIGOPS[kind]
        dusts[match] = _DUST[kind]
        known |= match
    for i in np.flatnonzero(~known).tolist():
        sigops[i] = sigop_cost(scripts[i])
        dusts[i] = dust_limit(scripts[i])
    return sizes, sigops, dusts
