"""Address <-> scriptPubKey for five output types and five networks (BIP-173/350 vectors)."""

from __future__ import annotations

import bitcoin
import pytest
from bitcoin.wallet import CBitcoinAddress

from payouts.tx.address import (
    AddressError,
    Network,
    UnsupportedAddressError,
    WrongNetworkError,
    address_to_script,
    decode_address,
    script_to_address,
)

H20 = bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")
P2PKH = b"\x76\xa9\x14" + H20 + b"\x88\xac"
P2SH = b"\xa9\x14" + H20 + b"\x87"
P2WPKH = b"\x00\x14" + H20
P2WSH = bytes.fromhex("00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262")
P2TR = bytes.fromhex("5120a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c")


@pytest.mark.parametrize(
    ("addr", "network", "script"),
    [
        # BIP-173 / BIP-350 vectors
        ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "main", P2WPKH),
        ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "test", P2WSH),
        # BIP-86 first vector
        ("bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr", "main", P2TR),
        # the compressed key of secret 1 (hash160 751e76…)
        ("1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH", "main", P2PKH),
    ],
)
def test_known_addresses(addr: str, network: str, script: bytes) -> None:
    assert address_to_script(addr, network) == script
    expected = addr.lower() if addr[0] in "bBtT" else addr
    assert script_to_address(script, network) == expected


@pytest.mark.parametrize("network", list(Network))
@pytest.mark.parametrize("script", [P2PKH, P2SH, P2WPKH, P2WSH, P2TR])
def test_roundtrip_every_network(network: Network, script: bytes) -> None:
    addr = script_to_address(script, network)
    assert address_to_script(addr, network) == script
    assert address_to_script(addr.upper() if addr[:1] in "bt" else addr, network) == script
    prefix = {"main": "bc1", "regtest": "bcrt1"}.get(network.value, "tb1")
    if script in (P2WPKH, P2WSH, P2TR):
        assert addr.startswith(prefix)


@pytest.mark.parametrize("net", ["mainnet", "testnet", "regtest"])
def test_base58_and_v0_match_python_bitcoinlib(net: str) -> None:
    bitcoin.SelectParams(net)
    try:
        for script in (P2PKH, P2SH, P2WPKH, P2WSH):
            ours = script_to_address(script, net)
            ref = str(CBitcoinAddress.from_scriptPubKey(bitcoin.core.script.CScript(script)))
            assert ours == ref
    finally:
        bitcoin.SelectParams("mainnet")


def test_wrong_network_is_specific() -> None:
    main = script_to_address(P2TR, "main")
    with pytest.raises(WrongNetworkError) as ei:
        address_to_script(main, "regtest")
    assert ei.value.code == "address-wrong-network"
    assert "main" in ei.value.message and "regtest" in ei.value.message
    tb = script_to_address(P2WPKH, "signet")
    assert address_to_script(tb, "test") == P2WPKH  # signet/testnet share "tb"
    assert decode_address(tb)[1] == {Network.TESTNET, Network.TESTNET4, Network.SIGNET}
    with pytest.raises(WrongNetworkError):
        address_to_script(tb, "regtest")
    with pytest.raises(WrongNetworkError):
        address_to_script(script_to_address(P2WPKH, "regtest"), "signet")
    with pytest.raises(WrongNetworkError):
        address_to_script("1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH", "test")
    # Regtest uses testnet's Base58 prefixes, as in Core.
    assert address_to_script(script_to_address(P2PKH, "test"), "regtest") == P2PKH


@pytest.mark.parametrize(
    "addr",
    [
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",  # checksum
        "BC1QW508D6QEJXTDG4y5R3ZARVARY0C5XW7KV8F3T4",  # mixed case
        "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",  # unknown hrp
        "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMx",  # Base58 checksum
        "",
        "x" * 91,
    ],
)
def test_malformed(addr: str) -> None:
    with pytest.raises(AddressError) as ei:
        address_to_script(addr, "main")
    assert ei.value.code == "invalid-address"


def test_bech32_vs_bech32m_variant() -> None:
    from embit import bech32

    program = list(P2TR[2:])
    as_bech32 = bech32.bech32_encode(
        bech32.Encoding.BECH32, "bc", [1, *bech32.convertbits(program, 8, 5)]
    )
    with pytest.raises(AddressError, match="bech32m"):
        address_to_script(as_bech32, "main")
    v0_m = bech32.bech32_encode(
        bech32.Encoding.BECH32M, "bc", [0, *bech32.convertbits(list(H20), 8, 5)]
    )
    with pytest.raises(AddressError, match="bech32"):
        address_to_script(v0_m, "main")


@pytest.mark.parametrize(
    "addr",
    [
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",  # v1, 40 B
        "BC1SW50QGDZ25J",  # v16
    ],
)
def test_valid_but_unsupported(addr: str) -> None:
    with pytest.raises(UnsupportedAddressError) as ei:
        address_to_script(addr, "main")
    assert ei.value.code == "unsupported-address"


def test_script_without_address() -> None:
    with pytest.raises(UnsupportedAddressError):
        script_to_address(b"\x6a\x00", "main")
    with pytest.raises(ValueError, match="unknown network"):
        script_to_address(P2TR, "litecoin")
