"""Loading docs/extensions/0x4003-vectors.json for the tests (read once per process)."""

from __future__ import annotations

import functools
import json
from typing import Any

from sv2.settlement_vectors import VECTORS_PATH


@functools.cache
def vectors() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
    return doc


def cases(mode: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = vectors()[mode]
    return out


def distribution(name: str) -> dict[str, Any]:
    out: dict[str, Any] = vectors()["distributions"][name]
    return out


def mode_fields(case: dict[str, Any]) -> dict[str, Any]:
    """The SetSettlementMode fields of a mode case, decoded from its frame."""
    from sv2.messages import decode_frame

    _, msg = decode_frame(bytes.fromhex(case["set_settlement_mode"]))
    return msg.fields_to_json()
