"""The served pool and its node (issue #11, "Bad input"): an unreachable node at the first
start, with no difficulty known and no pin, stops ``payouts serve`` with one clear line; with a
difficulty known it serves on it and says so; a node back up is followed again; a value that
cannot be the network's is logged, never applied."""

from __future__ import annotations

import asyncio
import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from payouts.chain_follower import ChainFollower
from payouts.errors import ConfigError
from payouts.node.interface import ChainTip, NodeError
from payouts.node.kernel import KernelNode
from payouts.served import ServedPool
from payouts.settings import Settings


class FlakyNode(KernelNode):
    """A kernel node whose tip can be made to fail or to report other nBits."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.bits: int | None = None

    async def tip(self) -> ChainTip:
        if self.down:
            raise NodeError("connection refused")
        t = await super().tip()
        if self.bits is None:
            return t
        return ChainTip(t.height, bytes([self.bits & 0xFF]) * 32, self.bits, t.time,
                        t.median_time_past)


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path, network="regtest", **kw)


def test_unreachable_node_at_the_first_start_is_one_clear_error(tmp_path: Path) -> None:
    node = FlakyNode()
    node.down = True
    pool = ServedPool(settings(tmp_path), node=node, rate_limit=None)

    async def main() -> None:
        with pytest.raises(ConfigError, match=r"node is unreachable \(connection refused\) and "
                                              r"no network difficulty is known"):
            await pool.start()
        await pool.stop()

    asyncio.run(main())
    assert pool.service.window.node_bits is None


def test_a_known_difficulty_serves_while_the_node_is_down_then_follows_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = FlakyNode()
    first = ServedPool(settings(tmp_path), node=node, rate_limit=None)

    async def once(pool: ServedPool) -> None:
        await pool.start()
        await pool.stop()

    asyncio.run(once(first))
    assert first.service.window.node_bits == 0x207FFFFF
    node.down = True
    again = ServedPool(settings(tmp_path), node=node, rate_limit=None)
    with caplog.at_level(logging.INFO):
        async def main() -> None:
            await again.start()
            assert again.chain.status.reachable is False
            node.down, node.bits = False, 0x1F00FFFF
            await again.chain.sync_once()  # what the follower's next poll does
            await again.stop()

        asyncio.run(main())
    assert "node unreachable: connection refused" in caplog.text
    assert "serving with the last known network difficulty" in caplog.text
    assert "node reachable again" in caplog.text
    assert again.service.window.node_difficulty == Fraction(0xFFFF << 208, 0xFFFF << 224)


def test_an_implausible_difficulty_is_logged_and_never_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = FlakyNode()
    pool = ServedPool(settings(tmp_path), node=node, rate_limit=None)
    follower = ChainFollower(node, pool.service.window)

    async def main() -> None:
        await follower.sync_once()
        node.bits = 0x2100FFFF  # easier than regtest's proof-of-work limit
        with caplog.at_level(logging.ERROR, logger="payouts.node"):
            await follower.sync_once()

    asyncio.run(main())
    assert "easier than regtest's proof-of-work limit" in caplog.text
    assert "the window keeps difficulty" in caplog.text
    assert pool.service.window.node_bits == 0x207FFFFF
