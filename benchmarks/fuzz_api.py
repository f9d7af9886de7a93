"""The REST API against its own OpenAPI document, with schemathesis (``make fuzz``; a bounded
run is in tests/api/test_schemathesis.py).

For every operation, schemathesis generates requests from the document, valid ones and ones
that break it (wrong types, out-of-range numbers, missing fields, odd strings), and sends them
to the application in-process with an admin token. Every response must be no server error
(5xx), a status the operation documents, the documented content type and headers, and a body
that matches the documented schema (``Problem`` for every error). The store is a fresh SQLite
database with two registered miners, their shares and a published distribution, so reads meet
data as well as 404s.

    python -m benchmarks.fuzz_api --examples 200
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    operations: int = 0


def _pool(data_dir: Path) -> tuple[Any, str]:
    """A service on a fresh store with miners, shares and a distribution; an admin token."""
    from fastapi.testclient import TestClient

    from api import store
    from api.app import create_app
    from payouts.crypto import bip322
    from payouts.service import PoolService
    from payouts.settings import Settings
    from payouts.tx.address import script_to_address
    from payouts.tx.hashes import hash160

    def address(sk: bytes) -> str:
        from coincurve import PrivateKey

        return script_to_address(b"\x00\x14" + hash160(PrivateKey(sk).public_key.format()),
                                 "regtest")

    service = PoolService(Settings(data_dir=data_dir, network="regtest",
                                   pool={"payout_address": address(b"\x77" * 32)}))
    secret, _ = store.create_token(service.engine, "fuzz", ["admin"])
    with TestClient(create_app(service, rate_limit=None)) as c:
        for name, sk in (("alice", b"\x01" * 32), ("bob", b"\x02" * 32)):
            ch = c.post("/v1/miners/challenges", json={"account": name,
                                                       "address": address(sk)}).json()
            c.post("/v1/miners", json={
                "account": name, "address": address(sk), "nonce": ch["nonce"],
                "signature": bip322.sign_simple(sk, address(sk), ch["message"], "regtest")})
        auth = {"Authorization": f"Bearer {secret}"}
        c.post("/v1/shares", headers=auth, json={
            "key": ["a", "b"], "account": ["alice", "bob"], "worker": ["w", "w"],
            "difficulty": [65536, 65536], "job_id": ["j", "j"],
            "revenue": [5_000_000_000] * 2, "time_ms": [1, 2]})
        c.post("/v1/distributions", headers=auth, json={"estimated_revenue": 5_000_000_000})
    return service, secret


def run(examples: int, *, data_dir: Path | None = None, seed: int = 1) -> FuzzReport:
    """Fuzz every operation with ``examples`` generated requests each (valid and invalid)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from api.app import create_app

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_headers_conformance, response_schema_conformance]
    with tempfile.TemporaryDirectory() as tmp:
        service, secret = _pool(data_dir or Path(tmp))
        app = create_app(service, rate_limit=None)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        report = FuzzReport()
        headers = {"Authorization": f"Bearer {secret}"}
        for result in schema.get_all_operations():
            operation = result.ok()
            report.operations += 1
            for mode in (schemathesis.GenerationMode.POSITIVE,
                         schemathesis.GenerationMode.NEGATIVE):

                @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def one(case: Any) -> None:
                    case_headers = {**(case.headers or {}), **headers}
                    response = case.call(headers=case_headers)
                    report.requests += 1
                    report.statuses[response.status_code] += 1
                    try:
                        case.validate_response(response, checks=checks, headers=case_headers)
                    except FailureGroup as e:  # the checks that failed
                        first = [ln for ln in str(e).strip().splitlines() if ln.strip()][:3]
                        report.failures.append(
                            f"{case.method} {case.formatted_path}: {' '.join(first)}")

                with contextlib.suppress(Unsatisfiable):  # an operation with nothing to break
                    one()
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200,
                        help="generated requests per operation and mode (valid, invalid)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    report = run(args.examples)
    took = time.perf_counter() - t0
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(report.statuses.items()))
    print(f"fuzz_api: {report.requests} requests over {report.operations} operations in "
          f"{took:.1f} s ({statuses}); {len(report.failures)} failures")
    for f in report.failures[:20]:
        print("  " + f)
    if report.failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
