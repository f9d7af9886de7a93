"""Listening sockets that hand each accepted socket to a plain callback, for
:class:`~sv2.listener.NoiseListener`.

``asyncio``'s own servers create a task, a transport and a protocol for every connection before
any code of ours sees it; under a connect flood that is most of the server's work, even for the
connections it refuses at once. Here a readable listening socket is drained with ``accept()``
(at most :data:`ACCEPT_BATCH` at a time, so a burst is taken between the reads of the
connections already open) and each socket goes to the callback, which may close it at once
(a refused connection then costs an ``accept`` and a ``close``) or wrap it in streams.

The kernel's accept queue is deep (:data:`LISTEN_BACKLOG`, capped by ``net.core.somaxconn``):
when it is full the kernel drops new SYNs, and an honest client then waits a whole TCP
retransmission timeout (1 s) before it even connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

LISTEN_BACKLOG = 4_096
ACCEPT_BATCH = 128
RETRY_AFTER_S = 1.0  # out of descriptors or memory: stop accepting this long (as asyncio does)
RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

log = logging.getLogger(__name__)

OnAccept = Callable[[socket.socket, Any], None]


class Acceptor:
    """The listening sockets of one server: one per address ``host`` resolves to."""

    def __init__(self, on_accept: OnAccept) -> None:
        self.on_accept = on_accept
        self.sockets: list[socket.socket] = []
        self.accept_errors = 0

    async def open(self, host: str, port: int) -> None:
        """Bind and listen (``SO_REUSEADDR``; an IPv6 socket is IPv6 only, as in asyncio)."""
        if self.sockets:
            raise RuntimeError("already listening")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, kind, proto, _, addr in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(addr)
                sock.listen(LISTEN_BACKLOG)
                sock.setblocking(False)
        except OSError:
            self.close()
            raise
        for sock in self.sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def address(self) -> tuple[str, int]:
        if not self.sockets:
            raise RuntimeError("server not started")
        name = self.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    def close(self) -> None:
        """Stop accepting and close the listening sockets (idempotent)."""
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            with contextlib.suppress(ValueError, OSError):  # already removed / closed
                loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.accept_errors += 1
                if exc.errno in RESOURCE_ERRORS:
                    log.warning("accept failed (%s); pausing %.0f s", exc, RETRY_AFTER_S)
                    self._pause(sock)
                    return
                continue  # e.g. ECONNABORTED: that connection is gone, the next may be fine
            conn.setblocking(False)
            self.on_accept(conn, addr)

    def _pause(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())

        def resume() -> None:
            if sock in self.sockets:
                loop.add_reader(sock.fileno(), self._accept, sock)

        loop.call_later(RETRY_AFTER_S, resume)


__all__ = ["ACCEPT_BATCH", "LISTEN_BACKLOG", "Acceptor"]
