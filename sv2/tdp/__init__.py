"""Stratum V2 Template Distribution (sv2-spec 07-Template-Distribution-Protocol.md): the client a
JD client uses to take templates from a Template Provider, and a small Template Provider backed
by our :class:`~payouts.node.interface.Node` (for tests, and for miners without sv2-tp)."""

from sv2.tdp.client import TemplateDistributionClient
from sv2.tdp.errors import (
    STALE_TEMPLATE_ID,
    TEMPLATE_ID_NOT_FOUND,
    TdpConnectionLost,
    TdpError,
    TdpProtocolError,
    TdpSetupRejected,
    TdpTimeout,
    TransactionDataUnavailable,
)
from sv2.tdp.server import SubmittedSolution, TemplateProvider
from sv2.tdp.state import TemplateBook

__all__ = [
    "STALE_TEMPLATE_ID",
    "TEMPLATE_ID_NOT_FOUND",
    "SubmittedSolution",
    "TdpConnectionLost",
    "TdpError",
    "TdpProtocolError",
    "TdpSetupRejected",
    "TdpTimeout",
    "TemplateBook",
    "TemplateDistributionClient",
    "TemplateProvider",
    "TransactionDataUnavailable",
]
