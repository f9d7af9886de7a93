"""Fee bumping of settlement txs through their P2A anchor (CPFP) from a pool fee wallet.

A CTV fan-out tx built with ``fee_rate = 0`` pays no fee and carries a 0-value P2A anchor
(ephemeral dust, TRUC v3): Core relays it only in a package with a child that spends the anchor
and pays for both (``submitpackage``; Core ``policy/ephemeral_policy.cpp``: an in-mempool child
must spend the dust). With ``fee_rate > 0`` the anchor holds 240 sat and a child is only needed
when the pre-committed fee is below the rate the pool wants now.

The child built here (:func:`build_cpfp_child`):

- inputs: the parent's anchor (P2A: empty scriptSig, empty witness) and ONE confirmed UTXO of
  the pool's fee wallet (a BIP-86 key-path P2TR output, signed with SIGHASH_DEFAULT);
- one output: the change back to the wallet's script;
- nVersion 3 when the parent is TRUC (a TRUC tx's child must be TRUC, ≤ 1,000 vB), else 2;
- fee = ``rate × (vsize(parent) + vsize(child)) − fee(parent)``: the package pays ``rate``.

Why a wallet UTXO and not a payee's leaf output: the engine holds no payee key. A payee who
wants its own leaf faster can CPFP it from its own output (Rubin's "recipients CPFP their own
branch", reference §2.9); nothing here prevents that. Each child uses a *confirmed* wallet
UTXO of its own: chaining children on unconfirmed change would give a TRUC child two
unconfirmed parents, which TRUC forbids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from payouts.crypto.schnorr import xonly_pubkey
from payouts.crypto.taproot import p2tr_script, sign_keypath, tweak_pubkey
from payouts.errors import ValidationError
from payouts.settlement.ctv import P2A_SCRIPT, TRUC_VERSION
from payouts.tx.output_scripts import dust_limit
from payouts.tx.sighash import taproot_sighash
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut

CHILD_SEQUENCE = 0xFFFFFFFD  # signals replaceability (BIP-125) for a later re-bump
TRUC_CHILD_MAX_VSIZE = 1_000  # Core TRUC_CHILD_MAX_VSIZE


class FeeBumpError(ValidationError):
    """No CPFP child can be built (no anchor, no wallet coin large enough, …)."""

    code = "fee-bump-impossible"


@dataclass(frozen=True, slots=True)
class FeeUtxo:
    """A confirmed coin of the fee wallet."""

    outpoint: OutPoint
    value: int


@dataclass
class FeeWallet:
    """The pool's fee wallet: one BIP-86 key (key path only), a set of confirmed coins.

    The lifecycle reserves a coin for every CPFP child it persists (:meth:`reserve`) and, after
    a restart, re-reserves the coins its persisted children spend, so one coin never funds two
    children. Change is not re-added automatically: give the wallet new confirmed coins (e.g.
    the change once it confirmed, :meth:`add`)."""

    seckey: bytes
    coins: list[FeeUtxo] = field(default_factory=list)
    reserved: set[OutPoint] = field(default_factory=set)

    @property
    def script(self) -> bytes:
        """``OP_1 <Q>`` with Q the BIP-86 tweak of the key (no script tree)."""
        return p2tr_script(tweak_pubkey(xonly_pubkey(self.seckey), None)[0])

    def add(self, coins: Iterable[FeeUtxo]) -> None:
        known = {c.outpoint for c in self.coins}
        self.coins.extend(c for c in coins if c.outpoint not in known)

    def reserve(self, outpoints: Iterable[OutPoint]) -> None:
        self.reserved.update(outpoints)

    def release(self, outpoints: Iterable[OutPoint]) -> None:
        self.reserved.difference_update(outpoints)

    def pick(self, need: int) -> FeeUtxo:
        """The smallest free coin worth at least ``need`` sat."""
        free = sorted(
            (c for c in self.coins if c.outpoint not in self.reserved and c.value >= need),
            key=lambda c: (c.value, c.outpoint.txid, c.outpoint.n),
        )
        if not free:
            raise FeeBumpError(f"the fee wallet has no free confirmed coin of {need} sat or more")
        return free[0]

    def sign(self, tx: Tx, index: int, spent: list[TxOut]) -> Tx:
        """Key-path signature (SIGHASH_DEFAULT) of input ``index``."""
        sighash = taproot_sighash(tx, index, spent)
        return tx.with_input_witness(index, (sign_keypath(sighash, self.seckey, None),))


def anchor_vout(parent: Tx) -> int | None:
    """Index of the parent's P2A output (None if it has none)."""
    for i, out in enumerate(parent.outputs):
        if out.script == P2A_SCRIPT:
            return i
    return None


def needs_bump(parent: Tx, parent_fee: int, fee_rate: int) -> bool:
    """Whether the tx alone pays less than ``fee_rate`` sat/vB (so it needs a CPFP child)."""
    return parent_fee < fee_rate * parent.vsize


def build_cpfp_child(
    parent: Tx, parent_fee: int, wallet: FeeWallet, fee_rate: int
) -> tuple[Tx, FeeUtxo, int]:
    """The signed child spending ``parent``'s anchor and one wallet coin; returns
    ``(child, coin used, child fee)``. The coin is not reserved here (the caller persists the
    child first, then reserves). Raises :class:`FeeBumpError`."""
    vout = anchor_vout(parent)
    if vout is None:
        raise FeeBumpError("the tx has no P2A anchor to spend")
    anchor = parent.outputs[vout]
    version = TRUC_VERSION if parent.version == TRUC_VERSION else 2
    script = wallet.script
    change_dust = dust_limit(script)

    def shape(coin: FeeUtxo, change: int) -> Tx:
        ins = (
            TxIn(OutPoint(parent.txid, vout), b"", CHILD_SEQUENCE),
            TxIn(coin.outpoint, b"", CHILD_SEQUENCE, (bytes(64),)),  # sized like the real sig
        )
        return Tx(version, ins, (TxOut(change, script),), 0)

    # The child's size does not depend on the coin or the amounts: size it once.
    probe = shape(FeeUtxo(OutPoint(bytes(32), 0), 0), 0)
    if version == TRUC_VERSION and probe.vsize > TRUC_CHILD_MAX_VSIZE:  # pragma: no cover
        raise FeeBumpError("CPFP child above TRUC_CHILD_MAX_VSIZE")
    fee = max(0, fee_rate * (parent.vsize + probe.vsize) - parent_fee)
    coin = wallet.pick(fee + change_dust - anchor.value)
    change = coin.value + anchor.value - fee
    unsigned = shape(coin, change).with_input_witness(1, ())
    spent = [anchor, TxOut(coin.value, script)]
    return wallet.sign(unsigned, 1, spent), coin, fee


__all__ = [
    "FeeBumpError",
    "FeeUtxo",
    "FeeWallet",
    "anchor_vout",
    "build_cpfp_child",
    "needs_bump",
]
