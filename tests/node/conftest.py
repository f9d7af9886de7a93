"""Fixtures for the node backends: a bitcoind binary through the regtest harness.

Outside CI a missing bitcoind is a skip (with the reason) when it cannot be built here or
building is disabled (``PAYOUTS_SKIP_BITCOIND_BUILD=1``); otherwise it is built once into the
cache. With ``CI=true`` a missing binary is always built, and any failure fails the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from regtest.build import BuildError, build_bitcoind, can_build, find_bitcoind
from regtest.harness import RegtestNode
from tests.conftest import IN_CI
from tests.lifecycle.conftest import engine  # noqa: F401  (a migrated SQLite store per test)
from tests.node.regtest_chain import Chain


@pytest.fixture(scope="session")
def bitcoind_path() -> Path:
    try:
        found = find_bitcoind()
    except BuildError as e:  # $BITCOIND set but wrong: never silently use another binary
        pytest.fail(str(e))
    if found is not None:
        return found
    if not IN_CI:
        ok, why = can_build()
        if not ok:
            pytest.skip(f"no bitcoind ($BITCOIND unset, none on PATH, none cached) and {why}")
    try:
        return build_bitcoind()
    except BuildError as e:
        pytest.fail(f"building bitcoind failed: {e}")


@pytest.fixture(scope="module")
def regtest(bitcoind_path: Path) -> Iterator[RegtestNode]:
    with RegtestNode(bitcoind_path) as node:
        yield node


@pytest.fixture(scope="module")
def chain(regtest: RegtestNode) -> Iterator[Chain]:
    """The module's bitcoind node, driven from one event loop (tests/node/regtest_chain.py)."""
    c = Chain(regtest)
    try:
        yield c
    finally:
        c.close()
