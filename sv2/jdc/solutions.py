"""Pushing a solved job to the JDS (sv2-spec 06-Job-Declaration-Protocol.md §6.4.9,
``PushSolution``): the JDS rebuilds the block of the most recent DeclareMiningJob.Success on the
connection and propagates it."""

from __future__ import annotations

from sv2.client import ClientSession
from sv2.jdc.declaring import DeclaredJob
from sv2.messages.job_declaration import PushSolution
from sv2.solution import Solution


class SolutionPushing(ClientSession):
    def push_solution(self, job: DeclaredJob, solution: Solution) -> PushSolution:
        """Send PushSolution (§6.4.9) for ``job`` -- valid for the most recent
        DeclareMiningJob.Success on this connection. There is no reply message; whether the
        block was accepted is the node's to say."""
        h = solution.header
        msg = PushSolution(
            extranonce=solution.extranonce,
            prev_hash=h.prev_hash,
            nonce=h.nonce,
            ntime=h.time,
            nbits=h.bits,
            version=h.version & 0xFFFFFFFF,
        )
        self._send(msg)
        self._count("solutions-pushed")
        self._say(f"PushSolution sent: block {h.hash_hex}")
        return msg


__all__ = ["SolutionPushing"]
