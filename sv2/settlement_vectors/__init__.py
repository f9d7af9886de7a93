"""Conformance vectors of extension 0x4003 (docs/extensions/0x4003-vectors.json).

``python -m sv2.settlement_vectors`` writes the file; ``--check`` exits 1 if it differs from
what the code produces now (tests/extensions/test_vectors.py does the same). The inputs are
:mod:`~sv2.settlement_vectors.cases` and :mod:`~sv2.settlement_vectors.distributions`, the
expected results :mod:`~sv2.settlement_vectors.build`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sv2.settlement_vectors.build import generate

VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "extensions" / "0x4003-vectors.json"


def render(doc: Any) -> str:
    """The file's text: JSON indented by one space per level, except that an object whose
    values are all scalars (a payee, an output, a tx) stays on one line; a final newline."""
    return _render(doc, 0) + "\n"


def _render(value: Any, depth: int) -> str:
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, dict):
        if all(not isinstance(v, dict | list) for v in value.values()):
            return json.dumps(value, ensure_ascii=False)
        items = (f"{inner}{json.dumps(k)}: {_render(v, depth + 1)}" for k, v in value.items())
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return "[\n" + ",\n".join(inner + _render(v, depth + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


__all__ = ["VECTORS_PATH", "generate", "render"]
