"""Which block-version bits a miner may change after a job was declared (sv2-spec
05-Mining-Protocol.md §5.1 and §5.3.18; BIP320, BIP323).

§5.3.18 says of ``SetCustomMiningJob.version``: "The general purpose bits (as specified in
BIP323) can be freely manipulated by the downstream node". BIP323 gives bits 5-28 (24 bits, the
search space §5.1 counts) to general use; BIP320's older 16-bit mask (bits 13-28, what ASICs
roll) lies inside it. Bits 0-4 (BIP9 signals) and 29-31 (the ``001`` top bits) are the
declared ones. The pool's ``SetCustomMiningJob`` check and the JDS's ``PushSolution`` check
both use :func:`version_matches`.
"""

from __future__ import annotations

BIP323_GENERAL_PURPOSE_BITS = 0x1FFFFFE0
BIP320_VERSION_ROLLING_BITS = 0x1FFFE000
VERSION_FIXED_BITS = 0xFFFFFFFF & ~BIP323_GENERAL_PURPOSE_BITS  # must equal the declaration's


def version_matches(declared: int, version: int) -> bool:
    """Whether ``version`` equals the ``declared`` DeclareMiningJob.version outside the BIP323
    general-purpose bits (both read as U32)."""
    return not (declared ^ version) & VERSION_FIXED_BITS


__all__ = [
    "BIP320_VERSION_ROLLING_BITS",
    "BIP323_GENERAL_PURPOSE_BITS",
    "VERSION_FIXED_BITS",
    "version_matches",
]
