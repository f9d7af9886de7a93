"""Job Declaration client: asyncio sockets around the sans-I/O :mod:`sv2.connection`, with
extensions 0x0003 (sv2-spec PR #203), 0x4003 (settlement modes) and 0x4002 (PR #202 per-job
adapter). See docs/jdc.md."""

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
from sv2.jdc.jobs import (
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
