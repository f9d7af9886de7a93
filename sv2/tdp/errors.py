"""Errors of the Template Distribution client and server; each has a stable ``code``."""

from __future__ import annotations

from payouts.errors import PayoutsError

# RequestTransactionData.Error codes (sv2-spec §7.6 leaves them to implementations; these are
# SRI's / sv2-tp's strings).
STALE_TEMPLATE_ID = "stale-template-id"
TEMPLATE_ID_NOT_FOUND = "template-id-not-found"


class TdpError(PayoutsError):
    """The Template Distribution connection cannot go on; ``code`` says why."""

    code = "tdp-error"


class TdpSetupRejected(TdpError):
    """SetupConnection.Error from the Template Provider."""

    code = "tdp-setup-rejected"


class TdpTimeout(TdpError):
    """The Template Provider did not answer (or send a template) in time."""

    code = "tdp-timeout"


class TdpConnectionLost(TdpError):
    """The connection ended (EOF, socket error or a Noise failure)."""

    code = "tdp-connection-lost"


class TdpProtocolError(TdpError):
    """The Template Provider sent something the protocol does not allow (a template id that
    does not increase, a non-future template before any SetNewPrevHash)."""

    code = "tdp-protocol-error"


class TransactionDataUnavailable(TdpError):
    """RequestTransactionData.Error: ``code`` is the provider's ``error_code``."""

    code = TEMPLATE_ID_NOT_FOUND


__all__ = [
    "STALE_TEMPLATE_ID",
    "TEMPLATE_ID_NOT_FOUND",
    "TdpConnectionLost",
    "TdpError",
    "TdpProtocolError",
    "TdpSetupRejected",
    "TdpTimeout",
    "TransactionDataUnavailable",
]
