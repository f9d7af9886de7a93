"""Find a ``bitcoind`` for regtest, or build Bitcoin Core's once and cache it.

Order: ``$BITCOIND`` (any Core >= 28 or a Bitcoin Inquisition build), then ``bitcoind`` on
``PATH``, then the cached build, then (if allowed) a fresh build from the Bitcoin Core source
tree that the PyPI sdist of the pinned ``py-bitcoinkernel`` carries under ``depend/bitcoin``.
Nothing is downloaded from anywhere but PyPI (the sdist) and Debian (build packages), and
nothing lands in the repository: the binary is cached under
``$XDG_CACHE_HOME/payouts/bitcoind-<pkgversion>/`` (default ``~/.cache``).

A lock file in the cache directory makes concurrent workers (pytest-xdist, two CI jobs on one
box) wait for one build instead of running two 8-minute builds on the same two cores.

``python -m regtest.build`` builds if needed and prints the path (for ``make`` targets).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

KERNEL_DIST = "py-bitcoinkernel"
# What cmake needs on Debian 12 for a wallet-less, GUI-less bitcoind.
DEBIAN_BUILD_PACKAGES = ("cmake", "libboost-dev", "libevent-dev", "pkg-config", "g++", "make")
# Everything the payout engine does not need is off: the build is then only the daemon and
# the CLI (~7.5 min on 2 cores instead of ~25 with tests and the wallet).
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_GUI=OFF",
    "-DBUILD_TESTS=OFF",
    "-DBUILD_BENCH=OFF",
    "-DBUILD_FUZZ_BINARY=OFF",
    "-DBUILD_TX=OFF",
    "-DBUILD_UTIL=OFF",
    "-DBUILD_WALLET_TOOL=OFF",
    "-DBUILD_UTIL_CHAINSTATE=OFF",
    "-DBUILD_KERNEL_LIB=OFF",
    "-DBUILD_BITCOIN_BIN=OFF",
    "-DENABLE_WALLET=OFF",
    "-DENABLE_IPC=OFF",
    "-DWITH_ZMQ=OFF",
    "-DWITH_USDT=OFF",
    "-DWITH_CCACHE=OFF",
    "-DENABLE_EXTERNAL_SIGNER=OFF",
    "-DINSTALL_MAN=OFF",
)
TARGETS = ("bitcoind", "bitcoin-cli")
PROGRESS_EVERY_S = 30.0


class BuildError(RuntimeError):
    """bitcoind could not be found or built; the message says why and what to do."""


def kernel_version() -> str:
    """The installed (pinned) py-bitcoinkernel version; it names the cache directory."""
    try:
        return metadata.version(KERNEL_DIST)
    except metadata.PackageNotFoundError:  # pragma: no cover - the venv always has it
        return "0.1.0a5"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "payouts"


def cache_dir(version: str | None = None) -> Path:
    return cache_root() / f"bitcoind-{version or kernel_version()}"


def cached_bitcoind(version: str | None = None) -> Path | None:
    """The cached build's path if it is there and executable."""
    path = cache_dir(version) / "bitcoind"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def find_bitcoind() -> Path | None:
    """``$BITCOIND``, else ``bitcoind`` on PATH, else the cached build; never builds.

    A ``$BITCOIND`` that does not point at an executable is an error, not a fall-through:
    whoever set it meant that binary (often an Inquisition build) and must hear it is wrong.
    """
    env = os.environ.get("BITCOIND")
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BuildError(f"$BITCOIND={env} is not an executable file")
        return path
    on_path = shutil.which("bitcoind")
    if on_path:
        return Path(on_path)
    return cached_bitcoind()


def _log(msg: str) -> None:
    print(f"[regtest.build] {msg}", file=sys.stderr, flush=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock; the OS drops it if the holder dies, so no stale locks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"another process is building bitcoind (lock {path}); waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _missing_build_deps() -> list[str]:
    """Debian packages whose files are absent (checked by file, so no dpkg needed)."""
    missing = []
    if shutil.which("cmake") is None:
        missing.append("cmake")
    if shutil.which("pkg-config") is None:
        missing.append("pkg-config")
    if not Path("/usr/include/boost/version.hpp").exists():
        missing.append("libboost-dev")
    if not any(Path(p).exists() for p in ("/usr/include/event2/event.h",)):
        missing.append("libevent-dev")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        missing.append("g++")
    if shutil.which("make") is None:
        missing.append("make")
    return missing


def ensure_build_deps() -> None:
    """Install the Debian build packages when root, else say exactly which are missing."""
    missing = _missing_build_deps()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BuildError(
            "cannot build bitcoind: missing build packages "
            f"{' '.join(missing)}; install them (apt-get install -y {' '.join(missing)}) "
            "or point $BITCOIND at a Bitcoin Core >= 28 binary"
        )
    _log(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *missing]):
        _run(cmd, cwd=Path("/"), env=env, label=cmd[1])
    still = _missing_build_deps()
    if still:
        raise BuildError(f"apt-get ran but these are still missing: {' '.join(still)}")


def _run(cmd: Sequence[str], *, cwd: Path, label: str, env: dict[str, str] | None = None) -> None:
    """Run a build step, streaming its output to stderr plus a heartbeat for quiet stretches.

    The heartbeat matters because a single translation unit can take a minute on a slow
    core, and a silent test session looks hung.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    tail: list[str] = []
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(PROGRESS_EVERY_S):
            _log(f"still {label}... {time.monotonic() - start:.0f} s")

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line)
            del tail[:-40]
        rc = proc.wait()
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0:
        raise BuildError(
            f"{' '.join(cmd)} failed with exit code {rc}; last output:\n{''.join(tail)}"
        )


def _fetch_source(version: str, work: Path) -> Path:
    """Download the pinned sdist from PyPI (kept in the cache) and unpack ``depend/bitcoin``."""
    sdists = sorted(work.glob(f"py_bitcoinkernel-{version}.tar.gz"))
    if not sdists:
        _log(f"downloading the {KERNEL_DIST}=={version} sdist from PyPI")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--disable-pip-version-check",
                "-d",
                str(work),
                f"{KERNEL_DIST}=={version}",
            ],
            cwd=work,
            label="downloading the sdist",
        )
        sdists = sorted(work.glob("py_bitcoinkernel-*.tar.gz"))
    if not sdists:
        raise BuildError(f"pip download produced no {KERNEL_DIST} sdist in {work}")
    src_root = work / "src"
    if src_root.exists():
        shutil.rmtree(src_root)
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(src_root, filter="data")
    found = list(src_root.glob("*/depend/bitcoin/CMakeLists.txt"))
    if not found:
        raise BuildError(f"{sdists[0].name} has no depend/bitcoin source tree")
    return found[0].parent


def build_bitcoind(*, jobs: int | None = None, force: bool = False) -> Path:
    """Build bitcoind from the pinned sdist's Core tree unless cached; returns the binary path.

    Safe to call from several processes at once: one builds, the others wait on the lock and
    then find the cached binary.
    """
    version = kernel_version()
    out = cache_dir(version)
    with _locked(out / ".lock"):
        if not force and (hit := cached_bitcoind(version)) is not None:
            return hit
        return _build_locked(version, out, jobs)


def _build_locked(version: str, out: Path, jobs: int | None) -> Path:
    """The build itself; the caller holds the cache lock."""
    ensure_build_deps()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    src = _fetch_source(version, work)
    build = work / "build"
    jobs = jobs or os.cpu_count() or 2
    started = time.monotonic()
    _log(f"configuring Bitcoin Core from {src}")
    _run(["cmake", "-S", str(src), "-B", str(build), *CMAKE_FLAGS], cwd=work, label="configuring")
    _log(f"building {' '.join(TARGETS)} with -j{jobs} (about 8 min on 2 cores)")
    _run(
        ["cmake", "--build", str(build), "--target", *TARGETS, f"-j{jobs}"],
        cwd=work,
        label="building",
    )
    elapsed = time.monotonic() - started
    for name in TARGETS:
        built = build / "bin" / name
        if not built.is_file():
            raise BuildError(f"build finished but {built} is missing")
        # Copy then rename: a reader never sees a half-written binary.
        tmp = out / f".{name}.tmp"
        shutil.copy2(built, tmp)
        tmp.replace(out / name)
    (out / "BUILD_INFO").write_text(
        f"source: {KERNEL_DIST}=={version} sdist depend/bitcoin\n"
        f"cmake: {' '.join(CMAKE_FLAGS)}\njobs: {jobs}\nbuild_seconds: {elapsed:.0f}\n"
    )
    # The source and object files are ~1 GB; only the binaries are worth keeping.
    shutil.rmtree(work, ignore_errors=True)
    _log(f"built {out / 'bitcoind'} in {elapsed:.0f} s")
    return out / "bitcoind"


def building_disabled() -> bool:
    return os.environ.get("PAYOUTS_SKIP_BITCOIND_BUILD", "") not in ("", "0")


def get_bitcoind(*, allow_build: bool | None = None) -> Path:
    """Find bitcoind, else build it (unless ``PAYOUTS_SKIP_BITCOIND_BUILD=1``)."""
    found = find_bitcoind()
    if found is not None:
        return found
    if allow_build is None:
        allow_build = not building_disabled()
    if not allow_build:
        raise BuildError(
            "no bitcoind: $BITCOIND unset, none on PATH, no cached build in "
            f"{cache_dir()} and building is disabled (PAYOUTS_SKIP_BITCOIND_BUILD)"
        )
    return build_bitcoind()


def can_build() -> tuple[bool, str]:
    """Whether a build could start here (packages present or installable), and why not."""
    if building_disabled():
        return False, "building is disabled by PAYOUTS_SKIP_BITCOIND_BUILD"
    missing = _missing_build_deps()
    if missing and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        return False, f"missing build packages {' '.join(missing)} and not root to install them"
    return True, ""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        path = build_bitcoind(force=True) if "--force" in args else get_bitcoind(allow_build=True)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "BuildError",
    "build_bitcoind",
    "cache_dir",
    "can_build",
    "find_bitcoind",
    "get_bitcoind",
    "kernel_version",
]
