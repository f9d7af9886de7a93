"""The distributions of the 0x4003 conformance vectors, including the ones whose sizes sit
exactly on a relay-policy threshold (TRUC 10,000 vB, 400,000 WU standard weight, the 65-byte
minimum), built by searching output-type mixes with a known total size.

Payee scripts are the example keys of :mod:`sv2.settlement_vectors.keys` (examples only).
"""

from __future__ import annotations

from dataclasses import replace

from payouts.distribution.model import AdditionalOutput, Distribution, Payee, PoolPayout
from payouts.tx.compact import compact_size_len
from payouts.tx.output_scripts import dust_limit
from sv2.settlement_vectors.keys import bare_multisig, p2pkh, p2sh, p2tr, p2wpkh

# Bytes of a fan-out tx besides its outputs and their count: nVersion 4, one input (count 1,
# outpoint 36, empty scriptSig 1, nSequence 4), nLockTime 4; plus a 13-byte P2A anchor output.
TX_FIXED = 4 + 1 + 41 + 4
ANCHOR = 13
OP_RETURN_TAG = bytes.fromhex("6a0470617973")  # OP_RETURN "pays": a 0-value additional output
_SCRIPT_BY_SIZE = {43: p2tr, 31: p2wpkh, 32: p2sh, 34: p2pkh}


def _payee(script: bytes, weight: int) -> Payee:
    return Payee(script, weight, dust_limit(script))


def _mix(total: int, max_count: int) -> list[int]:
    """Output sizes (43 P2TR, 31 P2WPKH, 32 P2SH) summing to exactly ``total`` bytes, at most
    ``max_count`` of them and at least one P2WPKH (so that swapping it for a P2SH adds exactly
    one byte); as many P2TR as possible, interleaved."""
    for a in range(total // 43, -1, -1):
        rest = total - 43 * a
        for c in range(rest // 32 + 1):
            b, r = divmod(rest - 32 * c, 31)
            if r == 0 and b >= 1 and a + b + c <= max_count:
                kinds = [43] * a + [31] * b + [32] * c
                # interleave the kinds deterministically (a fixed stride through the list)
                n = len(kinds)
                step = next(s for s in range(7919, 7919 + n + 2) if _coprime(s, n))
                return [kinds[(i * step) % n] for i in range(n)]
    raise ValueError(f"no mix of {max_count} outputs sums to {total} bytes")


def _coprime(a: int, b: int) -> bool:
    while b:
        a, b = b, a % b
    return a == 1


def flat_vsize(leaf_sizes: list[int]) -> int:
    """vsize of the bare flat fan-out with an anchor over outputs of these sizes."""
    return TX_FIXED + compact_size_len(len(leaf_sizes) + 1) + sum(leaf_sizes) + ANCHOR


def _sized(
    dist_id: int, target_flat: int, first_key: int, max_count: int, pool_weight: int
) -> Distribution:
    """A distribution whose bare flat fan-out (pool P2WPKH, payees, anchor) is exactly
    ``target_flat`` vB; payee i has weight 1000 + (37·i mod 500)."""
    pool = p2wpkh(first_key)
    # the count prefix of the flat tx's outputs is 1 byte below 253 outputs, else 3
    cs = 1 if max_count + 2 < 0xFD else 3
    sizes = _mix(target_flat - TX_FIXED - cs - ANCHOR - 31, max_count)
    payees = tuple(
        _payee(_SCRIPT_BY_SIZE[s](first_key + 1 + i), 1000 + (37 * i) % 500)
        for i, s in enumerate(sizes)
    )
    d = Distribution(dist_id, PoolPayout(pool, pool_weight), payees)
    got = flat_vsize([31, *sizes])
    if got != target_flat:  # pragma: no cover - the count prefix guess was wrong
        raise AssertionError(f"flat fan-out of {got} vB, wanted {target_flat}")
    return d


def _plus_one_byte(d: Distribution, dist_id: int) -> Distribution:
    """``d`` with its last P2WPKH payee paid to the P2SH of the same key instead: every tx
    containing it grows by exactly one byte."""
    payees = list(d.payouts)
    i = max(j for j, p in enumerate(payees) if len(p.script) == 22)
    key = next(k for k in range(1, 1 << 20) if p2wpkh(k) == payees[i].script)
    payees[i] = _payee(p2sh(key), payees[i].weight)
    return Distribution(dist_id, d.pool_payout, tuple(payees), d.additional_outputs)


def _crossing(d: Distribution, dist_id: int, weight: int, key: int) -> Distribution:
    """``d`` plus one P2WPKH payee (31 bytes) of small ``weight``: above dust at one revenue,
    pruned at a lower one."""
    return Distribution(
        dist_id, d.pool_payout, (*d.payouts, _payee(p2wpkh(key), weight)), d.additional_outputs
    )


def build_distributions() -> dict[str, Distribution]:
    """Every named distribution of the vectors file (ids are distinct)."""
    small = Distribution(
        42,
        PoolPayout(p2wpkh(1), 100),
        (_payee(p2tr(2), 600), _payee(p2wpkh(3), 300), _payee(p2tr(4), 1)),
        (AdditionalOutput(OP_RETURN_TAG, 0),),
    )
    mixed = Distribution(
        40,
        PoolPayout(p2tr(100), 250),
        tuple(
            _payee((p2tr, p2wpkh, p2pkh, p2sh)[i % 4](101 + i), 10 + (i * 7) % 13)
            for i in range(40)
        ),
        (AdditionalOutput(OP_RETURN_TAG, 0), AdditionalOutput(p2wpkh(99), 50_000)),
    )
    unpruned = Distribution(
        3,
        PoolPayout(p2wpkh(200), 1000),
        (
            Payee(p2wpkh(201), 1000, 0),
            Payee(p2wpkh(202), 1000, 0),
            Payee(p2wpkh(203), 1, 0),
        ),
    )
    flat_10000 = _sized(10, 10_000, 1000, 240, 10_000)
    flat_10001 = _plus_one_byte(flat_10000, 11)
    # + X (weight 1): kept at T = 312,500,000, pruned at T = 50,000,000
    crossing_10031 = _crossing(flat_10000, 12, 1, 1999)
    # flat fan-out of exactly 100,000 vB including Y, a P2WPKH payee of weight 4; + X (weight 2)
    big = _sized(20, 100_000, 3000, 2400, 1_000_000)
    y = next(i for i, p in enumerate(big.payouts) if len(p.script) == 22)
    with_y = tuple(replace(p, weight=4) if i == y else p for i, p in enumerate(big.payouts))
    big_crossing = _crossing(replace(big, payouts=with_y), 21, 2, 9001)
    return {
        "small": small,
        "mixed-40": mixed,
        "unpruned-reservation": unpruned,
        "flat-10000": flat_10000,
        "flat-10001": flat_10001,
        "crossing-10031": crossing_10031,
        "big-crossing": big_crossing,
        "min-size-65": Distribution(50, PoolPayout(bytes.fromhex("6a03aabbcc"), 1)),
        "min-size-64": Distribution(51, PoolPayout(bytes.fromhex("6a02aabb"), 1)),
        "op-return-payees": Distribution(
            52,
            PoolPayout(p2wpkh(300), 10),
            tuple(Payee(bytes.fromhex("6a01") + bytes([i]), 1, 0) for i in range(4)),
        ),
        "sigop-dense": Distribution(
            53,
            PoolPayout(p2wpkh(400), 10),
            (_payee(p2tr(401), 10), _payee(bare_multisig(402), 10)),
        ),
        "fixed-outputs": Distribution(
            54,
            PoolPayout(p2wpkh(500), 10),
            (_payee(p2tr(501), 10),),
            (AdditionalOutput(p2wpkh(502), 100_000),),
        ),
    }


__all__ = ["build_distributions", "flat_vsize"]
