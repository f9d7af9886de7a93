"""The payout state a JDS pushes to its client, sans-I/O: ``SetPayoutDistribution`` (extension
0x0003, sv2-spec PR #203 §3.1), ``SetSettlementMode`` (0x4003, docs/extensions/) and the
CoinbaseOutputConstraints they imply (PR #203: the JDC MUST NOT send them to its Template
Provider before the first distribution). :class:`~sv2.jdc.session.JdcSession` holds one."""

from __future__ import annotations

import logging

from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.settlement.modes import SettlementMode
from sv2.domain_messages import distribution_from_message, mode_from_message
from sv2.jdc.constraints import OutputConstraints, constraints_for
from sv2.jdc.errors import JdcError
from sv2.messages.payouts import SetPayoutDistribution
from sv2.messages.settlement import SetSettlementMode
from sv2.messages.template_distribution import CoinbaseOutputConstraints

log = logging.getLogger(__name__)


class PayoutState:
    """The latest and the previous distribution, the settlement mode of each, and the
    constraints of the latest. ``stats`` counts what was refused (shared with the client)."""

    def __init__(self, stats: dict[str, int]) -> None:
        self.distribution: Distribution | None = None
        self.previous_distribution: Distribution | None = None
        self.modes: dict[int, SettlementMode] = {}
        # Distributions whose SetSettlementMode was refused (docs/extensions §6): never
        # declared against; a declaration for one falls back with the refusal's code.
        self.refused: dict[int, tuple[str, str]] = {}
        # With 0x4003 negotiated no distribution settles in a mode that was not announced:
        # set by the session once the extensions are known.
        self.modes_negotiated = False
        self.constraints: OutputConstraints | None = None
        self._stats = stats

    def _count(self, key: str) -> None:
        self._stats[key] = self._stats.get(key, 0) + 1

    def on_distribution(self, msg: SetPayoutDistribution) -> bool:
        """Take a pushed distribution; whether the state changed."""
        try:
            d = distribution_from_message(msg)
        except ValidationError as exc:
            # Keep the last good distribution; declarations name it and the server decides.
            self._count("invalid-distribution")
            log.warning("JDC: invalid SetPayoutDistribution %d: %s", msg.distribution_id, exc)
            return False
        cur = self.distribution
        if cur is not None and d.distribution_id <= cur.distribution_id:
            # PR #203 §3.1: ids are strictly increasing; an older one is a replay.
            self._count("distribution-not-newer")
            return False
        self.previous_distribution, self.distribution = cur, d
        self._count("distributions")
        return True

    def on_mode(self, msg: SetSettlementMode) -> bool:
        """Take a pushed settlement mode; whether the state changed. A mode for anything but
        the latest distribution is ignored (the server sends it right after its
        distribution); a refused one marks that distribution unusable."""
        latest = self.distribution
        if latest is None or msg.distribution_id != latest.distribution_id:
            self._count("mode-not-latest")
            log.warning("JDC: SetSettlementMode for %d ignored: the latest distribution is %s",
                        msg.distribution_id, latest.distribution_id if latest else "none")
            return False
        try:
            mode = mode_from_message(msg)
        except ValidationError as exc:
            return self.refuse_mode(msg.distribution_id, exc.code, exc.message)
        self.refused.pop(msg.distribution_id, None)
        self.modes[msg.distribution_id] = mode
        keep = {x.distribution_id for x in (self.distribution, self.previous_distribution) if x}
        for k in [k for k in self.modes if k not in keep and k != msg.distribution_id]:
            del self.modes[k]
        return True

    def refuse_mode(self, distribution_id: int | None, code: str, reason: str) -> bool:
        """A SetSettlementMode the codec or :func:`~sv2.domain_messages.mode_from_message`
        refused (``distribution_id`` None: a frame too malformed to name one: the latest)."""
        d = self.distribution if distribution_id is None else None
        target = d.distribution_id if d is not None else distribution_id
        self._count("invalid-mode")
        log.warning("JDC: SetSettlementMode for %s refused (%s: %s): that distribution is not "
                    "used", target, code, reason)
        if target is None:
            return False
        self.modes.pop(target, None)
        self.refused[target] = (code, reason)
        return True

    def update_constraints(self) -> OutputConstraints | None:
        """Recompute the constraints of the latest distribution in its mode; the new ones if
        they changed, else ``None``. With 0x4003 they wait for the mode (the footprint of a
        ctv or musig2 coinbase is not the distribution's)."""
        d = self.distribution
        if d is None:
            return None
        if self.modes_negotiated and d.distribution_id not in self.modes:
            return None
        c = constraints_for(d, self.mode_for(d.distribution_id).name)
        if c == self.constraints:
            return None
        self.constraints = c
        return c

    def mode_for(self, distribution_id: int) -> SettlementMode:
        """The settlement mode announced for a distribution: ``coinbase`` without 0x4003;
        with it, the announced one, else :class:`JdcError` (``invalid-settlement-mode`` code
        of the refusal, or ``no-settlement-mode``): no coinbase is built on a guess."""
        mode = self.modes.get(distribution_id)
        if mode is not None:
            return mode
        if not self.modes_negotiated:
            return SettlementMode("coinbase")
        if distribution_id in self.refused:
            code, reason = self.refused[distribution_id]
            raise JdcError(f"the settlement mode of distribution {distribution_id} was refused: "
                           f"{reason}", code=code)
        raise JdcError(f"no SetSettlementMode for distribution {distribution_id}",
                       code="no-settlement-mode")

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

    def newer_than(self, after: int | None) -> Distribution | None:
        """The latest distribution if it is newer than ``after`` (any, for ``None``)."""
        d = self.distribution
        if d is not None and (after is None or d.distribution_id > after):
            return d
        return None

    def ready(self, after: int | None, modes_negotiated: bool) -> Distribution | None:
        """:meth:`newer_than`, once its settlement mode has arrived too (with 0x4003 the
        server sends it right after the distribution)."""
        d = self.newer_than(after)
        if d is not None and modes_negotiated and d.distribution_id not in self.modes and (
                d.distribution_id not in self.refused):
            return None
        return d


__all__ = ["PayoutState"]
