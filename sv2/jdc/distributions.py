"""The payout state a JDS pushes to its client: ``SetPayoutDistribution`` (extension 0x0003,
sv2-spec PR #203 §3.1), ``SetSettlementMode`` (0x4003, docs/extensions/) and the
CoinbaseOutputConstraints they imply (PR #203: the JDC MUST NOT send them to its Template
Provider before the first distribution)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.settlement.modes import SettlementMode
from sv2.client import ClientSession
from sv2.domain_messages import distribution_from_message, mode_from_message
from sv2.jdc.constraints import OutputConstraints, constraints_for
from sv2.jdc.errors import JdcConnectionLost, JdcError, JdcTimeout
from sv2.messages.payouts import EXT_NON_CUSTODIAL_PAYOUTS, SetPayoutDistribution
from sv2.messages.settlement import EXT_SETTLEMENT_MODES, SetSettlementMode
from sv2.messages.template_distribution import CoinbaseOutputConstraints

log = logging.getLogger(__name__)

OnConstraints = Callable[[OutputConstraints], Awaitable[None] | None]


class DistributionState(ClientSession):
    """The latest and the previous distribution, the settlement mode of each, and the
    constraints of the latest."""

    negotiated: frozenset[int]
    distribution: Distribution | None
    previous_distribution: Distribution | None
    modes: dict[int, SettlementMode]
    constraints: OutputConstraints | None
    distribution_timeout: float
    on_constraints: OnConstraints | None

    async def _on_distribution(self, msg: SetPayoutDistribution) -> None:
        if EXT_NON_CUSTODIAL_PAYOUTS not in self.negotiated:
            self._count("distribution-not-negotiated")  # 0x0001: not to be used; discard
            return
        try:
            d = distribution_from_message(msg)
        except ValidationError as exc:
            # Keep the last good distribution; declarations name it and the server decides.
            self._count("invalid-distribution")
            log.warning("JDC: invalid SetPayoutDistribution %d: %s", msg.distribution_id, exc)
            return
        cur = self.distribution
        if cur is not None and d.distribution_id <= cur.distribution_id:
            # PR #203 §3.1: ids are strictly increasing; an older one is a replay.
            self._count("distribution-not-newer")
            return
        self.previous_distribution, self.distribution = cur, d
        self._count("distributions")
        await self._update_constraints()
        await self._notify()

    async def _on_mode(self, msg: SetSettlementMode) -> None:
        if EXT_SETTLEMENT_MODES not in self.negotiated:
            self._count("mode-not-negotiated")
            return
        try:
            mode = mode_from_message(msg)
        except ValidationError as exc:
            self._count("invalid-mode")
            log.warning("JDC: invalid SetSettlementMode %d: %s", msg.distribution_id, exc)
            return
        self.modes[msg.distribution_id] = mode
        keep = {x.distribution_id for x in (self.distribution, self.previous_distribution) if x}
        for k in [k for k in self.modes if k not in keep and k != msg.distribution_id]:
            del self.modes[k]
        await self._update_constraints()
        await self._notify()

    async def _update_constraints(self) -> None:
        d = self.distribution
        if d is None:
            return
        c = constraints_for(d, self.mode_for(d.distribution_id).name)
        if c == self.constraints:
            return
        self.constraints = c
        if self.on_constraints is not None:
            res = self.on_constraints(c)
            if inspect.isawaitable(res):
                await res

    def mode_for(self, distribution_id: int) -> SettlementMode:
        """The settlement mode announced for a distribution (``coinbase`` without 0x4003)."""
        return self.modes.get(distribution_id) or SettlementMode("coinbase")

    def constraints_message(self) -> CoinbaseOutputConstraints:
        """CoinbaseOutputConstraints for the Template Provider. Refused before the first
        distribution (PR #203: the JDC MUST NOT send it before then)."""
        if self.constraints is None:
            raise JdcError(
                "no SetPayoutDistribution yet: CoinbaseOutputConstraints must wait for it "
                "(PR #203)",
                code="no-distribution",
            )
        return self.constraints.message()

    def _mode_known(self, distribution_id: int) -> bool:
        return EXT_SETTLEMENT_MODES not in self.negotiated or distribution_id in self.modes

    async def wait_for_distribution(
        self, *, after: int | None = None, timeout: float | None = None
    ) -> Distribution:
        """The current distribution once there is one newer than ``after`` (and, with 0x4003,
        its settlement mode has arrived: the server sends it right after)."""
        limit = self.distribution_timeout if timeout is None else timeout

        def ready() -> bool:
            d = self.distribution
            return self._closed_reason is not None or (
                d is not None
                and (after is None or d.distribution_id > after)
                and self._mode_known(d.distribution_id)
            )

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), limit)
            except TimeoutError:
                d = self.distribution
                if d is not None and (after is None or d.distribution_id > after):
                    # The mode never came: the distribution settles as plain coinbase.
                    log.warning(
                        "JDC: no SetSettlementMode for %d; assuming coinbase", d.distribution_id
                    )
                    return d
                raise JdcTimeout(
                    "no SetPayoutDistribution"
                    + (f" newer than {after}" if after is not None else "")
                    + f" within {limit:g}s"
                ) from None
        if self.distribution is None or (
            after is not None and self.distribution.distribution_id <= after
        ):
            raise JdcConnectionLost(self._closed_reason or "connection closed")
        return self.distribution


__all__ = ["DistributionState", "OnConstraints"]
