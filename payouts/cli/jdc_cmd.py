"""``payouts jdc``: run the Job Declaration client against a pool's JDS, and compute the
CoinbaseOutputConstraints a distribution implies (docs/jdc.md).

Progress lines go to stderr; results (``run --once``, ``constraints``) are JSON on stdout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from payouts.distribution.jsonio import distribution_from_json
from payouts.errors import ConfigError, ValidationError
from payouts.node.interface import Node
from sv2.authority import decode_authority_public_key
from sv2.jdc import (
    DeclarationRejected,
    DeclaredJob,
    FallbackEvent,
    JobDeclarationClient,
    JobTemplate,
    build_job_coinbase,
    constraints_for,
    solve,
)
from sv2.messages.payouts import EXT_NON_CUSTODIAL_PAYOUTS, EXT_PER_JOB_PAYOUTS
from sv2.messages.settlement import EXT_SETTLEMENT_MODES

app = typer.Typer(
    help="Job Declaration client: declare jobs with the pool's payout distribution (SV2 JD).",
    no_args_is_help=True,
)


class NodeChoice(StrEnum):
    kernel = "kernel"
    bitcoind = "bitcoind"


class ModeChoice(StrEnum):
    coinbase = "coinbase"
    ctv = "ctv"
    musig2 = "musig2"


def _progress(line: str) -> None:
    typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}", err=True)


def parse_server(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(f"--server must be HOST:PORT, got {text!r}", code="invalid-server")
    return host.strip("[]"), int(port)


def parse_authority_key(text: str) -> bytes:
    """The pool's authority public key: SV2's base58check form (sv2-spec §4.7.1), or 64 hex
    digits of the x-only key."""
    t = text.strip()
    if len(t) == 64:
        try:
            return bytes.fromhex(t)
        except ValueError:
            pass
    return decode_authority_public_key(t)


def _make_node(backend: NodeChoice, config: Path | None) -> Node:
    from payouts.node.factory import make_node
    from payouts.settings import load_settings

    settings = load_settings(config)
    node_settings = settings.node.model_copy(update={"backend": backend.value})
    return make_node(settings.model_copy(update={"node": node_settings}))


def _job_json(job: DeclaredJob, template: JobTemplate) -> dict[str, Any]:
    return {
        "request_id": job.request_id,
        "token": job.token.hex(),
        "mode": job.mode,
        "distribution_id": job.distribution_id,
        "attempts": job.attempts,
        "height": template.height,
        "revenue": template.revenue,
        "transactions": len(template.transactions),
        "payout_outputs": [
            {"script": o.script.hex(), "amount": o.value} for o in job.payout_outputs
        ],
    }


async def _run(
    host: str,
    port: int,
    key: bytes,
    node: Node,
    *,
    once: bool,
    per_job: bool,
    user: str,
    interval: float,
    timeout: float,
) -> dict[str, Any] | None:
    extensions = (
        (EXT_PER_JOB_PAYOUTS,) if per_job else (EXT_NON_CUSTODIAL_PAYOUTS, EXT_SETTLEMENT_MODES)
    )
    fallbacks: list[FallbackEvent] = []
    client = JobDeclarationClient(
        host,
        port,
        key,
        extensions=extensions,
        user_identifier=user,
        timeout=timeout,
        progress=_progress,
        on_fallback=fallbacks.append,
    )
    async with client:
        if client.constraints is not None:
            _progress(
                "CoinbaseOutputConstraints for the Template Provider: "
                + json.dumps(client.constraints.to_json())
            )
        last: tuple[bytes, int | None] | None = None
        while True:
            template = JobTemplate.from_block_template(await node.block_template())
            d = client.distribution
            key_now = (template.prev_hash, d.distribution_id if d else None)
            if key_now == last and not once:
                await asyncio.sleep(interval)
                continue
            last = key_now
            _progress(
                f"template: height {template.height}, {len(template.transactions)} txs, "
                f"T={template.revenue} sat"
            )
            try:
                job = (
                    await client.declare_job_per_job(template)
                    if per_job
                    else await client.declare_job(template)
                )
            except DeclarationRejected as exc:
                if once:
                    return await _solo(node, client, template, exc.event)
                await asyncio.sleep(interval)
                continue
            if node.network != "regtest":
                # Real hashing happens on the pool's mining connection (SetCustomMiningJob with
                # job.token); this client only declares.
                if once:
                    return {"declared": _job_json(job, template)}
                await asyncio.sleep(interval)
                continue
            sol = solve(template, job.coinbase)
            client.push_solution(job, sol)
            await client.drain()
            result = {
                "declared": _job_json(job, template),
                "block_hash": sol.header.hash_hex,
                "nonce": sol.header.nonce,
                "extranonce": sol.extranonce.hex(),
                "pushed": True,
            }
            if once:
                # PushSolution has no reply (§6.4.9): give the JDS a moment to take the block
                # before the connection closes.
                await asyncio.sleep(0.2)
                return result
            _progress(f"block {sol.header.hash_hex} pushed to the JDS")
            await asyncio.sleep(interval)


async def _solo(
    node: Node, client: JobDeclarationClient, template: JobTemplate, ev: FallbackEvent
) -> dict[str, Any]:
    """The fallback of sv2-spec §6.4.5 on regtest: mine the own template with the coinbase
    already built and submit it to the own node (solo)."""
    out: dict[str, Any] = {
        "fallback": {"code": ev.code, "details": ev.details, "attempts": ev.attempts}
    }
    if node.network != "regtest":
        return out
    coinbase = ev.coinbase
    if coinbase is None and client.distribution is not None:
        coinbase = build_job_coinbase(client.distribution, template)
    if coinbase is None:
        return out
    sol = solve(template, coinbase)
    reason = await node.submit_block(sol.block.serialize())
    out["solo"] = {"block_hash": sol.header.hash_hex, "accepted": reason is None, "reason": reason}
    _progress(f"solo block {sol.header.hash_hex}: {'accepted' if reason is None else reason}")
    return out


@app.command("run")
def run_cmd(
    server: str = typer.Option(..., "--server", help="The pool's JDS, HOST:PORT."),
    authority_key: str = typer.Option(
        ..., "--authority-key", help="The pool's authority public key (base58check or hex)."
    ),
    node: NodeChoice = typer.Option(NodeChoice.kernel, "--node", help="Where templates come from."),
    once: bool = typer.Option(
        False, "--once", help="Declare one job, mine it (regtest), push it, print JSON, exit."
    ),
    per_job: bool = typer.Option(
        False, "--per-job", help="Use the per-job adapter (0x4002 RequestPayoutOutputs)."
    ),
    user: str = typer.Option("payouts-jdc", "--user", help="user_identifier for tokens."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between template polls."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for each answer."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML settings file."),
) -> None:
    """Run the JD client against a JDS with templates from a node.

    Connects over TCP + Noise (checking the authority key), sets up the JD protocol with
    DECLARE_TX_DATA, negotiates 0x0003 + 0x4003 (or 0x4002 with --per-job), receives the
    payout distribution and declares jobs whose coinbase pays it.
    """
    # Progress lines already say what the client's log would; keep stderr to one line each.
    logging.getLogger("sv2.jdc").addHandler(logging.NullHandler())
    host, port = parse_server(server)
    key = parse_authority_key(authority_key)
    n = _make_node(node, config)
    try:
        result = asyncio.run(
            _run(
                host,
                port,
                key,
                n,
                once=once,
                per_job=per_job,
                user=user,
                interval=interval,
                timeout=timeout,
            )
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        close = getattr(n, "close", None)
        if callable(close):
            res = close()
            if asyncio.iscoroutine(res):
                asyncio.run(res)
    if result is not None:
        typer.echo(json.dumps(result, indent=2))
        if "fallback" in result:
            raise typer.Exit(3)


@app.command("constraints")
def constraints_cmd(
    file: Path = typer.Argument(..., help="Distribution JSON ('-' reads stdin)."),
    mode: ModeChoice = typer.Option(
        ModeChoice.coinbase, "--mode", help="Settlement mode the pool announced (0x4003)."
    ),
) -> None:
    """Print the CoinbaseOutputConstraints a distribution implies (PR #203: size = Σ
    serialized output sizes incl. the pool output; sigops = their sigop cost)."""
    text = sys.stdin.read() if str(file) == "-" else _read(file)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{file} is not JSON: {exc}", code="invalid-json") from None
    d = distribution_from_json(doc)
    typer.echo(json.dumps(constraints_for(d, mode.value).to_json(), indent=2))


def _read(file: Path) -> str:
    try:
        return file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}", code="unreadable-file") from None
