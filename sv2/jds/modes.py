"""Settlement modes as the JD server announces them (extension 0x4003) and the outputs each
mode puts in front of a declared coinbase.

The expected-outputs rule is a callable ``(mode, distribution, T) -> outputs``:

- ``coinbase``: :func:`payouts.distribution.compute_outputs` (sv2-spec PR #203 §4: pool payout,
  payees without the dust-pruned ones, additional outputs);
- ``ctv``: :func:`payouts.settlement.ctv.build_ctv_fanout` -- one commitment output worth
  T − Σ additional, then the additional outputs;
- ``musig2``: :func:`payouts.settlement.musig2.output.build_musig2_output` with the committee,
  fallback, fee rate and CTV-leaf flag announced in ``SetSettlementMode``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.model import Distribution, TxOut
from payouts.errors import ValidationError
from payouts.settlement.ctv import CtvNotActiveError, CtvParams, build_ctv_fanout
from payouts.settlement.musig2.output import (
    Committee,
    Musig2Output,
    Musig2Params,
    build_musig2_output,
)
from sv2.messages.settlement import (
    CTV_FORM_BARE,
    CTV_FORM_TAPROOT,
    MODE_COINBASE,
    MODE_CTV,
    MODE_MUSIG2,
    MODE_NAMES,
    SetSettlementMode,
)

ModeName = Literal["coinbase", "ctv", "musig2"]
_MODE_CODES: dict[str, int] = {v: k for k, v in MODE_NAMES.items()}


@dataclass(frozen=True, slots=True)
class Musig2Mode:
    """What a JD client needs to rebuild the musig2 coinbase output byte for byte: the
    committee's plain (33-byte compressed) keys in KeySort order, the fallback leaf's relative
    timelock (blocks) and x-only key, the payout tx's fee rate, and whether the tree carries the
    CTV exit leaf. :meth:`settlement_params` is the settlement layer's view of the same values."""

    committee: tuple[bytes, ...]
    fallback_timelock: int
    fallback_key: bytes
    fee_rate: int = 1
    ctv_leaf: bool = False

    def __post_init__(self) -> None:
        if not 1 <= len(self.committee) <= 255:
            raise ValidationError("a musig2 committee has 1..255 keys")
        if any(len(k) != 33 or k[0] not in (2, 3) for k in self.committee):
            raise ValidationError("committee keys are 33-byte compressed points")
        if not 0 <= self.fallback_timelock <= 0xFFFFFFFF or len(self.fallback_key) != 32:
            raise ValidationError("fallback timelock is a U32 and the fallback key x-only")
        if not 0 <= self.fee_rate <= 0xFFFFFFFF:
            raise ValidationError("the musig2 fee rate is a U32")

    def settlement_params(self) -> Musig2Params:
        return Musig2Params(
            self.fallback_key,
            fallback_delay=self.fallback_timelock,
            fee_rate=self.fee_rate,
            max_signers=max(len(self.committee), 1),
        )

    def build(self, distribution: Distribution, revenue: int) -> Musig2Output:
        """The settlement output both JD sides compute (ARCHITECTURE invariant 3)."""
        return build_musig2_output(
            distribution,
            revenue,
            Committee.from_pubkeys(self.committee),
            self.settlement_params(),
            ctv_active=self.ctv_leaf,
        )


@dataclass(frozen=True, slots=True)
class SettlementMode:
    """One distribution's settlement mode and parameters."""

    name: ModeName = "coinbase"
    ctv: CtvParams = field(default_factory=CtvParams)
    musig2: Musig2Mode | None = None

    def __post_init__(self) -> None:
        if self.name not in _MODE_CODES:
            raise ValidationError(f"unknown settlement mode {self.name!r}")
        if self.name == "musig2" and self.musig2 is None:
            raise ValidationError("the musig2 mode needs its committee parameters")

    @property
    def needs_ctv(self) -> bool:
        """Whether this mode's coinbase output relies on BIP-119 being enforced: a ``ctv``
        commitment, or a ``musig2`` output with the CTV exit leaf. Without CTV both are
        spendable by anyone who knows the distribution (ARCHITECTURE invariant 4)."""
        return self.name == "ctv" or (self.musig2 is not None and self.musig2.ctv_leaf)

    def to_message(self, distribution_id: int) -> SetSettlementMode:
        """The 0x4003 announcement for ``distribution_id``; unused fields are zero/empty."""
        c = self.ctv if self.name == "ctv" else None
        m = self.musig2 if self.name == "musig2" else None
        return SetSettlementMode(
            distribution_id=distribution_id,
            mode=_MODE_CODES[self.name],
            ctv_arity=(c.arity or 0) if c else 0,
            ctv_output_form=(CTV_FORM_TAPROOT if c.form == "taproot" else CTV_FORM_BARE)
            if c
            else 0,
            ctv_anchor=c.anchor if c else False,
            ctv_fee_rate=c.fee_rate if c else 0,
            ctv_tx_version=(c.version or 0) if c else 0,
            ctv_sequence=c.sequence if c else 0,
            ctv_locktime=c.locktime if c else 0,
            musig2_committee=m.committee if m else (),
            musig2_fallback_timelock=m.fallback_timelock if m else 0,
            musig2_fallback_key=m.fallback_key if m else bytes(32),
            musig2_fee_rate=m.fee_rate if m else 0,
            musig2_ctv_leaf=m.ctv_leaf if m else False,
        )

    @classmethod
    def from_message(cls, msg: SetSettlementMode) -> SettlementMode:
        """Inverse of :meth:`to_message` (what a JD client does); unused fields are ignored."""
        if msg.mode == MODE_COINBASE:
            return cls("coinbase")
        if msg.mode == MODE_CTV:
            if msg.ctv_output_form not in (CTV_FORM_BARE, CTV_FORM_TAPROOT):
                raise ValidationError(f"unknown ctv_output_form {msg.ctv_output_form}")
            params = CtvParams(
                arity=msg.ctv_arity or None,
                form="taproot" if msg.ctv_output_form == CTV_FORM_TAPROOT else "bare",
                anchor=msg.ctv_anchor,
                fee_rate=msg.ctv_fee_rate,
                version=msg.ctv_tx_version or None,
                sequence=msg.ctv_sequence,
                locktime=msg.ctv_locktime,
            )
            return cls("ctv", params)
        if msg.mode == MODE_MUSIG2:
            return cls(
                "musig2",
                musig2=Musig2Mode(
                    msg.musig2_committee,
                    msg.musig2_fallback_timelock,
                    msg.musig2_fallback_key,
                    msg.musig2_fee_rate,
                    msg.musig2_ctv_leaf,
                ),
            )
        raise ValidationError(f"unknown settlement mode {msg.mode}")


ExpectedOutputs = Callable[[SettlementMode, Distribution, int], Sequence[TxOut]]

CTV_DEPLOYMENT = "checktemplateverify"  # the getdeploymentinfo name Bitcoin Inquisition uses


class DeploymentInfo(Protocol):
    """The part of :class:`payouts.node.interface.Node` that says which soft forks the chain
    enforces (``getdeploymentinfo``; the kernel node reports CTV inactive: it does not enforce
    BIP-119)."""

    async def deployment_active(self, name: str) -> bool: ...


def check_ctv_for(mode: SettlementMode, ctv_active: bool | None, who: str) -> None:
    """Raise :class:`~payouts.settlement.ctv.CtvNotActiveError` (``ctv-not-active``) when
    ``mode`` needs CTV (:attr:`SettlementMode.needs_ctv`) and ``ctv_active`` is not exactly
    True (False: the node said so; None: nobody asked a node). ``who`` names the refusing
    side in the message."""
    if not mode.needs_ctv or ctv_active is True:
        return
    what = "a ctv settlement" if mode.name == "ctv" else "a musig2 output with the CTV leaf"
    why = (
        "its node does not report BIP-119 checktemplateverify active"
        if ctv_active is False
        else "it has no node to ask whether BIP-119 checktemplateverify is active"
    )
    raise CtvNotActiveError(
        f"{who} refuses {what}: {why}; without CTV a '<32B> OP_CHECKTEMPLATEVERIFY' output is "
        "anyone-can-spend (OP_NOP4), and so is a CTV tapleaf (use a chain that enforces CTV, "
        "e.g. Bitcoin Inquisition regtest/signet)"
    )


async def ctv_active_on(node: DeploymentInfo | None) -> bool | None:
    """``node.deployment_active("checktemplateverify")`` (what the demo and the settlement
    runner ask too), or None without a node."""
    if node is None:
        return None
    return await node.deployment_active(CTV_DEPLOYMENT)


def default_expected_outputs(
    mode: SettlementMode, distribution: Distribution, revenue: int
) -> Sequence[TxOut]:
    """The outputs a declared coinbase must start with, for ``coinbase`` and ``ctv``."""
    if mode.name == "coinbase":
        return compute_outputs(distribution, revenue).outputs
    if mode.name == "ctv":
        # The computation without the CTV gate: the JDS refuses a mode needing CTV at start()
        # and publish(), the JDC before each declaration (check_ctv_for), on the node's word.
        return build_ctv_fanout(distribution, revenue, mode.ctv).coinbase_outputs
    assert mode.musig2 is not None  # SettlementMode.__post_init__ guarantees it
    return mode.musig2.build(distribution, revenue).coinbase_outputs
