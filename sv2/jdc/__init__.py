"""Job Declaration client (sv2-spec 06-Job-Declaration-Protocol.md) with extensions 0x0003
(sv2-spec PR #203), 0x4003 (settlement modes) and 0x4002 (PR #202 per-job adapter). See
docs/jdc.md.

- :mod:`sv2.jdc.session`: the connection as a sans-I/O session (requests built, messages in,
  outputs and decisions out); :mod:`sv2.jdc.distributions`: the pushed payout state;
- :mod:`sv2.job_coinbase`: the coinbase per settlement mode; :mod:`sv2.jdc.constraints`:
  CoinbaseOutputConstraints; :mod:`sv2.jdc.custom_job`: SetCustomMiningJob for a declared job;
- :mod:`sv2.jdc.client`: the asyncio client driving the session; :mod:`sv2.jdc.errors`.

Templates and solutions (:mod:`sv2.template`, :mod:`sv2.solution`) and the asyncio client
base (:mod:`sv2.client`) sit below the roles; they are re-exported here.
"""

from sv2.jdc.client import (
    DEFAULT_EXTENSIONS,
    DeclarationRejected,
    DeclaredJob,
    FallbackEvent,
    JdcConnectionLost,
    JdcError,
    JdcTimeout,
    JobDeclarationClient,
    SetupRejected,
)
from sv2.jdc.constraints import OutputConstraints, constraints_for
from sv2.jdc.custom_job import build_set_custom_mining_job
from sv2.jdc.session import JdcSession
from sv2.job_coinbase import (
    JobCoinbase,
    build_job_coinbase,
    build_outputs_coinbase,
    parse_output_vector,
    serialize_output_vector,
)
from sv2.solution import Solution, solve
from sv2.template import JobTemplate, NodeTemplates, TemplateError, TemplateSource

__all__ = [
    "DEFAULT_EXTENSIONS",
    "DeclarationRejected",
    "DeclaredJob",
    "FallbackEvent",
    "JdcConnectionLost",
    "JdcError",
    "JdcSession",
    "JdcTimeout",
    "JobCoinbase",
    "JobDeclarationClient",
    "JobTemplate",
    "NodeTemplates",
    "OutputConstraints",
    "SetupRejected",
    "Solution",
    "TemplateError",
    "TemplateSource",
    "build_job_coinbase",
    "build_outputs_coinbase",
    "build_set_custom_mining_job",
    "constraints_for",
    "parse_output_vector",
    "serialize_output_vector",
    "solve",
]
