"""Where network difficulty and "the pool found a block" come from.

A small Protocol pair so that a node backend (bitcoind RPC, libbitcoinkernel) can replace the
in-memory source: a :class:`ChainSource` reports the current network difficulty and pushes
events to subscribed :class:`ChainListener` objects (windows, the accountant).

Network difficulty is exact: a positive ``int`` or :class:`~fractions.Fraction` (a node's is
``DIFF1_TARGET / target`` of the next block's nBits; ``getdifficulty``'s float is never used).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, runtime_checkable

from payouts.accounting.windows import Difficulty, check_network_difficulty


@dataclass(frozen=True, slots=True)
class BlockFound:
    """A block found by the pool."""

    height: int
    block_hash: str = ""  # hex, display order; empty when unknown (tests)
    network_difficulty: Difficulty | None = None  # D of that block, if the source knows it


@runtime_checkable
class ChainListener(Protocol):
    def on_network_difficulty(self, difficulty: Difficulty) -> None: ...

    def on_block_found(self, event: BlockFound) -> None: ...


@runtime_checkable
class ChainSource(Protocol):
    @property
    def network_difficulty(self) -> Fraction: ...

    def subscribe(self, listener: ChainListener) -> None: ...

    def unsubscribe(self, listener: ChainListener) -> None: ...


class InMemoryChain:
    """A :class:`ChainSource` driven by hand (tests, demos, the CLI)."""

    def __init__(self, network_difficulty: Difficulty = 1) -> None:
        self._difficulty = check_network_difficulty(network_difficulty)
        self._listeners: list[ChainListener] = []
        self.height = 0

    @property
    def network_difficulty(self) -> Fraction:
        return self._difficulty

    def subscribe(self, listener: ChainListener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unsubscribe(self, listener: ChainListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def set_difficulty(self, difficulty: Difficulty) -> None:
        """A difficulty adjustment; listeners hear of it only if the value changed."""
        difficulty = check_network_difficulty(difficulty)
        if difficulty == self._difficulty:
            return
        self._difficulty = difficulty
        for listener in list(self._listeners):
            listener.on_network_difficulty(difficulty)

    def block_found(
        self, height: int, block_hash: str = "", network_difficulty: Difficulty | None = None
    ) -> BlockFound:
        """The pool found a block at ``height``; a new ``network_difficulty`` (if given) is
        applied (and announced) before the block event."""
        if network_difficulty is not None:
            self.set_difficulty(network_difficulty)
        event = BlockFound(height, block_hash, self._difficulty)
        self.height = height
        for listener in list(self._listeners):
            listener.on_block_found(event)
        return event
