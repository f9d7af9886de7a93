"""``payouts ctv``: BIP-119 template hashes and the ``ctv`` settlement's fan-out tree."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from payouts.distribution.jsonio import distribution_from_json
from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.settlement.ctv import DEFAULT_ARITY, CtvExit, CtvFanout, CtvParams, build_ctv_fanout
from payouts.settlement.modes import SettlementMode
from payouts.tx.ctv import standard_template_hash
from payouts.tx.hashes import from_display_hex
from payouts.tx.transaction import OutPoint, Tx
from sv2.domain_messages import mode_to_message

app = typer.Typer(
    help=(
        "BIP-119 CTV: template hashes, the fan-out tree of the ctv settlement mode, and a "
        "miner's exit path. hash and tree are offline calculators; exit-path asks the pool and "
        "can broadcast to your own node."
    ),
    no_args_is_help=True,
)


class FormChoice(StrEnum):
    bare = "bare"
    taproot = "taproot"


# Help texts are single-line paragraphs: the terminal wraps them, not the source.
HASH_HELP = (
    "Print the BIP-119 StandardTemplateHash of TXHEX for --input-index, in hex.\n\n"
    "That is the 32 bytes a '<hash> OP_CHECKTEMPLATEVERIFY' script must push for this tx to "
    "spend it at that input (raw SHA256 output, no byte reversal, as in the BIP's vectors)."
)
TREE_HELP = (
    "Print, as JSON, the ctv settlement of a distribution for revenue T.\n\n"
    "Output: coinbase_outputs (the CTV commitment output, then the additional outputs), txs in "
    "broadcast order (parents first) with txid, hex, vsize and level, the pool payout and each "
    "kept payee with its amount and exit path (the txids from the root down to the tx paying "
    "it, and the vout there), total_vbytes of the tree, and the SetSettlementMode frame "
    "(extension 0x4003) announcing these parameters for the file's distribution_id.\n\n"
    "Amounts are the PR #203 math applied to T minus the cost of the unpruned leaves' tree "
    "(docs/extensions/0x4003-settlement-modes.md §5). "
    "CTV does not commit to outpoints, so txids assume --funding (a placeholder until the block "
    "is found) while every template hash is final.\n\n"
    "This is an offline calculator and does not check CTV activation. Settling on a chain "
    "requires CTV (BIP-119) to be active there: without it both output forms are "
    "anyone-can-spend."
)


@app.command("hash", help=HASH_HELP)
def hash_cmd(
    txhex: str = typer.Argument(..., help="Raw transaction in hex ('-' reads it from stdin)."),
    input_index: int = typer.Option(
        0, "--input-index", "-i", help="Index of the input executing OP_CHECKTEMPLATEVERIFY."
    ),
    any_index: bool = typer.Option(
        False,
        "--any-index",
        help="Allow an index beyond the tx's inputs (any uint32, as the BIP-119 vectors use).",
    ),
) -> None:
    text = typer.get_text_stream("stdin").read() if txhex == "-" else txhex
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise ValidationError("TXHEX is not valid hex", code="invalid-hex") from None
    tx = Tx.parse(raw)  # TxDecodeError (code tx-decode-error) on malformed bytes
    if not 0 <= input_index <= 0xFFFFFFFF:
        raise ValidationError(
            f"--input-index {input_index} is not a uint32", code="invalid-input-index"
        )
    if input_index >= len(tx.inputs) and not any_index:
        raise ValidationError(
            f"--input-index {input_index} but the tx has {len(tx.inputs)} input(s) "
            "(pass --any-index to hash it anyway)",
            code="invalid-input-index",
        )
    typer.echo(standard_template_hash(tx, input_index).hex())


# The distribution file and revenue of the offline calculators (payouts ctv tree, payouts
# musig2 output): one definition, so both read the same input the same way.
DISTRIBUTION_FILE = typer.Argument(
    ..., help="Distribution JSON ('-' for stdin): pool_payout, payouts, additional_outputs."
)
REVENUE = typer.Option(
    ..., "--revenue", "-T", help="Template revenue T in satoshis (coinbase_tx_value_remaining)."
)
FUNDING = typer.Option(
    "",
    "--funding",
    help=(
        "Coinbase TXID:VOUT of the settlement output, once known (default 00..00:0); CTV does "
        "not commit to it, so only txids change."
    ),
)


@app.command("tree", help=TREE_HELP)
def tree_cmd(
    file: Path = DISTRIBUTION_FILE,
    revenue: int = REVENUE,
    arity: int = typer.Option(
        0,
        "--arity",
        "-k",
        help=(
            "Outputs per tree tx. 0: flat when the flat tx's real size fits (10,000 vB when it "
            f"must be TRUC, 400,000 WU otherwise), a {DEFAULT_ARITY}-ary tree beyond."
        ),
    ),
    form: FormChoice = typer.Option(
        FormChoice.bare,
        "--form",
        help=(
            "Commitment outputs: 'bare' <32B> OP_CTV, or 'taproot' P2TR with the BIP-341 NUMS "
            "internal key and one <32B> OP_CTV leaf (+18 vB per spend; a standard P2TR output)."
        ),
    ),
    anchor: bool = typer.Option(
        True,
        "--anchor/--no-anchor",
        help="Add a P2A anchor to every tx so anyone can CPFP it (0 sat at fee rate 0, else 240).",
    ),
    fee_rate: int = typer.Option(
        0,
        "--fee-rate",
        "-r",
        help="Pre-committed fee rate in sat/vB paid by each tx (0: fees come by anchor CPFP).",
    ),
    version: int = typer.Option(
        0, "--tx-version", help="nVersion of the tree txs: 2 or 3; 0 picks 3 (TRUC) if it fits."
    ),
    sequence: str = typer.Option(
        "0xffffffff",
        "--sequence",
        help=(
            "nSequence of every tree tx's input (decimal or 0x hex; committed by CTV). BIP-68 "
            "applies when bit 31 is clear: each level then waits that relative lock."
        ),
    ),
    locktime: str = typer.Option(
        "0",
        "--locktime",
        help=(
            "nLockTime of every tree tx (decimal or 0x hex; committed by CTV). Enforced only "
            "when --sequence is not 0xffffffff."
        ),
    ),
    funding: str = FUNDING,
) -> None:
    dist = load_distribution(file)
    params = CtvParams(
        arity=arity or None,
        form=form.value,
        anchor=anchor,
        fee_rate=fee_rate,
        version=version or None,
        sequence=_uint32(sequence, "--sequence"),
        locktime=_uint32(locktime, "--locktime"),
    )
    fanout = build_ctv_fanout(dist, revenue, params, funding=parse_outpoint(funding))
    doc = fanout_to_json(fanout)
    doc["set_settlement_mode"] = (
        mode_to_message(SettlementMode("ctv", params), dist.distribution_id).encode_frame().hex()
    )
    typer.echo(json.dumps(doc, indent=2))


def _uint32(text: str, what: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ValidationError(
            f"{what} must be an integer (decimal or 0x hex), got {text!r}",
            code="ctv-invalid-params",
        ) from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValidationError(f"{what} {value} is not a uint32", code="ctv-invalid-params")
    return value


def load_distribution(file: Path) -> Distribution:
    """The distribution JSON ``payouts distribution amounts`` reads, from ``file`` ('-': stdin);
    errors ``bad-file``, ``invalid-json`` or the distribution's own."""
    text = typer.get_text_stream("stdin").read() if str(file) == "-" else _read(file)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{file} is not valid JSON: {exc}", code="invalid-json") from None
    return distribution_from_json(doc)


def fanout_to_json(f: CtvFanout) -> dict[str, Any]:
    """The JSON form printed by ``payouts ctv tree`` (amounts in satoshis, txids display hex)."""
    txids = [t.tx.txid_hex for t in f.txs]

    def leaf(e: CtvExit) -> dict[str, Any]:
        return {
            "script": e.output.script.hex(),
            "amount": e.output.value,
            "path": [txids[i] for i in e.path],
            "vout": e.vout,
            "exit_vbytes": f.exit_vbytes(e),
        }

    return {
        "settlement": "ctv",
        "form": f.form,
        "arity": f.arity,
        "tx_version": f.version,
        "fee_rate": f.fee_rate,
        "anchor_value": f.anchor_value,
        "sequence": f.txs[0].tx.inputs[0].sequence,
        "locktime": f.txs[0].tx.locktime,
        "funding": f"{f.funding.txid[::-1].hex()}:{f.funding.n}",
        "coinbase_outputs": [
            {"script": o.script.hex(), "amount": o.value} for o in f.coinbase_outputs
        ],
        "txs": [
            {
                "txid": txids[i],
                "hex": t.tx.serialize().hex(),
                "vsize": t.tx.vsize,
                "level": t.level,
                "fee": t.fee,
                "template_hash": t.template_hash.hex(),
            }
            for i, t in enumerate(f.txs)
        ],
        "pool": leaf(f.pool),
        "payees": [{"index": e.payee, **leaf(e)} for e in f.payees],
        "pruned": list(f.payout.pruned),
        "fees": f.fees,
        "anchors": f.anchors_total,
        "reserved": f.reserved,
        "depth": f.depth,
        "total_vbytes": f.total_vbytes,
    }


def parse_outpoint(text: str) -> OutPoint | None:
    """``--funding TXID:VOUT`` (display-order txid); empty: None (the placeholder)."""
    if not text:
        return None
    txid, sep, vout = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return OutPoint(from_display_hex(txid), int(vout))
    except ValueError:
        raise ValidationError(
            f"--funding must be TXID:VOUT (64 hex digits, a uint32), got {text!r}",
            code="invalid-outpoint",
        ) from None


def _read(file: Path) -> str:
    try:
        return file.read_text()
    except OSError as exc:
        raise ValidationError(f"cannot read {file}: {exc.strerror}", code="bad-file") from None
    except UnicodeDecodeError:
        raise ValidationError(f"{file} is not UTF-8 text", code="bad-file") from None


EXIT_PATH_HELP = (
    "Fetch your CTV exit path for a block from the pool, check it, print or broadcast it.\n\n"
    "The pool's public GET /v1/miners/ACCOUNT/payouts/BLOCK/exit-path lists the fan-out "
    "transactions from the coinbase's commitment output down to the one paying you. They need "
    "no signature (BIP-119 commits to each): anyone may broadcast them, parents first. Before "
    "anything is sent, each is checked offline: it spends its predecessor (the first, the "
    "coinbase's commitment output), it is the transaction its parent's CTV output commits to, "
    "and the last pays the amount and script reported (and --address, if given).\n\n"
    "Without --broadcast the raw transactions are printed, one per line, in order (for "
    "bitcoin-cli sendrawtransaction). With --broadcast they go to your own node ([node] of "
    "--config, or --rpc-url with the cookie or a user and password); one already known or "
    "confirmed is skipped."
)


@app.command("exit-path", help=EXIT_PATH_HELP)
def exit_path_cmd(
    account: str = typer.Argument(..., help="Your account (your Stratum user identity)."),
    block: int = typer.Argument(..., help="The block's id (from /v1/miners/ACCOUNT/payouts)."),
    pool: str = typer.Option(..., "--pool", help="The pool's API, e.g. http://pool:8080."),
    address: str = typer.Option("", "--address", help="Check that the exit pays this address."),
    network: str = typer.Option("regtest", "--network", help="The chain of --address."),
    broadcast: bool = typer.Option(False, "--broadcast", help="Send the transactions to your "
                                   "node instead of printing them."),
    config: Path | None = typer.Option(None, "--config", "-c",
                                       help="Settings whose [node] is your node."),
    rpc_url: str = typer.Option("", "--rpc-url", help="Your bitcoind's RPC URL."),
    cookie_file: Path | None = typer.Option(None, "--cookie-file",
                                            help="Your bitcoind's .cookie file."),
) -> None:
    import asyncio

    import httpx

    from payouts.cli.ctv_exit import check_exit_path
    from payouts.tx.address import address_to_script

    url = f"{pool.rstrip('/')}/v1/miners/{account}/payouts/{block}/exit-path"
    try:
        r = httpx.get(url, timeout=30)
    except httpx.HTTPError as e:
        raise ValidationError(f"cannot reach the pool at {pool}: {e}",
                              code="pool-unreachable") from None
    if r.status_code != 200:
        body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
        raise ValidationError(f"the pool answered {r.status_code} "
                              f"{body.get('code', '')}: {body.get('detail', r.text[:200])}",
                              code=str(body.get("code") or "pool-refused"))
    doc = r.json()
    script = address_to_script(address, network) if address else None
    checked = check_exit_path(doc, script)
    for note in checked.notes:
        typer.echo(f"# {note}", err=True)
    typer.echo(f"# {len(checked.txs)} transactions; output {doc['output']['vout']} of "
               f"{doc['output']['txid']} pays {doc['output']['amount']} sat", err=True)
    if not broadcast:
        for tx in checked.txs:
            typer.echo(tx.serialize().hex())
        return
    results = asyncio.run(_broadcast(checked.txs, config, rpc_url, cookie_file))
    typer.echo(json.dumps(results, indent=2))


async def _broadcast(txs: Any, config: Path | None, rpc_url: str,
                     cookie_file: Path | None) -> list[dict[str, str]]:
    """Send each tx to the miner's node, parents first; one the node has is skipped."""
    from payouts.node.factory import make_node
    from payouts.node.interface import NodeError
    from payouts.settings import load_settings

    overrides: dict[str, Any] = {"backend": "bitcoind"}
    if rpc_url:
        overrides["rpc_url"] = rpc_url
    if cookie_file is not None:
        overrides["cookie_file"] = cookie_file
    settings = load_settings(config)
    settings.node = settings.node.model_copy(update=overrides)
    node = make_node(settings)
    out = []
    try:
        for tx in txs:
            txid = tx.txid_hex
            try:
                await node.send_raw_transaction(tx.serialize())
                out.append({"txid": txid, "result": "accepted"})
            except NodeError as e:
                known = any(w in e.reason for w in ("already", "known", "missingorspent"))
                out.append({"txid": txid, "result": "already-known" if known else "rejected",
                            "reason": e.reason})
                if not known:
                    break
    finally:
        await node.aclose()
    return out
