"""Job Declaration Server: asyncio sockets around the sans-I/O :mod:`sv2.connection`, with
extensions 0x0003 (sv2-spec PR #203), 0x4002 (PR #202 per-job adapter) and 0x4003
(settlement modes). See docs/jds.md."""

from sv2.jds.errors import JobRejected
from sv2.jds.server import (
    BoundOutputs,
    DeclaredJob,
    FoundBlock,
    JdsLimits,
    JobDeclarationServer,
)
from sv2.jds.state import DistributionBook, TxStore
from sv2.jds.validation import KnownTx, PayoutRule, validate_declaration

__all__ = [
    "BoundOutputs",
    "DeclaredJob",
    "DistributionBook",
    "FoundBlock",
    "JdsLimits",
    "JobDeclarationServer",
    "JobRejected",
    "KnownTx",
    "PayoutRule",
    "TxStore",
    "validate_declaration",
]
