"""Benchmark: DeclareMiningJob validation latency, 4,000 transactions already known to the
server and a 500-payee distribution (targets: p50 <= 5 ms, p99 <= 20 ms).

Measured in-process, without sockets, Noise or the event loop: the exact sequence of library
calls the server makes for a declaration whose transactions are all in its store --
``parse_declared_coinbase``, ``check_wtxid_list``, ``check_height``, the store look-ups and
``validate_declaration`` (block weight/sigops, the BIP-141 witness commitment over 4,000
wtxids, revenue, and the PR #203 recompute-and-compare of 500 payees). Token handling is a dict
operation and the node calls are the node's, so both are left out; the codec's
``DeclareMiningJob.decode`` is timed separately. Time is wall-clock (``perf_counter_ns``).

What is cached, and when. The server's store holds the node's block template (4,000 txs with
fees and sigop costs) and 400 further mempool transactions, each with wtxid, weight and sigop
cost computed once when it entered the store. When the template is loaded (``TxStore.
prepare_template`` + ``install_template``: by the server's background refresh every
``template_refresh`` s, or by the first declaration on a new tip) the server also builds the
template's witness merkle tree; its cost is printed as "template load". Every "cold" run first
forgets every *declared* tree (``WitnessTrees.forget_recent``), so nothing from an earlier
declaration helps; only the template's tree, and only for the leading wtxids a declaration
shares with it:

- ``template order``: the declared list is the server's template (a JD client whose node has
  the same mempool -- Core orders by ancestor feerate, so both build the same list);
- ``tail differs``: the first 3,600 template txs, then 400 mempool txs not in the template (a
  client whose mempool differs at the low-feerate end);
- ``new order``: the same 4,000 known txs shuffled -- nothing shared, the whole tree is hashed
  (~4,000 SHA256d): the floor of a declaration with no reusable tree;
- ``re-declaration``: ``template order`` again without forgetting (a new token or a new
  distribution for the same transactions).

``baseline`` runs the same declarations without the tree cache (``trees=None``: the root from
scratch every time, the behaviour before the cache) in the same process and run.

Template refresh on the current tip (a fresh copy of the template, its transactions re-parsed
as a node's RPC answer gives them, no id cached):

- ``declaration paying a refresh``: what a declaration cost when the refresh ran on its own
  path (before the background refresh): load the template, then validate (``template order``);
- ``declaration during a background refresh``: the server now prepares the template in a
  worker thread (``asyncio.to_thread``) and installs it at once; a declaration meanwhile only
  validates, sharing the interpreter with that thread. The node's own ``getblocktemplate`` is
  outside both rows (it is the node's time; it was on the declaration's path before too).

Run: ``python -m benchmarks.bench_jds`` (``--runs N``, ``--txs N``, ``--payees N``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.interface import BlockTemplate, TemplateTx
from payouts.settlement.coinbase import build_coinbase_settlement
from payouts.tx.coinbase import block_subsidy, witness_commitment, witness_commitment_output
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.jds.state import PreparedTemplate, TxStore
from sv2.jds.validation import (
    KnownTx,
    PayoutRule,
    WitnessTrees,
    check_height,
    check_wtxid_list,
    parse_declared_coinbase,
    validate_declaration,
)
from sv2.messages import DeclareMiningJob, DistributionIdTlv

P50_TARGET_MS, P99_TARGET_MS = 5.0, 20.0
HEIGHT = 900_000
EXTRA_MEMPOOL = 400


def _script(i: int, kind: int) -> bytes:
    h = hashlib.sha256(i.to_bytes(4, "little")).digest()
    return b"\x00\x14" + h[:20] if kind == 0 else b"\x51\x20" + h


def make_txs(n: int) -> list[Tx]:
    """``n`` segwit-shaped transactions (one input, two outputs, a 72+33-byte witness)."""
    txs = []
    for i in range(n):
        prev = OutPoint(hashlib.sha256(b"prev" + i.to_bytes(4, "little")).digest(), 0)
        txin = TxIn(prev, b"", 0xFFFFFFFD, (bytes(72), bytes(33)))
        outs = (TxOut(50_000 + i, _script(i, 0)), TxOut(10_000, _script(i, 1)))
        txs.append(Tx(2, (txin,), outs, 0))
    return txs


def make_distribution(payees: int) -> Distribution:
    return Distribution(
        distribution_id=42,
        pool_payout=PoolPayout(_script(10**6, 0), 1_000),
        payouts=tuple(
            Payee(_script(i, i % 2), 1_000 + (i * 7919) % 5_000, 330) for i in range(payees)
        ),
    )


def _fee(i: int) -> int:
    return 200 + i % 1_000


@dataclass
class Setup:
    store: TxStore
    template: BlockTemplate
    rule: PayoutRule
    subsidy: int
    tip: int
    template_load_ms: float
    declarations: dict[str, bytes]  # scenario -> encoded DeclareMiningJob payload


def declaration(dist: Distribution, txs: list[tuple[Tx, int]]) -> bytes:
    revenue = block_subsidy(HEIGHT) + sum(f for _, f in txs)
    commitment = witness_commitment([t.wtxid for t, _ in txs])
    st = build_coinbase_settlement(
        dist,
        revenue,
        height=HEIGHT,
        template_outputs=(witness_commitment_output(commitment),),
        tag=b"/bench/",
    )
    msg = DeclareMiningJob(
        1,
        bytes(16),
        0x20000000,
        st.parts.prefix,
        st.parts.suffix,
        tuple(t.wtxid for t, _ in txs),
        b"",
        tlvs=(DistributionIdTlv(42),),
    )
    return msg.encode()


def setup(n_txs: int, n_payees: int) -> Setup:
    all_txs = make_txs(n_txs + EXTRA_MEMPOOL)
    with_fees = [(t, _fee(i)) for i, t in enumerate(all_txs)]
    template_txs, extra = with_fees[:n_txs], with_fees[n_txs:]
    store = TxStore()
    template = BlockTemplate(
        0x20000000,
        bytes(32),
        HEIGHT,
        0x1703_0000,
        0,
        0,
        tuple(TemplateTx(t, f, 0) for t, f in template_txs),
    )
    t0 = time.perf_counter_ns()
    store.add_template(template, 0.0)
    template_load_ms = (time.perf_counter_ns() - t0) / 1e6
    for t, f in extra:  # known from the node's mempool, not in its template
        store.add(KnownTx.of(t, fee=f))
    dist = make_distribution(n_payees)
    rule = PayoutRule(
        "invalid-payout-distribution", lambda t: compute_outputs(dist, t).outputs, "bench"
    )
    keep = n_txs - min(EXTRA_MEMPOOL, n_txs // 10)
    shuffled = list(template_txs)
    random.Random(7).shuffle(shuffled)
    declarations = {
        "template order": declaration(dist, template_txs),
        "tail differs": declaration(dist, template_txs[:keep] + extra[: n_txs - keep]),
        "new order": declaration(dist, shuffled),
    }
    return Setup(
        store, template, rule, block_subsidy(HEIGHT), HEIGHT - 1, template_load_ms, declarations
    )


def fresh_copy(template: BlockTemplate) -> BlockTemplate:
    """``template`` as a new node answer: every transaction re-parsed, no id cached."""
    txs = tuple(
        TemplateTx(Tx.parse(t.tx.serialize()), t.fee, t.sigops) for t in template.transactions
    )
    return BlockTemplate(
        template.version,
        template.prev_hash,
        template.height,
        template.bits,
        template.curtime,
        template.coinbase_value,
        txs,
    )


def validate_once(
    msg: DeclareMiningJob,
    store: TxStore,
    rule: PayoutRule,
    subsidy: int,
    tip: int,
    trees: WitnessTrees | None,
) -> int:
    """What ``JobDeclarationServer._on_declare`` + ``_finish`` run for an all-known set."""
    cb = parse_declared_coinbase(msg.coinbase_tx_prefix, msg.coinbase_tx_suffix)
    check_wtxid_list(msg.wtxid_list)
    height = check_height(cb, tip)
    resolved = list(map(store.by_wtxid.get, msg.wtxid_list))
    txs = [k for k in resolved if k is not None]
    if len(txs) != len(resolved):
        raise AssertionError("benchmark transactions must all be known")
    v = validate_declaration(cb, txs, height=height, subsidy=subsidy, rule=rule, trees=trees)
    return v.revenue


def pct(xs: list[int], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--txs", type=int, default=4_000)
    ap.add_argument("--payees", type=int, default=500)
    ap.add_argument("--refresh-runs", type=int, default=40)
    args = ap.parse_args(argv)
    su = setup(args.txs, args.payees)
    store, trees = su.store, su.store.trees
    msgs = {k: DeclareMiningJob.decode(v) for k, v in su.declarations.items()}
    sha = hashlib.sha256
    probe = bytes(64)
    t0 = time.perf_counter_ns()
    for _ in range(20_000):
        sha(sha(probe).digest()).digest()
    sha256d_us = (time.perf_counter_ns() - t0) / 20_000 / 1e3

    def measure(msg: DeclareMiningJob, use_trees: bool, forget: bool) -> list[int]:
        out = []
        for i in range(args.runs + 10):
            if forget:
                trees.forget_recent()
            t = time.perf_counter_ns()
            validate_once(msg, store, su.rule, su.subsidy, su.tip, trees if use_trees else None)
            if i >= 10:
                out.append(time.perf_counter_ns() - t)
        return sorted(out)

    rows: list[tuple[str, list[int], bool]] = []
    for name, msg in msgs.items():
        rows.append((f"cold, {name}", measure(msg, True, True), name != "new order"))
        rows.append((f"baseline (no tree cache), {name}", measure(msg, False, False), False))
    rows.append(
        ("re-declaration (template order)", measure(msgs["template order"], True, False), False)
    )
    rows.extend(refresh_rows(su, msgs["template order"], args.refresh_runs))
    payload = su.declarations["template order"]
    dec = sorted(_timed(lambda: DeclareMiningJob.decode(payload)) for _ in range(args.runs))
    load = os.getloadavg()
    print(
        f"DeclareMiningJob, {args.txs} known txs, {args.payees} payees, payload "
        f"{len(payload):,} B, in-process, {args.runs} runs; this machine: SHA256d of 64 B = "
        f"{sha256d_us:.2f} us; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"  template load (once per template, tree included): {su.template_load_ms:.1f} ms")
    ok = True
    for name, xs, counted in rows:
        mark = "  [target]" if counted else ""
        print(f"  {name:48s} p50 {pct(xs, 0.5):6.2f} ms  p99 {pct(xs, 0.99):6.2f} ms{mark}")
        if counted:
            ok = ok and pct(xs, 0.5) <= P50_TARGET_MS and pct(xs, 0.99) <= P99_TARGET_MS
    print(
        f"  {'codec decode (not part of validation)':48s} p50 {pct(dec, 0.5):6.2f} ms  "
        f"p99 {pct(dec, 0.99):6.2f} ms"
    )
    print(
        f"  targets p50 <= {P50_TARGET_MS} ms, p99 <= {P99_TARGET_MS} ms for the [target] rows "
        f"(transactions known, declared in the server's template order or sharing its "
        f"prefix): {'OK' if ok else 'MISSED'}; 'new order' is the no-reuse floor"
    )
    return 0  # a missed target is reported above, not a failed run


def refresh_rows(su: Setup, msg: DeclareMiningJob, runs: int) -> list[tuple[str, list[int], bool]]:
    """A same-tip template refresh: on the declaration's path (before) against in a worker
    thread while the declaration validates (now). Each run loads a fresh copy of the template
    (copies are made before the clock starts)."""
    store = su.store

    def declare() -> None:
        validate_once(msg, store, su.rule, su.subsidy, su.tip, store.trees)

    inline: list[int] = []
    during: list[int] = []
    overlapped = 0
    for _ in range(runs):
        copy = fresh_copy(su.template)
        t = time.perf_counter_ns()
        store.add_template(copy, 0.0)
        declare()
        inline.append(time.perf_counter_ns() - t)
        copy = fresh_copy(su.template)
        started = threading.Event()
        box: list[PreparedTemplate] = []
        worker = threading.Thread(target=_prepare, args=(store, copy, started, box))
        worker.start()
        started.wait()
        t = time.perf_counter_ns()
        declare()
        during.append(time.perf_counter_ns() - t)
        overlapped += worker.is_alive()  # the declaration ran while the refresh did
        worker.join()
        store.install_template(box[0], 0.0)
    if overlapped < runs * 0.9:
        raise AssertionError(f"only {overlapped}/{runs} declarations overlapped a refresh")
    return [
        ("declaration paying a refresh (before)", sorted(inline), False),
        ("declaration during a background refresh (now)", sorted(during), False),
    ]


def _prepare(
    store: TxStore, template: BlockTemplate, started: threading.Event, out: list[PreparedTemplate]
) -> None:
    started.set()
    out.append(store.prepare_template(template))


def _timed(fn: object) -> int:
    t = time.perf_counter_ns()
    fn()  # type: ignore[operator]
    return time.perf_counter_ns() - t


if __name__ == "__main__":
    raise SystemExit(main())
