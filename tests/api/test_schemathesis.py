"""schemathesis against the API, bounded (``make fuzz`` runs it at length): every operation,
valid and invalid generated requests, no 5xx and every response as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("schemathesis")

from benchmarks.fuzz_api import run


@pytest.mark.slow
def test_generated_requests_get_documented_answers(tmp_path: Path) -> None:
    report = run(4, data_dir=tmp_path)
    assert report.operations >= 28
    assert report.requests > 150
    # both sides were met: answers with data and refusals
    assert report.statuses[200] > 0 and report.statuses[422] > 0
    assert report.failures == []
