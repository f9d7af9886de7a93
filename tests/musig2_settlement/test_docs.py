"""docs/musig2.md's worked example is the code's output, not a hand copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from .doc_example import example

DOC = Path(__file__).resolve().parents[2] / "docs" / "musig2.md"


@pytest.fixture(scope="module")
def values() -> dict[str, str]:
    return example()


def test_every_example_value_is_in_the_doc(values: dict[str, str]) -> None:
    text = DOC.read_text()
    # the CTV exit tx is shown abbreviated in the doc (same bytes up to the witness)
    missing = [k for k, v in values.items() if k != "ctv_exit_tx" and v not in text]
    assert not missing, f"docs/musig2.md is stale for {missing}"


def test_ctv_exit_matches_the_doc_description(values: dict[str, str]) -> None:
    signed, exit_tx = bytes.fromhex(values["signed_tx"]), bytes.fromhex(values["ctv_exit_tx"])
    witness_at = signed.index(bytes.fromhex("0140" + values["final_sig"]))
    assert exit_tx[:witness_at] == signed[:witness_at]
    assert exit_tx[witness_at:-4].hex() == (
        "0222" + values["ctv_leaf"] + "41" + values["ctv_control_block"]
    )
