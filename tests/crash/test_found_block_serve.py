"""Every found block recorded once and no crash between two commits strands it (issue #13), on
the path users run: ``payouts serve`` as a process (musig2 mode, SQLite) on a bitcoind regtest
node, a JD client over TCP/Noise, the store read from outside.

- The JD client submits the solved block to the node itself first (its Template Provider does,
  sv2-spec §7.7), then pushes it: the node answers ``duplicate``, the block is in its active
  chain, so it is recorded once, tracked, and a fresh distribution follows (PR #203 §10).
- The process SIGKILLs itself (test-only crash point) after the node accepted the block and
  before its record commits: the restarted process records it from the chain, tracks it and
  publishes the distribution that follows it.
- The same after the record committed and before its settlement row and the next
  distribution: the restarted process tracks it and publishes; an operator's musig2 fallback
  is refused for the timelock (``fallback-locked``), never as ``untracked-block``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from payouts.store import repositories as repo
from payouts.store.ledger import export_ledger, list_blocks
from regtest.crash_serve import ServeProcess, until
from regtest.harness import RegtestNode

pytestmark = [pytest.mark.bitcoind, pytest.mark.slow]


@pytest.fixture
def pool(regtest: RegtestNode, tmp_path: Path) -> Iterator[ServeProcess]:
    p = ServeProcess(regtest, tmp_path)
    yield p
    p.stop()


def _recorded_once(pool: ServeProcess, block_hash: bytes) -> int:
    rec = until("the block recorded", lambda: pool.block(block_hash), pool)
    until("its settlement row", lambda: pool.settled(rec.id), pool)
    until("the distribution after it",
          lambda: (repo.last_distribution_id(pool.engine) or 0) > rec.distribution_id, pool)
    assert [b.block_hash for b in list_blocks(pool.engine)].count(block_hash) == 1
    return int(rec.id)


def test_a_block_the_node_already_has_is_recorded_once_and_followed(pool: ServeProcess) -> None:
    pool.start()
    before = repo.last_distribution_id(pool.engine) or 0
    block_hash, height = pool.find_block(submit_first=True)
    block_id = _recorded_once(pool, block_hash)
    assert pool.node.call("getblockhash", height) == block_hash[::-1].hex()
    assert repo.last_distribution_id(pool.engine) == before + 1  # exactly one fresh one
    lines = export_ledger(pool.engine)
    pool.terminate()
    assert "blocks-rejected" not in pool.tail() and "rejected by the node" not in pool.tail()
    # A restart finds nothing to recover: no second record, no second distribution.
    pool.start()
    pool.terminate()
    assert len(list_blocks(pool.engine)) == 1 and export_ledger(pool.engine) == lines
    assert repo.last_distribution_id(pool.engine) == before + 1
    assert pool.settled(block_id) is not None


def test_a_crash_before_the_record_commits_is_recovered_at_start(pool: ServeProcess) -> None:
    pool.start(crash_at="found")
    found = pool.find_block(submit_first=False)  # the JD server's own submitblock
    assert pool.died(), pool.tail()
    assert "crash point found reached" in pool.tail()
    assert list_blocks(pool.engine) == []  # the node has it; the store does not
    pool.start()
    _recorded_once(pool, found[0])
    assert "but was never recorded (the process stopped in between): recording it now" in (
        pool.tail())


def test_a_crash_between_the_record_and_its_settlement_row(pool: ServeProcess) -> None:
    pool.start(crash_at="recorded")
    block_hash, _ = pool.find_block(submit_first=True)
    assert pool.died(), pool.tail()
    [rec] = list_blocks(pool.engine)
    assert rec.block_hash == block_hash and pool.settled(rec.id) is None
    assert repo.last_distribution_id(pool.engine) == rec.distribution_id  # none followed yet
    pool.start()
    block_id = _recorded_once(pool, block_hash)
    r = pool.http.post(f"/v1/settlements/{block_id}/fallback")
    assert r.status_code == 409 and r.json()["code"] == "fallback-locked", r.text
