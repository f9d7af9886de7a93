"""Extension 0x4003's SetSettlementMode: the decoder and ``mode_from_message`` refuse what
docs/extensions/0x4003-settlement-modes.md §3.3 forbids, each with its named error; the encoder
never sets the channel_msg bit; ``coinbase_output_constraints`` follows §7."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from typer.testing import CliRunner

import sv2.messages.settlement as E
from payouts.cli import app
from payouts.distribution.model import AdditionalOutput, Distribution, Payee, PoolPayout
from payouts.errors import ValidationError
from payouts.settlement.ctv import CtvParams
from payouts.settlement.modes import Musig2Mode, SettlementMode
from sv2.domain_messages import coinbase_output_constraints, mode_from_message, mode_to_message
from sv2.errors import DecodeError, EncodeError
from sv2.framing import Frame
from sv2.messages import SetSettlementMode, decode_frame, message_from_json
from sv2.messages.settlement import SettlementModeError
from sv2.settlement_vectors.cases import committee
from sv2.settlement_vectors.keys import p2pkh, p2tr, p2wpkh, xonly

COINBASE = SetSettlementMode(7, 0, 0, 0, False, 0, 0, 0, 0, (), 0, bytes(32), 0, False)
CTV = replace(COINBASE, mode=1, ctv_arity=4, ctv_anchor=True, ctv_sequence=0xFFFFFFFF)
MUSIG2 = replace(
    COINBASE, mode=2, musig2_committee=committee(1, 2), musig2_fallback_timelock=144,
    musig2_fallback_key=xonly(3), musig2_fee_rate=2,
)


def _frame(msg: SetSettlementMode, channel_msg: bool = False) -> bytes:
    """Bytes of a frame carrying ``msg`` as is (the encoder does not judge the payload)."""
    return Frame(0x4003, 0x00, msg.encode(), channel_msg).encode()


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        (replace(COINBASE, mode=3), E.ERR_UNKNOWN_MODE),
        (replace(COINBASE, mode=255), E.ERR_UNKNOWN_MODE),
        (replace(CTV, ctv_output_form=2), E.ERR_CTV_FORM),
        (replace(CTV, ctv_arity=1), E.ERR_CTV_ARITY),
        (replace(CTV, ctv_tx_version=1), E.ERR_CTV_TX_VERSION),
        (replace(CTV, ctv_tx_version=4), E.ERR_CTV_TX_VERSION),
        (replace(CTV, ctv_tx_version=7), E.ERR_CTV_TX_VERSION),
        (replace(CTV, ctv_tx_version=2), E.ERR_CTV_TX_VERSION),  # v2 at fee rate 0
        (replace(CTV, ctv_fee_rate=100_001), E.ERR_CTV_FEE_RATE),
        (replace(CTV, ctv_anchor=False), E.ERR_CTV_ANCHOR),  # no anchor at fee rate 0
        (replace(MUSIG2, musig2_committee=()), E.ERR_MUSIG2_EMPTY_COMMITTEE),
        (replace(MUSIG2, musig2_committee=(b"\x02" + b"\x11" * 32,)), E.ERR_MUSIG2_COMMITTEE_KEY),
        (replace(MUSIG2, musig2_committee=(b"\x05" + xonly(1),)), E.ERR_MUSIG2_COMMITTEE_KEY),
        (replace(MUSIG2, musig2_committee=committee(1, 2)[::-1]), E.ERR_MUSIG2_COMMITTEE_ORDER),
        (replace(MUSIG2, musig2_committee=committee(1) * 2), E.ERR_MUSIG2_COMMITTEE_ORDER),
        (replace(MUSIG2, musig2_fallback_key=b"\xff" * 32), E.ERR_MUSIG2_FALLBACK_KEY),
        (replace(MUSIG2, musig2_fallback_key=bytes(32)), E.ERR_MUSIG2_FALLBACK_KEY),
        (replace(MUSIG2, musig2_fallback_timelock=100), E.ERR_MUSIG2_TIMELOCK),
        (replace(MUSIG2, musig2_fallback_timelock=0x10000), E.ERR_MUSIG2_TIMELOCK),
        (replace(MUSIG2, musig2_fee_rate=0), E.ERR_MUSIG2_FEE_RATE),
        (replace(MUSIG2, musig2_fee_rate=100_001), E.ERR_MUSIG2_FEE_RATE),
    ],
)
def test_forbidden_messages_are_refused_with_their_code(msg: SetSettlementMode, code: str) -> None:
    with pytest.raises(SettlementModeError) as e:
        decode_frame(_frame(msg))
    assert e.value.code == code and isinstance(e.value, DecodeError)
    with pytest.raises(SettlementModeError) as e:
        SetSettlementMode.decode(msg.encode())
    assert e.value.code == code
    with pytest.raises(SettlementModeError) as e:  # the JD client's path, also from memory
        mode_from_message(msg)
    assert e.value.code == code
    assert msg.problem() is not None and msg.problem()[0] == code  # type: ignore[index]


def test_unused_fields_are_ignored() -> None:
    """§3.2: a receiver MUST ignore the other modes' fields, even nonsense."""
    junk = replace(
        COINBASE, ctv_arity=1, ctv_output_form=9, musig2_committee=(b"\x02" + bytes(32),),
        musig2_fee_rate=0,
    )
    assert mode_from_message(SetSettlementMode.decode(junk.encode())) == SettlementMode()
    ctv = replace(CTV, musig2_committee=(b"\x07" * 33,), musig2_fallback_timelock=5)
    assert mode_from_message(decode_frame(_frame(ctv))[1]).name == "ctv"  # type: ignore[arg-type]
    mu = replace(MUSIG2, ctv_arity=1, ctv_tx_version=9, ctv_anchor=False)
    assert mode_from_message(decode_frame(_frame(mu))[1]).name == "musig2"  # type: ignore[arg-type]


def test_valid_edges_are_accepted() -> None:
    for msg in (
        replace(CTV, ctv_arity=0), replace(CTV, ctv_arity=2), replace(CTV, ctv_arity=0xFFFF),
        replace(CTV, ctv_tx_version=3), replace(CTV, ctv_fee_rate=100_000, ctv_anchor=False,
                                                ctv_tx_version=2),
        replace(MUSIG2, musig2_fallback_timelock=101), replace(MUSIG2, musig2_fee_rate=100_000),
        replace(MUSIG2, musig2_fallback_timelock=0xFFFF, musig2_fee_rate=1, musig2_ctv_leaf=True),
        replace(MUSIG2, musig2_committee=committee(*range(1, 256))),  # 255 keys
    ):
        _, got = decode_frame(_frame(msg))
        assert got == msg
        assert mode_to_message(mode_from_message(msg), msg.distribution_id) == msg


def test_channel_msg_bit_is_refused_on_decode_and_never_encoded() -> None:
    with pytest.raises(SettlementModeError) as e:
        decode_frame(_frame(COINBASE, channel_msg=True))
    assert e.value.code == E.ERR_CHANNEL_MSG
    with pytest.raises(EncodeError) as e2:
        COINBASE.encode_frame(channel_msg=True)
    assert e2.value.code == E.ERR_CHANNEL_MSG
    assert COINBASE.encode_frame(channel_msg=False) == COINBASE.encode_frame()
    assert COINBASE.encode_frame()[:6].hex() == "034000470000"  # 6-byte header, bit clear
    msg, bit = message_from_json({**COINBASE.to_json(), "channel_msg": True})
    with pytest.raises(EncodeError):
        msg.encode_frame(channel_msg=bit)


def test_cli_refuses_the_channel_bit_both_ways() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["sv2", "decode", _frame(COINBASE, channel_msg=True).hex()])
    assert res.exit_code != 0 and isinstance(res.exception, ValidationError)
    assert res.exception.code == E.ERR_CHANNEL_MSG
    doc = json.dumps({**COINBASE.to_json(), "channel_msg": True})
    res = runner.invoke(app, ["sv2", "encode", doc])
    assert res.exit_code != 0 and isinstance(res.exception, ValidationError)
    assert res.exception.code == E.ERR_CHANNEL_MSG


def test_mode_to_message_refuses_a_mode_no_client_may_accept() -> None:
    bad = SettlementMode("musig2", musig2=Musig2Mode(committee(1, 2)[::-1], 144, xonly(3)))
    with pytest.raises(EncodeError) as e:
        mode_to_message(bad, 1)
    assert e.value.code == E.ERR_MUSIG2_COMMITTEE_ORDER
    with pytest.raises(EncodeError):
        mode_to_message(SettlementMode("musig2", musig2=Musig2Mode(committee(1), 144, xonly(3),
                                                                    fee_rate=0)), 1)


def _dist(extras: tuple[AdditionalOutput, ...]) -> Distribution:
    payees = (Payee(p2tr(2), 5, 330), Payee(p2pkh(3), 5, 546), Payee(p2wpkh(4), 5, 294))
    return Distribution(1, PoolPayout(p2wpkh(1), 1), payees, extras)


@pytest.mark.parametrize(
    ("extras", "coinbase", "settlement"),
    [
        ((), (31 + 43 + 34 + 31, 4), (43, 0)),
        ((AdditionalOutput(bytes.fromhex("6a0470617973"), 0),), (139 + 15, 4), (58, 0)),
        ((AdditionalOutput(p2pkh(9), 1000),), (139 + 34, 8), (43 + 34, 4)),
    ],
)
def test_coinbase_output_constraints_per_mode(
    extras: tuple[AdditionalOutput, ...], coinbase: tuple[int, int], settlement: tuple[int, int]
) -> None:
    """§7: coinbase = PR #203's every output; ctv and musig2 = 43 + the additional outputs (a
    one-output musig2 coinbase is not announced at the distribution's 139 bytes)."""
    d = _dist(extras)

    def fields(mode: SettlementMode) -> tuple[Any, Any]:
        c = coinbase_output_constraints(d, mode)
        return c.coinbase_output_max_additional_size, c.coinbase_output_max_additional_sigops

    mu = SettlementMode("musig2", musig2=Musig2Mode(committee(1), 144, xonly(3)))
    assert fields(SettlementMode()) == coinbase
    assert fields(SettlementMode("ctv", CtvParams())) == settlement
    assert fields(mu) == settlement
