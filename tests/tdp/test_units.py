"""Template Distribution without a network: CoinbaseOutputConstraints bytes, which template is
active (future templates, SetNewPrevHash, ids), the TP's template <-> NewTemplate round trip,
and fitting a template under the constraints."""

from __future__ import annotations

import pytest

from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.interface import BlockTemplate, TemplateTx
from payouts.tx.coinbase import block_subsidy
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.framing import Frame
from sv2.jdc import JobTemplate, TemplateError, constraints_for
from sv2.messages.base import decode_message
from sv2.messages.template_distribution import (
    CoinbaseOutputConstraints,
    NewTemplate,
    SetNewPrevHash,
)
from sv2.tdp import TdpProtocolError, TemplateBook
from sv2.tdp.server import fit_template
from tests.jdc.helpers import OP_TRUE_WSH, make_distribution, p2pkh, p2tr, p2wpkh


def _tx(i: int) -> Tx:
    txin = TxIn(OutPoint(bytes([i]) * 32, 0), b"", 0xFFFFFFFD, (b"\x51",))
    return Tx(2, (txin,), (TxOut(10_000, OP_TRUE_WSH),), 0)


def _block_template(fees: tuple[int, ...] = (700, 300, 500), height: int = 300) -> BlockTemplate:
    txs = tuple(TemplateTx(_tx(i + 1), f, 4 * (i + 1)) for i, f in enumerate(fees))
    return BlockTemplate(
        0x20000000,
        bytes(range(32)),
        height,
        0x207FFFFF,
        1_700_000_000,
        block_subsidy(height, 150) + sum(fees),
        txs,
    )


def test_coinbase_output_constraints_bytes() -> None:
    # reference/sv2.md §5.4(e): CoinbaseOutputConstraints(31, 0).
    assert CoinbaseOutputConstraints(31, 0).encode_frame().hex() == "0000700600001f0000000000"
    # From a distribution: pool P2WPKH (31) + P2TR (43) + P2PKH (34) = 108 bytes, 4 sigops.
    d = Distribution(
        3,
        PoolPayout(p2wpkh(0), 1),
        (Payee(p2tr(1), 5, 330), Payee(p2pkh(2), 5, 546)),
    )
    frame = constraints_for(d).message().encode_frame()
    # ext 0x0000, msg 0x70, length 6, U32 LE 108 = 0x6c, U16 LE 4.
    assert frame.hex() == "000070060000" + "6c000000" + "0400"
    msg = decode_message(Frame(0, 0x70, frame[6:]))
    assert msg == CoinbaseOutputConstraints(108, 4)
    # ctv mode (docs/extensions/0x4003 §4): the one 43-byte settlement output, no sigops.
    assert constraints_for(d, "ctv").message() == CoinbaseOutputConstraints(43, 0)
    big = make_distribution(1, payees=4)
    size = sum(8 + 1 + len(s) for s in [big.pool_payout.script, *(p.script for p in big.payouts)])
    assert constraints_for(big).message().encode_frame()[6:10] == size.to_bytes(4, "little")


def _nt(template_id: int, future: bool) -> NewTemplate:
    jt = JobTemplate.from_block_template(_block_template())
    return jt.new_template(template_id, future=future)


def _snph(template_id: int, prev: bytes = b"\x01" * 32) -> SetNewPrevHash:
    return SetNewPrevHash(template_id, prev, 1_700_000_000, 0x207FFFFF, b"\xff" * 32)


def test_template_book_future_templates_activate_on_set_new_prev_hash() -> None:
    book = TemplateBook()
    assert book.on_new_template(_nt(1, True)) is None  # future: waits
    assert book.on_new_template(_nt(2, True)) is None
    assert book.current() is None
    active = book.on_set_new_prev_hash(_snph(2))
    assert active is not None and active.template_id == 2
    cur = book.current()
    assert cur is not None and cur[0].template_id == 2 and cur[1].template_id == 2
    assert book.future == {}  # §7.3: the other future templates are discarded
    # A non-future template builds on the last SetNewPrevHash at once.
    later = book.on_new_template(_nt(3, False))
    assert later is not None and book.current() == (later, _snph(2))


def test_template_book_refuses_bad_ids_without_changing_state() -> None:
    book = TemplateBook()
    with pytest.raises(TdpProtocolError) as info:
        book.on_new_template(_nt(1, False))  # non-future before any SetNewPrevHash
    assert info.value.code == "template-without-prev-hash" and book.last_id is None
    book.on_new_template(_nt(5, True))
    book.on_set_new_prev_hash(_snph(5))
    before = book.current()
    for bad in (5, 4):
        with pytest.raises(TdpProtocolError) as info:
            book.on_new_template(_nt(bad, False))
        assert info.value.code == "template-id-not-increasing"
    assert book.current() == before and book.last_id == 5
    # A SetNewPrevHash naming a template we never got moves the tip: nothing is active.
    book.on_new_template(_nt(6, True))
    assert book.on_set_new_prev_hash(_snph(7, b"\x02" * 32)) is None
    assert book.current() is None and book.unknown_prev_hash_ids == 1 and book.future == {}
    assert book.prev_hash == _snph(7, b"\x02" * 32)


def test_new_template_round_trip_and_future_activation() -> None:
    jt = JobTemplate.from_block_template(_block_template())
    nt = jt.new_template(9, future=True)
    assert nt.coinbase_tx_value_remaining == jt.revenue and nt.coinbase_tx_outputs_count == 1
    snph = jt.set_new_prev_hash(9)
    # The regtest target 0x207fffff: 0x7fffff << 8*(0x20-3), little-endian in the U256.
    assert int.from_bytes(snph.target, "little") == 0x7FFFFF << (8 * 29)
    raw = [t.serialize() for t in jt.transactions]
    back = JobTemplate.from_tdp(nt, snph, raw)
    assert back.wtxids == jt.wtxids and back.outputs == jt.outputs and back.height == 300
    assert back.template_id == 9 and back.revenue == jt.revenue and back.prev_hash == jt.prev_hash
    # The same messages survive the codec.
    assert decode_message(Frame(0, 0x71, nt.encode())) == nt
    # A future template is only usable with the SetNewPrevHash that names it...
    with pytest.raises(TemplateError, match="not activated"):
        JobTemplate.from_tdp(nt, jt.set_new_prev_hash(8), raw)
    # ...while a non-future one builds on the last SetNewPrevHash, whatever id it named.
    upd = jt.new_template(10, future=False)
    assert JobTemplate.from_tdp(upd, snph, raw).template_id == 10
    with pytest.raises(TemplateError, match="merkle_path"):
        JobTemplate.from_tdp(upd, snph, raw[:1])


def test_fit_template_reserves_coinbase_space() -> None:
    bt = _block_template()
    assert fit_template(bt, CoinbaseOutputConstraints(100, 10)) is bt  # everything fits
    w = [t.tx.weight for t in bt.transactions]
    # Leave room for exactly the first transaction: weight budget = 4,000,000 - 1168 - 4*size.
    size = (4_000_000 - 1168 - w[0]) // 4
    fitted = fit_template(bt, CoinbaseOutputConstraints(size, 0))
    assert [t.tx for t in fitted.transactions] == [bt.transactions[0].tx]
    assert fitted.coinbase_value == bt.coinbase_value - 300 - 500
    # Sigops: the second tx costs 8, the budget left after 79,990 reserved is 10 -> one tx.
    by_sigops = fit_template(bt, CoinbaseOutputConstraints(10, 79_990))
    assert len(by_sigops.transactions) == 1
    with pytest.raises(ValueError):
        fit_template(bt, CoinbaseOutputConstraints(1_000_000, 0))
