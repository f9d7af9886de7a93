"""What passes between a :class:`~sv2.jds.session.JdsSession` and whoever drives it: the
typed requests a session yields when its declaration pipeline needs the node, what it returns
when a message is handled, and how a step is advanced (the asyncio server and tests both use
:func:`resume`)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from payouts.node.interface import ChainTip, NodeError
from sv2.declared_job import FoundBlock
from sv2.messages.base import Message
from sv2.session import Close


@dataclass(frozen=True, slots=True)
class NeedTip:
    """The node's chain tip. Answer: :class:`~payouts.node.interface.ChainTip`."""


@dataclass(frozen=True, slots=True)
class NeedTemplate:
    """The node's template on ``tip`` loaded into the shared transaction store (a declaration
    on a new tip waits for it). Answer: ``None`` once :attr:`TxStore.template_prev_hash` is
    that tip's."""

    tip: ChainTip


@dataclass(frozen=True, slots=True)
class NeedMempoolTxs:
    """The node's mempool transactions with these wtxids. Answer: ``list[Tx | None]``, one
    per wtxid, in order."""

    wtxids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SubmitBlock:
    """Submit a raw block (hash ``block_hash``). Answer: a
    :class:`~payouts.node.submit.Submitted` (:func:`~payouts.node.submit.submit_found_block`:
    the node's BIP-22 answer and, when it already had the block, whether its active chain
    holds it)."""

    raw_block: bytes
    block_hash: bytes


NodeRequest = NeedTip | NeedTemplate | NeedMempoolTxs | SubmitBlock
Output = Message | Close | FoundBlock
Step = Generator[NodeRequest, Any, list[Output]]
"""What :meth:`JdsSession.receive` returns: yields node requests, returns the outputs."""


def resume(step: Step, answer: Any = None) -> NodeRequest | list[Output]:
    """Advance ``step``: start it (no ``answer``), or send it the node's answer -- a
    :class:`~payouts.node.interface.NodeError` instance is thrown into it instead, where the
    pipeline turns it into the protocol's answer. Returns the next node request, or the
    outputs once the message is handled."""
    try:
        if isinstance(answer, NodeError):
            return step.throw(answer)
        return step.send(answer)
    except StopIteration as done:
        outputs: list[Output] = done.value
        return outputs


def run_step(step: Step, answer: Callable[[NodeRequest], Any]) -> list[Output]:
    """Drive ``step`` synchronously, answering each node request with ``answer(request)``
    (a :class:`NodeError` it returns plays the node failing). For tests and tools: the asyncio
    server drives steps the same way, awaiting the node."""
    out = resume(step)
    while not isinstance(out, list):
        out = resume(step, answer(out))
    return out


__all__ = [
    "NeedMempoolTxs",
    "NeedTemplate",
    "NeedTip",
    "NodeRequest",
    "Output",
    "Step",
    "SubmitBlock",
    "resume",
    "run_step",
]
