"""LISTEN/NOTIFY between the processes of one pool (PostgreSQL), with a poll to catch up.

A notification is a wake-up, not the data: every listener reads the truth from the tables
afterwards, and also wakes up every ``poll`` seconds on its own, so a notification lost (the
listener reconnecting, a NOTIFY sent while it was down) costs at most one poll interval.

Channels are global to a database; each is suffixed with the schema (``current_schema()``) so
pools in separate schemas of one database (the tests) do not hear each other.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

log = logging.getLogger("payouts.notify")

DISTRIBUTION = "distribution"  # payload "id" or "id:settled"
FOUND_BLOCK = "found_block"
SHARES = "shares"
REQUEST = "request"
REPLY = "reply"  # payload: the request id
CHANNELS = (DISTRIBUTION, FOUND_BLOCK, SHARES, REQUEST, REPLY)


def channel_name(kind: str, schema: str) -> str:
    """``payouts_<kind>_<schema>``, at most 63 bytes (PostgreSQL's identifier limit)."""
    return f"payouts_{kind}_{schema}"[:63]


def current_schema(conn: Connection) -> str:
    return str(conn.execute(text("SELECT current_schema()")).scalar_one())


def notify(conn: Connection, kind: str, payload: str = "") -> None:
    """NOTIFY ``kind`` inside ``conn``'s transaction (delivered when it commits)."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(text("SELECT pg_notify(:c, :p)"),
                 {"c": channel_name(kind, current_schema(conn)), "p": payload})


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL ``url`` as libpq takes it (no ``+driver``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def connect_raw(url: str, *, autocommit: bool = True) -> Any:
    """A psycopg connection of its own (not from the pool), with TCP keepalives: when the
    network to PostgreSQL is cut, the session and what it holds (the leader's lock) die on both
    sides within ~15 s instead of hanging on a dead socket."""
    import psycopg

    return psycopg.connect(libpq_url(url), autocommit=autocommit, connect_timeout=5,
                           keepalives=1, keepalives_idle=5, keepalives_interval=2,
                           keepalives_count=3)


class Listener:
    """LISTEN on ``kinds``; :meth:`wait` returns the notifications that came (``(kind,
    payload)``), or none after ``timeout`` seconds (the poll). Reconnects on its own."""

    def __init__(self, engine: Engine, kinds: Iterable[str]) -> None:
        self.url = engine.url.render_as_string(hide_password=False)
        self.kinds = tuple(kinds)
        self._conn: Any = None
        self._by_channel: dict[str, str] = {}
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        conn = connect_raw(self.url)
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        self._by_channel = {channel_name(k, schema): k for k in self.kinds}
        for name in self._by_channel:
            conn.execute(f'LISTEN "{name}"')
        return conn

    def wait(self, timeout: float) -> list[tuple[str, str]]:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                out = []
                for n in self._conn.notifies(timeout=timeout, stop_after=1):
                    out.append((self._by_channel.get(n.channel, n.channel), n.payload))
                # Drain what else has arrived without waiting again.
                for n in self._conn.notifies(timeout=0.0):
                    out.append((self._by_channel.get(n.channel, n.channel), n.payload))
                return out
            except Exception as e:
                log.warning("listener connection lost (%s); reconnecting", e)
                self.close_locked()
                return []

    def close_locked(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        self.close_locked()


__all__ = ["CHANNELS", "DISTRIBUTION", "FOUND_BLOCK", "REPLY", "REQUEST", "SHARES", "Listener",
           "channel_name", "connect_raw", "libpq_url", "notify"]
