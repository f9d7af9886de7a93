"""Block-level consensus limits of Bitcoin Core (``src/consensus/consensus.h``), in one place
for everything that builds, fits or checks a block: the JD server's declaration checks
(:mod:`sv2.jds.validation`), the Template Provider's template fitting (:mod:`sv2.tdp.server`),
the frame ceiling of messages carrying a block's transactions (:mod:`sv2.connection`) and the
kernel node's block assembler (:mod:`payouts.node.kernel`)."""

from __future__ import annotations

MAX_BLOCK_SERIALIZED_SIZE = 4_000_000
"""``MAX_BLOCK_SERIALIZED_SIZE``: bytes, witness included (BIP-141)."""
MAX_BLOCK_WEIGHT = 4_000_000
"""``MAX_BLOCK_WEIGHT`` (BIP-141 weight units)."""
MAX_BLOCK_SIGOPS_COST = 80_000
"""``MAX_BLOCK_SIGOPS_COST`` (BIP-141 sigop cost: legacy sigops count 4 each)."""
MIN_TRANSACTION_WEIGHT = 4 * 60
"""``MIN_TRANSACTION_WEIGHT``: the smallest transaction is 60 bytes without witness."""
MAX_BLOCK_TXS = MAX_BLOCK_WEIGHT // MIN_TRANSACTION_WEIGHT
"""16,666: more transactions than this cannot fit in one block."""
MAX_FUTURE_BLOCK_TIME = 2 * 60 * 60
"""``MAX_FUTURE_BLOCK_TIME`` (``src/chain.h``): a header time at most 2 h past the node's
clock (``time-too-new``)."""
MIN_BLOCK_VERSION = 4
"""Versions below 4 are ``bad-version`` once BIP-34, BIP-66 and BIP-65 are active."""

__all__ = [
    "MAX_BLOCK_SERIALIZED_SIZE",
    "MAX_BLOCK_SIGOPS_COST",
    "MAX_BLOCK_TXS",
    "MAX_BLOCK_WEIGHT",
    "MAX_FUTURE_BLOCK_TIME",
    "MIN_BLOCK_VERSION",
    "MIN_TRANSACTION_WEIGHT",
]
