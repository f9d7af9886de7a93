"""The coinbase settlement mode, validated by libbitcoinkernel (Bitcoin Core's consensus code)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from payouts.distribution.fitting import Budget, Candidate, fit_distribution
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.errors import BudgetTooSmallError
from payouts.node.kernel_chain import BlockRejectedError, KernelChain
from payouts.settlement.coinbase import (
    SIZE_CLASSES,
    build_coinbase_settlement,
    outputs_budget_for_size_class,
)
from payouts.tx.coinbase import witness_commitment, witness_commitment_output
from payouts.tx.transaction import Tx
from payouts.tx.txout import TxOut

POOL = bytes.fromhex("0014") + b"\x01" * 20


def p2tr(i: int) -> bytes:
    return bytes.fromhex("5120") + i.to_bytes(32, "big")


@pytest.fixture()
def chain() -> Iterator[KernelChain]:
    with KernelChain() as c:
        yield c


def commitment_outputs() -> list[TxOut]:
    return [witness_commitment_output(witness_commitment([]))]


def test_500_payee_coinbase_accepted_with_exact_amounts(chain: KernelChain) -> None:
    payees = tuple(Payee(p2tr(i), 1000 + i, 330, f"m{i}") for i in range(500))
    dist = Distribution(1, PoolPayout(POOL, 10_000), payees)
    height = chain.tip_height + 1
    revenue = chain.subsidy(height)
    s = build_coinbase_settlement(dist, revenue, height=height,
                                  template_outputs=commitment_outputs(), tag=b"/payouts/")
    coinbase = s.parts.tx(b"\x00" * 8)
    chain.submit(chain.block_with_coinbase(coinbase))
    assert chain.tip_height == height
    mined = chain.blocks[-1].txs[0]
    assert mined.outputs[: len(s.payout.outputs)] == s.payout.outputs
    assert sum(o.value for o in mined.outputs) == revenue
    for payee, amount in zip(payees, s.payout.payee_amounts, strict=True):
        assert amount == payee.weight * revenue // dist.total_weight
    assert mined.outputs[-1].script[:6] == bytes.fromhex("6a24aa21a9ed")


def test_overpaying_coinbase_rejected_by_consensus(chain: KernelChain) -> None:
    dist = Distribution(1, PoolPayout(POOL, 1), (Payee(p2tr(1), 1, 330),))
    height = chain.tip_height + 1
    s = build_coinbase_settlement(dist, chain.subsidy(height) + 1, height=height,
                                  template_outputs=commitment_outputs())
    with pytest.raises(BlockRejectedError) as err:
        chain.submit(chain.block_with_coinbase(s.parts.tx(b"\x00" * 8)))
    assert "bad-cb-amount" in err.value.reason
    assert chain.tip_height == height - 1


def test_wrong_height_rejected_by_consensus(chain: KernelChain) -> None:
    dist = Distribution(1, PoolPayout(POOL, 1))
    height = chain.tip_height + 1
    s = build_coinbase_settlement(dist, chain.subsidy(height), height=height + 1,
                                  template_outputs=commitment_outputs())
    with pytest.raises(BlockRejectedError) as err:
        chain.submit(chain.block_with_coinbase(s.parts.tx(b"\x00" * 8)))
    assert "bad-cb-height" in err.value.reason


def test_prefix_suffix_split_at_the_extranonce() -> None:
    dist = Distribution(1, PoolPayout(POOL, 1), (Payee(p2tr(1), 3, 330),))
    s = build_coinbase_settlement(dist, 10**8, height=840_000,
                                  template_outputs=commitment_outputs(), extranonce_size=8)
    a, b = s.parts.tx(b"\x00" * 8), s.parts.tx(b"\xff" * 8)
    assert a.outputs == b.outputs and a.txid != b.txid
    assert s.parts.prefix.startswith(bytes.fromhex("02000000" "0001"))  # segwit coinbase
    assert s.weight == Tx.parse(s.parts.serialize(b"\x00" * 8)).weight


@pytest.mark.parametrize("name", list(SIZE_CLASSES))
def test_fitting_to_a_firmware_size_class(chain: KernelChain, name: str) -> None:
    cap = SIZE_CLASSES[name]
    height = chain.tip_height + 1
    template = commitment_outputs()
    max_bytes = outputs_budget_for_size_class(cap, height, tag=b"/pool/", template_outputs=template)
    cands = [Candidate(f"m{i}", p2tr(i), 10_000 + i) for i in range(600)]
    revenue = chain.subsidy(height)
    fitted = fit_distribution(1, POOL, cands, fee_bps=100, budget=Budget(max_bytes),
                              estimated_revenue=revenue)
    s = build_coinbase_settlement(fitted.distribution, revenue, height=height,
                                  template_outputs=template, size_cap=cap, tag=b"/pool/",
                                  budget=Budget(max_bytes))
    assert s.stripped_size <= cap
    assert len(fitted.dropped) == 600 - len(fitted.distribution.payouts) > 0
    chain.submit(chain.block_with_coinbase(s.parts.tx(b"\x00" * 8)))
    assert chain.tip_height == height


def test_budget_and_size_class_violations_are_specific_errors() -> None:
    payees = tuple(Payee(p2tr(i), 1, 330) for i in range(30))
    dist = Distribution(1, PoolPayout(POOL, 1), payees)
    with pytest.raises(BudgetTooSmallError) as err:
        build_coinbase_settlement(dist, 10**9, height=100, budget=Budget(500))
    assert err.value.code == "coinbase-budget-exceeded"
    with pytest.raises(BudgetTooSmallError) as err:
        build_coinbase_settlement(dist, 10**9, height=100, size_cap=SIZE_CLASSES["nicehash"])
    assert err.value.code == "coinbase-size-class-exceeded"
    with pytest.raises(BudgetTooSmallError):
        outputs_budget_for_size_class(60, 100)
