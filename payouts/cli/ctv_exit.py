"""A miner's CTV exit path, fetched from the pool and checked before anything is broadcast
(``payouts ctv exit-path``).

``GET /v1/miners/{account}/payouts/{block_id}/exit-path`` (public) lists the fan-out
transactions from the coinbase's commitment output down to the one paying the miner. Anyone may
broadcast them: BIP-119 commits each spend to its exact transaction, so no signature is needed,
and the pool cannot change them once the block is mined. The pool's answer is still checked
here, offline, before a byte goes to a node:

- the first transaction spends the coinbase's commitment output (``funding_txid:funding_vout``)
  and each next one spends its predecessor;
- where a spent output is a bare CTV commitment (``<32 bytes> OP_CHECKTEMPLATEVERIFY``), it
  commits to the standard template hash of exactly the transaction that spends it (BIP-119);
  a taproot commitment (``--form taproot`` pools) is left to the node, which enforces it;
- the last transaction's output ``vout`` has the amount and script the pool reports, and, with
  ``--address``, pays that address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from payouts.errors import ValidationError
from payouts.tx.ctv import parse_ctv_script, standard_template_hash
from payouts.tx.hashes import display_hex, from_display_hex
from payouts.tx.transaction import Tx


class ExitPathError(ValidationError):
    code = "exit-path-mismatch"


@dataclass(frozen=True, slots=True)
class CheckedPath:
    txs: tuple[Tx, ...]
    notes: tuple[str, ...]


def check_exit_path(doc: dict[str, Any], payout_script: bytes | None = None) -> CheckedPath:
    """Check the API's exit path document (module docstring); raise :class:`ExitPathError`."""
    try:
        txs = tuple(Tx.parse(bytes.fromhex(t["raw"])) for t in doc["transactions"])
        funding = (from_display_hex(doc["funding_txid"]), int(doc["funding_vout"]))
        out = doc["output"]
    except (KeyError, TypeError, ValueError) as e:
        raise ExitPathError(f"the pool's answer is not an exit path: {e}") from None
    if not txs:
        raise ExitPathError("the exit path has no transaction")
    notes = []
    previous: Tx | None = None
    for level, tx in enumerate(txs):
        if len(tx.inputs) != 1:
            raise ExitPathError(f"transaction {level} has {len(tx.inputs)} inputs, not one")
        prevout = tx.inputs[0].prevout
        if previous is not None:
            spent = next((n for n, _ in enumerate(previous.outputs)
                          if prevout.txid == previous.txid and prevout.n == n), None)
            if spent is None:
                raise ExitPathError(f"transaction {level} does not spend transaction "
                                    f"{level - 1}")
            committed = parse_ctv_script(previous.outputs[spent].script)
            if committed is None:
                notes.append(f"level {level}: taproot commitment, enforced by the node")
            elif committed != standard_template_hash(tx, 0):
                raise ExitPathError(f"transaction {level} is not the one its parent's output "
                                    "commits to (BIP-119 template hash differs)")
            else:
                notes.append(f"level {level}: CTV commitment matches")
        elif (prevout.txid, prevout.n) != funding:
            raise ExitPathError("the first transaction does not spend the coinbase's "
                                f"commitment output {doc['funding_txid']}:{funding[1]}")
        previous = tx
    last = txs[-1]
    vout = int(out["vout"])
    if not 0 <= vout < len(last.outputs):
        raise ExitPathError(f"the last transaction has no output {vout}")
    paid = last.outputs[vout]
    if paid.value != int(out["amount"]) or paid.script.hex() != out["script"]:
        raise ExitPathError("the miner's output differs from what the pool reports")
    if payout_script is not None and paid.script != payout_script:
        raise ExitPathError("the miner's output does not pay the given address")
    if display_hex(last.txid) != out["txid"]:
        raise ExitPathError("the last transaction's txid differs from the reported one")
    return CheckedPath(txs, tuple(notes))


__all__ = ["CheckedPath", "ExitPathError", "check_exit_path"]
