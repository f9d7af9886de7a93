"""Script building blocks: minimal data pushes and script numbers.

``push_data`` is Core's ``CScript::operator<<(std::vector<unsigned char>)`` (smallest of direct
push / PUSHDATA1/2/4; no OP_n substitution for 1-byte data, exactly like Core's operator<<).
``push_int`` is ``CScript::operator<<(int64_t)`` / ``push_int64``: 0 → OP_0, -1 and 1..16 →
OP_1NEGATE / OP_1..OP_16, anything else a minimally encoded ``CScriptNum`` push. This is the
BIP-34 height encoding a coinbase must start with (Core's ``CScript() << nHeight``); buidl gets
heights 1..16 wrong (libs.md §5), so it is written here by hand.
"""

from __future__ import annotations

# Opcodes (Bitcoin Core script/script.h), defined here once for every module that reads or
# writes scripts.
OP_0 = 0x00
OP_PUSHDATA1, OP_PUSHDATA2, OP_PUSHDATA4 = 0x4C, 0x4D, 0x4E
OP_1NEGATE = 0x4F
OP_1, OP_16 = 0x51, 0x60
OP_RETURN = 0x6A
OP_DROP = 0x75
OP_DUP, OP_EQUAL, OP_EQUALVERIFY, OP_HASH160 = 0x76, 0x87, 0x88, 0xA9
OP_CHECKSIG, OP_CHECKSIGVERIFY = 0xAC, 0xAD
OP_CHECKMULTISIG, OP_CHECKMULTISIGVERIFY = 0xAE, 0xAF
OP_CHECKSEQUENCEVERIFY = 0xB2  # BIP-112, OP_NOP3
OP_CHECKTEMPLATEVERIFY = 0xB3  # BIP-119, OP_NOP4


def script_num(n: int) -> bytes:
    """``CScriptNum::serialize``: minimal little-endian sign-magnitude encoding; 0 is empty."""
    if n == 0:
        return b""
    neg, absv = n < 0, abs(n)
    out = bytearray()
    while absv:
        out.append(absv & 0xFF)
        absv >>= 8
    # If the top bit is taken by the magnitude, add a byte to carry the sign.
    if out[-1] & 0x80:
        out.append(0x80 if neg else 0x00)
    elif neg:
        out[-1] |= 0x80
    return bytes(out)


def push_data(data: bytes) -> bytes:
    """Minimal push of ``data`` (``CScript::operator<<(std::span<const std::byte>)``)."""
    n = len(data)
    if n < OP_PUSHDATA1:
        return bytes((n,)) + data
    if n <= 0xFF:
        return bytes((OP_PUSHDATA1, n)) + data
    if n <= 0xFFFF:
        return bytes((OP_PUSHDATA2,)) + n.to_bytes(2, "little") + data
    return bytes((OP_PUSHDATA4,)) + n.to_bytes(4, "little") + data


def push_int(n: int) -> bytes:
    """``CScript::push_int64``: OP_0, OP_1NEGATE, OP_1..OP_16, else a CScriptNum push."""
    if n == 0:
        return bytes((OP_0,))
    if n == -1:
        return bytes((OP_1NEGATE,))
    if 1 <= n <= 16:
        return bytes((OP_1 + n - 1,))
    return push_data(script_num(n))


def bip34_height(height: int) -> bytes:
    """The BIP-34 coinbase scriptSig prefix for ``height`` (``CScript() << nHeight``), the
    exact bytes ``ContextualCheckBlock`` requires at the start of the coinbase scriptSig."""
    if height < 0:
        raise ValueError("block height cannot be negative")
    return push_int(height)
