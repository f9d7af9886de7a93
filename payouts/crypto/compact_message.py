"""65-byte compact message signatures: Bitcoin Core's ``signmessage``, BIP-137 and Electrum's.

Many wallets (Bitcoin Core for P2PKH; Electrum, Sparrow, Trezor, Coldcard for P2WPKH and
P2SH-P2WPKH too) sign a message with a recoverable ECDSA signature over
``sha256d(varstr("Bitcoin Signed Message:\\n") || varstr(message))``, base64 of 65 bytes:
a header byte, then ``r || s``. The header carries the recovery id (``(header − 27) & 3``) and
says which key and address form was meant (BIP-137):

==========  ===========================================  =================================
header      meaning                                      accepted here for
==========  ===========================================  =================================
27..30      P2PKH, uncompressed key                      P2PKH
31..34      P2PKH, compressed key (Core's signmessage);  P2PKH; P2WPKH and P2SH-P2WPKH
            Electrum (and Sparrow's "Electrum"           (the Electrum form)
            format, Coldcard) for every single-key
            address type
35..38      P2SH-P2WPKH (BIP-137: Trezor, Sparrow)       P2SH-P2WPKH
39..42      P2WPKH (BIP-137: Trezor, Sparrow)            P2WPKH
==========  ===========================================  =================================

Verification recovers the public key and checks it against the address: ``hash160(key)`` is
the P2PKH key hash or the P2WPKH program; for P2SH-P2WPKH, ``hash160(0x0014 || hash160(key))``
is the script hash. A segwit address only ever has a compressed key. Taproot and script
addresses have no compact form: BIP-322 is their only message signature.
"""

from __future__ import annotations

import base64

from payouts.errors import ValidationError
from payouts.tx.compact import ser_compact_size
from payouts.tx.hashes import hash160, sha256d

MAGIC = b"Bitcoin Signed Message:\n"
SIZE = 65
HEADERS = range(27, 43)


class CompactSignatureError(ValidationError):
    """A compact signature that does not verify for the address (code of BIP-322's invalid
    signatures: the API reports one ``bip322-invalid`` for every failed proof)."""

    code = "bip322-invalid"


def message_hash(message: str | bytes) -> bytes:
    """The digest a compact signature signs: sha256d(varstr(magic) || varstr(message))."""
    msg = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    return sha256d(ser_compact_size(len(MAGIC)) + MAGIC + ser_compact_size(len(msg)) + msg)


def script_kind(script: bytes) -> str | None:
    """``p2pkh``, ``p2wpkh`` or ``p2sh`` (a P2SH-P2WPKH candidate) for a scriptPubKey that a
    compact signature can prove; ``None`` for any other."""
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return "p2pkh"
    if len(script) == 22 and script[:2] == b"\x00\x14":
        return "p2wpkh"
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87:
        return "p2sh"
    return None


#: Headers a signature for each address kind may carry (module docstring table).
ACCEPTED_HEADERS: dict[str, tuple[range, ...]] = {
    "p2pkh": (range(27, 35),),
    "p2wpkh": (range(31, 35), range(39, 43)),
    "p2sh": (range(31, 35), range(35, 39)),
}


def is_compact(raw: bytes) -> bool:
    """Whether decoded signature bytes have the shape of a compact signature."""
    return len(raw) == SIZE and raw[0] in HEADERS


def verify_compact(script: bytes, message: str | bytes, sig: bytes) -> None:
    """Verify a 65-byte compact signature of ``message`` for the address ``script``; raise
    :class:`CompactSignatureError` (or ``ValidationError`` for an address with no compact
    form) naming what was expected."""
    from coincurve import PublicKey

    kind = script_kind(script)
    if kind is None:
        raise ValidationError("compact (BIP-137 / signmessage) signatures exist only for "
                              "P2PKH, P2WPKH and P2SH-P2WPKH addresses", code="bip322-unsupported")
    header = sig[0]
    if not any(header in r for r in ACCEPTED_HEADERS[kind]):
        wanted = " or ".join(f"{r.start}-{r.stop - 1}" for r in ACCEPTED_HEADERS[kind])
        raise CompactSignatureError(f"invalid signature: header byte {header} is not for a "
                                    f"{kind.upper()} address (expected {wanted})")
    compressed = header >= 31
    try:
        pub = PublicKey.from_signature_and_message(
            sig[1:] + bytes(((header - 27) & 3,)), message_hash(message), hasher=None)
    except Exception:  # coincurve raises a bare Exception when recovery fails
        raise CompactSignatureError("invalid signature: no public key recovers from it"
                                    ) from None
    key_hash = hash160(pub.format(compressed=compressed))
    if kind == "p2pkh":
        ok = key_hash == script[3:23]
    elif kind == "p2wpkh":
        ok = key_hash == script[2:22]
    else:
        ok = hash160(b"\x00\x14" + key_hash) == script[2:22]
    if not ok:
        raise CompactSignatureError("invalid signature: the recovered key does not match the "
                                    "address (another key, or another message)")


def sign_compact(seckey: bytes, message: str | bytes, *, header_base: int = 31) -> str:
    """A compact signature (base64) with header ``header_base + recid``: 31 Core/Electrum
    compressed, 27 uncompressed P2PKH, 35 BIP-137 P2SH-P2WPKH, 39 BIP-137 P2WPKH."""
    from coincurve import PrivateKey

    rec = PrivateKey(seckey).sign_recoverable(message_hash(message), hasher=None)
    return base64.b64encode(bytes((header_base + rec[64],)) + rec[:64]).decode()


__all__ = [
    "ACCEPTED_HEADERS",
    "CompactSignatureError",
    "is_compact",
    "message_hash",
    "script_kind",
    "sign_compact",
    "verify_compact",
]
