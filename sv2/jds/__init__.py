"""Job Declaration Server (sv2-spec 06-Job-Declaration-Protocol.md) with extensions 0x0003
(sv2-spec PR #203), 0x4002 (PR #202 per-job adapter) and 0x4003 (settlement modes). See
docs/jds.md.

- :mod:`sv2.jds.session`: one connection as a sans-I/O session (messages in, messages and node
  requests out); :mod:`sv2.jds.declaring` and :mod:`sv2.jds.validation`: the declaration
  pipeline's synchronous steps and checks;
- :mod:`sv2.jds.tokens`, :mod:`sv2.jds.state`: the token book and the transaction store the
  connections share;
- :mod:`sv2.jds.server`: the asyncio server driving the sessions, the node and the timers;
  :mod:`sv2.jds.settings`: its settings and rotating Noise identity;
- :mod:`sv2.jds.errors`: every error code.

What the pool's Mining Protocol server shares with it sits below the roles:
:mod:`sv2.declared_job`, :mod:`sv2.custom_job`, :mod:`sv2.block_rebuild`,
:mod:`sv2.distribution_book`.
"""

from sv2.declared_job import DeclaredJob, FoundBlock
from sv2.distribution_book import DistributionBook
from sv2.jds.declaring import BoundOutputs
from sv2.jds.errors import JobRejected
from sv2.jds.server import JdsLimits, JobDeclarationServer
from sv2.jds.session import JdsSession, JdsShared
from sv2.jds.state import TxStore
from sv2.jds.validation import KnownTx, PayoutRule, validate_declaration

__all__ = [
    "BoundOutputs",
    "DeclaredJob",
    "DistributionBook",
    "FoundBlock",
    "JdsLimits",
    "JdsSession",
    "JdsShared",
    "JobDeclarationServer",
    "JobRejected",
    "KnownTx",
    "PayoutRule",
    "TxStore",
    "validate_declaration",
]
