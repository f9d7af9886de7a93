"""Campaigning for leadership of a pool run as several processes (docs/deployment.md).

:class:`Campaign` keeps its own PostgreSQL connection (TCP keepalives: a partitioned leader's
session dies, and with it the lock) and tries the leader lock about every second
(:func:`payouts.store.leader_lease.try_acquire`). Once elected it calls ``on_elected(epoch)``
and then checks every second that the lock connection still answers; the moment it does not
(PostgreSQL terminated it, the network dropped, the server restarted) the lock is gone and
``on_lost()`` runs at once, before anything else is tried. A process that was stopped
(SIGSTOP) and resumed finds out the same way; until then every write it attempts is refused
by the fence (:class:`payouts.store.leader_lease.Fence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from payouts.store.leader_lease import try_acquire
from payouts.store.notify import connect_raw

log = logging.getLogger("payouts.cluster")

TRY_EVERY_SEC = 1.0
CHECK_EVERY_SEC = 1.0


class Campaign:
    """Campaign on ``url`` as ``holder`` (module docstring)."""

    def __init__(self, url: str, holder: str, *,
                 on_elected: Callable[[int], Awaitable[None]],
                 on_lost: Callable[[], Awaitable[None]],
                 try_every: float = TRY_EVERY_SEC) -> None:
        self.url = url
        self.holder = holder
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.try_every = try_every
        self.epoch: int | None = None
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="campaign")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.epoch is not None:
            self.epoch = None
            await self.on_lost()
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _try(self) -> int | None:
        if self._conn is None:
            self._conn = connect_raw(self.url)
        return try_acquire(self._conn, self.holder)

    def _alive(self) -> bool:
        try:
            self._conn.execute("SELECT 1").fetchone()
            return True
        except Exception:
            return False

    async def _run(self) -> None:
        while True:
            if self.epoch is None:
                try:
                    epoch = await asyncio.to_thread(self._try)
                except Exception as e:
                    log.warning("campaign: PostgreSQL does not answer (%s); retrying", e)
                    self._close()
                    epoch = None
                if epoch is not None:
                    self.epoch = epoch
                    log.info("elected leader (epoch %d, %s)", epoch, self.holder)
                    try:
                        await self.on_elected(epoch)
                    except Exception:
                        log.exception("starting the leader's work failed; stepping down")
                        await self._step_down()
                    continue
                await asyncio.sleep(self.try_every)
            else:
                await asyncio.sleep(CHECK_EVERY_SEC)
                if not await asyncio.to_thread(self._alive):
                    log.error("the leader lock's connection is gone: stepping down "
                              "(epoch %d)", self.epoch)
                    await self._step_down()

    async def _step_down(self) -> None:
        self.epoch = None
        self._close()  # releases the lock if the session still lives
        try:
            await self.on_lost()
        except Exception:
            log.exception("stopping the leader's work failed")

    async def step_down(self) -> None:
        """Give up leadership now (a write was refused as stale: someone else leads)."""
        if self.epoch is not None:
            log.error("stepping down: another leader was elected (epoch %d is over)",
                      self.epoch)
            await self._step_down()


__all__ = ["Campaign"]
