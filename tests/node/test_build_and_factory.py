"""regtest.build's discovery order, cache path, lock and skip logic; make_node's choices.
No bitcoind needed: binaries are stand-in shell scripts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from payouts.errors import ConfigError
from payouts.node.bitcoind import BitcoindNode
from payouts.node.factory import make_node
from payouts.node.kernel import KernelNode
from payouts.settings import NodeSettings, Settings
from regtest import build


def fake_binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("BITCOIND", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_cache_dir_is_outside_the_repo_and_versioned(clean_env: Path) -> None:
    assert build.cache_dir() == clean_env / "cache" / "payouts" / "bitcoind-0.1.0a5"
    assert build.find_bitcoind() is None


def test_discovery_order(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = fake_binary(build.cache_dir() / "bitcoind")
    assert build.find_bitcoind() == cached
    on_path = fake_binary(clean_env / "bin" / "bitcoind")
    assert build.find_bitcoind() == on_path
    explicit = fake_binary(clean_env / "inq" / "bitcoind")
    monkeypatch.setenv("BITCOIND", str(explicit))
    assert build.find_bitcoind() == explicit


def test_bad_bitcoind_env_is_an_error_not_a_fallthrough(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_binary(clean_env / "bin" / "bitcoind")
    monkeypatch.setenv("BITCOIND", str(clean_env / "nope"))
    with pytest.raises(build.BuildError, match="not an executable"):
        build.find_bitcoind()


def test_build_disabled_says_why(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYOUTS_SKIP_BITCOIND_BUILD", "1")
    assert build.can_build() == (False, "building is disabled by PAYOUTS_SKIP_BITCOIND_BUILD")
    with pytest.raises(build.BuildError, match="building is disabled"):
        build.get_bitcoind()


def test_concurrent_builders_wait_for_one(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers at once: one builds, the other waits on the lock and takes its binary."""
    builds: list[int] = []

    def slow_build(version: str, out: Path, jobs: int | None) -> Path:
        builds.append(1)
        time.sleep(0.3)
        return fake_binary(out / "bitcoind")

    monkeypatch.setattr(build, "_build_locked", slow_build)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(build.build_bitcoind())) for _ in "ab"
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == [1]
    assert results == [build.cache_dir() / "bitcoind"] * 2


def test_make_node() -> None:
    node = make_node(Settings(network="regtest"))
    assert isinstance(node, KernelNode)
    node.close()
    with pytest.raises(ConfigError, match="in-memory regtest"):
        make_node(Settings(network="signet"))
    s = Settings(
        network="signet",
        node=NodeSettings(backend="bitcoind", rpc_user="u", rpc_password="p"),
    )
    b = make_node(s)
    assert isinstance(b, BitcoindNode) and b.rpc.url == "http://127.0.0.1:38332"
    cookie = make_node(Settings(node=NodeSettings(backend="bitcoind")), cookie_file="/x/.cookie")
    assert isinstance(cookie, BitcoindNode) and cookie.rpc.url.endswith(":18443")


def test_harness_ports_are_apart_and_listening_is_read_from_the_arguments() -> None:
    from regtest.harness import free_ports, listens

    for _ in range(20):
        rpc, p2p = free_ports()
        assert abs(rpc - p2p) > 1  # never one the other's onion target (+1)
    assert not listens(())
    assert listens(("-listen=1",)) and listens(("-listen",))
    assert not listens(("-listen=1", "-listen=0"))  # the last one counts, as in bitcoind
    assert not listens(("-listen=1", "-nolisten")) and listens(("-nolisten=0",))
