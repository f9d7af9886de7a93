"""Settlement modes: how a distribution's block is paid (``coinbase``, ``ctv``, ``musig2``), the
outputs each mode puts in front of a coinbase, and the BIP-119 gate on the modes that need CTV.

This is the domain both JD roles and the settlement runner share: the JD server checks declared
coinbases against :func:`default_expected_outputs`, the JD client builds them with it, the runner
settles what they agreed on. The wire form (extension 0x4003 ``SetSettlementMode``) is
:mod:`sv2.domain_messages`; a mode is built from settings in one place,
:func:`mode_from_settings`.

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
from typing import Protocol

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.model import Distribution
from payouts.errors import ConfigError, ValidationError
from payouts.settings import Settings
from payouts.settlement.ctv import CtvNotActiveError, CtvParams, build_ctv_fanout
from payouts.settlement.musig2.output import (
    Committee,
    Musig2Output,
    Musig2Params,
    build_musig2_output,
)
from payouts.states import MODE_NAMES, ModeName
from payouts.tx.txout import TxOut


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
        if self.name not in MODE_NAMES:
            raise ValidationError(f"unknown settlement mode {self.name!r}")
        if self.name == "musig2" and self.musig2 is None:
            raise ValidationError("the musig2 mode needs its committee parameters")

    @property
    def needs_ctv(self) -> bool:
        """Whether this mode's coinbase output relies on BIP-119 being enforced: a ``ctv``
        commitment, or a ``musig2`` output with the CTV exit leaf. Without CTV both are
        spendable by anyone who knows the distribution (ARCHITECTURE invariant 4)."""
        return self.name == "ctv" or (self.musig2 is not None and self.musig2.ctv_leaf)


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


def mode_from_settings(settings: Settings) -> SettlementMode:
    """The settlement mode ``[distribution] mode`` selects, with the parameters the JD server
    announces (0x4003): the ``[distribution]`` fan-out parameters for ctv, the
    ``[settlement.musig2]`` table for musig2 (committee in KeySort order, fallback leaf, fee
    rate, CTV leaf). The composition root builds it once and hands the same object to the JD
    server and the settlement runner, so what the JD server checks in a coinbase is what gets
    settled. A setting it cannot use is a :class:`~payouts.errors.ConfigError`."""
    dist = settings.distribution
    if dist.mode == "ctv":
        return SettlementMode("ctv", dist.ctv_params())
    if dist.mode == "musig2":
        m = settings.settlement.musig2
        if m is None:
            raise ConfigError("distribution.mode = musig2 needs a [settlement.musig2] table")
        try:
            mode = Musig2Mode(m.committee_keys(), m.fallback_timelock,
                              bytes.fromhex(m.fallback_key), fee_rate=m.fee_rate,
                              ctv_leaf=m.ctv_leaf)
            # the settlement layer's own checks, at start rather than at the first block
            Committee.from_pubkeys(mode.committee)
            mode.settlement_params()
        except ValidationError as e:
            raise ConfigError(f"settlement.musig2: {e.message}") from None
        return SettlementMode("musig2", musig2=mode)
    return SettlementMode()


async def check_mode_on_node(mode: SettlementMode, node: DeploymentInfo,
                             who: str = "payouts serve") -> None:
    """Refuse a mode that needs CTV (BIP-119) on a node where it is not active: there
    ``OP_CHECKTEMPLATEVERIFY`` is ``OP_NOP4``, so a ``ctv`` commitment output, or a musig2 CTV
    exit leaf, is spendable by anyone who knows the distribution (ARCHITECTURE invariant 4,
    docs/musig2.md §1). ``payouts serve`` runs this before anything is served, with or without
    the JD server (which refuses the same modes itself)."""
    if mode.name == "ctv":
        check_ctv_for(mode, await ctv_active_on(node), who)
    if mode.musig2 is not None and mode.musig2.ctv_leaf and not await node.deployment_active(
        CTV_DEPLOYMENT
    ):
        raise ConfigError(
            "settlement.musig2.ctv_leaf = true, but CTV (BIP-119) is not active on this node: "
            "the exit leaf would be spendable by anyone; set ctv_leaf = false"
        )


__all__ = [
    "CTV_DEPLOYMENT",
    "MODE_NAMES",
    "DeploymentInfo",
    "ExpectedOutputs",
    "ModeName",
    "Musig2Mode",
    "SettlementMode",
    "check_ctv_for",
    "check_mode_on_node",
    "ctv_active_on",
    "default_expected_outputs",
    "mode_from_settings",
]
