"""Lifecycle fixtures: a migrated SQLite store, a kernel regtest node, a registered miner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from payouts.node.kernel import KernelNode
from payouts.store import repositories as repo
from payouts.store.engine import make_engine
from payouts.store.migrate import upgrade


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = make_engine(f"sqlite:///{tmp_path}/lifecycle.sqlite")
    upgrade(e)
    yield e
    e.dispose()


@pytest.fixture
def node() -> Iterator[KernelNode]:
    with KernelNode() as n:
        yield n


@pytest.fixture
def miner_id(engine: Engine) -> int:
    return repo.register_miner(engine, "alice", bytes.fromhex("0014" + "22" * 20)).id
