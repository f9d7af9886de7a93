"""Stratum V2 Template Distribution (sv2-spec 07-Template-Distribution-Protocol.md): the client a
JD client uses to take templates from a Template Provider, and a small Template Provider backed
by our :class:`~payouts.node.interface.Node` (for tests, and for miners without sv2-tp).

- :mod:`sv2.tdp.session` (the client's sans-I/O session) and :mod:`sv2.tdp.state` (which
  template is active), driven by :mod:`sv2.tdp.client`;
- :mod:`sv2.tdp.provider_session` (one TP connection, sans-I/O), driven by
  :mod:`sv2.tdp.server`;
- :mod:`sv2.tdp.errors`.
"""

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
from sv2.tdp.provider_session import TpSession
from sv2.tdp.server import SubmittedSolution, TemplateProvider
from sv2.tdp.session import TdpSession
from sv2.tdp.state import TemplateBook

__all__ = [
    "STALE_TEMPLATE_ID",
    "TEMPLATE_ID_NOT_FOUND",
    "SubmittedSolution",
    "TdpConnectionLost",
    "TdpError",
    "TdpProtocolError",
    "TdpSession",
    "TdpSetupRejected",
    "TdpTimeout",
    "TemplateBook",
    "TemplateDistributionClient",
    "TemplateProvider",
    "TpSession",
    "TransactionDataUnavailable",
]
