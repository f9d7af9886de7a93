"""The crash tests run ``payouts serve`` processes against a bitcoind regtest node (the binary
from the node tests' fixture: ``$BITCOIND``, PATH, the cache, or a one-time build)."""

from tests.node.conftest import bitcoind_path, regtest  # noqa: F401  (fixtures)
