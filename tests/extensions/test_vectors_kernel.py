"""Every transaction of docs/extensions/0x4003-vectors.json checked by Bitcoin Core's consensus
code (libbitcoinkernel, regtest): script verification of each tx as stored, then the real
thing: coinbases paying the vectors' settlement outputs, 100 blocks of maturity, every ctv
tree mined level by level (rebound to its coinbase outpoint: only prevouts and txids change)
and every musig2 payout tx signed by its example committee and mined.

libbitcoinkernel does NOT enforce BIP-119: it runs OP_CHECKTEMPLATEVERIFY as OP_NOP4. Each
CTV commitment is checked here with the project's BIP-119 hash (``commitment_matches``), which
reproduces the official BIP-119 vectors (tests/tx)."""

from __future__ import annotations

from typing import Any

import pytest

from payouts.distribution.jsonio import distribution_from_json
from payouts.node.kernel_chain import KernelChain, verify_spend
from payouts.settlement.ctv import commitment_matches
from payouts.settlement.musig2.spend import (
    cooperative_spend,
    ctv_exit_spend,
    open_signing_session,
)
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.domain_messages import mode_from_message
from sv2.messages import SetSettlementMode, decode_frame
from sv2.settlement_vectors.keys import pubkey, secret
from tests.extensions.vectors import cases, distribution
from tests.musig2_settlement.helpers import run_session

MINER = bytes.fromhex("5120" + "ab" * 32)


def _ok(mode: str) -> list[dict[str, Any]]:
    return [c for c in cases(mode) if "result" in c]


def _out(o: dict[str, Any]) -> TxOut:
    return TxOut(o["amount"], bytes.fromhex(o["script"]))


def _tree(case: dict[str, Any], funding: OutPoint) -> list[Tx]:
    """The vector's txs, their prevouts rebound top-down to ``funding`` (what a node sees once
    the coinbase is known; CTV does not commit to prevouts)."""
    out: list[Tx] = []
    for t in case["result"]["txs"]:
        tx = Tx.parse(bytes.fromhex(t["hex"]))
        txin = tx.inputs[0]
        prev = funding if t["parent"] is None else OutPoint(out[t["parent"]].txid, t["parent_vout"])
        out.append(Tx(tx.version, (TxIn(prev, b"", txin.sequence, txin.witness),), tx.outputs,
                      tx.locktime))
    return out


@pytest.mark.parametrize("case", _ok("ctv"), ids=[c["name"] for c in _ok("ctv")])
def test_every_ctv_tx_as_stored_is_script_valid_and_conserves(case: dict[str, Any]) -> None:
    r = case["result"]
    txs = [Tx.parse(bytes.fromhex(t["hex"])) for t in r["txs"]]
    for t, tx in zip(r["txs"], txs, strict=True):
        spent = (
            _out(r["coinbase_outputs"][0])
            if t["parent"] is None
            else txs[t["parent"]].outputs[t["parent_vout"]]
        )
        assert verify_spend(tx, [spent]), (case["name"], t["txid"])  # Bitcoin Core's interpreter
        assert commitment_matches(spent.script, tx)  # BIP-119, which the kernel cannot check
        assert spent.value == t["value"] == tx.output_value() + t["fee"]
        assert tx.txid_hex == t["txid"] and tx.vsize == t["vsize"]
        assert t["fee"] == case_fee_rate(case) * tx.vsize
        assert tx.weight <= 400_000 and (tx.version != 3 or tx.vsize <= 10_000)


def case_fee_rate(case: dict[str, Any]) -> int:
    _, msg = decode_frame(bytes.fromhex(case["set_settlement_mode"]))
    assert isinstance(msg, SetSettlementMode)
    return msg.ctv_fee_rate


def _relative_lock(case: dict[str, Any]) -> int:
    seq = Tx.parse(bytes.fromhex(case["result"]["txs"][0]["hex"])).inputs[0].sequence
    return 0 if seq & (1 << 31) or seq & (1 << 22) else seq & 0xFFFF


def _mine(chain: KernelChain, txs: list[Tx]) -> None:
    reward = chain.subsidy(chain.tip_height + 1) + chain.fees(txs)
    chain.mine_block([TxOut(reward, MINER)], txs)


def _committee_secrets(keys: list[bytes]) -> dict[bytes, bytes]:
    table = {pubkey(i): secret(i) for i in range(1, 64)}
    return {k: table[k] for k in keys}


def test_the_vectors_settle_on_a_kernel_chain() -> None:
    """Fund every vector's settlement output in coinbases, mature them, then mine every ctv
    level and every cooperatively signed musig2 payout: the kernel connects every block."""
    ctv_cases, mu_cases = _ok("ctv"), _ok("musig2")
    settlements = [(c, _out(c["result"]["coinbase_outputs"][0])) for c in ctv_cases + mu_cases]
    with KernelChain() as chain:
        funded: dict[str, OutPoint] = {}
        while settlements:
            budget = chain.subsidy(chain.tip_height + 1)
            batch: list[tuple[dict[str, Any], TxOut]] = []
            while settlements and sum(o.value for _, o in batch) + settlements[0][1].value <= (
                budget
            ):
                batch.append(settlements.pop(0))
            block = chain.mine_block([o for _, o in batch])
            for vout, (c, _) in enumerate(batch):
                funded[f"{'ctv' if c in ctv_cases else 'musig2'}:{c['name']}"] = OutPoint(
                    block.txs[0].txid, vout
                )
        chain.mine_empty(100, MINER)
        # musig2: each payout tx signed by its example committee, and the CTV exit's structure
        signed = []
        for c in mu_cases:
            funding = funded[f"musig2:{c['name']}"]
            _, msg = decode_frame(bytes.fromhex(c["set_settlement_mode"]))
            mode = mode_from_message(msg)  # type: ignore[arg-type]
            assert mode.musig2 is not None
            out = mode.musig2.build(distribution_from_json(distribution(c["distribution"])),
                                    c["revenue"])
            assert out.payout_tx.serialize().hex() == c["result"]["payout_tx"]["hex"]
            session = open_signing_session(out, funding, nonce_deadline=1, sig_deadline=2)
            run_session(session, _committee_secrets(list(out.committee.pubkeys)))
            tx = cooperative_spend(out, funding, session)
            assert verify_spend(tx, [out.txout]), c["name"]
            if out.ctv_leaf is not None:
                exit_tx = ctv_exit_spend(out, funding)
                assert verify_spend(exit_tx, [out.txout])  # structure; OP_CTV is OP_NOP4 here
                assert commitment_matches(out.ctv_leaf.script, exit_tx)
            signed.append(tx)
        _mine(chain, signed)
        # ctv: level by level, waiting out BIP-68 relative locks between levels
        trees = [(_tree(c, funded[f"ctv:{c['name']}"]), c) for c in ctv_cases]
        depth = max(t["level"] for c in ctv_cases for t in c["result"]["txs"]) + 1
        wait = max(_relative_lock(c) for c in ctv_cases)
        for level in range(depth):
            txs = [
                tx
                for tree, c in trees
                for tx, t in zip(tree, c["result"]["txs"], strict=True)
                if t["level"] == level
            ]
            if level:
                chain.mine_empty(wait, MINER)
            _mine(chain, txs)
        # what stays unspent (every leaf and anchor) plus the fees is the settlement output
        for tree, c in trees:
            unspent = [
                chain.utxos[OutPoint(tx.txid, vout)][0]
                for tx in tree
                for vout in range(len(tx.outputs))
                if OutPoint(tx.txid, vout) in chain.utxos
            ]
            r = c["result"]
            fees = sum(t["fee"] for t in r["txs"])
            assert sum(o.value for o in unspent) + fees == r["coinbase_outputs"][0]["amount"]
            pool = bytes.fromhex(distribution(c["distribution"])["pool_payout"]["script"])
            assert TxOut(r["pool_amount"], pool) in unspent
