"""The closed sets of names the engine stores and reports, defined once.

Block statuses, settlement phases, settlement transaction roles and statuses, settlement mode
names, accounting schemes and operator token scopes. The sets are :class:`enum.StrEnum` (mode
names and schemes ``Literal`` types, since settings and the JD roles name them as plain
strings): a member *is* its string, so it compares
equal to it, is stored, serialised to JSON and logged as the same text as before, and the
store's CHECK constraints (:func:`sql_in`) are written from the same members. No import here:
settings, the store, the settlement lifecycle and the API all name these without pulling in
one another.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Literal, get_args


class BlockStatus(StrEnum):
    """Where a recorded block is in its lifecycle (ARCHITECTURE: found → confirmed → mature
    (100) → paid; ``orphaned`` when a reorg took it out of the active chain)."""

    FOUND = "found"
    CONFIRMED = "confirmed"
    MATURE = "mature"
    PAID = "paid"
    ORPHANED = "orphaned"


#: The forward order of a block in the active chain; ``orphaned`` is not on it (only a reorg
#: reaches it, reversing the block's ledger lines).
BLOCK_STATUS_ORDER: dict[BlockStatus, int] = {
    BlockStatus.FOUND: 0,
    BlockStatus.CONFIRMED: 1,
    BlockStatus.MATURE: 2,
    BlockStatus.PAID: 3,
}


class SettlementPhase(StrEnum):
    """How far a tracked block's payout got: waiting for maturity, payout txs out, paid, or
    rolled back by a reorg (its spends are invalid unless the same block returns)."""

    WAITING = "waiting"
    BROADCASTING = "broadcasting"
    PAID = "paid"
    ROLLED_BACK = "rolled-back"


class TxRole(StrEnum):
    """A settlement transaction: a CTV fan-out tree node, its CPFP child, or a musig2 spend
    (the cooperative key-path spend or the timelocked script-path fallback)."""

    FANOUT = "fanout"
    CPFP = "cpfp"
    COOPERATIVE = "cooperative"
    FALLBACK = "fallback"


class TxStatus(StrEnum):
    """A settlement transaction's progress: persisted, sent to the node, in the active chain."""

    PLANNED = "planned"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"


#: A settlement mode's name (docs/extensions: coinbase outputs, a CTV fan-out, a MuSig2 key).
ModeName = Literal["coinbase", "ctv", "musig2"]
MODE_NAMES: tuple[ModeName, ...] = get_args(ModeName)

#: An accounting window's scheme (docs/accounting.md).
Scheme = Literal["tides", "pplns", "prop"]


class Scope(StrEnum):
    """Operator token scopes (docs/api.md); ``admin`` implies every other one."""

    ADMIN = "admin"
    DISTRIBUTIONS_WRITE = "distributions:write"
    READ = "read"
    SETTLEMENTS_WRITE = "settlements:write"
    SHARES_WRITE = "shares:write"


def sql_in(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b', ...)``: the text of a CHECK constraint over a closed set, in the
    set's order (the migrations hold the same text)."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


__all__ = [
    "BLOCK_STATUS_ORDER",
    "MODE_NAMES",
    "BlockStatus",
    "ModeName",
    "Scheme",
    "Scope",
    "SettlementPhase",
    "TxRole",
    "TxStatus",
    "sql_in",
]
