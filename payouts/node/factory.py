"""``make_node(settings)``: the configured backend behind the Node interface.

``node.backend = "kernel"`` (the default) gives the embedded in-memory regtest node; it exists
only on regtest, so any other network with it is a configuration error. ``"bitcoind"`` talks
JSON-RPC to ``node.rpc_url`` (default: localhost on the network's standard RPC port) with
``rpc_user``/``rpc_password``, or, when those are unset, the cookie file bitcoind writes in its
default datadir (``~/.bitcoin/<chain>/.cookie``) unless ``[node] cookie_file`` (or the
``cookie_file`` argument) names another.
"""

from __future__ import annotations

from pathlib import Path

from payouts.errors import ConfigError
from payouts.node.interface import Node
from payouts.settings import Settings

# Core's default RPC ports and datadir subdirectories (chainparamsbase.cpp).
RPC_PORTS = {
    "mainnet": 8332,
    "testnet": 18332,
    "testnet4": 48332,
    "signet": 38332,
    "regtest": 18443,
}
CHAIN_DIRS = {
    "mainnet": "",
    "testnet": "testnet3",
    "testnet4": "testnet4",
    "signet": "signet",
    "regtest": "regtest",
}


def default_cookie_file(network: str) -> Path:
    return Path.home() / ".bitcoin" / CHAIN_DIRS[network] / ".cookie"


def make_node(settings: Settings, *, cookie_file: str | Path | None = None) -> Node:
    """Build (not connect) the configured node backend."""
    node = settings.node
    if node.backend == "kernel":
        if settings.network != "regtest":
            raise ConfigError(
                f"node.backend = kernel is an in-memory regtest chain; network is "
                f"{settings.network!r}: use node.backend = bitcoind"
            )
        from payouts.node.kernel import KernelNode  # imports pbk only when used

        return KernelNode()
    from payouts.node.bitcoind import BitcoindNode  # httpx only when a node is reached by RPC

    url = node.rpc_url or f"http://127.0.0.1:{RPC_PORTS[settings.network]}"
    if node.rpc_user is None and node.rpc_password is None:
        cookie = cookie_file if cookie_file is not None else (
            node.cookie_file or default_cookie_file(settings.network))
        return BitcoindNode.from_url(url, cookie_file=cookie, network=settings.network)
    if node.rpc_user is None or node.rpc_password is None:
        raise ConfigError("node.rpc_user and node.rpc_password go together (or use the cookie)")
    return BitcoindNode.from_url(
        url, user=node.rpc_user, password=node.rpc_password, network=settings.network
    )


__all__ = ["default_cookie_file", "make_node"]
