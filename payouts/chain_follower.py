"""Following the node's chain for the window: the network difficulty at start and on every new
tip (issue #11), and whether the node is reachable at all (``/v1/health``, metrics).

``payouts serve`` runs one :class:`ChainFollower`: it asks the node for its tip every
``interval`` seconds and, when the tip changed, hands the next block's nBits to the
:class:`~payouts.window_keeper.WindowKeeper` (exact difficulty, recorded as an accounting event
when it changed). A node that cannot be reached is logged once, with the retry delay growing to
``max_backoff``, and once more when it answers again; a value that cannot be the network's
(:class:`~payouts.window_keeper.ImplausibleDifficultyError`) is logged and the window keeps its
difficulty. Nothing here guesses: the window only ever moves on a difficulty the node reported
and the checks accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from payouts.node.interface import ChainTip, Node, NodeError
from payouts.tx.hashes import display_hex
from payouts.window_keeper import ImplausibleDifficultyError, WindowKeeper

log = logging.getLogger("payouts.node")


@dataclass(slots=True)
class NodeStatus:
    """What the follower last saw of the node."""

    reachable: bool | None = None  # None: not asked yet
    error: str = ""
    tip_height: int | None = None
    tip_hash: bytes | None = None
    tip_time: int | None = None  # header time of the tip
    checked_at: float | None = None  # wall clock of the last successful answer


class ChainFollower:
    """Polls ``node`` and feeds ``window`` (module docstring)."""

    def __init__(self, node: Node, window: WindowKeeper, *, interval: float = 2.0,
                 max_backoff: float = 60.0) -> None:
        self.node = node
        self.window = window
        self.interval = interval
        self.max_backoff = max_backoff
        self.status = NodeStatus()
        self._task: asyncio.Task[None] | None = None
        self._delay = interval

    async def sync_once(self) -> ChainTip:
        """Ask the node once; apply a new tip's difficulty. Raises :class:`NodeError` when the
        node cannot be reached (the status says so too)."""
        try:
            tip = await self.node.tip()
        except NodeError as e:
            self._unreachable(e.reason)
            raise
        if self.status.reachable is False:
            log.info("node reachable again (tip %d)", tip.height)
        new_tip = tip.block_hash != self.status.tip_hash
        self.status = NodeStatus(True, "", tip.height, tip.block_hash, tip.time, time.time())
        self._delay = self.interval
        if new_tip:
            try:
                if await asyncio.to_thread(self.window.on_network_bits, tip.bits):
                    log.info("network difficulty %s (nBits %#010x) from tip %d %s",
                             _show(self.window), tip.bits, tip.height,
                             display_hex(tip.block_hash))
            except ImplausibleDifficultyError as e:
                log.error("node reports %s at tip %d; the window keeps difficulty %s",
                          e.message, tip.height, _show(self.window))
        return tip

    def _unreachable(self, reason: str) -> None:
        if self.status.reachable is not False or self.status.error != reason:
            log.warning("node unreachable: %s; retrying every %.0f s at most", reason,
                        self.max_backoff)
        self.status.reachable = False
        self.status.error = reason

    async def run(self) -> None:
        """Poll until cancelled; back off (doubling, up to ``max_backoff``) while the node is
        unreachable."""
        while True:
            try:
                await self.sync_once()
            except NodeError:
                self._delay = min(self._delay * 2, self.max_backoff)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the follower: log it, try again later
                log.exception("following the node's chain failed")
            await asyncio.sleep(self._delay)

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="chain")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _show(window: WindowKeeper) -> str:
    d = window.node_difficulty
    return "unknown" if d is None else f"{float(d):.6g} ({d})"


__all__ = ["ChainFollower", "NodeStatus"]
