"""Submitting a found block, and what counts as found.

``submitblock`` answers with BIP-22 strings. A block the node already has is answered
``duplicate`` (or ``inconclusive`` / ``duplicate-inconclusive`` while it sits on a side branch):
that is no rejection when the block is in the node's active chain. A JD client sends
``SubmitSolution`` to its Template Provider right after ``PushSolution`` (sv2-spec §6.4.9,
§7.7) and the Template Provider propagates it, so the pool's node often has the block before
the JD server submits it (issue #13: 13 of 16 blocks on one node were never recorded). Every
path that submits a found block asks :func:`submit_found_block`; recording it once is the pool
service's (keyed by block hash).
"""

from __future__ import annotations

from dataclasses import dataclass

from payouts.node.interface import Node, NodeError

#: BIP-22 answers meaning "I already have (or keep) this block": found when it is active.
ALREADY_KNOWN = frozenset({"duplicate", "inconclusive", "duplicate-inconclusive"})


@dataclass(frozen=True, slots=True)
class Submitted:
    """The node's answer to a found block: ``reason`` is its BIP-22 string (None: accepted
    now); ``in_active_chain`` whether, asked afterwards, its active chain holds the block (only
    asked when the answer says it already knew it)."""

    reason: str | None
    in_active_chain: bool = False

    @property
    def found(self) -> bool:
        """Accepted now, or already known and in the active chain."""
        return self.reason is None or (self.reason in ALREADY_KNOWN and self.in_active_chain)

    @property
    def already_known(self) -> bool:
        return self.reason is not None and self.found


async def submit_found_block(node: Node, raw_block: bytes, block_hash: bytes) -> Submitted:
    """Submit ``raw_block`` (hash ``block_hash``, internal byte order); on ``duplicate`` /
    ``inconclusive`` ask the node whether its active chain holds it. A node error is a
    :class:`Submitted` with ``"node error: ..."`` as its reason (not found)."""
    try:
        reason = await node.submit_block(raw_block)
        if reason not in ALREADY_KNOWN:
            return Submitted(reason)
        return Submitted(reason, await node.block_height(block_hash) is not None)
    except NodeError as exc:
        return Submitted(f"node error: {exc.reason}")


__all__ = ["ALREADY_KNOWN", "Submitted", "submit_found_block"]
