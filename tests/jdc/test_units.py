"""JD client pieces without a network: constraints, templates from TDP messages, output
vectors, and the client's coinbase passing the server's own validation (invariant 3)."""

from __future__ import annotations

import pytest

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.model import AdditionalOutput, Distribution, Payee, PoolPayout
from payouts.errors import ValidationError
from payouts.node.interface import BlockTemplate, TemplateTx
from payouts.settlement.ctv import CtvParams
from payouts.settlement.modes import SettlementMode, default_expected_outputs
from payouts.tx.coinbase import block_subsidy
from payouts.tx.script import bip34_height
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.jdc import (
    JobTemplate,
    TemplateError,
    build_job_coinbase,
    build_outputs_coinbase,
    constraints_for,
    parse_output_vector,
    serialize_output_vector,
    solve,
)
from sv2.jds import PayoutRule, validate_declaration
from sv2.jds.validation import KnownTx, check_height, parse_declared_coinbase
from sv2.messages.template_distribution import NewTemplate, SetNewPrevHash
from sv2.template import height_from_coinbase_prefix, parse_template_outputs
from tests.jdc.helpers import OP_TRUE_WSH, make_distribution, p2pkh, p2tr, p2wpkh


def _tx(i: int, value: int = 10_000) -> Tx:
    txin = TxIn(OutPoint(bytes([i]) * 32, 0), b"", 0xFFFFFFFD, (b"\x51",))
    return Tx(2, (txin,), (TxOut(value, OP_TRUE_WSH),), 0)


def _template(height: int = 200, fees: tuple[int, ...] = (700, 300)) -> JobTemplate:
    txs = tuple(TemplateTx(_tx(i + 1), f, 0) for i, f in enumerate(fees))
    subsidy = block_subsidy(height, 150)
    bt = BlockTemplate(
        0x20000000, bytes(range(32)), height, 0x207FFFFF, 1_700_000_000, subsidy + sum(fees), txs
    )
    return JobTemplate.from_block_template(bt)


def test_constraints_sum_output_sizes_and_sigops() -> None:
    d = Distribution(
        7,
        PoolPayout(p2wpkh(0), 5),
        (Payee(p2tr(1), 10, 330), Payee(p2pkh(2), 10, 546)),
        (AdditionalOutput(p2wpkh(3), 1_000),),
    )
    c = constraints_for(d)
    assert c.max_additional_size == 31 + 43 + 34 + 31 == d.max_outputs_size()
    assert c.max_additional_sigops == 4 and c.outputs == 4 and c.distribution_id == 7
    msg = c.message()
    assert (msg.coinbase_output_max_additional_size, msg.coinbase_output_max_additional_sigops) == (
        139,
        4,
    )
    assert c.reserved_weight() == 1168 + 4 * 139
    # ctv/musig2 (docs/extensions/0x4003 §4): the one 43-byte settlement output plus the
    # additional outputs, whatever the payees' footprint (the client waits for the mode).
    small = Distribution(1, PoolPayout(p2wpkh(0), 1))
    assert constraints_for(small).max_additional_size == 31
    assert constraints_for(small, "ctv").max_additional_size == 43
    for mode in ("ctv", "musig2"):
        assert constraints_for(d, mode).max_additional_size == 43 + 31
        assert (constraints_for(d, mode).max_additional_sigops, constraints_for(d, mode).outputs
                ) == (0, 2)


@pytest.mark.parametrize(
    "mode",
    [SettlementMode("coinbase"), SettlementMode("ctv", CtvParams(arity=2, fee_rate=2))],
    ids=["coinbase", "ctv"],
)
def test_client_coinbase_passes_server_validation(mode: SettlementMode) -> None:
    dist = make_distribution(9, payees=12)
    t = _template()
    job = build_job_coinbase(dist, t, mode)
    decl = parse_declared_coinbase(job.prefix, job.suffix)
    assert check_height(decl, t.height - 1) == t.height
    known = [
        KnownTx.of(tx, fee=f, sigops=0) for tx, f in zip(t.transactions, (700, 300), strict=True)
    ]
    rule = PayoutRule("x", lambda rev: default_expected_outputs(mode, dist, rev), "test")
    v = validate_declaration(
        decl, known, height=t.height, subsidy=block_subsidy(t.height, 150), rule=rule
    )
    assert v.revenue == t.revenue and v.payout_outputs == job.payout_outputs
    if mode.name == "coinbase":
        assert job.payout_outputs == compute_outputs(dist, t.revenue).outputs
    assert job.outputs[-1] == t.outputs[-1]  # witness commitment last


def test_template_from_tdp_messages() -> None:
    t = _template(height=300)
    outs = b"".join(o.serialize() for o in t.outputs)
    nt = NewTemplate(
        template_id=5,
        future_template=False,
        version=t.version,
        coinbase_tx_version=2,
        coinbase_prefix=bip34_height(300),
        coinbase_tx_input_sequence=0xFFFFFFFE,
        coinbase_tx_value_remaining=t.revenue,
        coinbase_tx_outputs_count=len(t.outputs),
        coinbase_tx_outputs=outs,
        coinbase_tx_locktime=299,
        merkle_path=tuple(t.merkle_path()),
    )
    snph = SetNewPrevHash(
        template_id=5,
        prev_hash=t.prev_hash,
        header_timestamp=t.time,
        n_bits=t.bits,
        target=bytes(32),
    )
    tdp = JobTemplate.from_tdp(nt, snph, [x.serialize() for x in t.transactions])
    assert tdp.height == 300 and tdp.revenue == t.revenue and tdp.outputs == t.outputs
    assert tdp.wtxids == t.wtxids and tdp.coinbase_locktime == 299 and tdp.template_id == 5
    job = build_job_coinbase(make_distribution(1), tdp)
    assert job.parts.tx(bytes(8)).locktime == 299
    with pytest.raises(TemplateError):
        JobTemplate.from_tdp(nt, snph, [t.transactions[0].serialize()])  # wrong tx list
    assert solve(tdp, job).header.prev_hash == t.prev_hash


def test_template_parsing_errors() -> None:
    assert height_from_coinbase_prefix(b"\x51") == 1
    assert height_from_coinbase_prefix(bip34_height(1_000_000) + b"xx") == 1_000_000
    with pytest.raises(TemplateError):
        height_from_coinbase_prefix(b"")
    one = TxOut(0, b"\x6a\x01\x00").serialize()
    assert parse_template_outputs(one * 2, 2) == (TxOut(0, b"\x6a\x01\x00"),) * 2
    for raw, n in ((one, 2), (one + b"\x00", 1), (one[:5], 1)):
        with pytest.raises(TemplateError):
            parse_template_outputs(raw, n)


def test_output_vector_round_trip_and_per_job_coinbase() -> None:
    t = _template()
    outs = compute_outputs(make_distribution(2), t.revenue).outputs
    raw = serialize_output_vector(outs)
    assert parse_output_vector(raw) == outs
    for bad in (raw + b"\x00", raw[:-1], b""):
        with pytest.raises(ValidationError):
            parse_output_vector(bad)
    job = build_outputs_coinbase(outs, t)
    assert job.payout_outputs == outs and job.distribution_id is None
    with pytest.raises(ValidationError):
        build_outputs_coinbase(outs[1:], t)  # does not pay T
