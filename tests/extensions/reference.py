"""A second implementation of extension 0x4003's outputs, written from
docs/extensions/0x4003-settlement-modes.md alone (§4–§6), as another team would.

It shares no code with ``payouts.settlement`` or ``payouts.distribution``: it serializes its
own transactions, measures sizes by serializing them (brute force, no size formula), computes
BIP-119 hashes from the BIP's definition, and splits amounts with its own PR #203 arithmetic.
It uses the project's BIP-327 KeyAgg and BIP-341 tweak (both checked against the BIPs' own
vectors elsewhere). It works on the JSON forms of the vectors file: a distribution object and
SetSettlementMode fields. Results have the shape of the vectors' ``result`` objects, or
``{"error": code}``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from payouts.crypto import musig2
from payouts.crypto.taproot import tweak_pubkey

NUMS_H = bytes.fromhex("50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0")
P2A = bytes.fromhex("51024e73")


class Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# -- §4 common definitions --------------------------------------------------------------------


def sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def tagged(tag: str, msg: bytes) -> bytes:
    t = sha256(tag.encode())
    return sha256(t + t + msg)


def compact(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    return b"\xfe" + n.to_bytes(4, "little")


def txout(value: int, script: bytes) -> bytes:
    return value.to_bytes(8, "little") + compact(len(script)) + script


def size(script: bytes) -> int:
    return len(txout(0, script))


def witness_program(s: bytes) -> bool:
    return 4 <= len(s) <= 42 and (s[0] == 0 or 0x51 <= s[0] <= 0x60) and s[1] == len(s) - 2


def relay_dust(s: bytes) -> int:
    if s[:1] == b"\x6a":
        return 0
    return (size(s) + (67 if witness_program(s) else 148)) * 3


def sigop_cost(s: bytes) -> int:
    count, i = 0, 0
    while i < len(s):
        op = s[i]
        i += 1
        if 1 <= op <= 0x4B:
            i += op
        elif op in (0x4C, 0x4D, 0x4E):
            width = {0x4C: 1, 0x4D: 2, 0x4E: 4}[op]
            if i + width > len(s):
                break
            i += width + int.from_bytes(s[i : i + width], "little")
        elif op in (0xAC, 0xAD):
            count += 1
        elif op in (0xAE, 0xAF):
            count += 20
    return 4 * count


def sigop_dense(s: bytes) -> bool:
    return 25 * sigop_cost(s) > 4 * size(s)


@dataclass
class Dist:
    pool: bytes
    pool_weight: int
    payees: list[tuple[bytes, int, int]]  # script, weight, dust limit
    additional: list[tuple[bytes, int]]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Dist:
        return cls(
            bytes.fromhex(d["pool_payout"]["script"]),
            d["pool_payout"]["weight"],
            [(bytes.fromhex(p["script"]), p["weight"], p["dust_limit"]) for p in d["payouts"]],
            [(bytes.fromhex(a["script"]), a["amount"]) for a in d["additional_outputs"]],
        )


def split(d: Dist, x: int) -> tuple[int, list[int], list[int]]:
    """(pay_P, kept payee indices, their amounts) of PR #203 on D' with X to distribute."""
    w = d.pool_weight + sum(p[1] for p in d.payees)
    kept, amounts = [], []
    for i, (script, weight, dust) in enumerate(d.payees):
        amount = weight * x // w
        if amount >= max(dust, relay_dust(script)):
            kept.append(i)
            amounts.append(amount)
    return x - sum(amounts), kept, amounts


# -- transactions -----------------------------------------------------------------------------


@dataclass
class Tx:
    version: int
    prevout: bytes  # 36 bytes
    sequence: int
    outputs: list[tuple[int, bytes]]
    locktime: int
    witness: list[bytes] = field(default_factory=list)

    def base(self) -> bytes:
        return (
            self.version.to_bytes(4, "little")
            + b"\x01" + self.prevout + b"\x00" + self.sequence.to_bytes(4, "little")
            + compact(len(self.outputs)) + b"".join(txout(v, s) for v, s in self.outputs)
            + self.locktime.to_bytes(4, "little")
        )

    def full(self) -> bytes:
        if not self.witness:
            return self.base()
        b = self.base()
        wit = compact(len(self.witness)) + b"".join(compact(len(w)) + w for w in self.witness)
        return b[:4] + b"\x00\x01" + b[4:-4] + wit + b[-4:]

    def weight(self) -> int:
        return 3 * len(self.base()) + len(self.full())

    def vsize(self) -> int:
        return (self.weight() + 3) // 4

    def txid(self) -> str:
        return hashlib.sha256(sha256(self.base())).digest()[::-1].hex()

    def template_hash(self) -> bytes:
        """BIP-119 DefaultCheckTemplateVerifyHash at input 0 (empty scriptSig)."""
        outs = b"".join(txout(v, s) for v, s in self.outputs)
        return sha256(
            self.version.to_bytes(4, "little") + self.locktime.to_bytes(4, "little")
            + (1).to_bytes(4, "little") + sha256(self.sequence.to_bytes(4, "little"))
            + len(self.outputs).to_bytes(4, "little") + sha256(outs)
            + (0).to_bytes(4, "little")
        )


PLACEHOLDER = bytes(36)


# -- §5 ctv -----------------------------------------------------------------------------------


@dataclass
class Node:
    entries: list[Any]  # int: a leaf index; Node: a child


def group(items: list[int], k: int | None) -> Node:
    if k is None or len(items) <= k:
        return Node(list(items))
    cap = 1
    while cap * k < len(items):
        cap *= k
    out: list[Any] = []
    for start in range(0, len(items), cap):
        chunk = items[start : start + cap]
        out.append(chunk[0] if len(chunk) == 1 else group(chunk, k))
    return Node(out)


def bfs(root: Node) -> list[tuple[Node, int, int | None, int]]:
    """(node, level, parent index, vout in the parent), breadth-first."""
    order: list[tuple[Node, int, int | None, int]] = [(root, 0, None, 0)]
    i = 0
    while i < len(order):
        node, level = order[i][0], order[i][1]
        for vout, e in enumerate(node.entries):
            if isinstance(e, Node):
                order.append((e, level + 1, i, vout))
        i += 1
    return order


@dataclass
class CtvParams:
    k: int
    taproot: bool
    anchor: bool
    r: int
    v: int
    seq: int
    lock: int

    @property
    def a(self) -> int | None:
        return None if not self.anchor else (0 if self.r == 0 else 240)


def commitment(h: bytes, taproot: bool) -> tuple[bytes, list[bytes]]:
    """(scriptPubKey, witness of its spend)."""
    leaf = b"\x20" + h + b"\xb3"
    if not taproot:
        return leaf, []
    q, parity = tweak_pubkey(NUMS_H, tagged("TapLeaf", b"\xc0" + compact(len(leaf)) + leaf))
    return b"\x51\x20" + q, [leaf, bytes([0xC0 | parity]) + NUMS_H]


def materialize(
    p: CtvParams, root: Node, leaves: list[tuple[int, bytes]], version: int
) -> list[tuple[Tx, int, int | None, int, int, bytes]]:
    """Every tx of the tree with real values and hashes: (tx, level, parent, vout, fee,
    hash), breadth-first, prevouts filled in top-down (the root spends the placeholder)."""
    order = bfs(root)
    index = {id(n): i for i, (n, *_rest) in enumerate(order)}
    built: dict[int, tuple[Tx, int, bytes]] = {}  # index -> (tx, value, hash)
    dummy = b"\x00" * 32
    for i in range(len(order) - 1, -1, -1):
        node = order[i][0]
        outs: list[tuple[int, bytes]] = []
        for e in node.entries:
            if isinstance(e, Node):
                _, child_value, child_hash = built[index[id(e)]]
                script, _ = commitment(child_hash, p.taproot)
                if child_value < relay_dust(script):
                    raise Refused("ctv-revenue-too-small")
                outs.append((child_value, script))
            else:
                outs.append(leaves[e])
        if p.a is not None:
            outs.append((p.a, P2A))
        tx = Tx(version, PLACEHOLDER, p.seq, outs, p.lock, commitment(dummy, p.taproot)[1])
        fee = p.r * tx.vsize()
        h = tx.template_hash()
        built[i] = (tx, sum(v for v, _ in outs) + fee, h)
    result = []
    txids: list[str] = []
    for i, (_node, level, parent, vout) in enumerate(order):
        tx, value, h = built[i]
        tx.prevout = (
            PLACEHOLDER if parent is None
            else bytes.fromhex(txids[parent])[::-1] + vout.to_bytes(4, "little")
        )
        _, witness = commitment(h, p.taproot)
        tx.witness = witness
        txids.append(tx.txid())
        result.append((tx, level, parent, vout, value - sum(v for v, _ in tx.outputs), h))
    return result


def sized_txs(p: CtvParams, scripts: list[bytes], k: int | None) -> list[Tx]:
    """The tree's txs with zero amounts and a dummy hash: their sizes are the real ones."""
    root = group(list(range(len(scripts))), k)
    dummy = commitment(b"\x00" * 32, p.taproot)
    txs = []
    for node, *_ in bfs(root):
        outs = [(0, dummy[0]) if isinstance(e, Node) else (0, scripts[e]) for e in node.entries]
        if p.a is not None:
            outs.append((0, P2A))
        txs.append(Tx(2, PLACEHOLDER, p.seq, outs, p.lock, dummy[1]))
    return txs


def choose_arity(p: CtvParams, scripts: list[bytes]) -> int | None:
    if p.k >= 2:
        return p.k
    vmax = 10_000 if p.r == 0 or p.v == 3 else 100_000
    if sized_txs(p, scripts, None)[0].vsize() <= vmax:
        return None
    return 16 if len(scripts) > 16 else None


def cost(p: CtvParams, scripts: list[bytes]) -> int:
    txs = sized_txs(p, scripts, choose_arity(p, scripts))
    return p.r * sum(t.vsize() for t in txs) + (p.a or 0) * len(txs)


def ctv_outputs(dist: dict[str, Any], revenue: int, fields: dict[str, Any]) -> dict[str, Any]:
    try:
        return _ctv(Dist.from_json(dist), revenue, fields)
    except Refused as exc:
        return {"error": exc.code}


def _ctv(d: Dist, revenue: int, f: dict[str, Any]) -> dict[str, Any]:
    p = CtvParams(
        f["ctv_arity"], f["ctv_output_form"] == 1, f["ctv_anchor"], f["ctv_fee_rate"],
        f["ctv_tx_version"], f["ctv_sequence"], f["ctv_locktime"],
    )
    l0 = [d.pool] + [s for s, _, _ in d.payees]
    if any(sigop_dense(s) for s in l0):
        raise Refused("ctv-tree-nonstandard")
    v_out = revenue - sum(a for _, a in d.additional)
    f0 = cost(p, l0)
    if v_out - f0 <= 0:
        raise Refused("ctv-revenue-too-small")
    pay_p, kept, amounts = split(d, v_out - f0)
    l1 = [d.pool] + [d.payees[i][0] for i in kept]
    f1 = cost(p, l1)
    assert f1 <= f0, (f0, f1)
    pool = pay_p + f0 - f1
    if pool < relay_dust(d.pool):
        raise Refused("ctv-revenue-too-small")
    k1 = choose_arity(p, l1)
    sized = sized_txs(p, l1, k1)
    largest = max(t.vsize() for t in sized)
    version = p.v or (3 if largest <= 10_000 else 2)
    if (
        max(t.weight() for t in sized) > 400_000
        or (version == 3 and largest > 10_000)
        or (p.r == 0 and version != 3)
        or min(len(t.base()) for t in sized) < 65
    ):
        raise Refused("ctv-tree-nonstandard")
    leaves = [(pool, d.pool)] + [(a, d.payees[i][0]) for i, a in zip(kept, amounts, strict=True)]
    txs = materialize(p, group(list(range(len(l1))), k1), leaves, version)
    root_tx, _, _, _, root_fee, root_hash = txs[0]
    root_value = sum(v for v, _ in root_tx.outputs) + root_fee
    assert root_value == v_out
    coinbase = [(v_out, commitment(root_hash, p.taproot)[0]), *((a, s) for s, a in d.additional)]
    return {
        "coinbase_outputs": [{"script": s.hex(), "amount": v} for v, s in coinbase],
        "arity": k1,
        "tx_version": version,
        "anchor_value": p.a,
        "reserved_cost": f0,
        "tree_cost": f1,
        "pool_amount": pool,
        "pruned": [i for i in range(len(d.payees)) if i not in set(kept)],
        "txs": [
            {
                "txid": tx.txid(),
                "level": level,
                "parent": parent,
                "parent_vout": vout,
                "value": sum(v for v, _ in tx.outputs) + fee,
                "fee": fee,
                "vsize": tx.vsize(),
                "template_hash": h.hex(),
                "hex": tx.full().hex(),
            }
            for tx, level, parent, vout, fee, h in txs
        ],
    }


# -- §6 musig2 --------------------------------------------------------------------------------


def push_num(n: int) -> bytes:
    """Minimal CScriptNum push of a positive n (§6.3)."""
    b = n.to_bytes((n.bit_length() + 7) // 8, "little")
    if b[-1] & 0x80:
        b += b"\x00"
    return bytes([len(b)]) + b


def musig2_outputs(dist: dict[str, Any], revenue: int, fields: dict[str, Any]) -> dict[str, Any]:
    try:
        return _musig2(Dist.from_json(dist), revenue, fields)
    except Refused as exc:
        return {"error": exc.code}


def _payout(d: Dist, kept_amounts: list[tuple[int, bytes]], seq: int) -> Tx:
    return Tx(2, PLACEHOLDER, seq, kept_amounts, 0)


def _musig2(d: Dist, revenue: int, f: dict[str, Any]) -> dict[str, Any]:
    keys = [bytes.fromhex(k) for k in f["musig2_committee"]]
    n, fb_key = f["musig2_fallback_timelock"], bytes.fromhex(f["musig2_fallback_key"])
    r: int = f["musig2_fee_rate"]
    with_ctv: bool = f["musig2_ctv_leaf"]
    scripts = [d.pool] + [s for s, _, _ in d.payees]
    if any(sigop_dense(s) for s in scripts):
        raise Refused("musig2-payout-nonstandard")
    v_out = revenue - sum(a for _, a in d.additional)
    keypath = [bytes(64)]

    def priced(outs: list[tuple[int, bytes]], witness: list[bytes], seq: int) -> int:
        tx = _payout(d, outs, seq)
        tx.witness = witness
        return r * tx.vsize()

    f0 = priced([(0, s) for s in scripts], keypath, 0xFFFFFFFF)
    if v_out - f0 <= 0:
        raise Refused("musig2-revenue-too-small")
    pay_p, kept, amounts = split(d, v_out - f0)
    outs = [(0, d.pool)] + [(a, d.payees[i][0]) for i, a in zip(kept, amounts, strict=True)]
    f1 = priced(outs, keypath, 0xFFFFFFFF)
    pool = pay_p + f0 - f1
    if pool < relay_dust(d.pool):
        raise Refused("musig2-revenue-too-small")
    outs[0] = (pool, d.pool)
    payout = _payout(d, outs, 0xFFFFFFFF)
    fallback = push_num(n) + b"\xb2\x75\x20" + fb_key + b"\xac"
    h_fb = tagged("TapLeaf", b"\xc0" + compact(len(fallback)) + fallback)
    ctv_leaf = None
    if with_ctv:
        ctv_leaf = b"\x20" + payout.template_hash() + b"\xb3"
        h_ctv = tagged("TapLeaf", b"\xc0" + compact(len(ctv_leaf)) + ctv_leaf)
        root = tagged("TapBranch", min(h_ctv, h_fb) + max(h_ctv, h_fb))
    else:
        root = h_fb
    internal = musig2.key_agg(keys).xonly_pubkey
    q, parity = tweak_pubkey(internal, root)
    cb_len = 33 + (32 if with_ctv else 0)
    exit_witness = [ctv_leaf, bytes(cb_len)] if ctv_leaf is not None else keypath
    fb_witness = [bytes(64), fallback, bytes(cb_len)]
    heaviest = _payout(d, outs, 0xFFFFFFFF)
    heaviest.witness = exit_witness
    if heaviest.weight() > 400_000:
        raise Refused("musig2-payout-nonstandard")
    fb0 = priced([(0, s) for s in scripts], fb_witness, n)
    _, fb_kept, fb_amounts = split(d, v_out - fb0)
    fb_outs = [(0, d.pool)] + [
        (a, d.payees[i][0]) for i, a in zip(fb_kept, fb_amounts, strict=True)
    ]
    fb_tx = _payout(d, fb_outs, n)
    fb_tx.witness = fb_witness
    if fb_tx.weight() > 400_000:
        raise Refused("musig2-payout-nonstandard")
    keyed = _payout(d, outs, 0xFFFFFFFF)
    keyed.witness = keypath
    coinbase = [(v_out, b"\x51\x20" + q), *((a, s) for s, a in d.additional)]
    return {
        "internal_key": internal.hex(),
        "fallback_leaf": fallback.hex(),
        "ctv_leaf": None if ctv_leaf is None else ctv_leaf.hex(),
        "merkle_root": root.hex(),
        "output_key": q.hex(),
        "output_parity": parity,
        "coinbase_outputs": [{"script": s.hex(), "amount": v} for v, s in coinbase],
        "reserved_fee": f0,
        "pool_amount": pool,
        "pruned": [i for i in range(len(d.payees)) if i not in set(kept)],
        "payout_tx": {
            "txid": payout.txid(),
            "vsize": keyed.vsize(),
            "fee": f1,
            "hex": payout.full().hex(),
        },
    }


__all__ = ["ctv_outputs", "musig2_outputs", "relay_dust", "sigop_cost", "split"]
