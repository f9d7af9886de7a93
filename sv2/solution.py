"""A solved block and how a miner finds one on a template (regtest): below the roles, because
the JD client pushes it to its JDS (``PushSolution``, sv2-spec 06-Job-Declaration-Protocol.md
§6.4.9) and the Template Distribution client submits it to its Template Provider
(``SubmitSolution``, 07-Template-Distribution-Protocol.md §7.7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from payouts.errors import ValidationError
from payouts.tx.block import Block, BlockHeader, check_pow
from payouts.tx.coinbase import CoinbaseParts
from payouts.tx.hashes import sha256d
from sv2.template import JobTemplate


class SplitCoinbase(Protocol):
    """A coinbase split around its extranonce (the JD client's ``JobCoinbase`` is one)."""

    @property
    def parts(self) -> CoinbaseParts: ...


@dataclass(frozen=True, slots=True)
class Solution:
    """A solved header and what PushSolution (sv2-spec §6.4.9) carries."""

    header: BlockHeader
    extranonce: bytes
    block: Block

    @property
    def block_hash(self) -> bytes:
        return self.header.hash


def solve(
    template: JobTemplate,
    coinbase: SplitCoinbase,
    extranonce: bytes | None = None,
    *,
    max_tries: int = 1 << 24,
) -> Solution:
    """Grind the header nonce of the block ``template`` + ``coinbase`` until it meets the
    template's target (meant for regtest, ``nBits 0x207fffff``: about two tries)."""
    en = bytes(coinbase.parts.extranonce_size) if extranonce is None else bytes(extranonce)
    cb_tx = coinbase.parts.tx(en)
    root = template.merkle_root(cb_tx.txid)
    base = BlockHeader(template.version, template.prev_hash, root, template.time, template.bits, 0)
    head = base.serialize()[:76]
    for nonce in range(max_tries):
        h = sha256d(head + nonce.to_bytes(4, "little"))
        if check_pow(h, template.bits):
            header = BlockHeader(
                base.version, base.prev_hash, base.merkle_root, base.time, base.bits, nonce
            )
            return Solution(header, en, Block(header, (cb_tx, *template.transactions)))
    raise ValidationError(
        f"no nonce in {max_tries} tries meets nBits {template.bits:#x}; solve() is for regtest",
        code="no-solution",
    )


__all__ = ["Solution", "SplitCoinbase", "solve"]
