"""``POST /v1/shares`` bodies (issue #17): JSON decoded by msgspec with the schema's own errors,
and Apache Arrow IPC streams, refused like bad JSON (a specific 4xx, nothing written).

The served test starts ``payouts serve`` and sends the same shares both ways; the rest drive
the application in-process, on SQLite and PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pydantic
import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api import store
from api.schemas import ShareBatchIn
from api.share_bodies import ARROW_TYPE, decode_json
from payouts.service import PoolService
from payouts.settings import Settings
from tests.api.conftest import assert_problem, bearer, register
from tests.api.test_cli import _free_port, _wait_http
from tests.api.test_serve_window import _serve

ALICE = bytes.fromhex("01" * 32)
INT_TYPES = {"difficulty": pa.int64(), "revenue": pa.int64(), "time_ms": pa.int64()}


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM shares").scalar_one())


def _columns(n: int, account: str = "alice", prefix: str = "k") -> dict[str, list[Any]]:
    return {"key": [f"{prefix}{i}" for i in range(n)], "account": [account] * n,
            "worker": ["rig"] * n, "difficulty": [1000 + i for i in range(n)],
            "job_id": ["j1"] * n, "revenue": [312_500_000] * n,
            "time_ms": [1_700_000_000_000 + i for i in range(n)]}


def arrow_stream(table: pa.Table, chunk: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=chunk)
    return bytes(sink.getvalue().to_pybytes())


def arrow_body(cols: dict[str, list[Any]], types: dict[str, pa.DataType] | None = None,
               chunk: int | None = None) -> bytes:
    types = {**INT_TYPES, **(types or {})}
    return arrow_stream(pa.table({k: pa.array(v, types.get(k)) for k, v in cols.items()}),
                        chunk)


def _post_arrow(client: TestClient, writer: dict[str, str], body: bytes) -> Any:
    return client.post("/v1/shares", content=body,
                       headers={**writer, "content-type": ARROW_TYPE})


@pytest.fixture
def writer(token: Callable[..., str]) -> dict[str, str]:
    return bearer(token("shares:write"))


def test_arrow_batch_is_ingested_like_the_same_json(client: TestClient, writer: dict[str, str],
                                                    service: PoolService) -> None:
    register(client, "alice", ALICE)
    cols = _columns(300)
    # Three record batches, workers dictionary-encoded: a pool's writer may do either.
    body = arrow_body(cols, {"worker": pa.dictionary(pa.int8(), pa.string())}, chunk=128)
    r = _post_arrow(client, writer, body)
    assert r.json() == {"received": 300, "accepted": 300, "duplicates": 0}
    assert _count(service.engine) == 300
    assert len(service.accountant.log) == 300
    # The same shares as JSON are duplicates: one batch, whichever way it came.
    r = client.post("/v1/shares", json=cols, headers=writer)
    assert r.json() == {"received": 300, "accepted": 0, "duplicates": 300}
    # Narrower integer types and large_utf8 strings are the same values.
    more = _columns(5, prefix="n")
    r = _post_arrow(client, writer, arrow_body(
        more, {"difficulty": pa.uint32(), "revenue": pa.uint64(), "key": pa.large_string()}))
    assert r.json()["accepted"] == 5
    assert _count(service.engine) == 305


def _bad_arrow_cases() -> list[tuple[str, Callable[[dict[str, list[Any]]], bytes], int, str,
                                     int | None]]:
    def drop(name: str) -> Callable[[dict[str, list[Any]]], bytes]:
        return lambda c: arrow_body({k: v for k, v in c.items() if k != name})

    def typed(name: str, t: pa.DataType, values: list[Any] | None = None
              ) -> Callable[[dict[str, list[Any]]], bytes]:
        return lambda c: arrow_body({**c, name: values if values is not None else c[name]},
                                    {name: t})

    def at(name: str, row: int, value: Any, t: pa.DataType | None = None
           ) -> Callable[[dict[str, list[Any]]], bytes]:
        def make(c: dict[str, list[Any]]) -> bytes:
            col = list(c[name])
            col[row] = value
            return arrow_body({**c, name: col}, {name: t} if t is not None else None)
        return make

    full = arrow_body(_columns(3))
    return [
        ("missing column", drop("revenue"), 422, "invalid-request", None),
        ("unknown column", lambda c: arrow_body({**c, "extra": [1, 2, 3]}), 422,
         "invalid-request", None),
        ("float difficulty", typed("difficulty", pa.float64(), [1000.0, 1.5, 2.0]), 422,
         "invalid-request", None),
        ("int worker", typed("worker", pa.int64(), [1, 2, 3]), 422, "invalid-request", None),
        ("bool revenue", typed("revenue", pa.bool_(), [True, True, True]), 422,
         "invalid-request", None),
        ("binary key", typed("key", pa.binary(), [b"a", b"b", b"c"]), 422, "invalid-request",
         None),
        ("null revenue", at("revenue", 2, None), 422, "invalid-request", 2),
        ("null key", at("key", 1, None), 422, "invalid-request", 1),
        ("NUL in worker", at("worker", 1, "w\x00"), 422, "invalid-input", 1),
        ("NUL in key", at("key", 2, "k\x00"), 422, "invalid-input", 2),
        ("difficulty above 2^52", at("difficulty", 1, 2**52 + 1), 422, "invalid-difficulty", 1),
        ("uint64 above int64", at("time_ms", 0, 2**64 - 1, pa.uint64()), 422, "invalid-input",
         None),
        ("negative revenue", at("revenue", 2, -1), 422, "invalid-revenue", 2),
        ("zero difficulty", at("difficulty", 0, 0), 422, "invalid-difficulty", 0),
        ("huge key", at("key", 1, "k" * 10_000), 422, "invalid-input", 1),
        ("unknown account", at("account", 2, "nobody"), 422, "unknown-miner", 2),
        ("duplicate key", at("key", 2, "k0"), 422, "duplicate-key", 2),
        ("truncated stream", lambda c: full[: len(full) - 20], 400, "malformed-body", None),
        ("stream without its end marker", lambda c: full[:-8], 400, "malformed-body", None),
        ("bytes after the end marker", lambda c: full + b"\x00" * 8, 400, "malformed-body",
         None),
        ("garbage", lambda c: b"\x00\x01garbage" * 10, 400, "malformed-body", None),
        ("empty body", lambda c: b"", 400, "malformed-body", None),
        ("JSON sent as Arrow", lambda c: b'{"key": []}', 400, "malformed-body", None),
    ]


@pytest.mark.parametrize(("name", "make", "status", "code", "row"), _bad_arrow_cases(),
                         ids=[c[0] for c in _bad_arrow_cases()])
def test_bad_arrow_bodies_are_refused_and_nothing_is_written(
        client: TestClient, writer: dict[str, str], service: PoolService, name: str,
        make: Callable[[dict[str, list[Any]]], bytes], status: int, code: str,
        row: int | None) -> None:
    register(client, "alice", ALICE)
    problem = assert_problem(_post_arrow(client, writer, make(_columns(3))), status, code)
    assert problem.get("row") == row, problem
    assert _count(service.engine) == 0
    assert len(service.accountant.log) == 0
    # The server is unharmed: a good batch after it is taken.
    assert _post_arrow(client, writer, arrow_body(_columns(3))).json()["accepted"] == 3


def test_arrow_truncated_at_a_batch_boundary_is_not_a_shorter_batch(
        client: TestClient, writer: dict[str, str], service: PoolService) -> None:
    """A stream cut right after a record batch reads as a valid, shorter stream: only the
    end-of-stream marker tells it was cut."""
    register(client, "alice", ALICE)
    table = pa.table({k: pa.array(v, INT_TYPES.get(k)) for k, v in _columns(4).items()})
    sink = pa.BufferOutputStream()
    w = pa.ipc.new_stream(sink, table.schema)
    w.write_batch(table.to_batches()[0].slice(0, 2))
    cut = sink.tell()
    w.write_batch(table.to_batches()[0].slice(2, 2))
    w.close()
    body = bytes(sink.getvalue().to_pybytes())
    assert pa.ipc.open_stream(body[:cut]).read_all().num_rows == 2  # what a reader alone sees
    assert_problem(_post_arrow(client, writer, body[:cut]), 400, "malformed-body")
    assert _count(service.engine) == 0


def test_arrow_invalid_utf8_and_oversized_batches(client: TestClient, writer: dict[str, str],
                                                  service: PoolService) -> None:
    register(client, "alice", ALICE)
    cols = _columns(2)
    bad = pa.array([b"\xff\xfe", b"ok"], pa.binary()).view(pa.string())
    table = pa.table({**{k: pa.array(v, INT_TYPES.get(k)) for k, v in cols.items()},
                      "worker": bad})
    assert_problem(_post_arrow(client, writer, arrow_stream(table)), 400, "malformed-body")
    big = arrow_body(_columns(10_001))
    problem = assert_problem(_post_arrow(client, writer, big), 422, "invalid-request")
    assert "10000" in problem["detail"]
    assert _count(service.engine) == 0


def _compressed(table: pa.Table, codec: str = "zstd") -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema,
                           options=pa.ipc.IpcWriteOptions(compression=codec)) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_arrow_is_taken_and_bombs_are_refused_before_decoding(
        client: TestClient, writer: dict[str, str], service: PoolService, codec: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressed stream (Arrow's BodyCompression) is a valid body; one that declares more
    rows than a batch may hold, or more decoded bytes than a valid batch can need, is refused
    from its headers alone: pyarrow never decodes it (api.arrow_limits)."""
    register(client, "alice", ALICE)
    table = pa.table({k: pa.array(v, INT_TYPES.get(k)) for k, v in _columns(5).items()})
    assert _post_arrow(client, writer, _compressed(table, codec)).json()["accepted"] == 5

    decoded: list[int] = []
    real_open = pa.ipc.open_stream
    monkeypatch.setattr(pa.ipc, "open_stream",
                        lambda *a, **k: decoded.append(1) or real_open(*a, **k))
    # 3,000,000 rows of empty strings and zeros: a few hundred KB compressed, far more decoded.
    n = 3_000_000
    rows = pa.table({**{c: pa.array([""] * n) for c in ("key", "account", "worker", "job_id")},
                     **{c: pa.array([0] * n, pa.int64()) for c in INT_TYPES}})
    bomb = _compressed(rows, codec)
    assert len(bomb) < 2 * 1024 * 1024  # within the body limit
    problem = assert_problem(_post_arrow(client, writer, bomb), 422, "invalid-request")
    assert "3000000" in problem["detail"]
    # Few rows, but one string of 64 MiB: too many decoded bytes for any valid batch.
    wide = pa.table({**{k: pa.array(v, INT_TYPES.get(k)) for k, v in _columns(1).items()},
                     "worker": pa.array(["w" * (64 * 1024 * 1024)])})
    problem = assert_problem(_post_arrow(client, writer, _compressed(wide, codec)), 413,
                             "request-too-large")
    assert "decodes to" in problem["detail"]
    assert decoded == []  # neither was handed to pyarrow's reader
    assert _count(service.engine) == 5


def test_other_content_types_are_415(client: TestClient, writer: dict[str, str]) -> None:
    r = client.post("/v1/shares", content=b"key=a",
                    headers={**writer, "content-type": "application/x-www-form-urlencoded"})
    assert_problem(r, 415, "unsupported-media-type")


@pytest.mark.parametrize("body", [
    b'{"key": ["a"], "account": ["alice\\n"], "worker": ["w"], "difficulty": [1], '
    b'"job_id": ["j"], "revenue": [0], "time_ms": [0]}',
    b'{"key": ["a"], "account": ["alice"], "worker": ["w"], "difficulty": [1.0], '
    b'"job_id": ["j"], "revenue": [0], "time_ms": [0]}',
    b'{"key": ["a"], "account": ["alice"], "worker": ["w"], "difficulty": [1], '
    b'"job_id": ["j"], "revenue": [0], "time_ms": [9223372036854775808]}',
    b'{"key": [""], "account": ["alice"], "worker": ["w"], "difficulty": [1], '
    b'"job_id": ["j"], "revenue": [0], "time_ms": [0], "extra": 1}',
    b'{"key": ["\\ud800"], "account": ["alice"], "worker": ["w"], "difficulty": [1], '
    b'"job_id": ["j"], "revenue": [0], "time_ms": [0]}',
    b'{"key": ["a", "b"], "account": ["alice", "al ice"], "worker": ["w", "w"], '
    b'"difficulty": [1, 1], "job_id": ["j", "j"], "revenue": [0, 0], "time_ms": [0, 0]}',
])
def test_json_fast_path_is_no_laxer_than_the_schema(body: bytes) -> None:
    """Every body the pydantic schema refuses, the msgspec decoding refuses too, with the
    schema's own errors: a body it took that the schema refuses would skip the schema."""
    with pytest.raises(pydantic.ValidationError) as schema:
        ShareBatchIn.model_validate_json(body)
    with pytest.raises(RequestValidationError) as ours:
        decode_json(body)
    theirs = schema.value.errors(include_url=False)
    if theirs[0]["type"] != "json_invalid":
        assert [e["loc"][1:] for e in ours.value.errors()] == [e["loc"] for e in theirs]


def test_json_errors_are_the_schemas(client: TestClient, writer: dict[str, str]) -> None:
    r = client.post("/v1/shares", headers={**writer, "content-type": "application/json"},
                    content=b'{"key": ["a"], "account": ["alice"], "worker": ["w"], '
                    b'"difficulty": [1], "job_id": ["j"], "revenue": [-5], "time_ms": [0]}')
    problem = assert_problem(r, 422, "invalid-request")
    assert problem["row"] == 0
    assert problem["errors"][0]["loc"] == ["body", "revenue", 0]
    assert problem["detail"] == "body.revenue.0: Input should be greater than or equal to 0"
    r = client.post("/v1/shares", content=b'{"key": [', headers=writer)
    assert_problem(r, 400, "malformed-body")


def test_served_ingest_takes_arrow_and_json(tmp_path: Path) -> None:
    """``payouts serve`` as a process: an Arrow batch and a JSON batch, a bad Arrow stream
    refused, and after a restart the window holds exactly the shares acknowledged."""
    svc = PoolService(Settings(data_dir=tmp_path, network="regtest"))
    token, _ = store.create_token(svc.engine, "ops", ["admin"])
    svc.register_miner("alice", bytes.fromhex("5120") + b"\x01" * 32)
    svc.engine.dispose()
    auth = {"Authorization": f"Bearer {token}"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(tmp_path, port)
    try:
        _wait_http(proc, f"{base}/v1/health")
        body = arrow_body(_columns(500, prefix="a"))
        r = httpx.post(f"{base}/v1/shares", content=body,
                       headers={**auth, "content-type": ARROW_TYPE})
        assert r.json() == {"received": 500, "accepted": 500, "duplicates": 0}, r.text
        r = httpx.post(f"{base}/v1/shares", content=body[:-30],
                       headers={**auth, "content-type": ARROW_TYPE})
        assert r.status_code == 400 and r.json()["code"] == "malformed-body"
        r = httpx.post(f"{base}/v1/shares", json=_columns(200, prefix="j"), headers=auth)
        assert r.json()["accepted"] == 200
        before = httpx.get(f"{base}/v1/window", headers=auth).json()
        assert before["share_count"] > 0
        spec = httpx.get(f"{base}/openapi.json").json()
        content = spec["paths"]["/v1/shares"]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", ARROW_TYPE}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    svc = PoolService(Settings(data_dir=tmp_path, network="regtest"))
    assert _count(svc.engine) == 700  # the acknowledged ones, not the refused stream's
    svc.engine.dispose()
    proc = _serve(tmp_path, port)
    try:
        _wait_http(proc, f"{base}/v1/health")
        assert httpx.get(f"{base}/v1/window", headers=auth).json() == before
    finally:
        proc.kill()
        proc.communicate(timeout=30)
