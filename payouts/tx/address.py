"""Addresses for P2PKH, P2SH (Base58Check) and P2WPKH, P2WSH, P2TR (BIP-173 bech32 / BIP-350
bech32m) on mainnet, testnet (3 and 4), signet and regtest.

Encoding primitives come from embit (``embit.bech32`` is Pieter Wuille's BIP-173/350 reference
code, ``embit.base58`` Base58Check). embit's own ``address_to_scriptpubkey`` is *not* used: it
accepts any network, does not check the Base58 payload length and swallows errors with a bare
``except``. The checks here mirror Core's ``DecodeDestination`` (key_io.cpp): the right HRP or
version byte for the chain, 20-byte Base58 payloads, v0 programs of 20 or 32 bytes with bech32,
v1+ with bech32m, and — a payout-engine choice — only the five output types we pay to.
Testnet, testnet4 and signet share their prefixes ("tb", 0x6f/0xc4), as in Core; regtest shares
the Base58 prefixes but has its own HRP "bcrt".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from embit import base58, bech32

from payouts.errors import ValidationError
from payouts.tx.output_scripts import ScriptType, classify


class Network(StrEnum):
    MAINNET = "main"
    TESTNET = "test"
    TESTNET4 = "testnet4"
    SIGNET = "signet"
    REGTEST = "regtest"


@dataclass(frozen=True, slots=True)
class _Params:
    hrp: str
    p2pkh: int
    p2sh: int


_PARAMS = {
    Network.MAINNET: _Params("bc", 0x00, 0x05),
    Network.TESTNET: _Params("tb", 0x6F, 0xC4),
    Network.TESTNET4: _Params("tb", 0x6F, 0xC4),
    Network.SIGNET: _Params("tb", 0x6F, 0xC4),
    Network.REGTEST: _Params("bcrt", 0x6F, 0xC4),
}
_ALIASES = {"mainnet": "main", "bitcoin": "main", "testnet": "test", "testnet3": "test"}


class AddressError(ValidationError):
    """The string is not a valid address of a supported type."""

    code = "invalid-address"


class WrongNetworkError(AddressError):
    """A valid address, but for another chain than the one configured."""

    code = "address-wrong-network"


class UnsupportedAddressError(AddressError):
    """Valid, but not one of P2PKH/P2SH/P2WPKH/P2WSH/P2TR (e.g. a future witness version)."""

    code = "unsupported-address"


def as_network(network: Network | str) -> Network:
    try:
        return Network(_ALIASES.get(str(network), str(network)))
    except ValueError:
        raise ValueError(f"unknown network {network!r}") from None


def _names(nets: frozenset[Network]) -> str:
    return "/".join(n.value for n in Network if n in nets)


def _decode_segwit(addr: str) -> tuple[str, bytes] | None:
    """(hrp, scriptPubKey) for a bech32/bech32m string with a known HRP, None if the string does
    not look like one; raises AddressError for a malformed one."""
    pos = addr.rfind("1")
    hrp = addr[:pos].lower() if pos > 0 else ""
    if hrp not in {p.hrp for p in _PARAMS.values()}:
        return None
    encoding, _, data = bech32.bech32_decode(addr)
    if encoding is None:
        raise AddressError(f"{addr!r}: bad bech32 checksum, characters, case or length")
    if not data:
        raise AddressError(f"{addr!r}: no witness version")
    version = data[0]
    program = bech32.convertbits(data[1:], 5, 8, False)
    if version > 16 or program is None or not 2 <= len(program) <= 40:
        raise AddressError(f"{addr!r}: invalid witness program")
    want = bech32.Encoding.BECH32 if version == 0 else bech32.Encoding.BECH32M
    if encoding != want:
        kind = "bech32" if version == 0 else "bech32m"
        raise AddressError(f"{addr!r}: witness v{version} addresses must use {kind} (BIP-350)")
    if version == 0 and len(program) not in (20, 32):
        raise AddressError(f"{addr!r}: a v0 witness program is 20 or 32 bytes")
    if version > 1 or (len(program) != 32 and version == 1):
        raise UnsupportedAddressError(
            f"{addr!r}: witness v{version} with a {len(program)}-byte program is not a payout "
            "type this engine supports (P2WPKH, P2WSH, P2TR)"
        )
    op = 0x00 if version == 0 else 0x50 + version
    return hrp, bytes((op, len(program))) + bytes(program)


def _decode_base58(addr: str) -> tuple[int, bytes]:
    try:
        payload = base58.decode_check(addr)
    except ValueError as e:
        raise AddressError(f"{addr!r}: not a bech32 or Base58Check address ({e})") from None
    if len(payload) != 21:
        raise AddressError(f"{addr!r}: Base58 payload is {len(payload) - 1} bytes, expected 20")
    return payload[0], payload[1:]


def decode_address(addr: str) -> tuple[bytes, frozenset[Network]]:
    """(scriptPubKey, networks the address is valid on). Raises AddressError subclasses."""
    addr = addr.strip()
    if not addr or len(addr) > 90:
        raise AddressError("an address is 1..90 characters")
    seg = _decode_segwit(addr)
    if seg is not None:
        hrp, script = seg
        return script, frozenset(n for n, p in _PARAMS.items() if p.hrp == hrp)
    prefix, h = _decode_base58(addr)
    p2pkh = frozenset(n for n, p in _PARAMS.items() if p.p2pkh == prefix)
    if p2pkh:
        return b"\x76\xa9\x14" + h + b"\x88\xac", p2pkh
    p2sh = frozenset(n for n, p in _PARAMS.items() if p.p2sh == prefix)
    if p2sh:
        return b"\xa9\x14" + h + b"\x87", p2sh
    raise AddressError(f"{addr!r}: unknown Base58 version byte 0x{prefix:02x}")


def address_to_script(addr: str, network: Network | str) -> bytes:
    """scriptPubKey for ``addr``, which must belong to ``network``.

    Raises :class:`WrongNetworkError` (code ``address-wrong-network``) for a valid address of
    another chain, :class:`UnsupportedAddressError` for other output types, and
    :class:`AddressError` for anything malformed.
    """
    net = as_network(network)
    script, nets = decode_address(addr)
    if net not in nets:
        raise WrongNetworkError(f"{addr!r} is a {_names(nets)} address; expected {net.value}")
    return script


def script_to_address(script: bytes, network: Network | str) -> str:
    """Address of a P2PKH, P2SH, P2WPKH, P2WSH or P2TR scriptPubKey on ``network``
    (Core's ``EncodeDestination``); raises UnsupportedAddressError for other scripts."""
    p = _PARAMS[as_network(network)]
    kind = classify(script)
    if kind is ScriptType.P2PKH:
        return str(base58.encode_check(bytes((p.p2pkh,)) + script[3:23]))
    if kind is ScriptType.P2SH:
        return str(base58.encode_check(bytes((p.p2sh,)) + script[2:22]))
    if kind in (ScriptType.P2WPKH, ScriptType.P2WSH, ScriptType.P2TR):
        version = 0 if script[0] == 0 else script[0] - 0x50
        enc = bech32.Encoding.BECH32 if version == 0 else bech32.Encoding.BECH32M
        data = [version, *bech32.convertbits(script[2:], 8, 5)]
        return str(bech32.bech32_encode(enc, p.hrp, data))
    raise UnsupportedAddressError(f"a {kind.value} script has no address form")
