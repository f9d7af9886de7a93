"""docs/extensions/0x4003-vectors.json is what the code produces, and its frames decode (or
are refused) exactly as the spec says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from payouts.distribution.jsonio import distribution_from_json
from payouts.errors import ValidationError
from sv2.domain_messages import coinbase_output_constraints, mode_from_message, mode_to_message
from sv2.messages import SetSettlementMode, decode_frame
from sv2.messages.base import Message
from sv2.messages.settlement import DECODE_ERRORS, ERR_MUSIG2_COMMITTEE, SettlementModeError
from sv2.settlement_vectors import VECTORS_PATH, generate, render
from sv2.settlement_vectors.__main__ import main
from tests.extensions.vectors import cases, distribution, vectors


def test_the_file_is_what_the_code_generates() -> None:
    """Regenerate: any change of a rule, a case or the code shows up as a difference."""
    text = render(generate())
    stored = VECTORS_PATH.read_text()
    if text != stored:
        got, want = text.splitlines(), stored.splitlines()
        first = next(
            (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
            min(len(got), len(want)),
        )
        pytest.fail(
            f"{VECTORS_PATH.name} differs from the code from line {first + 1}; regenerate it "
            "with `python -m sv2.settlement_vectors` if the change is intended"
        )


def test_generator_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    stale = tmp_path / "v.json"
    stale.write_text("{}\n")
    assert main(["--check", str(stale)]) == 1
    assert "DIFFERS" in capsys.readouterr().out
    assert main([str(stale)]) == 0 and main(["--check", str(stale)]) == 0


def test_valid_frames_decode_to_their_fields_and_mode() -> None:
    for f in vectors()["frames"]["valid"]:
        raw = bytes.fromhex(f["frame"])
        frame, msg = decode_frame(raw)
        assert isinstance(msg, SetSettlementMode), f["name"]
        assert len(raw) == 6 + frame.header.msg_length  # a 6-byte header
        assert raw[:3] == bytes.fromhex("034000") and not frame.channel_msg
        assert msg.fields_to_json() == f["fields"], f["name"]
        assert mode_from_message(msg).name == f["mode"], f["name"]
        assert msg.encode_frame() == raw


def test_invalid_frames_are_refused_with_their_named_error() -> None:
    seen = set()
    for f in vectors()["frames"]["invalid"]:
        with pytest.raises(SettlementModeError) as e:
            decode_frame(bytes.fromhex(f["frame"]))
        assert e.value.code == f["error"], f["name"]
        seen.add(f["error"])
        # built in memory instead of decoded, mode_from_message refuses it the same way
        if f["error"] != "settlement-mode-channel-msg":
            msg = _undecoded(bytes.fromhex(f["frame"])[6:])
            with pytest.raises(SettlementModeError) as e2:
                mode_from_message(msg)
            assert e2.value.code == f["error"]
    # every decode error the spec names has a vector, except KeyAgg failing on valid keys
    assert seen == set(DECODE_ERRORS) - {ERR_MUSIG2_COMMITTEE}


def _undecoded(payload: bytes) -> SetSettlementMode:
    """The message a payload holds, without the decoder's validity checks (as a peer could
    build it in memory)."""
    unchecked = Message.decode.__func__  # type: ignore[attr-defined]  # the codec's own decode
    msg: SetSettlementMode = unchecked(SetSettlementMode, payload)
    return msg


@pytest.mark.parametrize("mode", ["coinbase", "ctv", "musig2"])
def test_mode_cases_carry_their_frame_and_constraints(mode: str) -> None:
    for c in cases(mode):
        d = distribution_from_json(distribution(c["distribution"]))
        _, msg = decode_frame(bytes.fromhex(c["set_settlement_mode"]))
        assert isinstance(msg, SetSettlementMode)
        assert msg.distribution_id == d.distribution_id
        m = mode_from_message(msg)
        assert m.name == mode
        assert mode_to_message(m, d.distribution_id).encode_frame().hex() == c[
            "set_settlement_mode"
        ]
        limits = coinbase_output_constraints(d, m).fields_to_json()
        assert limits == c["coinbase_output_constraints"]
        if mode != "coinbase":
            extra = sum(len(a["script"]) // 2 + 9 for a in distribution(c["distribution"])[
                "additional_outputs"])
            assert limits["coinbase_output_max_additional_size"] == 43 + extra


def _errors(mode: str) -> set[str]:
    return {c["error"] for c in cases(mode) if "error" in c}


def test_every_build_error_has_a_vector() -> None:
    assert _errors("ctv") == {"ctv-revenue-too-small", "ctv-tree-nonstandard"}
    assert _errors("musig2") == {"musig2-revenue-too-small", "musig2-payout-nonstandard"}


def test_the_thresholds_are_hit_exactly() -> None:
    """The cases the spec promises (§10) sit where it says."""
    by_name = {c["name"]: c for c in cases("ctv")}

    def txs(name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = by_name[name]["result"]["txs"]
        return out

    assert [t["vsize"] for t in txs("flat-10000-fee0")] == [10_000]
    assert by_name["flat-10000-fee0"]["result"]["tx_version"] == 3
    assert by_name["flat-10001-fee0"]["result"]["arity"] == 16
    assert by_name["flat-10001-fee1"]["result"]["tx_version"] == 2
    assert [t["vsize"] for t in txs("flat-10001-fee1")] == [10_001]
    assert [t["vsize"] for t in txs("crossing-pruned")] == [10_000]
    assert by_name["crossing-kept"]["result"]["arity"] == 16
    big = by_name["big-x-pruned"]["result"]
    assert [t["vsize"] for t in big["txs"]] == [100_000] and big["tx_version"] == 2
    assert big["reserved_cost"] > big["tree_cost"]  # F0 of the 16-ary tree over every leaf
    assert [t["vsize"] for t in txs("min-size-65")] == [65]
    assert by_name["min-size-64"]["error"] == "ctv-tree-nonstandard"
    mu = {c["name"]: c for c in cases("musig2")}
    assert mu["big-under"]["result"]["pruned"] and mu["big-over"]["error"] == (
        "musig2-payout-nonstandard"
    )


def test_refused_frames_change_nothing_in_mode_from_message() -> None:
    """mode_from_message on a valid message still works after refusals (no state)."""
    good = vectors()["frames"]["valid"][0]
    for f in vectors()["frames"]["invalid"]:
        with pytest.raises(ValidationError):
            decode_frame(bytes.fromhex(f["frame"]))
    _, msg = decode_frame(bytes.fromhex(good["frame"]))
    assert mode_from_message(msg).name == good["mode"]  # type: ignore[arg-type]
