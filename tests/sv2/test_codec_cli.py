"""``payouts sv2 decode`` / ``encode``: JSON with spec field names, exact inverse of each other."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from typer.testing import CliRunner

from payouts.cli import app
from sv2.messages import DeclareMiningJob, DistributionIdTlv, Message
from sv2.tlv import Tlv
from tests.sv2.test_codec_fixtures import SPEC_FRAMES
from tests.sv2.test_codec_roundtrip import any_message

runner = CliRunner()


def cli(*args: str, stdin: str | None = None) -> str:
    result = runner.invoke(app, ["sv2", *args], input=stdin)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output.strip()


@pytest.mark.parametrize("hexframe", [h for _, h in SPEC_FRAMES])
def test_decode_encode_fixtures(hexframe: str) -> None:
    doc = cli("decode", hexframe)
    assert cli("encode", doc) == hexframe
    assert cli("encode", "-", stdin=doc) == hexframe


def test_decode_json_shape() -> None:
    wtxid = bytes(range(32))
    msg = DeclareMiningJob(
        7,
        b"\x01",
        0x20000000,
        b"\xaa",
        b"\xbb",
        (wtxid,),
        b"",
        tlvs=(DistributionIdTlv(5), Tlv(0x4010, 2, b"\x01")),
    )
    doc = json.loads(cli("decode", msg.encode_frame().hex()))
    assert doc == {
        "message": "DeclareMiningJob",
        "extension_type": 0,
        "msg_type": 0x57,
        "channel_msg": False,
        "fields": {
            "request_id": 7,
            "mining_job_token": "01",
            "version": 0x20000000,
            "coinbase_tx_prefix": "aa",
            "coinbase_tx_suffix": "bb",
            "wtxid_list": [wtxid.hex()],  # wire byte order, not reversed
            "excess_data": "",
        },
        "tlvs": [
            {"extension_type": 3, "field_type": 1, "name": "distribution_id", "distribution_id": 5},
            {"extension_type": 0x4010, "field_type": 2, "value": "01"},
        ],
    }


def test_channel_bit_roundtrips() -> None:
    data = "008070060000010000000000"  # CoinbaseOutputConstraints with the channel bit set
    doc = json.loads(cli("decode", data))
    assert doc["channel_msg"] is True
    assert cli("encode", json.dumps(doc)) == data


@settings(max_examples=40, deadline=None)
@given(any_message)
def test_cli_roundtrip_random_messages(msg: Message) -> None:
    data = msg.encode_frame().hex()
    assert cli("encode", cli("decode", data)) == data


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payouts", "sv2", *args], capture_output=True, text=True
    )


def test_bad_input_exits_2_with_a_clear_message() -> None:
    proc = run("decode", "0000500e00")
    assert proc.returncode == 2 and "sv2-truncated" in proc.stderr
    proc = run("decode", "zz")
    assert proc.returncode == 2 and "not valid hex" in proc.stderr
    proc = run("encode", '{"message": "PushSolution", "fields": {"nonce": 1}}')
    assert proc.returncode == 2 and "missing extranonce" in proc.stderr
    proc = run("encode", "{")
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    proc = run("decode", "0000ff000000")
    assert proc.returncode == 2 and "sv2-unknown-message" in proc.stderr
