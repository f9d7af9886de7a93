"""BIP-322 generic signed messages: verification by Bitcoin Core's own script interpreter.

A BIP-322 signature proves control of an address's scriptPubKey (the *message challenge*) by a
virtual spend: ``to_spend`` (a fake tx whose only output is locked to the challenge, and whose
input commits to ``message_hash = tagged_hash("BIP0322-signed-message", message)``) and
``to_sign`` (spends ``to_spend:0`` into one ``OP_RETURN`` output). The signature is valid iff
``to_sign``'s input passes script verification against that output. We hand that check to
libbitcoinkernel (:func:`payouts.node.kernel_chain.verify_spend`, all consensus flags), so
P2WPKH, P2WSH, P2TR (key and script path), P2SH-wrapped segwit and anything else Core can verify
is checked by consensus code, not by a re-implementation.

Encodings accepted (the vectors' revision of BIP-322, which tags the base64 string):

* ``"smp" + base64(witness)`` — *simple*: the consensus-encoded witness stack of ``to_sign``'s
  input (nVersion 0, nLockTime 0, nSequence 0). For a P2SH address the scriptSig cannot travel
  in a simple signature, so for P2SH-P2WPKH we rebuild it from the witness (the last item is the
  public key; the redeem script is ``0014 hash160(pubkey)``); the kernel then checks it matches.
* ``"ful" + base64(to_sign)`` — *full*: the whole ``to_sign`` transaction; the signer may set
  nVersion, nLockTime and nSequence (timelocked scripts). It must have exactly one input, spending
  ``to_spend:0``, and exactly one output of 0 sat paying ``OP_RETURN``.
* no prefix — the original BIP-322 form: base64 of a simple witness, or, for a P2PKH, P2WPKH
  or P2SH-P2WPKH address and 65 decoded bytes with a header byte 27..42, a *compact*
  signature: Bitcoin Core's ``signmessage`` (P2PKH), BIP-137 (Trezor, Sparrow) or Electrum's
  form (Electrum, Sparrow, Coldcard) for segwit keys, verified by recovering the key and
  checking it against the address (:mod:`payouts.crypto.compact_message`).
* ``"pof"`` (proof of funds) is recognised and refused: it proves UTXO ownership, which an
  address registration does not need.

Errors are :class:`Bip322Error` with a stable ``code``: ``bip322-malformed`` (cannot decode) or
``bip322-invalid`` (decodes but does not verify), ``bip322-unsupported`` (proof of funds, an
address whose type cannot carry the chosen format). A signature that cannot be decoded is
answered with the formats that address type accepts (:func:`accepted_formats`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from payouts.crypto import compact_message
from payouts.errors import ValidationError
from payouts.tx.address import Network, address_to_script, decode_address
from payouts.tx.compact import read_compact_size, ser_compact_size
from payouts.tx.hashes import hash160, sha256d, tagged_hash
from payouts.tx.transaction import OutPoint, Tx, TxDecodeError, TxIn
from payouts.tx.txout import TxOut

TAG = "BIP0322-signed-message"
OP_RETURN_SCRIPT = b"\x6a"
# A witness stack longer than this cannot be a standard spend; bounds parsing work on junk input.
MAX_SIGNATURE_BYTES = 10_000


class Bip322Error(ValidationError):
    """A BIP-322 signature could not be decoded or does not verify."""

    code = "bip322-invalid"


class Bip322MalformedError(Bip322Error):
    code = "bip322-malformed"


class Bip322UnsupportedError(Bip322Error):
    code = "bip322-unsupported"


# -- the virtual transactions ------------------------------------------------------------------


def _as_bytes(message: str | bytes) -> bytes:
    return message.encode("utf-8") if isinstance(message, str) else bytes(message)


def message_hash(message: str | bytes) -> bytes:
    """``tagged_hash("BIP0322-signed-message", message)`` (UTF-8 for a str)."""
    return tagged_hash(TAG, _as_bytes(message))


def to_spend(message_challenge: bytes, message: str | bytes) -> Tx:
    """The BIP-322 ``to_spend`` transaction for a challenge scriptPubKey and a message."""
    script_sig = b"\x00\x20" + message_hash(message)  # OP_0 PUSH32[message_hash]
    return Tx(
        version=0,
        inputs=(TxIn(OutPoint(bytes(32), 0xFFFFFFFF), script_sig, 0),),
        outputs=(TxOut(0, message_challenge),),
        locktime=0,
    )


def to_sign(
    spend: Tx,
    witness: Sequence[bytes] = (),
    *,
    script_sig: bytes = b"",
    version: int = 0,
    locktime: int = 0,
    sequence: int = 0,
) -> Tx:
    """The BIP-322 ``to_sign`` transaction spending ``spend:0`` into one OP_RETURN output."""
    return Tx(
        version=version,
        inputs=(TxIn(OutPoint(spend.txid, 0), script_sig, sequence, tuple(witness)),),
        outputs=(TxOut(0, OP_RETURN_SCRIPT),),
        locktime=locktime,
    )


def encode_witness(stack: Sequence[bytes]) -> bytes:
    """Consensus encoding of a witness stack (count, then length-prefixed items)."""
    return ser_compact_size(len(stack)) + b"".join(ser_compact_size(len(w)) + w for w in stack)


def decode_witness(raw: bytes) -> tuple[bytes, ...]:
    """Inverse of :func:`encode_witness`; the whole of ``raw`` must be consumed."""
    try:
        count, pos = read_compact_size(raw, 0)
        if count > len(raw):
            raise ValueError("item count larger than the data")
        items = []
        for _ in range(count):
            n, pos = read_compact_size(raw, pos)
            if pos + n > len(raw):
                raise ValueError("truncated witness item")
            items.append(bytes(raw[pos : pos + n]))
            pos += n
    except ValueError as e:
        raise Bip322MalformedError(f"signature is not a witness stack: {e}") from None
    if pos != len(raw):
        raise Bip322MalformedError(f"{len(raw) - pos} trailing bytes after the witness stack")
    return tuple(items)


# -- decoding ----------------------------------------------------------------------------------


def _b64(data: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise Bip322MalformedError(f"error decoding {what} as base64") from None
    return raw


def _script_for(address: str, network: Network | str | None) -> bytes:
    if network is None:  # the vectors are mainnet; callers in the engine always pass one
        return decode_address(address)[0]
    return address_to_script(address, network)


def decode_address_script(address: str) -> bytes:
    """The scriptPubKey of an address of any chain (for vectors and tools)."""
    return decode_address(address)[0]


def _is_p2sh(script: bytes) -> bool:
    return len(script) == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87


def _kernel_verifies(tx: Tx, spent: TxOut) -> bool:
    # Imported here: the kernel library is heavy and only needed once a signature parses.
    from payouts.node.kernel_chain import verify_spend

    return verify_spend(tx, [spent])


# -- verification ------------------------------------------------------------------------------


def verify_simple(script: bytes, message: str | bytes, stack: Sequence[bytes]) -> None:
    """Verify a simple signature (a witness stack) against a challenge scriptPubKey."""
    spend = to_spend(script, message)
    script_sig = b""
    if _is_p2sh(script):
        # P2SH-P2WPKH: rebuild the scriptSig (push of the v0 keyhash program) from the pubkey.
        if not stack or len(stack[-1]) != 33:
            raise Bip322Error("invalid signature: P2SH simple signatures must be P2SH-P2WPKH")
        redeem = b"\x00\x14" + hash160(stack[-1])
        script_sig = bytes((len(redeem),)) + redeem
    tx = to_sign(spend, stack, script_sig=script_sig)
    if not _kernel_verifies(tx, spend.outputs[0]):
        raise Bip322Error("invalid signature: script verification failed")


def verify_full(script: bytes, message: str | bytes, tx: Tx) -> None:
    """Verify a full signature (a whole ``to_sign`` transaction)."""
    spend = to_spend(script, message)
    if len(tx.inputs) != 1:
        raise Bip322UnsupportedError(
            "invalid signature: to_sign must have exactly one input (proof of funds is not "
            "supported)"
        )
    if tx.inputs[0].prevout != OutPoint(spend.txid, 0):
        raise Bip322Error("invalid signature: to_sign does not spend to_spend:0 of this message")
    if tx.outputs != (TxOut(0, OP_RETURN_SCRIPT),):
        raise Bip322Error("invalid signature: to_sign must have one 0-value OP_RETURN output")
    if not _kernel_verifies(tx, spend.outputs[0]):
        raise Bip322Error("invalid signature: script verification failed")


#: The ``signmessage`` digest (kept under its old name).
legacy_message_hash = compact_message.message_hash


def verify_legacy(script: bytes, message: str | bytes, sig65: bytes) -> None:
    """Verify a 65-byte compact signature (:func:`compact_message.verify_compact`)."""
    if len(sig65) != compact_message.SIZE:
        raise Bip322MalformedError("a compact signature is 65 bytes")
    try:
        compact_message.verify_compact(script, message, sig65)
    except ValidationError as e:
        cls = Bip322UnsupportedError if e.code == "bip322-unsupported" else Bip322Error
        raise cls(e.message) from None


def accepted_formats(script: bytes) -> str:
    """What a signature for an address with ``script`` may be, for error messages."""
    kind = compact_message.script_kind(script)
    if kind == "p2pkh":
        return ("a P2PKH address accepts BIP-322 full ('ful…'), or a 65-byte compact signature "
                "(Bitcoin Core's signmessage, Electrum: BIP-137 header 27-34)")
    if kind == "p2wpkh":
        return ("a P2WPKH address accepts BIP-322 simple ('smp…' or unprefixed) or full "
                "('ful…'), or a 65-byte compact signature (BIP-137 header 39-42, as Trezor and "
                "Sparrow's BIP137 format; or Electrum's 31-34, as Electrum, Sparrow and Coldcard)")
    if kind == "p2sh":
        return ("a P2SH address accepts BIP-322 simple (P2SH-P2WPKH) or full ('ful…'), or, "
                "for P2SH-P2WPKH, a 65-byte compact signature (BIP-137 header 35-38, as Trezor "
                "and Sparrow's BIP137 format; or Electrum's 31-34)")
    return ("this address type (P2TR, P2WSH) accepts BIP-322 simple ('smp…' or unprefixed) or "
            "full ('ful…') only: no compact signature format exists for it")


def _with_formats(e: Bip322Error, script: bytes) -> Bip322Error:
    return type(e)(f"{e.message}; {accepted_formats(script)}")


def verify(
    address: str,
    message: str | bytes,
    signature: str,
    network: Network | str | None = None,
) -> None:
    """Verify a BIP-322 signature of ``message`` by ``address``; raise :class:`Bip322Error`.

    ``network`` (the engine's configured chain) makes an address of another chain fail with
    ``address-wrong-network`` before any signature work; ``None`` accepts any chain (vectors).
    Returns ``None`` on success; every failure raises, nothing is ever "maybe".
    """
    if not isinstance(signature, str):
        raise Bip322MalformedError("signature must be a string")
    if len(signature) > MAX_SIGNATURE_BYTES * 4 // 3 + 8:
        raise Bip322MalformedError("signature too long")
    script = _script_for(address, network)
    prefix, body = signature[:3], signature[3:]
    if prefix == "smp":
        raw = _b64(body, "signature")
        if not raw:
            raise Bip322MalformedError("signature too short")
        try:
            stack = decode_witness(raw)
        except Bip322MalformedError as e:
            raise _with_formats(e, script) from None
        verify_simple(script, message, stack)
        return
    if prefix == "ful":
        raw = _b64(body, "signature")
        try:
            tx = Tx.parse(raw)
        except (TxDecodeError, ValueError) as e:
            raise Bip322MalformedError(f"error parsing signature as full variant: {e}") from None
        verify_full(script, message, tx)
        return
    if prefix == "pof":
        raise Bip322UnsupportedError("proof-of-funds signatures are not accepted here")
    # No prefix: the original encodings (base64 of a simple witness, or a compact signature).
    raw = _b64(signature, "signature")
    if not raw:
        raise Bip322MalformedError("signature too short")
    if compact_message.is_compact(raw) and compact_message.script_kind(script) is not None:
        verify_legacy(script, message, raw)
        return
    try:
        stack = decode_witness(raw)
    except Bip322MalformedError as e:
        raise _with_formats(e, script) from None
    verify_simple(script, message, stack)


def is_valid(
    address: str, message: str | bytes, signature: str, network: Network | str | None = None
) -> bool:
    """:func:`verify` as a boolean (malformed and unsupported count as invalid)."""
    try:
        verify(address, message, signature, network)
    except ValidationError:
        return False
    return True


# -- signing (wallet side; used by tests, docs and the demo) -----------------------------------


def _bip143_sighash_all(tx: Tx, script_code: bytes, value: int) -> bytes:
    """BIP-143 SIGHASH_ALL digest for input 0 of a one-input transaction."""
    txin = tx.inputs[0]
    prevouts = sha256d(txin.prevout.serialize())
    sequences = sha256d(txin.sequence.to_bytes(4, "little"))
    outputs = sha256d(b"".join(o.serialize() for o in tx.outputs))
    pre = (
        tx.version.to_bytes(4, "little", signed=True)
        + prevouts
        + sequences
        + txin.prevout.serialize()
        + ser_compact_size(len(script_code))
        + script_code
        + value.to_bytes(8, "little")
        + txin.sequence.to_bytes(4, "little")
        + outputs
        + tx.locktime.to_bytes(4, "little")
        + (1).to_bytes(4, "little")
    )
    return sha256d(pre)


def _ecdsa_p2wpkh_witness(seckey: bytes, spend: Tx, script_sig: bytes = b"") -> tuple[bytes, ...]:
    from coincurve import PrivateKey

    key = PrivateKey(seckey)
    pub = key.public_key.format(compressed=True)
    script_code = b"\x76\xa9\x14" + hash160(pub) + b"\x88\xac"
    digest = _bip143_sighash_all(to_sign(spend, script_sig=script_sig), script_code, 0)
    return (key.sign(digest, hasher=None) + b"\x01", pub)


def sign_simple(seckey: bytes, address: str, message: str | bytes,
                network: Network | str | None = None) -> str:
    """A ``smp``-prefixed simple signature by a single-key address (P2WPKH, P2SH-P2WPKH, or
    BIP-86 P2TR). Raises :class:`Bip322UnsupportedError` for other address types."""
    from payouts.crypto import schnorr
    from payouts.crypto.taproot import tweak_keypair
    from payouts.tx.sighash import taproot_sighash

    script = _script_for(address, network)
    spend = to_spend(script, message)
    if len(script) == 22 and script[:2] == b"\x00\x14":
        stack = _ecdsa_p2wpkh_witness(seckey, spend)
    elif _is_p2sh(script):
        from coincurve import PrivateKey

        redeem = b"\x00\x14" + hash160(PrivateKey(seckey).public_key.format(compressed=True))
        stack = _ecdsa_p2wpkh_witness(seckey, spend, bytes((len(redeem),)) + redeem)
    elif len(script) == 34 and script[:2] == b"\x51\x20":
        tx = to_sign(spend)
        sighash = taproot_sighash(tx, 0, [spend.outputs[0]])
        stack = (schnorr.sign_with_keypair(sighash, tweak_keypair(seckey)),)
    else:
        raise Bip322UnsupportedError("sign_simple supports P2WPKH, P2SH-P2WPKH and P2TR")
    return "smp" + base64.b64encode(encode_witness(stack)).decode()


def sign_legacy(seckey: bytes, message: str | bytes, *, compressed: bool = True) -> str:
    """A ``signmessage`` signature (base64 of 65 bytes) for the key's P2PKH address."""
    return compact_message.sign_compact(seckey, message, header_base=31 if compressed else 27)


def wif_to_seckey(wif: str) -> bytes:
    """The 32-byte secret of a WIF private key (tests use the vectors' keys)."""
    from embit import base58

    raw = bytes(base58.decode_check(wif))
    if len(raw) not in (33, 34):
        raise ValidationError("not a WIF private key")
    return raw[1:33]


__all__ = [
    "TAG",
    "Bip322Error",
    "Bip322MalformedError",
    "Bip322UnsupportedError",
    "accepted_formats",
    "decode_address_script",
    "decode_witness",
    "encode_witness",
    "is_valid",
    "legacy_message_hash",
    "message_hash",
    "sign_legacy",
    "sign_simple",
    "to_sign",
    "to_spend",
    "verify",
    "verify_full",
    "verify_legacy",
    "verify_simple",
    "wif_to_seckey",
]
