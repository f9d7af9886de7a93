"""The owed-balance ledger: what the pool holds for miners it could not pay on-chain.

A payee that does not fit the coinbase budget, or whose amount is pruned as dust, is paid through
the pool payout output instead; the ledger records that the pool now owes it that amount (the
custodial residue of sv2-spec PR #203 §9.3). Later distributions weight owed miners up and put
them first, and each repayment is debited. Entries are append-only; balances never go negative
and nothing owed is ever dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from payouts.errors import ValidationError


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    account: str
    amount: int  # > 0: credited (owed to the miner); < 0: repaid
    reason: str  # "dropped" | "pruned" | "repaid"
    ref: str = ""  # block hash or other reference

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "amount": self.amount, "reason": self.reason,
                "ref": self.ref}


@dataclass
class OwedLedger:
    """In-memory ledger; the store persists the same entries."""

    entries: list[LedgerEntry] = field(default_factory=list)
    _balances: dict[str, int] = field(default_factory=dict)

    def balance(self, account: str) -> int:
        return self._balances.get(account, 0)

    def balances(self) -> dict[str, int]:
        return {a: b for a, b in self._balances.items() if b}

    def total(self) -> int:
        return sum(self._balances.values())

    def apply(self, entries: Iterable[LedgerEntry]) -> None:
        """Apply entries atomically: all of them or, on an invalid one, none."""
        batch = list(entries)
        new = dict(self._balances)
        for e in batch:
            if e.amount == 0:
                continue
            balance = new.get(e.account, 0) + e.amount
            if balance < 0:
                raise ValidationError(
                    f"ledger entry would make {e.account}'s balance negative ({balance})",
                    code="ledger-negative",
                )
            new[e.account] = balance
        self.entries.extend(e for e in batch if e.amount)
        self._balances = new

    def to_json(self) -> dict[str, Any]:
        """Audit export: every entry and the resulting balances."""
        return {
            "balances": dict(sorted(self.balances().items())),
            "total_owed": self.total(),
            "entries": [e.to_json() for e in self.entries],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> OwedLedger:
        ledger = cls()
        ledger.apply(
            LedgerEntry(e["account"], int(e["amount"]), e["reason"], e.get("ref", ""))
            for e in doc.get("entries", [])
        )
        return ledger
