"""The registered miners held in memory: id, account and payout script of every miner, for the
paths that touch all of them at once (publishing a distribution, recording a block).

Reading 100,000 miner rows per distribution took seconds (issue #11); miners change rarely and
only by appending (registration: a new id) or by rotating an address (which appends to
``miner_address_changes``). So the registry loads every miner once and, before each use, asks
the store two cheap questions: the newest miner id and the newest address change. Anything newer
is read; nothing else is. That holds whichever process registered or rotated (several
``payouts serve`` processes share one database), and a stale copy can never be used.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from sqlalchemy import Engine, func, select

from payouts.errors import UnknownMinerError
from payouts.store._common import id_list, raw_cursor
from payouts.store.api_models import MinerAddressChange
from payouts.store.models import Miner


class MinerRegistry:
    """Accounts and payout scripts by miner id, and ids by account (module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._account: dict[int, str] = {}
        self._script: dict[int, bytes] = {}
        self._id: dict[str, int] = {}
        self._max_id = 0
        self._max_change = 0

    def refresh(self) -> None:
        """Read what changed in the store since the last call (everything the first time)."""
        with self._lock, self.engine.connect() as conn:
            max_id = int(conn.execute(select(func.coalesce(func.max(Miner.id), 0))).scalar_one())
            max_change = int(conn.execute(
                select(func.coalesce(func.max(MinerAddressChange.id), 0))).scalar_one())
            if max_id == self._max_id and max_change == self._max_change:
                return
            cur = raw_cursor(conn)
            try:
                ph = "%s" if conn.dialect.name == "postgresql" else "?"
                cur.execute(f"SELECT id, account, payout_script FROM miners WHERE id > {ph}",
                            (self._max_id,))
                rows = cur.fetchall()
                if max_change != self._max_change:
                    cur.execute("SELECT DISTINCT miner_id FROM miner_address_changes "
                                f"WHERE id > {ph}", (self._max_change,))
                    rotated = [int(r[0]) for r in cur.fetchall() if int(r[0]) <= self._max_id]
                    if rotated:
                        sql, param = id_list(conn, rotated)
                        cur.execute(f"SELECT id, account, payout_script FROM miners WHERE id {sql}",
                                    (param,))
                        rows += cur.fetchall()
            finally:
                cur.close()
            for mid, account, script in rows:
                mid = int(mid)
                self._account[mid] = account
                self._script[mid] = bytes(script)
                self._id[account] = mid
            self._max_id, self._max_change = max_id, max_change

    def accounts_and_scripts(self, ids: Iterable[int]) -> tuple[list[str], list[bytes]]:
        """Accounts and scripts of ``ids`` (refreshed first); an unknown id raises."""
        self.refresh()
        ids = list(ids)
        try:
            return list(map(self._account.__getitem__, ids)), list(map(self._script.__getitem__,
                                                                       ids))
        except KeyError as e:
            raise UnknownMinerError(f"miner_id {e.args[0]} is not a registered miner") from None

    def ids(self, accounts: Iterable[str]) -> dict[str, int]:
        """``{account: id}`` for the registered ones among ``accounts`` (refreshed first)."""
        self.refresh()
        accounts = list(accounts)
        found = dict(zip(accounts, map(self._id.get, accounts), strict=True))
        if None in found.values():
            return {a: i for a, i in found.items() if i is not None}
        return found  # type: ignore[return-value]  # no None left


__all__ = ["MinerRegistry"]
