"""The JD server's limits and timeouts (:class:`JdsLimits`), from ``[jds]`` or given.
docs/jds.md ("Connection limits") gives the reason for each default."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from payouts.ratelimit import RateLimiter, rate_limiter
from payouts.settings import JdsSettings
from sv2.connection import DEFAULT_MAX_BUFFERED, DEFAULT_MAX_FRAME_SIZE, JD_FRAME_LIMITS
from sv2.listener import ListenerLimits
from sv2.noise_transport import FrameLimits


@dataclass(frozen=True, slots=True)
class JdsLimits(ListenerLimits):
    """Per-connection limits and timeouts (seconds), and the server's own. docs/jds.md
    ("Connection limits") gives the reasons for each default; ``[jds]`` sets them."""

    handshake_timeout: float = 5.0  # act 1 is 64 bytes sent right after connecting
    idle_timeout: float | None = 300.0  # from the last complete message
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_buffered: int = DEFAULT_MAX_BUFFERED
    max_write_buffer: int | None = 8 << 20  # a peer that does not read loses its connection
    max_connections: int = 1_000  # set up
    # ProvideMissingTransactions.Success alone may carry a whole block (BLOCK_TXS_FRAME_SIZE).
    frame_limits: FrameLimits = field(default_factory=lambda: JD_FRAME_LIMITS)
    setup_timeout: float | None = 10.0  # accept -> SetupConnection accepted; bytes don't extend
    max_pending: int = 256  # slots of connections in handshake or setup, apart from the above
    max_connections_per_address: int | None = 64
    max_pending_per_address: int | None = 8
    connects_per_address_per_sec: float | None = 20.0  # a bucket of 40
    grace_period: float = 10.0  # PR #203 §7.2 grace window for the previous distribution
    template_refresh: float = 5.0  # re-read the node's template this often, in the background

    @classmethod
    def from_settings(cls, jds: JdsSettings) -> JdsLimits:
        """``[jds]``'s timeouts and connection limits (:data:`FROM_SETTINGS`); the rest as
        above."""
        values = {name: getattr(jds, key) for name, key in FROM_SETTINGS.items()}
        for name in ZERO_IS_NO_LIMIT:
            values[name] = values[name] or None
        return cls(**values)


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Per source address (an IPv4 address, an IPv6 /64) limits on AllocateMiningJobToken and
    DeclareMiningJob (None: no limit). Given a PostgreSQL store they are shared by every JD
    server on it (issue 15: limits hold across frontends); docs/jds.md ("Request limits")."""

    tokens: RateLimiter | None = None
    declarations: RateLimiter | None = None

    @classmethod
    def from_settings(cls, jds: JdsSettings, engine: Engine) -> RequestLimits:
        """``[jds] tokens_per_address_per_sec`` and ``declarations_per_address_per_sec``
        (bursts of twice as many, as the connect rate), on ``engine``'s store."""

        def one(scope: str, rate: float) -> RateLimiter | None:
            return rate_limiter(engine, scope, rate, max(1, round(2 * rate))) if rate else None

        return cls(one(TOKENS_SCOPE, jds.tokens_per_address_per_sec),
                   one(DECLARATIONS_SCOPE, jds.declarations_per_address_per_sec))


TOKENS_SCOPE = "jds-tokens"
DECLARATIONS_SCOPE = "jds-declarations"

# JdsLimits field -> [jds] key
FROM_SETTINGS = {
    "handshake_timeout": "handshake_timeout_sec",
    "setup_timeout": "setup_timeout_sec",
    "idle_timeout": "idle_timeout_sec",
    "max_connections": "max_connections",
    "max_pending": "max_pending",
    "max_connections_per_address": "max_connections_per_address",
    "max_pending_per_address": "max_pending_per_address",
    "connects_per_address_per_sec": "connects_per_address_per_sec",
}
ZERO_IS_NO_LIMIT = ("max_connections_per_address", "connects_per_address_per_sec")

__all__ = ["DECLARATIONS_SCOPE", "FROM_SETTINGS", "TOKENS_SCOPE", "ZERO_IS_NO_LIMIT", "JdsLimits",
           "RequestLimits"]
