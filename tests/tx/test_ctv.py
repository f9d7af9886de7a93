"""BIP-119: all 400 ctvhash.json hashes and the literal ``<32B> OP_CTV`` cases of
tx_valid.json / tx_invalid.json (prevouts keyed by outpoint, libs.md §4)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from payouts.tx.ctv import (
    CtvError,
    bare_ctv_script,
    ctv_tapleaf,
    parse_ctv_script,
    standard_template_hash,
)
from payouts.tx.hashes import sha256
from payouts.tx.transaction import Tx

BARE_ASM = re.compile(r"^0x20 0x([0-9a-f]{64}) OP_CHECKTEMPLATEVERIFY$")
P2WSH_ASM = re.compile(r"^0x00 0x20 0x([0-9a-f]{64})$")
P2TR_ASM = re.compile(r"^1 0x20 0x([0-9a-f]{64})$")


def test_ctvhash_json_all_400(vectors: Path) -> None:
    data = json.loads((vectors / "bip-0119" / "ctvhash.json").read_text())
    cases = [c for c in data if isinstance(c, dict)]
    assert len(cases) == 100
    checked = 0
    for case in cases:
        tx = Tx.parse(bytes.fromhex(case["hex_tx"]))
        assert tx.serialize().hex() == case["hex_tx"]
        for idx, expected in zip(case["spend_index"], case["result"], strict=True):
            assert standard_template_hash(tx, idx).hex() == expected
            checked += 1
    assert checked == 400


def _literal_ctv_inputs(vectors: Path, name: str) -> list[tuple[str, bytes, bytes]]:
    """(form, committed hash, hash we compute) for every input whose executed script is
    literally ``<32B> OP_CTV``: a bare scriptPubKey, a P2WSH witness script, a tapleaf."""
    found = []
    for test in json.loads((vectors / "bip-0119" / name).read_text()):
        if not isinstance(test[0], list):
            continue  # a comment line
        tx = Tx.parse(bytes.fromhex(test[1]))
        prevouts: dict[tuple[str, int], str] = {(p[0], p[1]): p[2] for p in test[0]}
        for i, txin in enumerate(tx.inputs):
            asm = prevouts[(txin.prevout.txid[::-1].hex(), txin.prevout.n)]
            committed: bytes | None = None
            form = ""
            if m := BARE_ASM.match(asm):
                committed, form = bytes.fromhex(m.group(1)), "bare"
            elif (m := P2WSH_ASM.match(asm)) and txin.witness:
                ws = txin.witness[-1]
                if sha256(ws).hex() == m.group(1):
                    committed, form = parse_ctv_script(ws), "p2wsh"
            elif P2TR_ASM.match(asm) and len(txin.witness) >= 2:
                committed, form = parse_ctv_script(txin.witness[-2]), "tapscript"
            if committed is not None:
                found.append((form, committed, standard_template_hash(tx, i)))
    return found


def test_tx_valid_literal_ctv(vectors: Path) -> None:
    found = _literal_ctv_inputs(vectors, "tx_valid.json")
    assert len(found) == 16
    assert {form for form, _, _ in found} == {"bare", "p2wsh", "tapscript"}
    for form, committed, computed in found:
        assert computed == committed, form


def test_tx_invalid_literal_ctv_mismatch(vectors: Path) -> None:
    found = _literal_ctv_inputs(vectors, "tx_invalid.json")
    assert found, "tx_invalid.json has literal CTV inputs"
    mismatches = [f for f in found if f[1] != f[2]]
    # Every literal <32B> OP_CTV input in the invalid set fails on the template hash.
    assert mismatches == found


def test_script_helpers() -> None:
    h = bytes(range(32))
    script = bare_ctv_script(h)
    assert script == b"\x20" + h + b"\xb3"
    assert parse_ctv_script(script) == h
    assert parse_ctv_script(script + b"\x00") is None
    assert ctv_tapleaf(h).script == script and ctv_tapleaf(h).leaf_version == 0xC0
    with pytest.raises(CtvError):
        bare_ctv_script(h[:31])


def test_version_is_hashed_signed_and_scriptsig_only_when_present(vectors: Path) -> None:
    data: list[Any] = json.loads((vectors / "bip-0119" / "ctvhash.json").read_text())
    negative = [
        c for c in data if isinstance(c, dict) and Tx.parse(bytes.fromhex(c["hex_tx"])).version < 0
    ]
    assert negative, "the vectors include negative nVersion"
    with pytest.raises(CtvError):
        standard_template_hash(Tx.parse(bytes.fromhex(negative[0]["hex_tx"])), 1 << 32)
