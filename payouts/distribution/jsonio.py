"""The JSON form of a distribution used by ``payouts distribution amounts`` and the API.

Input: ``{"distribution_id": INT?, "pool_payout": {"script": HEX, "weight": INT},
"payouts": [{"script": HEX, "weight": INT, "dust_limit": INT?}],
"additional_outputs": [{"script": HEX, "amount": INT}]}``. A payee without ``dust_limit`` gets
the policy dust threshold of its script type. Output: ``{"outputs": [{"script": HEX,
"amount": INT}, ...]}`` in wire order.
"""

from __future__ import annotations

from typing import Any

from payouts.distribution.amounts import PayoutResult
from payouts.distribution.model import AdditionalOutput, Distribution, Payee, PoolPayout
from payouts.errors import ValidationError
from payouts.tx.output_scripts import dust_limit


def _int(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    # bool is an int subclass; a JSON true must not become weight 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{where}.{key} must be an integer, got {value!r}")
    return value


def _script(obj: dict[str, Any], where: str) -> bytes:
    value = obj.get("script")
    if not isinstance(value, str):
        raise ValidationError(f"{where}.script must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValidationError(f"{where}.script is not valid hex: {value!r}") from None


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be an object")
    return value


def distribution_from_json(doc: Any) -> Distribution:
    doc = _obj(doc, "distribution")
    pool = _obj(doc.get("pool_payout"), "pool_payout")
    payees = []
    raw_payouts = doc.get("payouts", [])
    if not isinstance(raw_payouts, list):
        raise ValidationError("payouts must be a list")
    for i, raw in enumerate(raw_payouts):
        where = f"payouts[{i}]"
        p = _obj(raw, where)
        script = _script(p, where)
        dust = _int(p, "dust_limit", where) if "dust_limit" in p else dust_limit(script)
        payees.append(Payee(script, _int(p, "weight", where), dust))
    extras = []
    raw_extras = doc.get("additional_outputs", [])
    if not isinstance(raw_extras, list):
        raise ValidationError("additional_outputs must be a list")
    for i, raw in enumerate(raw_extras):
        where = f"additional_outputs[{i}]"
        a = _obj(raw, where)
        extras.append(AdditionalOutput(_script(a, where), _int(a, "amount", where)))
    dist_id = _int(doc, "distribution_id", "distribution") if "distribution_id" in doc else 0
    return Distribution(
        distribution_id=dist_id,
        pool_payout=PoolPayout(_script(pool, "pool_payout"), _int(pool, "weight", "pool_payout")),
        payouts=tuple(payees),
        additional_outputs=tuple(extras),
    )


def distribution_to_json(d: Distribution) -> dict[str, Any]:
    return {
        "distribution_id": d.distribution_id,
        "pool_payout": {"script": d.pool_payout.script.hex(), "weight": d.pool_payout.weight},
        "payouts": [
            {"script": p.script.hex(), "weight": p.weight, "dust_limit": p.dust_limit}
            for p in d.payouts
        ],
        "additional_outputs": [
            {"script": a.script.hex(), "amount": a.amount} for a in d.additional_outputs
        ],
    }


def outputs_to_json(result: PayoutResult) -> dict[str, Any]:
    return {"outputs": [{"script": o.script.hex(), "amount": o.value} for o in result.outputs]}
