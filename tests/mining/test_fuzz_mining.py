"""The live Mining Protocol server fuzz job (``benchmarks/fuzz_mining.py``, run with 100,000
frames by ``make fuzz``), bounded: generated and mutated frames over TCP + Noise from many
connections; no internal error, no leaked connection, no credit the server did not accept, and
an honest JD client still gets its share accepted afterwards."""

from __future__ import annotations

import asyncio

from benchmarks.fuzz_mining import run


def test_fuzzed_mining_server_keeps_serving() -> None:
    findings = asyncio.run(run(1_500, seed=7, concurrency=6, quiet=True))
    assert findings == []
