"""``payouts jdc``: run the Job Declaration client against a pool's JDS (templates from a node
or from a Template Provider), compute the CoinbaseOutputConstraints a distribution implies, and
serve a small Template Provider from a node (docs/jdc.md).

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
from payouts.node.kernel_chain import REGTEST_BITS
from payouts.tx.hashes import display_hex
from sv2.authority import (
    authority_public_key,
    decode_authority_public_key,
    decode_authority_secret_key,
    encode_authority_public_key,
)
from sv2.jdc import (
    DeclarationRejected,
    DeclaredJob,
    FallbackEvent,
    JobDeclarationClient,
    JobTemplate,
    OutputConstraints,
    build_job_coinbase,
    constraints_for,
    solve,
)
from sv2.jdc.pool_channel import PoolChannel
from sv2.job_coinbase import DEFAULT_EXTRANONCE_SIZE
from sv2.messages.payouts import EXT_NON_CUSTODIAL_PAYOUTS, EXT_PER_JOB_PAYOUTS
from sv2.messages.settlement import EXT_SETTLEMENT_MODES
from sv2.noise import ServerIdentity
from sv2.tdp import SubmittedSolution, TdpError, TemplateDistributionClient, TemplateProvider
from sv2.template import NodeTemplates, TemplateSource

app = typer.Typer(
    help="Job Declaration client: declare jobs with the pool's payout distribution (SV2 JD).",
    no_args_is_help=True,
)


class NodeChoice(StrEnum):
    kernel = "kernel"
    bitcoind = "bitcoind"


class JdModeChoice(StrEnum):
    """sv2-spec §6.1: Full-Template (DeclareMiningJob, DECLARE_TX_DATA) or Coinbase-only (the
    token straight into SetCustomMiningJob, checked by the pool against the distribution)."""

    full_template = "full-template"
    coinbase_only = "coinbase-only"


class ModeChoice(StrEnum):
    coinbase = "coinbase"
    ctv = "ctv"
    musig2 = "musig2"


def _progress(line: str) -> None:
    typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}", err=True)


def parse_server(text: str, option: str = "--server", *, listen: bool = False) -> tuple[str, int]:
    """HOST:PORT; a listening address may use port 0 (the OS picks a free one)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 if listen else 1) <= int(port) < 65536:
        raise ValidationError(f"{option} must be HOST:PORT, got {text!r}", code="invalid-server")
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


class _TpSession:
    """The Template Provider side of ``run --tp``: connected once the JDS's first distribution
    fixed the CoinbaseOutputConstraints (PR #203), told again whenever they change."""

    def __init__(self, host: str, port: int, key: bytes, timeout: float) -> None:
        self.client = TemplateDistributionClient(
            host, port, key, timeout=timeout, progress=_progress
        )
        self.connected = False

    async def on_constraints(self, c: OutputConstraints) -> None:
        if self.connected:
            try:
                self.client.set_constraints(c.message())
            except TdpError as exc:  # the JD connection must not die with the TP's
                _progress(f"cannot send CoinbaseOutputConstraints to the TP: {exc}")


def _mineable(template: JobTemplate, node: Node | None) -> bool:
    """Whether this client grinds the nonce itself: only on regtest (the node says so; a TP's
    template says it through regtest's nBits)."""
    if node is not None:
        return node.network == "regtest"
    return template.bits == REGTEST_BITS


async def _run(
    host: str,
    port: int,
    key: bytes,
    node: Node | None,
    *,
    tp: _TpSession | None,
    once: bool,
    per_job: bool,
    user: str,
    interval: float,
    timeout: float,
    pool: tuple[str, int] | None = None,
    shares: int = 1,
    coinbase_only: bool = False,
) -> dict[str, Any] | None:
    if pool is not None:
        # The Mining connection first: the channel's extranonce prefix + size is how much
        # extranonce every declared job reserves (sv2.jdc.pool_channel).
        channel = PoolChannel(pool[0], pool[1], key, user_identity=user, timeout=timeout,
                              progress=_progress)
        async with channel:
            return await _run_jd(host, port, key, node, tp=tp, once=once, per_job=per_job,
                                 user=user, interval=interval, timeout=timeout,
                                 mining=(channel, shares), coinbase_only=coinbase_only)
    return await _run_jd(host, port, key, node, tp=tp, once=once, per_job=per_job, user=user,
                         interval=interval, timeout=timeout)


async def _run_jd(
    host: str,
    port: int,
    key: bytes,
    node: Node | None,
    *,
    tp: _TpSession | None,
    once: bool,
    per_job: bool,
    user: str,
    interval: float,
    timeout: float,
    mining: tuple[PoolChannel, int] | None = None,
    coinbase_only: bool = False,
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
        on_constraints=tp.on_constraints if tp is not None else None,
        node=node,  # asked whether CTV is enforced before a ctv coinbase (none with --tp)
        extranonce_size=(mining[0].full_extranonce_size if mining is not None
                         else DEFAULT_EXTRANONCE_SIZE),
        coinbase_only=coinbase_only,
    )
    async with client:
        if client.constraints is not None:
            _progress(
                "CoinbaseOutputConstraints for the Template Provider: "
                + json.dumps(client.constraints.to_json())
            )
        source: TemplateSource
        if tp is not None:
            if client.constraints is None:
                raise ValidationError(
                    "--tp needs the pool's payout distribution (extension 0x0003) to compute "
                    "CoinbaseOutputConstraints; the pool sent none",
                    code="no-constraints",
                )
            await tp.client.connect(client.constraints.message())
            tp.connected = True
            source = tp.client
        else:
            assert node is not None
            source = NodeTemplates(node)
        try:
            return await _loop(client, source, node, once=once, per_job=per_job, interval=interval,
                               mining=mining, coinbase_only=coinbase_only)
        finally:
            if tp is not None:
                await tp.client.close()


async def _loop(
    client: JobDeclarationClient,
    source: TemplateSource,
    node: Node | None,
    *,
    once: bool,
    per_job: bool,
    interval: float,
    mining: tuple[PoolChannel, int] | None = None,
    coinbase_only: bool = False,
) -> dict[str, Any] | None:
    last: tuple[bytes, int | None] | None = None
    while True:
        template = await source.template()
        d = client.distribution
        key_now = (template.prev_hash, d.distribution_id if d else None)
        if key_now == last and not once:
            await asyncio.sleep(interval)
            continue
        last = key_now
        _progress(
            f"template: height {template.height}, {len(template.transactions)} txs, "
            f"T={template.revenue} sat"
            + (f" (TP template {template.template_id})" if template.template_id else "")
        )
        try:
            if coinbase_only:
                job = await client.coinbase_only_job(template)
            elif per_job:
                job = await client.declare_job_per_job(template)
            else:
                job = await client.declare_job(template)
        except DeclarationRejected as exc:
            if once:
                return await _solo(source, client, template, exc.event, node)
            await asyncio.sleep(interval)
            continue
        if mining is not None:
            mined = await _mine_on_pool(mining[0], job, template, mining[1],
                                        coinbase_only=coinbase_only)
            if once:
                return mined
            await asyncio.sleep(interval)
            continue
        if not _mineable(template, node):
            # Real hashing happens on the pool's mining connection (SetCustomMiningJob with
            # job.token: sv2.jdc.custom_job builds it); this client only declares.
            if once:
                return {"declared": _job_json(job, template)}
            await asyncio.sleep(interval)
            continue
        sol = solve(template, job.coinbase)
        client.push_solution(job, sol)
        await client.drain()
        result: dict[str, Any] = {
            "declared": _job_json(job, template),
            "block_hash": sol.header.hash_hex,
            "nonce": sol.header.nonce,
            "extranonce": sol.extranonce.hex(),
            "pushed": True,
        }
        if template.template_id is not None:
            # sv2-spec §7.7: the TP MUST propagate it as well (SRI's JDS leaves PushSolution
            # unimplemented, so with SRI this is the path that reaches the network).
            await source.submit_solution(template, sol)
            result["submitted_to_tp"] = template.template_id
        if once:
            # PushSolution and SubmitSolution have no reply (§6.4.9, §7.7): give the JDS and
            # the TP a moment to take the block before the connections close.
            await asyncio.sleep(0.2)
            return result
        _progress(f"block {sol.header.hash_hex} pushed to the JDS")
        await asyncio.sleep(interval)


async def _mine_on_pool(
    pool: PoolChannel, job: DeclaredJob, template: JobTemplate, shares: int, *,
    coinbase_only: bool = False,
) -> dict[str, Any]:
    """SetCustomMiningJob for the declared (or Coinbase-only) job on the pool's Mining
    connection, then CPU-found shares on it until ``shares`` were submitted, and the pool's
    answers."""
    job_id = await pool.set_custom_job(job, coinbase_only=coinbase_only)
    before = pool.channel.accepted + len(pool.channel.errors)
    sent = await pool.mine(job, job_id, shares)
    await pool.wait_answers(before + sent)
    ch = pool.channel
    _progress(f"{sent} shares submitted on job {job_id}: {ch.accepted} accepted in all")
    # A Coinbase-only job was never declared: its token is the allocated one (sv2-spec §6.1).
    return {
        ("coinbase_only_job" if coinbase_only else "declared"): _job_json(job, template),
        "mining": {
            "channel_id": ch.channel_id,
            "job_id": job_id,
            "shares_submitted": sent,
            "accepted": ch.accepted,
            "accepted_difficulty": ch.accepted_difficulty,
            "errors": {str(k): v for k, v in ch.errors.items()},
            "share_hashes": [display_hex(s.block_hash) for s in pool.submitted[-sent:]],
        },
    }


async def _solo(
    source: TemplateSource,
    client: JobDeclarationClient,
    template: JobTemplate,
    ev: FallbackEvent,
    node: Node | None,
) -> dict[str, Any]:
    """The fallback of sv2-spec §6.4.5 on regtest: mine the own template with the coinbase
    already built and hand the block to the own node or Template Provider (solo)."""
    out: dict[str, Any] = {
        "fallback": {"code": ev.code, "details": ev.details, "attempts": ev.attempts}
    }
    if not _mineable(template, node):
        return out
    coinbase = ev.coinbase
    if coinbase is None and client.distribution is not None:
        coinbase = build_job_coinbase(client.distribution, template)
    if coinbase is None:
        return out
    sol = solve(template, coinbase)
    reason = await source.submit_solution(template, sol)
    out["solo"] = {"block_hash": sol.header.hash_hex, "accepted": reason is None, "reason": reason}
    if template.template_id is not None:
        # SubmitSolution has no reply: "accepted" means handed to the TP, which propagates it.
        out["solo"]["via"] = "template-provider"
        await asyncio.sleep(0.2)
    _progress(f"solo block {sol.header.hash_hex}: {'accepted' if reason is None else reason}")
    return out


def _close_node(n: Node | None) -> None:
    if n is not None:
        asyncio.run(n.aclose())


@app.command("run")
def run_cmd(
    server: str = typer.Option(..., "--server", help="The pool's JDS, HOST:PORT."),
    authority_key: str = typer.Option(
        ..., "--authority-key", help="The pool's authority public key (base58check or hex)."
    ),
    node: NodeChoice = typer.Option(
        NodeChoice.kernel,
        "--node",
        help="Where templates come from without --tp: the embedded regtest kernel node, or "
        "bitcoind's getblocktemplate ([node] in --config).",
    ),
    tp: str | None = typer.Option(
        None,
        "--tp",
        help="Take templates from this Template Provider (HOST:PORT, SV2 Template "
        "Distribution: sv2-tp, or `payouts jdc template-provider`) instead of --node. "
        "CoinbaseOutputConstraints are computed from the pool's distribution and sent "
        "first; found blocks go to the TP (SubmitSolution) as well as to the JDS.",
    ),
    tp_authority_key: str | None = typer.Option(
        None,
        "--tp-authority-key",
        help="The Template Provider's authority public key (base58check or hex); its Noise "
        "certificate must be signed by it. Required with --tp.",
    ),
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
    pool: str | None = typer.Option(
        None, "--pool", help="The pool's Mining Protocol endpoint, HOST:PORT: mine each declared "
        "job there (SetCustomMiningJob, CPU-found shares) instead of pushing a block to the JDS."),
    shares: int = typer.Option(1, "--shares", min=1, help="Shares to find per job with --pool."),
    mode: JdModeChoice = typer.Option(
        JdModeChoice.full_template, "--mode",
        help="full-template: declare every job (DeclareMiningJob, DECLARE_TX_DATA). "
        "coinbase-only (needs --pool): no declaration; the token goes straight into "
        "SetCustomMiningJob with the distribution_id TLV and the pool checks the coinbase "
        "against the distribution (sv2-spec §6.1, PR #203)."),
) -> None:
    """Run the JD client against a JDS, with templates from a node or a Template Provider.

    Connects over TCP + Noise (checking the authority key), sets up the JD protocol with
    DECLARE_TX_DATA, negotiates 0x0003 + 0x4003 (or 0x4002 with --per-job), receives the
    payout distribution and declares jobs whose coinbase pays it. With --tp the templates come
    from a Template Provider: the client opens its own Template Distribution connection once
    the distribution tells it how much coinbase space to ask for.
    """
    # Progress lines already say what the client's log would; keep stderr to one line each.
    logging.getLogger("sv2.jdc").addHandler(logging.NullHandler())
    host, port = parse_server(server)
    key = parse_authority_key(authority_key)
    tp_session: _TpSession | None = None
    if tp is not None:
        if tp_authority_key is None:
            raise ValidationError(
                "--tp needs --tp-authority-key (the Template Provider's authority public key)",
                code="missing-tp-authority-key",
            )
        if per_job:
            raise ValidationError(
                "--tp cannot be combined with --per-job: the per-job adapter (0x4002) gives no "
                "distribution to compute CoinbaseOutputConstraints from",
                code="invalid-options",
            )
        tp_host, tp_port = parse_server(tp, "--tp")
        tp_session = _TpSession(tp_host, tp_port, parse_authority_key(tp_authority_key), timeout)
    elif tp_authority_key is not None:
        raise ValidationError("--tp-authority-key needs --tp", code="invalid-options")
    coinbase_only = mode is JdModeChoice.coinbase_only
    if coinbase_only and (pool is None or per_job):
        raise ValidationError(
            "--mode coinbase-only needs --pool (the pool checks the job) and cannot be "
            "combined with --per-job", code="invalid-options")
    n = _make_node(node, config) if tp_session is None else None
    try:
        result = asyncio.run(
            _run(
                host,
                port,
                key,
                n,
                tp=tp_session,
                once=once,
                per_job=per_job,
                user=user,
                interval=interval,
                timeout=timeout,
                pool=None if pool is None else parse_server(pool, "--pool"),
                shares=shares,
                coinbase_only=coinbase_only,
            )
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        _close_node(n)
    if result is not None:
        typer.echo(json.dumps(result, indent=2))
        if "fallback" in result:
            raise typer.Exit(3)


async def _serve_tp(provider: TemplateProvider, authority_key: str) -> None:
    async with provider:
        host, port = provider.address
        typer.echo(json.dumps({"host": host, "port": port, "authority_key": authority_key}))
        _progress(f"Template Provider listening on {host}:{port}")
        await asyncio.Event().wait()


def _solution_line(s: SubmittedSolution) -> None:
    typer.echo(
        json.dumps(
            {
                "block": s.block_hash[::-1].hex(),
                "height": s.height,
                "template_id": s.template_id,
                "accepted": s.accepted,
                "reason": s.reason,
            }
        )
    )


@app.command("template-provider")
def template_provider_cmd(
    listen: str = typer.Option("127.0.0.1:8442", "--listen", help="HOST:PORT to listen on."),
    node: NodeChoice = typer.Option(
        NodeChoice.kernel,
        "--node",
        help="The node templates come from and blocks go to: the embedded regtest kernel node, "
        "or bitcoind ([node] in --config).",
    ),
    authority_secret_key: str | None = typer.Option(
        None,
        "--authority-secret-key",
        help="Secret key (SV2 base58check) that signs the Noise certificate; a fresh one is "
        "made when absent. Clients pass the printed authority_key as --tp-authority-key.",
    ),
    poll_interval: float = typer.Option(
        1.0, "--poll-interval", help="Seconds between reads of the node's template."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML settings file."),
) -> None:
    """Serve SV2 Template Distribution from a node, for miners without sv2-tp.

    Answers CoinbaseOutputConstraints with the node's best template (reserving the coinbase
    space asked for), pushes a new template on every new tip or fee increase, answers
    RequestTransactionData and turns SubmitSolution into a block submitted to the node.
    Prints one JSON line with host, port and authority_key, then one per submitted block.
    """
    import secrets

    logging.getLogger("sv2.tdp").addHandler(logging.NullHandler())
    host, port = parse_server(listen, "--listen", listen=True)
    sk = (
        decode_authority_secret_key(authority_secret_key)
        if authority_secret_key
        else secrets.token_bytes(32)
    )
    n = _make_node(node, config)
    provider = TemplateProvider(
        identity=ServerIdentity.signed_by(sk, validity_s=86400),
        node=n,
        host=host,
        port=port,
        poll_interval=poll_interval,
        on_solution=_solution_line,
    )
    try:
        asyncio.run(_serve_tp(provider, encode_authority_public_key(authority_public_key(sk))))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        _close_node(n)


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
