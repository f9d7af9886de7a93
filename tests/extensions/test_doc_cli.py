"""The command outputs shown in docs/ctv.md and docs/musig2.md are what the commands print."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payouts.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = r"\n```json\n(?P<body>.*?)\n```"
INPUT = re.compile(r"<!-- cli-input: (?P<name>[\w.\-]+) -->" + BLOCK, re.S)
OUTPUT = re.compile(r"<!-- cli-output: payouts (?P<cmd>[^>]*?) -->" + BLOCK, re.S)


def _inputs() -> dict[str, str]:
    found: dict[str, str] = {}
    for doc in DOCS.glob("*.md"):
        found.update({m["name"]: m["body"] for m in INPUT.finditer(doc.read_text())})
    return found


def _outputs() -> list[tuple[str, str, str]]:
    return [
        (doc.name, m["cmd"], m["body"])
        for doc in (DOCS / "ctv.md", DOCS / "musig2.md")
        for m in OUTPUT.finditer(doc.read_text())
    ]


def test_both_pages_show_an_output() -> None:
    assert {name for name, _, _ in _outputs()} == {"ctv.md", "musig2.md"}


@pytest.mark.parametrize(("doc", "cmd", "shown"), _outputs(), ids=[d for d, _, _ in _outputs()])
def test_shown_output_is_the_real_output(doc: str, cmd: str, shown: str, tmp_path: Path) -> None:
    inputs = _inputs()
    args = []
    for token in shlex.split(cmd):
        if token in inputs:
            path = tmp_path / token
            path.write_text(inputs[token])
            token = str(path)
        args.append(token)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    assert json.loads(res.output) == json.loads(shown), f"{doc}: `payouts {cmd}` prints otherwise"
