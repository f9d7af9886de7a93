"""The one settings check of ``payouts config check`` and ``payouts serve``: what serve would
refuse, found before anything starts.

:func:`load_valid_settings` reads the settings (file and ``PAYOUTS_*``; the model's own
validation, :func:`payouts.settings.load_settings`) and then checks what the model cannot see by
itself because it needs the protocol layer or ties several keys together: the node backend for
the network, the pool's address on that network, the JD server's listen address and authority
key (decoded, and matched against ``authority_public_key`` when set), the settlement mode's
parameters. Every problem is one line naming its key, or the environment variable that set it;
all of them are reported at once (:class:`~payouts.errors.ConfigError`, exit 2). Nothing is
written: no database, no directory, no file.

``payouts serve`` also checks, after this and still before any migration, that the ports it
will listen on are free (:func:`check_ports`); ``config check`` does not, since the pool may
already be running when an operator checks a changed file.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from payouts.errors import ConfigError, PayoutsError
from payouts.settings import Settings, env_name, load_settings, problems_text


def key(*loc: str) -> str:
    """How a problem names a setting: its environment variable when one set it, else its
    dotted key in the settings file."""
    return env_name(loc) or ".".join(loc)


def load_valid_settings(config: Path | None, *, role: str | None = None) -> Settings:
    """Settings that ``payouts serve`` can start with, or :class:`ConfigError` listing every
    problem (module docstring). ``role``: ``--role``, over ``[cluster] role``."""
    settings = load_settings(config)
    if role is not None:
        settings.cluster.role = role  # type: ignore[assignment]  # checked just below
    problems = settings_problems(settings)
    if problems:
        where = f" in {config}" if config is not None else ""
        raise ConfigError(problems_text(f"invalid settings{where}", problems))
    return settings


def settings_problems(settings: Settings) -> list[str]:
    """Every cross-key problem of ``settings`` (module docstring), one line each."""
    return [*_node_problems(settings), *_pool_problems(settings), *_jds_problems(settings),
            *_mining_problems(settings),
            *_mode_problems(settings), *_cluster_problems(settings)]


def _cluster_problems(settings: Settings) -> list[str]:
    """A cluster (docs/deployment.md) needs PostgreSQL and a node every process shares."""
    c = settings.cluster
    if c.role not in ("all", "api", "jds", "leader"):
        return [f"{key('cluster', 'role')}: {c.role!r} is not a role: all, api, jds or leader"]
    if not c.active:
        return []
    what = f"role {c.role}" + (" with cluster.enabled" if c.enabled else "")
    if not settings.effective_database_url.startswith("postgresql"):
        return [f"{key('cluster', 'role')}: {what} needs PostgreSQL (database_url = "
                "postgresql+psycopg://...): the processes of a cluster share one database; on "
                "SQLite only role all runs, as one process"]
    if settings.node.backend == "kernel" and c.role != "api":
        return [f"{key('node', 'backend')}: {what} needs node.backend = \"bitcoind\": the "
                "kernel backend is an in-memory chain of its own in every process"]
    return []


def _node_problems(settings: Settings) -> list[str]:
    node = settings.node
    if node.backend == "kernel" and settings.network != "regtest":
        return [f"{key('node', 'backend')}: kernel is an in-memory regtest chain but network is "
                f"{settings.network!r}: use node.backend = \"bitcoind\""]
    if node.backend == "bitcoind" and node.cookie_file is not None \
            and not node.cookie_file.is_file():
        return [f"{key('node', 'cookie_file')}: {node.cookie_file} does not exist (bitcoind "
                "writes it at start in its datadir)"]
    return []


def _pool_problems(settings: Settings) -> list[str]:
    from payouts.tx.address import address_to_script

    pool = settings.pool
    if pool.payout_address is not None:
        try:
            address_to_script(pool.payout_address, settings.network)
        except PayoutsError as e:
            return [f"{key('pool', 'payout_address')}: {e.message}"]
    if pool.payout_address is not None and pool.payout_script is not None:
        return [f"{key('pool', 'payout_address')} and {key('pool', 'payout_script')} name the "
                "pool's output twice: set one"]
    if settings.jds.enabled and pool.payout_address is None and pool.payout_script is None:
        return [f"{key('pool', 'payout_address')}: required with jds.enabled (every "
                "distribution the JD server pushes pays the pool's output)"]
    return []


def listen_problem(text: str, where: str) -> str | None:
    """``host:port`` (IPv6 in brackets) with a port 1..65535, or the problem with it."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{where}: must be host:port with a port 1..65535 (e.g. 127.0.0.1:34264), " \
               f"got {text!r}"
    return None


def _jds_problems(settings: Settings) -> list[str]:
    jds = settings.jds
    problems = []
    bad_listen = listen_problem(jds.listen, key("jds", "listen"))
    if jds.enabled and bad_listen:
        problems.append(bad_listen)
    secret_at = key("jds", "authority_secret_key_file") if jds.authority_secret_key_file \
        else key("jds", "authority_secret_key")
    if jds.enabled and not jds.authority_secret_key:
        problems.append(f"{key('jds', 'authority_secret_key_file')}: required with jds.enabled "
                        "(the authority key signs the server's Noise certificate; "
                        "payouts keys generate makes one)")
    public = None
    if jds.authority_secret_key:
        try:
            public = authority_public_key_of(jds.authority_secret_key)
        except PayoutsError as e:
            problems.append(f"{secret_at}: not an authority secret key ({e.message}; SRI's "
                            "base58check form, as payouts keys generate writes it)")
    if jds.authority_public_key is not None:
        from sv2.authority import decode_authority_public_key

        where = key("jds", "authority_public_key")
        try:
            decode_authority_public_key(jds.authority_public_key)
        except PayoutsError as e:
            problems.append(f"{where}: not an authority public key ({e.message})")
        else:
            if public is not None and public != jds.authority_public_key.strip():
                problems.append(f"{where}: {jds.authority_public_key} is not the public key of "
                                f"{secret_at} (that is {public}): a wrong key file?")
    return problems


def _mining_problems(settings: Settings) -> list[str]:
    mining = settings.mining
    if not mining.enabled:
        return []
    problems = []
    if not settings.jds.enabled:
        problems.append(f"{key('mining', 'enabled')}: needs jds.enabled (the Mining Protocol "
                        "endpoint signs with the JD server's authority key and checks "
                        "SetCustomMiningJob against its declarations)")
    bad_listen = listen_problem(mining.listen, key("mining", "listen"))
    if bad_listen:
        problems.append(bad_listen)
    return problems


def _mode_problems(settings: Settings) -> list[str]:
    from payouts.settlement.modes import mode_from_settings

    try:
        mode_from_settings(settings)
    except PayoutsError as e:
        return [e.message]
    return []


def authority_public_key_of(secret_text: str) -> str:
    """The public key (sv2-spec §4.7 base58check) of an authority secret key in SRI's text
    form: what miners pin (``payouts jdc run --authority-key``)."""
    from sv2.authority import (
        authority_public_key,
        decode_authority_secret_key,
        encode_authority_public_key,
    )

    return encode_authority_public_key(authority_public_key(
        decode_authority_secret_key(secret_text)))


def check_ports(settings: Settings, api: tuple[str, int]) -> None:
    """Raise :class:`ConfigError` naming each address ``payouts serve`` cannot listen on
    (taken by another process, or not an address of this machine)."""
    wanted = [(f"api ({key('api', 'host')}/{key('api', 'port')})", api)]
    if settings.jds.enabled:
        host, _, port = settings.jds.listen.rpartition(":")
        wanted.append((key("jds", "listen"), (host.strip("[]"), int(port))))
    if settings.mining.enabled:
        host, _, port = settings.mining.listen.rpartition(":")
        wanted.append((key("mining", "listen"), (host.strip("[]"), int(port))))
    problems = [p for where, address in wanted if (p := _bind_problem(where, address))]
    if problems:
        raise ConfigError(problems_text("cannot listen", problems))


def _bind_problem(where: str, address: tuple[str, int]) -> str | None:
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"{where}: {host!r} does not resolve ({e.strerror})"
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As the servers bind: SO_REUSEADDR, so a port in TIME_WAIT is no false alarm.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as e:
            why = "in use by another process" if e.errno == errno.EADDRINUSE else e.strerror
            return f"{where}: {host}:{port} {why}"
    return None


__all__ = [
    "authority_public_key_of",
    "check_ports",
    "key",
    "listen_problem",
    "load_valid_settings",
    "settings_problems",
]
