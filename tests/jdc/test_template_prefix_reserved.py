"""The JD client places a Template Provider's ``NewTemplate.coinbase_prefix`` as sent and uses
its coinbase witness reserved value (``RequestTransactionData.Success.excess_data``, where
sv2-tp carries it: reference/interop.md) -- sv2-spec §7.2/§7.4, issue #13.

A template whose prefix holds more than the height push and whose witness commitment was made
with a non-zero reserved value: the job's coinbase starts its scriptSig with that prefix, its
witness is that value, and the block is valid under Bitcoin Core's consensus code (the kernel
node); the same block with a zero reserved value fails ``bad-witness-merkle-match``, so the
check could fail. A wrong ``excess_data`` or a prefix without the height is refused at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from payouts.node.kernel import KernelNode
from payouts.tx.block import Block
from payouts.tx.coinbase import witness_commitment, witness_commitment_output
from payouts.tx.script import bip34_height
from payouts.tx.txout import TxOut
from sv2.jdc import JobTemplate, TemplateError, build_job_coinbase, solve
from tests.jdc.helpers import make_distribution
from tests.node.test_kernel_node import P2TR, coinbase_outpoint, run, spend

RESERVED = bytes(range(1, 33))  # non-zero: a coinbase built with zeros would not match


@pytest.fixture
def node() -> Iterator[KernelNode]:
    with KernelNode() as n:
        run(n.generate(101, P2TR))
        yield n


def tp_template(node: KernelNode, prefix_extra: bytes, reserved: bytes) -> tuple[JobTemplate,
                                                                               bytes]:
    """What sv2-tp would send for the node's template (a segwit tx in it), through the TDP
    messages: (the template the JD client builds from them, the prefix sent)."""
    op, out = coinbase_outpoint(node, 1)
    run(node.send_raw_transaction(spend([(op, out)], [TxOut(out.value - 2_000, P2TR)])
                                  .serialize()))
    base = JobTemplate.from_block_template(run(node.block_template()))
    assert len(base.transactions) == 1
    prefix = bip34_height(base.height) + prefix_extra
    sent = dataclasses.replace(
        base, coinbase_prefix=prefix, witness_reserved=reserved,
        outputs=(witness_commitment_output(witness_commitment(base.wtxids, reserved)),))
    nt, snph = sent.new_template(7, future=True), sent.set_new_prev_hash(7)
    assert nt.coinbase_prefix == prefix
    raw = [t.serialize() for t in sent.transactions]
    return JobTemplate.from_tdp(nt, snph, raw, reserved), prefix


def test_prefix_as_sent_and_reserved_value_make_a_valid_block(node: KernelNode) -> None:
    tmpl, prefix = tp_template(node, b"\x04sv2!", RESERVED)
    assert tmpl.coinbase_prefix == prefix and tmpl.witness_reserved == RESERVED
    coinbase = build_job_coinbase(make_distribution(), tmpl)
    sol = solve(tmpl, coinbase)
    cb = sol.block.txs[0]
    assert cb.inputs[0].script_sig.startswith(prefix)  # placed as sent, then tag + extranonce
    assert cb.inputs[0].witness == (RESERVED,)
    # The same block with Core's default zero reserved value: the commitment does not match.
    zero = cb.with_input_witness(0, [bytes(32)])
    bad = Block(sol.block.header, (zero, *sol.block.txs[1:]))
    assert run(node.submit_block(bad.serialize())) == "bad-witness-merkle-match"
    assert run(node.submit_block(sol.block.serialize())) is None
    assert run(node.tip()).block_hash == sol.block.hash


def test_a_template_from_a_node_keeps_the_height_push_and_zeros(node: KernelNode) -> None:
    tmpl = JobTemplate.from_block_template(run(node.block_template()))
    assert tmpl.script_prefix == bip34_height(tmpl.height) and tmpl.witness_reserved == bytes(32)
    sol = solve(tmpl, build_job_coinbase(make_distribution(), tmpl))
    assert run(node.submit_block(sol.block.serialize())) is None


def test_wrong_excess_data_or_prefix_is_refused(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    run(node.send_raw_transaction(spend([(op, out)], [TxOut(out.value - 2_000, P2TR)])
                                  .serialize()))
    base = JobTemplate.from_block_template(run(node.block_template()))
    sent = dataclasses.replace(
        base, outputs=(witness_commitment_output(witness_commitment(base.wtxids, RESERVED)),))
    nt, snph = sent.new_template(1, future=True), sent.set_new_prev_hash(1)
    raw = [t.serialize() for t in sent.transactions]
    with pytest.raises(TemplateError, match="witness commitment does not match"):
        JobTemplate.from_tdp(nt, snph, raw)  # no excess_data: zeros, another commitment
    with pytest.raises(TemplateError, match="excess_data is 31 bytes"):
        JobTemplate.from_tdp(nt, snph, raw, RESERVED[:31])
    assert JobTemplate.from_tdp(nt, snph, raw, RESERVED).witness_reserved == RESERVED
    with pytest.raises(TemplateError, match="BIP-34 height"):
        JobTemplate.from_tdp(dataclasses.replace(nt, coinbase_prefix=b"\x01\x07"), snph, raw,
                             RESERVED)


def test_set_custom_mining_job_carries_the_templates_prefix(node: KernelNode) -> None:
    """§5.3.18: SetCustomMiningJob.coinbase_prefix starts the declared scriptSig (at most 8
    bytes), so with a TP's longer prefix it is that prefix's start, not the height alone."""
    from sv2.jdc.custom_job import build_set_custom_mining_job
    from sv2.jdc.session import DeclaredJob

    tmpl, prefix = tp_template(node, b"\x06sv2tp!", RESERVED)
    coinbase = build_job_coinbase(make_distribution(), tmpl)
    job = DeclaredJob(1, b"token", tmpl, coinbase, 1, "coinbase", 1)
    msg = build_set_custom_mining_job(job, channel_id=1, request_id=2)
    assert len(prefix) > 8 and msg.coinbase_prefix == prefix[:8]
    script_sig = coinbase.parts.tx(bytes(coinbase.parts.extranonce_size)).inputs[0].script_sig
    assert script_sig.startswith(msg.coinbase_prefix)
    assert msg.coinbase_prefix != bip34_height(tmpl.height)
