"""The inputs of the 0x4003 conformance vectors: SetSettlementMode frames (valid, and invalid
with the error each must raise) and (distribution, T, mode) cases for every settlement mode,
chosen to sit on both sides of every threshold the spec defines."""

from __future__ import annotations

from dataclasses import dataclass

from payouts.settlement.ctv import CtvParams
from payouts.settlement.modes import Musig2Mode, SettlementMode
from sv2.framing import Frame
from sv2.messages.settlement import (
    ERR_CHANNEL_MSG,
    ERR_CTV_ANCHOR,
    ERR_CTV_ARITY,
    ERR_CTV_FEE_RATE,
    ERR_CTV_FORM,
    ERR_CTV_TX_VERSION,
    ERR_MUSIG2_COMMITTEE_KEY,
    ERR_MUSIG2_COMMITTEE_ORDER,
    ERR_MUSIG2_EMPTY_COMMITTEE,
    ERR_MUSIG2_FALLBACK_KEY,
    ERR_MUSIG2_FEE_RATE,
    ERR_MUSIG2_TIMELOCK,
    ERR_UNKNOWN_MODE,
    SetSettlementMode,
)
from sv2.settlement_vectors.keys import pubkey, xonly

T = 312_500_000  # a 3.125 BTC subsidy and no fees


def committee(*secrets: int) -> tuple[bytes, ...]:
    """The compressed keys of these example secrets in BIP-327 KeySort order."""
    return tuple(sorted(pubkey(i) for i in secrets))


def ctv(**kw: object) -> SettlementMode:
    return SettlementMode("ctv", CtvParams(**kw))  # type: ignore[arg-type]


def musig(
    keys: tuple[bytes, ...],
    timelock: int = 244,
    fallback: int = 3,
    fee_rate: int = 1,
    ctv_leaf: bool = False,
) -> SettlementMode:
    return SettlementMode(
        "musig2", musig2=Musig2Mode(keys, timelock, xonly(fallback), fee_rate, ctv_leaf)
    )


@dataclass(frozen=True)
class FrameCase:
    name: str
    description: str
    message: SetSettlementMode
    channel_msg: bool = False
    error: str | None = None  # None: valid

    def frame(self) -> bytes:
        """The frame bytes, encoded without the message's own checks (an invalid case must
        still reach a decoder)."""
        return Frame(
            self.message.EXTENSION_TYPE, self.message.MSG_TYPE, self.message.encode(),
            self.channel_msg,
        ).encode()


@dataclass(frozen=True)
class ModeCase:
    name: str
    description: str
    distribution: str
    revenue: int
    mode: SettlementMode


def message(distribution_id: int, mode: int, **kw: object) -> SetSettlementMode:
    """A SetSettlementMode with every field 0/empty but ``mode`` and ``kw`` (unchecked)."""
    fields: dict[str, object] = {
        "ctv_arity": 0,
        "ctv_output_form": 0,
        "ctv_anchor": False,
        "ctv_fee_rate": 0,
        "ctv_tx_version": 0,
        "ctv_sequence": 0,
        "ctv_locktime": 0,
        "musig2_committee": (),
        "musig2_fallback_timelock": 0,
        "musig2_fallback_key": bytes(32),
        "musig2_fee_rate": 0,
        "musig2_ctv_leaf": False,
    }
    fields.update(kw)
    return SetSettlementMode(distribution_id, mode, **fields)  # type: ignore[arg-type]


def _ctv_msg(**kw: object) -> SetSettlementMode:
    base: dict[str, object] = {"ctv_anchor": True, "ctv_sequence": 0xFFFFFFFF}
    base.update(kw)
    return message(9, 1, **base)


def _musig_msg(**kw: object) -> SetSettlementMode:
    base: dict[str, object] = {
        "musig2_committee": committee(1, 2),
        "musig2_fallback_timelock": 144,
        "musig2_fallback_key": xonly(3),
        "musig2_fee_rate": 2,
    }
    base.update(kw)
    return message(10, 2, **base)


NOT_A_POINT = b"\x02" + b"\x11" * 32  # x = 0x11…11 has no y on secp256k1


def frame_cases() -> list[FrameCase]:
    two = committee(1, 2)
    return [
        FrameCase("coinbase", "mode coinbase for distribution 7", message(7, 0)),
        FrameCase(
            "ctv",
            "mode ctv for distribution 9: arity 4, taproot form, anchor, 2 sat/vB, automatic "
            "nVersion, nSequence 0xffffffff, nLockTime 0",
            _ctv_msg(ctv_arity=4, ctv_output_form=1, ctv_fee_rate=2),
        ),
        FrameCase(
            "musig2",
            "mode musig2 for distribution 10: committee of secrets 1 and 2, fallback key of "
            "secret 3 after 144 blocks, 2 sat/vB, no CTV leaf",
            _musig_msg(),
        ),
        FrameCase(
            "ctv-locks",
            "mode ctv: arity 65535 (any k ≥ the leaf count is one flat tx), bare, no anchor, "
            "1 sat/vB, nVersion 2, nSequence 0xfffffffe, nLockTime 800,000",
            _ctv_msg(
                ctv_arity=0xFFFF, ctv_anchor=False, ctv_fee_rate=1, ctv_tx_version=2,
                ctv_sequence=0xFFFFFFFE, ctv_locktime=800_000,
            ),
        ),
        FrameCase(
            "musig2-ctv-leaf",
            "mode musig2: three keys, fallback after 65,535 blocks, 100,000 sat/vB, CTV leaf",
            _musig_msg(
                musig2_committee=committee(1, 2, 5), musig2_fallback_timelock=0xFFFF,
                musig2_fee_rate=100_000, musig2_ctv_leaf=True,
            ),
        ),
        FrameCase(
            "coinbase-ignores-other-fields",
            "mode coinbase whose ctv and musig2 fields are not zero: the receiver MUST ignore "
            "them (a sender MUST NOT send this)",
            message(7, 0, ctv_arity=1, ctv_output_form=9, musig2_committee=(NOT_A_POINT,)),
        ),
        FrameCase("channel-msg", "the coinbase example with the channel_msg bit set",
                  message(7, 0), True, ERR_CHANNEL_MSG),
        *(
            FrameCase(name, description, msg, error=code)
            for name, description, msg, code in (
                ("mode-3", "mode 3 is not defined", message(7, 3), ERR_UNKNOWN_MODE),
                ("ctv-form-2", "ctv_output_form 2", _ctv_msg(ctv_output_form=2), ERR_CTV_FORM),
                ("ctv-arity-1", "ctv_arity 1", _ctv_msg(ctv_arity=1), ERR_CTV_ARITY),
                ("ctv-version-1", "ctv_tx_version 1", _ctv_msg(ctv_tx_version=1),
                 ERR_CTV_TX_VERSION),
                ("ctv-version-7", "ctv_tx_version 7", _ctv_msg(ctv_tx_version=7),
                 ERR_CTV_TX_VERSION),
                ("ctv-version-2-fee-0", "ctv_tx_version 2 with ctv_fee_rate 0",
                 _ctv_msg(ctv_tx_version=2), ERR_CTV_TX_VERSION),
                ("ctv-fee-rate-100001", "ctv_fee_rate 100,001", _ctv_msg(ctv_fee_rate=100_001),
                 ERR_CTV_FEE_RATE),
                ("ctv-no-anchor-fee-0", "ctv_anchor 0 with ctv_fee_rate 0",
                 _ctv_msg(ctv_anchor=False), ERR_CTV_ANCHOR),
                ("musig2-no-committee", "mode musig2 with an empty committee",
                 _musig_msg(musig2_committee=()), ERR_MUSIG2_EMPTY_COMMITTEE),
                ("musig2-key-not-a-point", "committee key 02 11…11 (no curve point has that x)",
                 _musig_msg(musig2_committee=(NOT_A_POINT,)), ERR_MUSIG2_COMMITTEE_KEY),
                ("musig2-key-prefix-04", "committee key with prefix 04 (not a compressed key)",
                 _musig_msg(musig2_committee=(b"\x04" + two[0][1:],)),
                 ERR_MUSIG2_COMMITTEE_KEY),
                ("musig2-unsorted", "committee keys not in KeySort order",
                 _musig_msg(musig2_committee=two[::-1]), ERR_MUSIG2_COMMITTEE_ORDER),
                ("musig2-duplicate", "the same committee key twice",
                 _musig_msg(musig2_committee=(two[0], two[0])), ERR_MUSIG2_COMMITTEE_ORDER),
                ("musig2-fallback-key", "fallback key ff…ff (not below the field size)",
                 _musig_msg(musig2_fallback_key=b"\xff" * 32), ERR_MUSIG2_FALLBACK_KEY),
                ("musig2-timelock-100", "fallback timelock 100 (not after coinbase maturity)",
                 _musig_msg(musig2_fallback_timelock=100), ERR_MUSIG2_TIMELOCK),
                ("musig2-timelock-65536", "fallback timelock 65,536 (beyond BIP-68's 16 bits)",
                 _musig_msg(musig2_fallback_timelock=65_536), ERR_MUSIG2_TIMELOCK),
                ("musig2-fee-rate-0", "musig2_fee_rate 0", _musig_msg(musig2_fee_rate=0),
                 ERR_MUSIG2_FEE_RATE),
                ("musig2-fee-rate-100001", "musig2_fee_rate 100,001",
                 _musig_msg(musig2_fee_rate=100_001), ERR_MUSIG2_FEE_RATE),
            )
        ),
    ]


def coinbase_cases() -> list[ModeCase]:
    plain = SettlementMode()
    return [
        ModeCase("small", "PR #203 outputs", "small", T, plain),
        ModeCase("small-pruned", "payee 2 below its dust limit", "small", 100_000, plain),
        ModeCase("mixed-40", "40 payees, two additional outputs", "mixed-40", T, plain),
    ]


def ctv_cases() -> list[ModeCase]:
    return [
        ModeCase("small-default", "defaults: flat, bare, 0-value anchor, fee 0, v3", "small",
                 T, ctv()),
        ModeCase("small-k2-fee2", "binary tree, 2 sat/vB, 240-sat anchors", "small", T,
                 ctv(arity=2, fee_rate=2)),
        ModeCase("small-k3-taproot-no-anchor", "taproot form, k = 3 over 4 leaves (a root "
                 "paying a 3-leaf child and the 4th leaf), no anchor, 1 sat/vB", "small", T,
                 ctv(arity=3, form="taproot", anchor=False, fee_rate=1)),
        ModeCase("small-k65535-v2-locks", "k = 65535 above the leaf count (one tx), "
                 "nVersion 2, nSequence 0xfffffffe, nLockTime 100", "small", T,
                 ctv(arity=0xFFFF, fee_rate=1, version=2, sequence=0xFFFFFFFE, locktime=100)),
        ModeCase("small-pool-dust", "every payee pruned and the pool payout (200 sat) below "
                 "its dust threshold", "small", 200, ctv()),
        ModeCase("mixed-40-k4", "40 payees, k = 4, fee 0", "mixed-40", T, ctv(arity=4)),
        ModeCase("mixed-40-k16-taproot-fee2", "k = 16, taproot form, 2 sat/vB", "mixed-40", T,
                 ctv(arity=16, form="taproot", fee_rate=2)),
        ModeCase("mixed-40-k2-relative-lock", "k = 2, no anchor, 1 sat/vB, nSequence 10 "
                 "(BIP-68: each level 10 blocks after its parent)", "mixed-40", T,
                 ctv(arity=2, anchor=False, fee_rate=1, sequence=10)),
        ModeCase("mixed-40-revenue-too-small", "T cannot pay the tree's fees", "mixed-40",
                 60_000, ctv(fee_rate=10)),
        ModeCase("unpruned-reservation", "F0 from the unpruned tree (4 leaves), payee 2 "
                 "pruned, F1 from 3 leaves: the pool keeps F0 − F1", "unpruned-reservation",
                 300_000, ctv(arity=2, fee_rate=1)),
        ModeCase("flat-10000-fee0", "flat tx of exactly 10,000 vB: flat, v3", "flat-10000", T,
                 ctv()),
        ModeCase("flat-10001-fee0", "flat tx would be 10,001 vB: 16-ary tree", "flat-10001", T,
                 ctv()),
        ModeCase("flat-10000-fee1", "fee 1, flat 10,000 vB: v3", "flat-10000", T,
                 ctv(fee_rate=1)),
        ModeCase("flat-10001-fee1", "fee 1, flat 10,001 vB: v2 (flat up to 400,000 WU)",
                 "flat-10001", T, ctv(fee_rate=1)),
        ModeCase("flat-10001-k65535-fee0", "k = 65535 forces one tx of 10,001 vB at fee 0: "
                 "v3 impossible", "flat-10001", T, ctv(arity=0xFFFF)),
        ModeCase("flat-10001-v3-fee1", "nVersion 3 asked for: the flat tx does not fit, a "
                 "16-ary tree does", "flat-10001", T, ctv(fee_rate=1, version=3)),
        ModeCase("flat-10001-k65535-v3", "nVersion 3 asked for and one tx of 10,001 vB",
                 "flat-10001", T, ctv(arity=0xFFFF, fee_rate=1, version=3)),
        ModeCase("crossing-kept", "X kept: 10,031 vB flat does not fit: 16-ary tree",
                 "crossing-10031", T, ctv()),
        ModeCase("crossing-pruned", "X pruned: decided on the final leaves, the flat tx is "
                 "exactly 10,000 vB", "crossing-10031", 50_000_000, ctv()),
        ModeCase("big-kept", "fee 1: all kept, flat would be 100,031 vB: 16-ary tree",
                 "big-crossing", 750_000_000, ctv(fee_rate=1)),
        ModeCase("big-x-pruned", "fee 1: X pruned; F0 from the unpruned 16-ary tree, the "
                 "final tree is one flat v2 tx of exactly 100,000 vB (400,000 WU)",
                 "big-crossing", 400_000_000, ctv(fee_rate=1)),
        ModeCase("big-kept-k65535", "one tx of 100,031 vB: above 400,000 WU", "big-crossing",
                 750_000_000, ctv(arity=0xFFFF, fee_rate=1)),
        ModeCase("min-size-65", "one tx of 65 bytes (no anchor, no payee)", "min-size-65",
                 10_000, ctv(anchor=False, fee_rate=1)),
        ModeCase("min-size-64", "one tx of 64 bytes: tx-size-small", "min-size-64", 10_000,
                 ctv(anchor=False, fee_rate=1)),
        ModeCase("commitment-dust", "a commitment output would be below its dust threshold",
                 "op-return-payees", 1_000, ctv(arity=2)),
        ModeCase("sigop-dense", "a bare-multisig payee", "sigop-dense", T, ctv()),
        ModeCase("fixed-equals-T", "F = T", "fixed-outputs", 100_000, ctv()),
    ]


def musig2_cases() -> list[ModeCase]:
    two, three = committee(1, 2), committee(1, 2, 5)
    return [
        ModeCase("small-ctv-leaf", "two keys, CTV leaf, 2 sat/vB", "small", T,
                 musig(two, fee_rate=2, ctv_leaf=True)),
        ModeCase("small-no-ctv-leaf", "the same without the CTV leaf", "small", T,
                 musig(two, fee_rate=2)),
        ModeCase("small-one-key-101", "committee of one, timelock 101 (1-byte push)", "small",
                 T, musig(committee(7), timelock=101)),
        ModeCase("small-timelock-128", "timelock 128 (2-byte push 8000)", "small", T,
                 musig(three, timelock=128, ctv_leaf=True)),
        ModeCase("small-timelock-32768", "timelock 32,768 (3-byte push 008000)", "small", T,
                 musig(three, timelock=32_768)),
        ModeCase("small-timelock-65535", "timelock 65,535 (3-byte push ffff00)", "small", T,
                 musig(three, timelock=0xFFFF, ctv_leaf=True)),
        ModeCase("small-pruned", "payee 2 pruned: the pool keeps F0 − F1", "small", 200_000,
                 musig(two, fee_rate=5, ctv_leaf=True)),
        ModeCase("small-pool-dust", "the pool payout would be below its dust threshold",
                 "small", 2_000, musig(two)),
        ModeCase("mixed-40", "40 payees, additional outputs, CTV leaf", "mixed-40", T,
                 musig(three, fee_rate=3, ctv_leaf=True)),
        ModeCase("revenue-too-small", "T cannot pay the payout tx's fee", "mixed-40", 52_000,
                 musig(two, fee_rate=20)),
        ModeCase("fixed-equals-T", "F = T", "fixed-outputs", 100_000, musig(two)),
        ModeCase("big-under", "X and Y pruned: every spend at most 400,000 WU", "big-crossing",
                 150_000_000, musig(two, ctv_leaf=True)),
        ModeCase("big-over", "Y kept: the CTV exit would weigh more than 400,000 WU",
                 "big-crossing", 400_000_000, musig(two, ctv_leaf=True)),
        ModeCase("sigop-dense", "a bare-multisig payee", "sigop-dense", T, musig(two)),
    ]


__all__ = [
    "FrameCase",
    "ModeCase",
    "coinbase_cases",
    "committee",
    "ctv_cases",
    "frame_cases",
    "message",
    "musig2_cases",
]
