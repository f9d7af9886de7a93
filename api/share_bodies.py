"""Decoding ``POST /v1/shares`` bodies: columnar JSON, or an Apache Arrow IPC stream.

The share ingest is the API's hottest write (issue #17: it must deliver at least 70 % of what
the store beneath it takes). FastAPI's generic body path (``json.loads`` into Python objects,
then pydantic walking them) cost more than the schema's checks themselves, so this route reads
its body and decodes it here, with the same rules:

* ``application/json`` (or no content type): :mod:`msgspec` decodes and checks the body in one
  pass against :class:`_JsonBatch`, a mirror of :class:`api.schemas.ShareBatchIn` (same bounds,
  strict integers, no unknown members). When msgspec refuses a body, pydantic validates it
  against ``ShareBatchIn`` itself, so a refused body gets exactly the errors it always got
  (422 ``invalid-request`` naming ``row``; 400 ``malformed-body`` for what is not JSON), and a
  body the mirror refused but the schema accepts (none is known) is still taken.
* ``application/vnd.apache.arrow.stream``: the Arrow IPC *streaming* format (what
  ``pyarrow.ipc.new_stream`` writes; spec: arrow.apache.org/docs/format/Columnar.html, "IPC
  Streaming Format"). The same seven columns by name, strings as ``utf8``/``large_utf8``/
  ``string_view`` (or dictionary-encoded), integers as any Arrow integer type, no nulls. The
  stream must end with its end-of-stream marker where the body ends: a body cut at a batch
  boundary would otherwise read as a shorter, valid batch.

Either way the result is an :class:`~payouts.accounting.shares.AccountShareBatch` and the
engine's one share validator (:mod:`payouts.accounting.validate`) checks the rest; nothing is
written unless the whole batch passes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
import pydantic
from fastapi.exceptions import RequestValidationError

from api.arrow_limits import stream_size
from api.problems import Problem
from api.schemas import MAX_BATCH, ShareBatchIn
from payouts.accounting.shares import (
    ACCOUNT_MAX,
    JOB_ID_MAX,
    KEY_MAX,
    WORKER_MAX,
    AccountShareBatch,
)

JSON_TYPE = "application/json"
ARROW_TYPE = "application/vnd.apache.arrow.stream"
ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # continuation marker + zero length
STRING_COLUMNS = ("key", "account", "worker", "job_id")
INT_COLUMNS = ("difficulty", "revenue", "time_ms")
COLUMNS = ("key", "account", "worker", "difficulty", "job_id", "revenue", "time_ms")
_I64_MAX = 2**63 - 1
# The most a valid batch decodes to: MAX_BATCH rows of the four longest strings (4 bytes per
# character at worst in UTF-8), three int64 columns, offsets and validity bitmaps, ~13.3 MB,
# rounded up. A compressed Arrow stream that declares more is refused before decoding.
ARROW_DECODED_MAX = 16 * 1024 * 1024

# The mirror of ShareBatchIn's bounds, but the account pattern: msgspec runs a Python regex per
# value (3 ms per 1,000 rows, more than the rest of the decoding); every account matching
# ``^[A-Za-z0-9._-]+$`` is their concatenation matching this once (each is non-empty). ``\Z``,
# not ``$``: Python's ``$`` also matches before a final newline; the schema's regex does not.
_ACCOUNT_CHARS = re.compile(r"[A-Za-z0-9._-]*\Z")
_Key = Annotated[str, msgspec.Meta(min_length=1, max_length=KEY_MAX)]
_Account = Annotated[str, msgspec.Meta(min_length=1, max_length=ACCOUNT_MAX)]
_Worker = Annotated[str, msgspec.Meta(max_length=WORKER_MAX)]
_JobId = Annotated[str, msgspec.Meta(max_length=JOB_ID_MAX)]
_Difficulty = Annotated[int, msgspec.Meta(ge=1, le=_I64_MAX)]
_NonNegative = Annotated[int, msgspec.Meta(ge=0, le=_I64_MAX)]


def _col(t: Any) -> Any:
    return Annotated[list[t], msgspec.Meta(max_length=MAX_BATCH)]


class _JsonBatch(msgspec.Struct, forbid_unknown_fields=True):
    key: _col(_Key)  # type: ignore[valid-type]
    account: _col(_Account)  # type: ignore[valid-type]
    worker: _col(_Worker)  # type: ignore[valid-type]
    difficulty: _col(_Difficulty)  # type: ignore[valid-type]
    job_id: _col(_JobId)  # type: ignore[valid-type]
    revenue: _col(_NonNegative)  # type: ignore[valid-type]
    time_ms: _col(_NonNegative)  # type: ignore[valid-type]


_DECODER = msgspec.json.Decoder(_JsonBatch)


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` header, lower case, without parameters."""
    return (content_type or "").partition(";")[0].strip().lower()


def decode(content_type: str | None, body: bytes) -> AccountShareBatch:
    """The batch in ``body``, by its content type; 415 ``unsupported-media-type`` for another."""
    kind = media_type(content_type)
    if kind in ("", JSON_TYPE) or kind.endswith("+json"):
        return decode_json(body)
    if kind == ARROW_TYPE:
        return decode_arrow(body)
    raise Problem(415, "unsupported-media-type",
                  f"a share batch is {JSON_TYPE} or {ARROW_TYPE}, not {kind!r}")


def decode_json(body: bytes) -> AccountShareBatch:
    try:
        b: Any = _DECODER.decode(body)
    except msgspec.MsgspecError:
        b = _schema_checked(body)
    else:
        if _ACCOUNT_CHARS.match("".join(b.account)) is None:
            b = _schema_checked(body)
    return AccountShareBatch(key=b.key, account=b.account, worker=b.worker,
                             difficulty=b.difficulty, job_id=b.job_id, revenue=b.revenue,
                             time_ms=b.time_ms)


def _schema_checked(body: bytes) -> ShareBatchIn:
    """``ShareBatchIn`` validated by pydantic: the errors every JSON body always got."""
    try:
        return ShareBatchIn.model_validate_json(body)
    except pydantic.ValidationError as e:
        raise RequestValidationError(_body_errors(e)) from None


def _body_errors(e: pydantic.ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as FastAPI reports a body's (``loc`` from ``body``); a JSON syntax
    error keeps only its own message (the 400 ``malformed-body`` detail)."""
    out = []
    for err in e.errors(include_url=False):
        if err["type"] == "json_invalid":
            msg = str(err.get("ctx", {}).get("error") or err["msg"])
            return [{"type": "json_invalid", "loc": ("body",), "msg": msg, "input": None}]
        out.append({**err, "loc": ("body", *err["loc"])})
    return out


def _invalid(loc: Sequence[str | int], msg: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body", *loc), "msg": msg,
                                    "input": None}])


def decode_arrow(body: bytes) -> AccountShareBatch:
    """An Arrow IPC stream of the seven columns: 400 ``malformed-body`` when it is not a
    complete stream (cut short, garbage, bad UTF-8), 422 ``invalid-request`` when its columns
    are not the batch's (missing, unknown, wrong type, nulls, too many rows)."""
    import pyarrow as pa  # imported on the first Arrow body: ~130 ms the JSON-only pool never pays

    # Before anything is decoded: a compressed stream within the body limit can declare
    # gigabytes, which pyarrow would allocate before any check below (api.arrow_limits).
    size = stream_size(body)
    if size is not None and size.rows > MAX_BATCH:
        raise _invalid(["key"], f"List should have at most {MAX_BATCH} items after "
                       f"validation, not {size.rows}", "too_long")
    if size is not None and size.decoded_bytes > ARROW_DECODED_MAX:
        raise Problem(413, "request-too-large",
                      f"the Arrow stream decodes to {size.decoded_bytes:,} bytes, more than "
                      f"the {ARROW_DECODED_MAX:,} a batch of {MAX_BATCH:,} shares can need")
    source = pa.BufferReader(body)
    try:
        table = pa.ipc.open_stream(source).read_all()
        complete = body.endswith(ARROW_EOS) and source.tell() == len(body)
        if complete:
            table.validate(full=True)  # UTF-8 and offsets: Arrow readers do not check them
    except (pa.ArrowException, OSError) as e:
        raise Problem(400, "malformed-body",
                      f"the body is not an Arrow IPC stream: {e}") from None
    if not complete:
        raise Problem(400, "malformed-body", "the body is not an Arrow IPC stream: it does not "
                      "end with the end-of-stream marker (cut short, or more after it)")
    names = table.column_names
    for name in names:
        if name not in COLUMNS or names.count(name) > 1:
            raise _invalid([name], "Extra inputs are not permitted" if name not in COLUMNS
                           else "column appears twice", "extra_forbidden")
    for name in COLUMNS:
        if name not in names:
            raise _invalid([name], "Field required", "missing")
    if table.num_rows > MAX_BATCH:
        raise _invalid(["key"], f"List should have at most {MAX_BATCH} items after "
                       f"validation, not {table.num_rows}", "too_long")
    cols: dict[str, Any] = {}
    for name in COLUMNS:
        col = table.column(name)
        t = col.type
        if name in STRING_COLUMNS:
            if pa.types.is_dictionary(t):  # repeated workers and job ids, encoded once
                t = t.value_type
            ok = pa.types.is_string(t) or pa.types.is_large_string(t) or \
                pa.types.is_string_view(t)
            want = "a utf8 column"
        else:
            ok = pa.types.is_integer(t)
            want = "an integer column"
        if not ok:
            raise _invalid([name], f"Input should be {want}, got {col.type}", "arrow_type")
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise _invalid([name, row], "Input should not be null", "null")
        cols[name] = col.to_pylist() if name in STRING_COLUMNS else col.to_numpy()
    return AccountShareBatch(**cols)


__all__ = ["ARROW_TYPE", "COLUMNS", "JSON_TYPE", "decode", "decode_arrow", "decode_json",
           "media_type"]
