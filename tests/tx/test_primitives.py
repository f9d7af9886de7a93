"""Transactions, BIP-34 heights, coinbase prefix/suffix, merkle trees, weight and sigops."""

from __future__ import annotations

import json
from pathlib import Path

import bitcoin.core as bc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from payouts.tx.block import BlockHeader, bits_to_target, check_pow
from payouts.tx.coinbase import (
    CoinbaseError,
    block_subsidy,
    build_coinbase,
    build_coinbase_parts,
    find_witness_commitment,
    witness_commitment,
)
from payouts.tx.hashes import from_display_hex, sha256d
from payouts.tx.merkle import merkle_path, merkle_root, merkle_root_mutated, root_from_path
from payouts.tx.script import bip34_height, push_data, script_num
from payouts.tx.transaction import NULL_OUTPOINT, OutPoint, Tx, TxDecodeError, TxIn
from payouts.tx.txout import TxOut

P2TR = b"\x51\x20" + b"\x07" * 32
P2PKH = b"\x76\xa9\x14" + b"\x01" * 20 + b"\x88\xac"


def _ctv_txs(vectors: Path) -> list[str]:
    data = json.loads((vectors / "bip-0119" / "ctvhash.json").read_text())
    return [c["hex_tx"] for c in data if isinstance(c, dict)]


def test_roundtrip_and_ids_match_python_bitcoinlib(vectors: Path) -> None:
    for hex_tx in _ctv_txs(vectors):
        raw = bytes.fromhex(hex_tx)
        tx = Tx.parse(raw)
        ref = bc.CTransaction.deserialize(raw)
        assert tx.serialize() == raw
        assert tx.txid == ref.GetTxid()
        assert tx.serialize_no_witness() == ref.serialize({"include_witness": False})
        assert tx.wtxid == (sha256d(raw) if tx.has_witness else tx.txid)
        assert tx.weight == 3 * len(tx.serialize_no_witness()) + len(raw)
        assert tx.vsize == -(-tx.weight // 4)


def test_strict_parsing(vectors: Path) -> None:
    raw = bytes.fromhex(_ctv_txs(vectors)[0])
    with pytest.raises(TxDecodeError, match="trailing"):
        Tx.parse(raw + b"\x00")
    for cut in range(len(raw)):
        with pytest.raises(TxDecodeError):
            Tx.parse(raw[:cut])
    tx = Tx(2, (TxIn(OutPoint(b"\x01" * 32, 0)),), (TxOut(1000, P2TR),))
    base = tx.serialize()
    # Marker + flag 1 but an all-empty witness: Core's "Superfluous witness record".
    bogus = base[:4] + b"\x00\x01" + base[4:-4] + b"\x00" + base[-4:]
    with pytest.raises(TxDecodeError, match="superfluous"):
        Tx.parse(bogus)
    with pytest.raises(TxDecodeError, match="optional data"):
        Tx.parse(base[:4] + b"\x00\x02" + base[4:])
    with pytest.raises(TxDecodeError, match="non-canonical"):
        Tx.parse(base[:4] + b"\xfd\x01\x00" + base[5:])
    with pytest.raises(TxDecodeError):  # hostile count
        Tx.parse(base[:4] + b"\xfe\xff\xff\xff\x00" + base[5:])


@given(st.binary(max_size=300))
def test_parse_never_crashes(data: bytes) -> None:
    try:
        tx = Tx.parse(data)
    except TxDecodeError:
        return
    assert tx.serialize() == data


def test_legacy_sigops_and_flags() -> None:
    multisig = b"\x51\x21" + b"\x02" * 33 + b"\x51\xae"
    tx = Tx(1, (TxIn(OutPoint(b"\x02" * 32, 1), b"\xac"),), (TxOut(1, P2PKH), TxOut(1, multisig)))
    assert tx.legacy_sigops() == 1 + 1 + 20
    assert not tx.is_coinbase and not tx.has_witness
    with pytest.raises(ValueError):
        Tx(1 << 31, (), ())


BIP34 = {
    0: "00", 1: "51", 16: "60", 17: "0111", 127: "017f", 128: "028000", 255: "02ff00",
    256: "020001", 32767: "02ff7f", 32768: "03008000", 840000: "0340d10c",
    8388607: "03ffff7f", 8388608: "0400008000", 2**31 - 1: "04ffffff7f",
}  # fmt: skip


@pytest.mark.parametrize(("height", "expected"), sorted(BIP34.items()))
def test_bip34_matches_core_cscript_shift(height: int, expected: str) -> None:
    assert bip34_height(height).hex() == expected
    if height > 16:  # python-bitcoinlib's CScript([n]) is Core's CScript() << n
        assert bytes(bc.script.CScript([height])).hex() == expected


def test_script_num_and_push() -> None:
    assert script_num(-1) == b"\x81" and script_num(-128) == b"\x80\x80" and script_num(0) == b""
    assert push_data(b"\x01" * 75)[:1] == b"\x4b"
    assert push_data(b"\x01" * 76)[:2] == b"\x4c\x4c"
    assert push_data(b"\x01" * 256)[:3] == b"\x4d\x00\x01"


def _coinbase_40(n: int) -> Tx:
    # 840000 push (4) + 27-byte tag push + extranonce push (9) = 40-byte scriptSig (payouts.md §3.2)
    outs = [TxOut(1000, P2TR)] * n
    return build_coinbase(840000, outs, b"\xee" * 8, tag=b"t" * 26, commitment=bytes(32))


@pytest.mark.parametrize(("n", "weight"), [(1, 760), (10, 2308), (16, 3340), (500, 86596)])
def test_coinbase_weight_table(n: int, weight: int) -> None:
    cb = _coinbase_40(n)
    assert len(cb.inputs[0].script_sig) == 40
    assert cb.weight == weight


def test_coinbase_prefix_suffix_split() -> None:
    outs = [TxOut(5_000_000_000, P2TR)]
    parts = build_coinbase_parts(
        840000, outs, extranonce_size=8, tag=b"/pool/", commitment=b"\x05" * 32
    )
    en = bytes(range(8))
    tx = Tx.parse(parts.serialize(en))
    assert tx.is_coinbase and tx.inputs[0].prevout == NULL_OUTPOINT
    script_sig = tx.inputs[0].script_sig
    assert script_sig == bytes.fromhex("0340d10c") + b"\x06/pool/" + b"\x08" + en
    assert parts.prefix.endswith(script_sig[:-8]) and parts.prefix[4:6] == b"\x00\x01"
    assert parts.txid(en) == tx.txid
    assert tx.inputs[0].witness == (bytes(32),)
    assert find_witness_commitment(tx) == 1
    assert tx.outputs[1].script.hex() == "6a24aa21a9ed" + "05" * 32
    with pytest.raises(CoinbaseError, match="extranonce"):
        parts.serialize(b"\x00" * 7)


def test_coinbase_scriptsig_bounds() -> None:
    with pytest.raises(CoinbaseError, match="bad-cb-length"):
        build_coinbase_parts(1, [TxOut(1, P2TR)], extranonce_size=0)  # only "51"
    build_coinbase_parts(1, [TxOut(1, P2TR)], extranonce_size=1)  # 51 01 xx
    with pytest.raises(CoinbaseError, match="bad-cb-length"):
        build_coinbase_parts(840000, [TxOut(1, P2TR)], extranonce_size=32, tag=b"x" * 63)


def test_empty_block_witness_commitment() -> None:
    # The commitment every empty segwit block carries: SHA256d(0^32 || 0^32).
    assert witness_commitment([]).hex() == (
        "e2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"
    )


def test_subsidy() -> None:
    assert block_subsidy(0) == 5_000_000_000
    assert block_subsidy(840_000) == 312_500_000
    assert block_subsidy(150, 150) == 2_500_000_000
    assert block_subsidy(64 * 210_000) == 0


def test_merkle_block_100000() -> None:
    txids = [
        from_display_hex(h)
        for h in (
            "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
            "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
            "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
            "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
        )
    ]
    root = "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"
    assert merkle_root(txids) == from_display_hex(root)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_merkle_paths(n: int) -> None:
    leaves = [sha256d(bytes([i])) for i in range(n)]
    root = merkle_root(leaves)
    for i in range(n):
        assert root_from_path(leaves[i], merkle_path(leaves, i), i) == root
    assert len(merkle_path(leaves, 0)) == (n - 1).bit_length()
    assert merkle_root_mutated(leaves)[1] is False
    # CVE-2012-2459: duplicating the last leaf of an odd level keeps the root, flagged mutated.
    if n % 2 and n > 1:
        dup = [*leaves, leaves[-1]]
        assert merkle_root_mutated(dup) == (root, True)


def test_header_hash_genesis() -> None:
    # Regtest genesis header (chainparams.cpp CreateGenesisBlock(1296688602, 2, 0x207fffff, 1)).
    header = BlockHeader(
        1,
        bytes(32),
        from_display_hex("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"),
        1296688602,
        0x207FFFFF,
        2,
    )
    assert header.hash_hex == "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    assert BlockHeader.parse(header.serialize()) == header
    assert check_pow(header.hash, header.bits)
    assert bits_to_target(0x1D00FFFF) == 0xFFFF << 208
