"""libbitcoinkernel as the consensus oracle: our coinbases, blocks and taproot spends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from payouts.crypto.schnorr import xonly_pubkey
from payouts.crypto.taproot import (
    control_block,
    p2tr_script,
    p2tr_script_for,
    sign_keypath,
    tweak_pubkey,
)
from payouts.node.kernel_chain import BlockRejectedError, KernelChain, solve
from payouts.tx.block import Block
from payouts.tx.coinbase import build_coinbase
from payouts.tx.ctv import ctv_tapleaf, standard_template_hash
from payouts.tx.sighash import SIGHASH_ALL, SIGHASH_DEFAULT, taproot_sighash
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut

SECKEY = bytes.fromhex("6b973d88838f27366ed61c9ad6367663045cb456e28335c109e30717ae0c6baa")
OUTPUT_KEY = tweak_pubkey(xonly_pubkey(SECKEY))[0]
P2TR = p2tr_script(OUTPUT_KEY)


@pytest.fixture(scope="module")
def chain() -> Iterator[KernelChain]:
    """A 101-block chain paying every coinbase to one BIP-86-style P2TR key."""
    with KernelChain() as c:
        c.mine_empty(101, P2TR)
        yield c


def _assert_rejected(chain: KernelChain, block: Block, reason: str) -> None:
    tip = (chain.tip_height, chain.tip_hash)
    with pytest.raises(BlockRejectedError) as ei:
        chain.submit(block)
    assert ei.value.reason == reason, str(ei.value)
    assert ei.value.code == "block-rejected"
    assert (chain.tip_height, chain.tip_hash) == tip


def test_101_block_chain(chain: KernelChain) -> None:
    assert chain.tip_height >= 101
    assert chain.blocks[0].txs[0].inputs[0].script_sig[:1] == b"\x51"  # BIP-34 OP_1
    assert chain.tip_hash == chain.blocks[-1].hash


def test_500_payout_coinbase_accepted(chain: KernelChain) -> None:
    value = chain.subsidy(chain.tip_height + 1)
    scripts = [b"\x51\x20" + i.to_bytes(32, "big") for i in range(1, 501)]
    each = value // 500
    outs = [TxOut(each, s) for s in scripts]
    outs[0] = TxOut(each + value - each * 500, scripts[0])
    block = chain.mine_block(outs, extranonce=b"\x01\x02\x03\x04\x05\x06\x07\x08")
    cb = block.txs[0]
    assert len(cb.outputs) == 501  # + witness commitment
    assert sum(o.value for o in cb.outputs) == value
    assert chain.tip_hash == block.hash


def test_bad_bip34_height_rejected(chain: KernelChain) -> None:
    out = [TxOut(chain.subsidy(chain.tip_height + 1), P2TR)]
    block = chain.build_block(out, height=chain.tip_height + 2)
    _assert_rejected(chain, block, "bad-cb-height")


def test_coinbase_over_subsidy_rejected(chain: KernelChain) -> None:
    block = chain.build_block([TxOut(chain.subsidy(chain.tip_height + 1) + 1, P2TR)])
    _assert_rejected(chain, block, "bad-cb-amount")


def test_bad_witness_commitment_rejected(chain: KernelChain) -> None:
    good = chain.build_block([TxOut(chain.subsidy(chain.tip_height + 1), P2TR)])
    cb = good.txs[0]
    height = chain.tip_height + 1
    bad_cb = build_coinbase(
        height, cb.outputs[:-1], b"\x00" * 4, tag=b"/payouts/", commitment=b"\x13" * 32
    )
    header = replace(good.header, merkle_root=bad_cb.txid)
    _assert_rejected(chain, Block(solve(header), (bad_cb,)), "bad-witness-merkle-match")


def test_bad_merkle_root_rejected(chain: KernelChain) -> None:
    good = chain.build_block([TxOut(chain.subsidy(chain.tip_height + 1), P2TR)])
    header = solve(replace(good.header, merkle_root=b"\x42" * 32))
    _assert_rejected(chain, Block(header, good.txs), "bad-txnmrklroot")


def _spend_matured(chain: KernelChain, hash_type: int) -> tuple[Tx, list[TxOut]]:
    # A matured coinbase output paying our key (created at least 100 blocks before the next).
    op, out = next(
        (op, out)
        for op, (out, height, is_cb) in chain.utxos.items()
        if out.script == P2TR and is_cb and chain.tip_height + 1 - height >= 100
    )
    dest = [TxOut(out.value - 10_000, b"\x00\x14" + b"\x11" * 20)]
    unsigned = Tx(2, (TxIn(op, sequence=0xFFFFFFFD),), tuple(dest))
    spent = [out]
    sighash = taproot_sighash(unsigned, 0, spent, hash_type)
    sig = sign_keypath(sighash, SECKEY, None, hash_type=hash_type)
    return unsigned.with_input_witness(0, [sig]), spent


@pytest.mark.parametrize("hash_type", [SIGHASH_DEFAULT, SIGHASH_ALL])
def test_p2tr_keypath_spend_of_matured_coinbase(chain: KernelChain, hash_type: int) -> None:
    tx, spent = _spend_matured(chain, hash_type)
    assert chain.verify_spend(tx, spent)
    bad_sig = bytearray(tx.inputs[0].witness[0])
    bad_sig[5] ^= 0x01
    assert not chain.verify_spend(tx.with_input_witness(0, [bytes(bad_sig)]), spent)
    # And in a block: the fee goes to the coinbase; the spend connects.
    height = chain.tip_height + 1
    block = chain.mine_block([TxOut(chain.subsidy(height) + chain.fees([tx]), P2TR)], [tx])
    assert block.txs[1].txid == tx.txid
    assert OutPoint(tx.txid, 0) in chain.utxos


def test_flipped_signature_block_rejected(chain: KernelChain) -> None:
    tx, _ = _spend_matured(chain, SIGHASH_DEFAULT)
    sig = bytearray(tx.inputs[0].witness[0])
    sig[0] ^= 0x80
    bad = tx.with_input_witness(0, [bytes(sig)])
    block = chain.build_block([TxOut(chain.subsidy(chain.tip_height + 1), P2TR)], [bad])
    with pytest.raises(BlockRejectedError) as ei:
        chain.submit(block)
    assert ei.value.reason == "block-script-verify-flag-failed"
    assert "Invalid Schnorr signature" in str(ei.value)
    assert ei.value.state == "INVALID/CONSENSUS"


def test_garbage_and_duplicate_blocks(chain: KernelChain) -> None:
    with pytest.raises(BlockRejectedError) as ei:
        chain.submit_block(b"\x00" * 10)
    assert ei.value.reason == "decode-error"
    tip = chain.tip_hash
    chain.submit_block(chain.blocks[-1].serialize())  # re-submitting the tip is a no-op
    assert chain.tip_hash == tip


def test_ctv_tapleaf_script_path_spend_is_consensus_valid(chain: KernelChain) -> None:
    """A P2TR output with a CTV leaf, spent along that leaf. The kernel has no CTV, so this
    checks our tree, control block and witness layout — not the template hash itself."""
    internal = xonly_pubkey(b"\x02" * 32)
    fan_out = Tx(2, (TxIn(OutPoint(bytes(32), 0)),), (TxOut(40_000, P2TR),))
    leaf = ctv_tapleaf(standard_template_hash(fan_out, 0))
    spk = p2tr_script_for(internal, leaf)
    # Fund it from a matured coinbase with a key-path spend, mined into a block.
    fund, spent = _spend_matured(chain, SIGHASH_DEFAULT)
    fund = Tx(2, fund.inputs, (TxOut(50_000, spk),))
    sighash = taproot_sighash(fund, 0, spent)
    fund = fund.with_input_witness(0, [sign_keypath(sighash, SECKEY)])
    height = chain.tip_height + 1
    chain.mine_block([TxOut(chain.subsidy(height) + chain.fees([fund]), P2TR)], [fund])
    # The committed fan-out, now with its real outpoint (CTV does not commit to outpoints).
    spend = Tx(2, (TxIn(OutPoint(fund.txid, 0)),), fan_out.outputs)
    assert standard_template_hash(spend, 0) == standard_template_hash(fan_out, 0)
    spend = spend.with_input_witness(0, [leaf.script, control_block(internal, leaf, leaf)])
    assert chain.verify_spend(spend)
    wrong_cb = bytearray(control_block(internal, leaf, leaf))
    wrong_cb[5] ^= 1
    assert not chain.verify_spend(spend.with_input_witness(0, [leaf.script, bytes(wrong_cb)]))
