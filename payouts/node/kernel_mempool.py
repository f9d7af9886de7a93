"""The kernel backend's mempool: Core-like acceptance checks over a :class:`KernelChain`.

libbitcoinkernel validates blocks and scripts but has no mempool, so this module supplies the
small part of ``MemPoolAccept::PreChecks`` / ``ConsensusScriptChecks`` the engine relies on:
outputs exist and are unspent (in the chain or created by a mempool parent), coinbase maturity
at the next height, no double spend against the mempool, value conservation, finality
(nLockTime against the next height and the tip's median time past; BIP-68 relative locks), and
Bitcoin Core's own script interpreter on every input with ALL kernel flags (P2SH, DERSIG,
NULLDUMMY, CLTV, CSV, WITNESS, TAPROOT). Reject reasons are Core's strings so callers can
match on them the same way for both backends.

What it deliberately does NOT do (Core's *policy*, not consensus): standardness (dust, script
templates, TRUC/v3 topology), minimum relay fee, replace-by-fee (a conflict is always
"txn-mempool-conflict"), ancestor/descendant limits, package feerate rules. CTV is not
enforced either: the kernel has no BIP-119 flag, so OP_CHECKTEMPLATEVERIFY is an OP_NOP4 here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pbk

from payouts.node.kernel_chain import COINBASE_MATURITY, KernelChain, verify_spend
from payouts.tx.consensus import MAX_BLOCK_SIGOPS_COST
from payouts.tx.hashes import display_hex
from payouts.tx.script import (
    OP_CHECKMULTISIG,
    OP_CHECKMULTISIGVERIFY,
    OP_CHECKSIG,
    OP_CHECKSIGVERIFY,
)
from payouts.tx.transaction import OutPoint, Tx
from payouts.tx.txout import MAX_MONEY, TxOut

LOCKTIME_THRESHOLD = 500_000_000
SEQUENCE_LOCKTIME_DISABLE_FLAG = 1 << 31
SEQUENCE_LOCKTIME_TYPE_FLAG = 1 << 22
SEQUENCE_LOCKTIME_MASK = 0x0000FFFF
SEQUENCE_LOCKTIME_GRANULARITY = 9


class MempoolReject(Exception):
    """A transaction was refused; ``reason`` is Core's reject reason string."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class MempoolEntry:
    tx: Tx
    fee: int
    sigops: int  # sigop cost (GetTransactionSigOpCost)
    parents: frozenset[bytes]  # txids of in-mempool parents


def _ops(script: bytes) -> list[tuple[int, bytes]]:
    """(opcode, push data) pairs; a truncated push ends the walk as Core's GetOp does."""
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(script)
    while i < n:
        op = script[i]
        i += 1
        size = 0
        if op <= 0x4B:
            size = op
        elif op in (0x4C, 0x4D, 0x4E):
            width = {0x4C: 1, 0x4D: 2, 0x4E: 4}[op]
            if i + width > n:
                break
            size = int.from_bytes(script[i : i + width], "little")
            i += width
        if i + size > n:
            break
        out.append((op, script[i : i + size]))
        i += size
    return out


def sigop_count(script: bytes, accurate: bool) -> int:
    """``CScript::GetSigOpCount``: accurate mode counts ``OP_n CHECKMULTISIG`` as n."""
    count, last = 0, 0xFF
    for op, _ in _ops(script):
        if op in (OP_CHECKSIG, OP_CHECKSIGVERIFY):
            count += 1
        elif op in (OP_CHECKMULTISIG, OP_CHECKMULTISIGVERIFY):
            count += (last - 0x50) if accurate and 0x51 <= last <= 0x60 else 20
        last = op
    return count


def _is_p2sh(script: bytes) -> bool:
    return len(script) == 23 and script[0] == 0xA9 and script[1] == 0x14 and script[22] == 0x87


def _witness_program(script: bytes) -> tuple[int, bytes] | None:
    version_ok = script[:1] == b"\x00" or 0x51 <= (script[:1] or b"\x00")[0] <= 0x60
    if 4 <= len(script) <= 42 and version_ok and script[1] + 2 == len(script):
        return (0 if script[0] == 0 else script[0] - 0x50), script[2:]
    return None


def sigop_cost(tx: Tx, spent: list[TxOut]) -> int:
    """``GetTransactionSigOpCost``: legacy ×4, P2SH redeem scripts ×4, witness v0 ×1."""
    cost = tx.legacy_sigops() * 4
    for txin, prev in zip(tx.inputs, spent, strict=True):
        script = prev.script
        if _is_p2sh(script):
            pushes = _ops(txin.script_sig)
            if pushes:
                redeem = pushes[-1][1]
                cost += sigop_count(redeem, True) * 4
                script = redeem
        prog = _witness_program(script)
        if prog is not None and prog[0] == 0:
            if len(prog[1]) == 20:
                cost += 1
            elif len(prog[1]) == 32 and txin.witness:
                cost += sigop_count(txin.witness[-1], True)
    return cost


class Mempool:
    """Accepted transactions in arrival order (parents always before children)."""

    def __init__(self) -> None:
        self.entries: dict[bytes, MempoolEntry] = {}  # txid -> entry
        self.spent: dict[OutPoint, bytes] = {}  # outpoint -> spending txid
        self.by_wtxid: dict[bytes, bytes] = {}  # wtxid -> txid

    def copy(self) -> Mempool:
        m = Mempool()
        m.entries, m.spent, m.by_wtxid = dict(self.entries), dict(self.spent), dict(self.by_wtxid)
        return m

    def add(self, entry: MempoolEntry) -> None:
        txid = entry.tx.txid
        self.entries[txid] = entry
        self.by_wtxid[entry.tx.wtxid] = txid
        for txin in entry.tx.inputs:
            self.spent[txin.prevout] = txid

    def check(self, chain: KernelChain, tx: Tx) -> MempoolEntry:
        """Core's acceptance checks for ``tx`` at height tip+1; raises :class:`MempoolReject`."""
        _check_transaction(tx)
        txid = tx.txid
        if txid in self.entries:
            raise MempoolReject("txn-already-in-mempool")
        if any(OutPoint(txid, n) in chain.utxos for n in range(len(tx.outputs))):
            raise MempoolReject("txn-already-known")
        for txin in tx.inputs:
            if txin.prevout in self.spent:
                raise MempoolReject(
                    "txn-mempool-conflict",
                    f"{txin.prevout} spent by {display_hex(self.spent[txin.prevout])}",
                )
        next_height = chain.tip_height + 1
        spent: list[TxOut] = []
        parents: set[bytes] = set()
        coin_heights: list[int] = []
        for txin in tx.inputs:
            op = txin.prevout
            if op in chain.utxos:
                out, height, is_cb = chain.utxos[op]
                if is_cb and next_height - height < COINBASE_MATURITY:
                    raise MempoolReject(
                        "bad-txns-premature-spend-of-coinbase",
                        f"tried to spend coinbase at depth {next_height - height}",
                    )
                coin_heights.append(height)
            elif op.txid in self.entries and op.n < len(self.entries[op.txid].tx.outputs):
                out = self.entries[op.txid].tx.outputs[op.n]
                parents.add(op.txid)
                coin_heights.append(next_height)  # Core: a mempool coin is at the next height
            else:
                raise MempoolReject("bad-txns-inputs-missingorspent", f"{op} not found")
            spent.append(out)
        value_in = sum(o.value for o in spent)
        if not 0 <= value_in <= MAX_MONEY:
            raise MempoolReject("bad-txns-inputvalues-outofrange")
        if value_in < tx.output_value():
            raise MempoolReject(
                "bad-txns-in-belowout", f"value in ({value_in}) < value out ({tx.output_value()})"
            )
        _check_final(chain, tx, coin_heights)
        sigops = sigop_cost(tx, spent)
        if sigops > MAX_BLOCK_SIGOPS_COST // 5:  # MAX_STANDARD_TX_SIGOPS_COST
            raise MempoolReject("bad-txns-too-many-sigops", str(sigops))
        try:
            ok = verify_spend(tx, spent)
        except pbk.ScriptVerifyException as e:
            raise MempoolReject("mandatory-script-verify-flag-failed", str(e)) from None
        if not ok:
            raise MempoolReject(
                "mandatory-script-verify-flag-failed", "libbitcoinkernel script verify returned 0"
            )
        return MempoolEntry(tx, value_in - tx.output_value(), sigops, frozenset(parents))


def _check_transaction(tx: Tx) -> None:
    """``CheckTransaction`` (consensus/tx_check.cpp) plus the coinbase refusal."""
    if not tx.inputs:
        raise MempoolReject("bad-txns-vin-empty")
    if not tx.outputs:
        raise MempoolReject("bad-txns-vout-empty")
    if tx.weight > 4_000_000:
        raise MempoolReject("bad-txns-oversize")
    total = 0
    for out in tx.outputs:
        if out.value < 0:
            raise MempoolReject("bad-txns-vout-negative")
        if out.value > MAX_MONEY:
            raise MempoolReject("bad-txns-vout-toolarge")
        total += out.value
        if total > MAX_MONEY:
            raise MempoolReject("bad-txns-txouttotal-toolarge")
    if len({i.prevout for i in tx.inputs}) != len(tx.inputs):
        raise MempoolReject("bad-txns-inputs-duplicate")
    if tx.is_coinbase:
        raise MempoolReject("coinbase")
    if any(i.prevout.is_null for i in tx.inputs):
        raise MempoolReject("bad-txns-prevout-null")


def _mtp(times: list[int], height: int) -> int:
    """Median time past of the block at ``height`` (its 11 last header times)."""
    window = sorted(times[max(0, height - 10) : height + 1])
    return window[len(window) // 2]


def _check_final(chain: KernelChain, tx: Tx, coin_heights: list[int]) -> None:
    """``IsFinalTx`` at the next height with the tip's MTP (BIP-113), then BIP-68 locks."""
    times, tip = chain.times, chain.tip_height
    next_height, mtp = tip + 1, _mtp(times, tip)
    if tx.locktime:
        limit = next_height if tx.locktime < LOCKTIME_THRESHOLD else mtp
        if tx.locktime >= limit and any(i.sequence != 0xFFFFFFFF for i in tx.inputs):
            raise MempoolReject("non-final")
    if (tx.version & 0xFFFFFFFF) < 2:
        return
    for txin, coin_height in zip(tx.inputs, coin_heights, strict=True):
        seq = txin.sequence
        if seq & SEQUENCE_LOCKTIME_DISABLE_FLAG:
            continue
        value = seq & SEQUENCE_LOCKTIME_MASK
        if seq & SEQUENCE_LOCKTIME_TYPE_FLAG:
            # Time lock: measured from the MTP of the block before the coin's block.
            base = _mtp(times, max(coin_height - 1, 0)) if coin_height <= tip else mtp
            if base + (value << SEQUENCE_LOCKTIME_GRANULARITY) - 1 >= mtp:
                raise MempoolReject("non-BIP68-final")
        elif coin_height + value - 1 >= next_height:
            raise MempoolReject("non-BIP68-final")
