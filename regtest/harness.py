"""Start and stop throwaway bitcoind regtest nodes.

``RegtestNode`` is a context manager: a temp datadir, free loopback ports, random RPC
credentials, ``-regtest`` with DNS seeds/fixed seeds/onion off so it never dials out, and a wait
until RPC answers.

Every port the process could open is chosen here, never left to a default: the RPC port, and a
P2P port at least two away from it (:func:`free_ports`). ``-listen=0`` keeps P2P closed; when
``extra_args`` turn listening on (e.g. to link two nodes), the P2P port is bound explicitly with
``-bind``: never regtest's shared 18444, and no Tor onion target on the P2P port + 1, which
Core 28 (and Bitcoin Inquisition 28.x) binds by default whenever it listens, even with
``-listenonion=0`` (a node whose RPC port was that port failed with "Unable to bind"). Core
refuses ``-bind`` together with ``-listen=0``, hence only then. Later Core versions take the same
arguments. Leaving the ``with`` block (normally, on a test failure, or on
KeyboardInterrupt) always stops the process: SIGTERM, wait, then SIGKILL, and removes the
datadir (kept, with its ``debug.log`` path printed, when ``keep_datadir`` is set).

The binary comes from :func:`regtest.build.get_bitcoind` unless given: ``$BITCOIND``, PATH,
the cache, or a one-time build. A Bitcoin Inquisition build is recognised by
``getdeploymentinfo`` listing ``checktemplateverify`` (:attr:`RegtestNode.is_inquisition`).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from types import TracebackType
from typing import Any

from payouts.node.bitcoind import BitcoindNode
from regtest.build import get_bitcoind

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
BASE_ARGS = (
    "-regtest",
    "-server=1",
    "-listen=0",  # no P2P listener: nothing to collide with, nobody to talk to
    "-dnsseed=0",
    "-fixedseeds=0",
    "-listenonion=0",
    "-printtoconsole=0",
    "-fallbackfee=0.0002",
    "-rpcthreads=8",
)


def free_port() -> int:
    """A currently free loopback TCP port (the kernel picks it; tiny race is acceptable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports() -> tuple[int, int]:
    """Free (RPC, P2P) ports at least two apart: never one the other's onion target (+1)."""
    rpc = free_port()
    while abs((p2p := free_port()) - rpc) <= 1:
        pass
    return rpc, p2p


def listens(extra_args: tuple[str, ...]) -> bool:
    """Whether ``-listen=0`` (:data:`BASE_ARGS`) is overridden: bitcoind takes the last
    ``-listen``/``-nolisten`` on its command line."""
    on = False
    for arg in extra_args:
        name, _, value = arg.partition("=")
        if name == "-listen":
            on = value not in ("0", "false")
        elif name == "-nolisten":
            on = value in ("0", "false")
    return on


class RegtestError(RuntimeError):
    """bitcoind did not start (the message carries the tail of its debug.log)."""


class RegtestNode:
    """A bitcoind -regtest process for the duration of a ``with`` block."""

    def __init__(
        self,
        bitcoind: str | Path | None = None,
        *,
        txindex: bool = False,
        extra_args: tuple[str, ...] = (),
        keep_datadir: bool = False,
    ) -> None:
        self.bitcoind = Path(bitcoind) if bitcoind is not None else get_bitcoind()
        self.txindex = txindex
        self.extra_args = extra_args
        self.keep_datadir = keep_datadir
        self.datadir: Path | None = None
        self.rpc_port = 0
        self.p2p_port = 0  # bound only if extra_args turn -listen on (e.g. to link two nodes)
        self.rpc_user = "payouts"
        self.rpc_password = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""
        self.is_inquisition = False

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> RegtestNode:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def debug_log(self) -> Path:
        assert self.datadir is not None
        return self.datadir / "regtest" / "debug.log"

    def start(self) -> None:
        self.datadir = Path(tempfile.mkdtemp(prefix="payouts-regtest-"))
        self.rpc_port, self.p2p_port = free_ports()
        bind = (f"-bind=127.0.0.1:{self.p2p_port}",) if listens(self.extra_args) else ()
        args = [
            str(self.bitcoind),
            f"-datadir={self.datadir}",
            f"-rpcport={self.rpc_port}",
            f"-port={self.p2p_port}",
            *bind,
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            f"-rpcuser={self.rpc_user}",
            f"-rpcpassword={self.rpc_password}",
            f"-txindex={int(self.txindex)}",
            *BASE_ARGS,
            *self.extra_args,
        ]
        stderr_path = self.datadir / "stderr.log"
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RegtestError(
                    f"bitcoind exited with code {self.proc.returncode} at start: "
                    f"{stderr_path.read_text(errors='replace')[-2000:]}{self._log_tail()}"
                )
            try:
                info = self.call("getnetworkinfo")
                break
            except (OSError, urllib.error.URLError, RegtestError):
                if time.monotonic() > deadline:
                    raise RegtestError(
                        f"bitcoind RPC not ready after {START_TIMEOUT_S:.0f} s{self._log_tail()}"
                    ) from None
                time.sleep(0.1)
        self.version = str(info.get("subversion", ""))
        deployments = self.call("getdeploymentinfo").get("deployments", {})
        self.is_inquisition = "checktemplateverify" in deployments

    def stop(self) -> None:
        """Always safe to call; ends the process however it has to."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # bitcoind shuts down cleanly on SIGTERM
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.datadir is not None:
            if self.keep_datadir:
                print(f"regtest datadir kept: {self.datadir}")
            else:
                shutil.rmtree(self.datadir, ignore_errors=True)
                self.datadir = None

    def _log_tail(self) -> str:
        try:
            return "\n--- debug.log tail ---\n" + self.debug_log.read_text(errors="replace")[-3000:]
        except (OSError, AssertionError):
            return ""

    # -- access -------------------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> Any:
        """A synchronous RPC (stdlib only), for setup code outside an event loop."""
        body = json.dumps({"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)})
        token = b64encode(f"{self.rpc_user}:{self.rpc_password}".encode()).decode()
        req = urllib.request.Request(
            self.rpc_url,
            data=body.encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            payload = json.loads(e.read() or b"{}")
        if payload.get("error"):
            err = payload["error"]
            raise RegtestError(f"{method}: {err.get('message')} (RPC error {err.get('code')})")
        return payload.get("result")

    def node(self) -> BitcoindNode:
        """A :class:`BitcoindNode` for this process."""
        return BitcoindNode.from_url(
            self.rpc_url, user=self.rpc_user, password=self.rpc_password, network="regtest"
        )


__all__ = ["RegtestError", "RegtestNode", "free_port", "free_ports", "listens"]
