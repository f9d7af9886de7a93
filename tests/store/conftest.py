"""Store fixtures: every store test runs on SQLite (a temp file) and PostgreSQL (a fresh schema).

PostgreSQL comes from ``$PAYOUTS_TEST_POSTGRES_URL`` (default: the project's local server). Each
test session creates its own schema (so pytest-xdist workers never collide) and drops it at the
end; the schema is selected through the URL's ``options=-csearch_path=...`` so that anything
taking only a URL (CLI, subprocesses, Alembic) lands in it too. When the server is unreachable the
PostgreSQL cases skip, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payouts.accounting.shares import ShareBatch
from payouts.store import migrate
from payouts.store.engine import make_engine
from tests.conftest import IN_CI

PG_URL = os.environ.get(
    "PAYOUTS_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
TABLES = (
    "ledger_entries", "blocks", "distributions", "shares", "miners",
    "accounting_events", "accounting_snapshots", "miner_balances",
    "worker_hashrate", "payee_index", "payee_index_blocks", "musig_sessions", "rate_limits",
    "found_blocks", "window_view", "leader_requests",
)


class _Postgres:
    """Schemas created by this session; all dropped at the end."""

    def __init__(self) -> None:
        self.admin = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        self.schemas: list[str] = []

    def new_url(self) -> str:
        name = f"payouts_test_{uuid.uuid4().hex[:12]}"
        with self.admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        self.schemas.append(name)
        url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={name}"})
        return url.render_as_string(hide_password=False)

    def close(self) -> None:
        with self.admin.begin() as conn:
            for name in self.schemas:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[_Postgres]:
    pg = _Postgres()
    try:
        with pg.admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        pg.admin.dispose()
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_URL} is unreachable under CI=true: {exc}")
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable (set CI=true to make this fail)")
    yield pg
    pg.close()


@pytest.fixture(scope="session")
def pg_migrated(postgres: _Postgres) -> Iterator[Engine]:
    """One migrated schema per session; tests get it truncated."""
    engine = make_engine(postgres.new_url())
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], str]:
    """A factory of URLs of new, empty databases on the current backend."""
    counter = iter(range(1_000_000))

    def make() -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'db{next(counter)}' / 'payouts.db'}"
        pg: _Postgres = request.getfixturevalue("postgres")
        return pg.new_url()

    return make


@pytest.fixture
def engine(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A migrated, empty store on the current backend."""
    if backend == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'store' / 'payouts.db'}")
        migrate.upgrade(eng)
        yield eng
        eng.dispose()
        return
    eng = request.getfixturevalue("pg_migrated")
    with eng.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        conn.exec_driver_sql("UPDATE dashboard_state SET shares_through = 0")
        conn.exec_driver_sql("UPDATE leader_lease SET epoch = 0, holder = ''")
    yield eng


@pytest.fixture
def url(postgres: _Postgres) -> str:
    """A fresh, empty PostgreSQL schema's URL (tests that open several engines on it)."""
    return postgres.new_url()


@pytest.fixture
def pg(url: str) -> Iterator[Engine]:
    """An engine on :func:`url`, migrated to head."""
    eng = make_engine(url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def make_batch(
    keys: list[str],
    miner_id: int | list[int] = 1,
    difficulty: int | list[int] = 1024,
    revenue: int | list[int] = 312_500_000,
) -> ShareBatch:
    n = len(keys)

    def col(v: int | list[int]) -> np.ndarray:  # type: ignore[type-arg]
        return np.array(v if isinstance(v, list) else [v] * n, dtype=np.int64)

    return ShareBatch(
        key=keys,
        miner_id=col(miner_id),
        worker=[f"rig{i % 7}" for i in range(n)],
        difficulty=col(difficulty),
        job_id=[f"job{i % 3}" for i in range(n)],
        revenue=col(revenue),
        time_ms=np.arange(n, dtype=np.int64) + 1_700_000_000_000,
    )


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())


def write_while_following(pg: Engine, url: str, write: Callable[[int, Engine], None],
                          writers: int = 4) -> list[int]:
    """Run ``write(w, engine)`` for ``writers`` writers at once, each on its own engine (as
    separate frontends), while a follower reads ``id > cursor`` as the leader does; return the
    share ids the follower saw, in the order it saw them. A writer's exception is raised."""
    import threading

    from payouts.store.accounting_state import iter_hot_shares

    engines = [make_engine(url) for _ in range(writers)]
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[int] = []

    def run(w: int, eng: Engine) -> None:
        try:
            write(w, eng)
        except BaseException as e:  # surfaced below
            errors.append(e)

    def follow() -> None:
        cursor = 0
        while True:
            last_round = done.is_set()
            for hot in iter_hot_shares(pg, cursor):
                seen.extend(hot.share_id.tolist())
                cursor = int(hot.share_id[-1])
            if last_round:
                return

    threads = [threading.Thread(target=run, args=(i, e)) for i, e in enumerate(engines)]
    follower = threading.Thread(target=follow)
    follower.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    follower.join(60)
    for e in engines:
        e.dispose()
    if errors:
        raise errors[0]
    return seen

