"""Which template is active, sans-I/O (sv2-spec 07-Template-Distribution-Protocol.md §7.2-§7.3).

- ``NewTemplate`` with ``future_template`` set is kept until the ``SetNewPrevHash`` naming it
  arrives; that message activates it and the other future templates "can be discarded" (§7.3).
- ``NewTemplate`` without it "relates to the last sent SetNewPrevHash" and is active at once.
- ``template_id`` is "strictly increasing" (§7.2): a repeat or a smaller id is refused.
- A ``SetNewPrevHash`` naming a template we never got still moves the tip: the old template is
  stale, nothing is active until the next ``NewTemplate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sv2.messages.template_distribution import NewTemplate, SetNewPrevHash
from sv2.tdp.errors import TdpProtocolError


@dataclass(slots=True)
class TemplateBook:
    """The client's view of its Template Provider."""

    future: dict[int, NewTemplate] = field(default_factory=dict)
    prev_hash: SetNewPrevHash | None = None
    active: NewTemplate | None = None
    last_id: int | None = None
    unknown_prev_hash_ids: int = 0  # SetNewPrevHash messages naming no template we hold

    def on_new_template(self, msg: NewTemplate) -> NewTemplate | None:
        """Record ``msg``; return it if it is active now (not a future template). Raises
        :class:`TdpProtocolError` (and changes nothing) for a non-increasing id or a
        non-future template before any SetNewPrevHash."""
        if self.last_id is not None and msg.template_id <= self.last_id:
            raise TdpProtocolError(
                f"NewTemplate id {msg.template_id} is not above {self.last_id} (§7.2: strictly "
                "increasing)",
                code="template-id-not-increasing",
            )
        if not msg.future_template and self.prev_hash is None:
            raise TdpProtocolError(
                f"NewTemplate {msg.template_id} is not a future template but no SetNewPrevHash "
                "came before it",
                code="template-without-prev-hash",
            )
        self.last_id = msg.template_id
        if msg.future_template:
            self.future[msg.template_id] = msg
            return None
        self.active = msg
        return msg

    def on_set_new_prev_hash(self, msg: SetNewPrevHash) -> NewTemplate | None:
        """The new tip; return the future template it activates, or ``None`` when it names
        one we do not hold (then nothing is active until the next NewTemplate)."""
        self.prev_hash = msg
        self.active = self.future.pop(msg.template_id, None)
        self.future.clear()
        if self.active is None:
            self.unknown_prev_hash_ids += 1
        return self.active

    def current(self) -> tuple[NewTemplate, SetNewPrevHash] | None:
        """The template to work on and the SetNewPrevHash it builds on."""
        if self.active is None or self.prev_hash is None:
            return None
        return self.active, self.prev_hash


__all__ = ["TemplateBook"]
