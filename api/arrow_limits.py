"""What an Arrow IPC stream will cost to decode, read from its message headers before any of
it is decoded (the defence against decompression bombs in ``POST /v1/shares``).

An Arrow IPC stream may compress its buffers (LZ4 frame or ZSTD; the spec's
``BodyCompression``), so a body within the API's 2 MiB limit can declare gigabytes:
``pyarrow``'s readers allocate and decompress a whole record batch before anyone can look at
its size. Each message's header, a FlatBuffer (``Message.fbs``/``Schema.fbs`` in the Arrow
format), states the row count of every record and dictionary batch, and every compressed buffer
starts with its uncompressed length (an int64; spec: "Compression", IPC format). This module
reads those numbers by hand: pyarrow exposes no parsed header, and the ``flatbuffers`` package
would only replace the four offset reads below. The stream is refused (:class:`ArrowTooLarge`)
before decoding when its rows or its decoded bytes are over the limits; a header it cannot read
is left to pyarrow, which refuses it as malformed.

Spec: arrow.apache.org/docs/format/Columnar.html, "Serialization and Interprocess
Communication (IPC)"; github.com/apache/arrow format/Message.fbs (tables ``Message``,
``RecordBatch``, ``DictionaryBatch``, struct ``Buffer``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

# Message.header_type (MessageHeader union)
_DICTIONARY_BATCH = 2
_RECORD_BATCH = 3
_UNCOMPRESSED = -1  # a compressed buffer's length prefix when it was stored as it is


class ArrowTooLarge(ValueError):
    """The stream declares more rows or decoded bytes than allowed."""


@dataclass(frozen=True, slots=True)
class StreamSize:
    rows: int  # rows of all record batches
    decoded_bytes: int  # bytes of every batch's buffers once decompressed


def _u16(b: memoryview, o: int) -> int:
    return int(struct.unpack_from("<H", b, o)[0])


def _u32(b: memoryview, o: int) -> int:
    return int(struct.unpack_from("<I", b, o)[0])


def _field(b: memoryview, table: int, i: int) -> int | None:
    """Absolute offset of field ``i`` of the FlatBuffer table at ``table`` (None: absent)."""
    vtable = table - int(struct.unpack_from("<i", b, table)[0])
    if 4 + 2 * i >= _u16(b, vtable):
        return None
    off = _u16(b, vtable + 4 + 2 * i)
    return table + off if off else None


def _table(b: memoryview, table: int, i: int) -> int | None:
    """The table that field ``i`` (an offset) points to."""
    at = _field(b, table, i)
    return None if at is None else at + _u32(b, at)


def _batch_size(meta: memoryview, batch: int, body: memoryview) -> tuple[int, int]:
    """(rows, decoded bytes) of the ``RecordBatch`` table at ``batch``."""
    at = _field(meta, batch, 0)
    rows = 0 if at is None else int(struct.unpack_from("<q", meta, at)[0])
    compressed = _field(meta, batch, 3) is not None
    decoded = 0
    vec = _field(meta, batch, 2)  # buffers: [Buffer {offset: long, length: long}]
    if vec is not None:
        vec += _u32(meta, vec)
        for k in range(_u32(meta, vec)):
            offset, length = struct.unpack_from("<qq", meta, vec + 4 + 16 * k)
            if compressed and length >= 8:
                (n,) = struct.unpack_from("<q", body, offset)
                decoded += length - 8 if n == _UNCOMPRESSED else n
            else:
                decoded += length
    return rows, decoded


def stream_size(body: bytes) -> StreamSize | None:
    """Rows and decoded bytes an Arrow IPC stream declares; None when a header cannot be read
    (pyarrow then refuses the stream itself)."""
    import pyarrow as pa

    source = pa.BufferReader(body)
    rows = decoded = 0
    try:
        while True:
            try:
                msg: Any = pa.ipc.read_message(source)
            except EOFError:  # the end-of-stream marker
                return StreamSize(rows, decoded)
            meta = memoryview(msg.metadata)  # read in place: no copy of the body
            data = memoryview(msg.body) if msg.body is not None else memoryview(b"")
            root = _u32(meta, 0)
            kind_at = _field(meta, root, 1)
            kind = 0 if kind_at is None else meta[kind_at]
            header = _table(meta, root, 2)
            if header is None or kind not in (_RECORD_BATCH, _DICTIONARY_BATCH):
                continue  # the schema (or a message pyarrow will refuse)
            if kind == _DICTIONARY_BATCH:  # DictionaryBatch {id, data: RecordBatch, isDelta}
                header = _table(meta, header, 1)
                if header is None:
                    continue
            r, d = _batch_size(meta, header, data)
            decoded += d
            if kind == _RECORD_BATCH:
                rows += r
    except (pa.ArrowException, OSError, struct.error, IndexError):
        return None


def check_stream(body: bytes, *, max_rows: int, max_decoded_bytes: int) -> None:
    """:class:`ArrowTooLarge` when the stream declares more than ``max_rows`` rows or more
    than ``max_decoded_bytes`` once decompressed."""
    size = stream_size(body)
    if size is None:
        return
    if size.rows > max_rows:
        raise ArrowTooLarge(f"the stream holds {size.rows:,} rows, more than {max_rows:,}")
    if size.decoded_bytes > max_decoded_bytes:
        raise ArrowTooLarge(f"the stream decodes to {size.decoded_bytes:,} bytes, more than "
                            f"{max_decoded_bytes:,}")


__all__ = ["ArrowTooLarge", "StreamSize", "check_stream", "stream_size"]
