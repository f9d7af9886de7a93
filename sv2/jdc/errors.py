"""What a JD client raises, and the fallback event it fires (sv2-spec
06-Job-Declaration-Protocol.md §6.4.5: a rejected declaration "should trigger fallback to another
pool+JDS or to solo mining"). Every error has a stable ``code``."""

from __future__ import annotations

from dataclasses import dataclass

from payouts.errors import PayoutsError
from sv2.job_coinbase import JobCoinbase
from sv2.template import JobTemplate


class JdcError(PayoutsError):
    """The JD client cannot go on; ``code`` says why."""

    code = "jdc-error"


class SetupRejected(JdcError):
    """SetupConnection.Error or RequestExtensions.Error from the server."""

    code = "jdc-setup-rejected"


class JdcTimeout(JdcError):
    """The server did not answer in time."""

    code = "jdc-timeout"


class JdcConnectionLost(JdcError):
    """The connection ended (EOF, socket error or a Noise failure)."""

    code = "jdc-connection-lost"


@dataclass(frozen=True, slots=True)
class FallbackEvent:
    """Why the client gave up on the pool for a template: sv2-spec §6.4.5, "should trigger
    fallback to another pool+JDS or to solo mining". ``coinbase`` is what was declared (a solo
    miner can still mine ``template`` with a coinbase of its own)."""

    code: str
    details: str
    template: JobTemplate
    coinbase: JobCoinbase | None
    distribution_id: int | None
    attempts: int


class DeclarationRejected(JdcError):
    """The declaration failed for good; the fallback event has fired."""

    code = "jdc-declaration-rejected"

    def __init__(self, event: FallbackEvent) -> None:
        super().__init__(f"{event.code}: {event.details}" if event.details else event.code)
        self.event = event


__all__ = [
    "DeclarationRejected",
    "FallbackEvent",
    "JdcConnectionLost",
    "JdcError",
    "JdcTimeout",
    "SetupRejected",
]
