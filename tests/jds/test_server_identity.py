"""A JD server's identity (``[jds] server_id``) is bound into its tokens (issue 15): a token of
another JD server is refused with ``invalid-mining-job-token`` and a detail naming both, by
DeclareMiningJob and by the pool's SetCustomMiningJob check; the per-address request limits
(:class:`sv2.jds.limits.RequestLimits`) answer a declaration over the limit with
``rate-limited`` (its token kept) and hold an allocation until the limit lets it through.
The same over two ``payouts serve`` processes: tests/api/test_serve_two_frontends.py."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payouts.cli import app
from payouts.node.kernel_chain import KernelChain
from payouts.ratelimit import TokenBucketLimiter
from payouts.settings import JdsSettings, Settings
from sv2.custom_job import CustomJobChecker
from sv2.jds import JobDeclarationServer
from sv2.jds.limits import RequestLimits
from sv2.jds.settings import server_arguments
from sv2.jds.tokens import TokenBook, server_tag
from sv2.job_errors import INVALID_TOKEN, JobRejected
from sv2.messages import (
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetPayoutDistribution,
    SetSettlementMode,
)
from tests.jds.helpers import (
    IDENTITY,
    JdClient,
    KernelTestNode,
    build_declaration,
    make_distribution,
    setup_chain,
    start_server,
)


def test_every_token_carries_its_servers_tag_and_a_counter() -> None:
    book = TokenBook(60.0, server_id="eu-1/0.0.0.0:34264")
    tag = server_tag("eu-1/0.0.0.0:34264")
    assert tag != server_tag("eu-2/0.0.0.0:34264") and len(tag) == 4
    t1, t2 = (book.issue(1, "allocated", 0.0).token for _ in range(2))
    assert len(t1) == len(t2) == 16 and t1[:4] == t2[:4] == tag == book.tag
    assert int.from_bytes(t1[4:10], "little") + 1 == int.from_bytes(t2[4:10], "little")


def test_a_token_of_another_server_is_refused_naming_both() -> None:
    a, b = TokenBook(60.0, server_id="a"), TokenBook(60.0, server_id="b")
    tok = a.issue(1, "allocated", 0.0).token
    with pytest.raises(JobRejected) as exc:
        b.consume(tok, 1, "allocated", 1.0)
    assert exc.value.code == INVALID_TOKEN
    assert exc.value.details == (
        f"mining job token not issued by this JD server (token tag {a.tag.hex()}; this is JD "
        f"server 'b', tag {b.tag.hex()}): a token is valid only on the JD server that "
        "allocated it")
    # One of its own it does not know (used, expired, mistyped): the plain answer.
    with pytest.raises(JobRejected, match="unknown mining job token"):
        b.consume(b.tag + bytes(12), 1, "allocated", 1.0)
    assert a.consume(tok, 1, "allocated", 1.0).token == tok  # on A it is good


def test_server_id_default_setting_config_show(tmp_path: Path) -> None:
    jds = JdsSettings(listen="0.0.0.0:34264")
    assert jds.effective_server_id == f"{socket.gethostname()}/0.0.0.0:34264"
    assert JdsSettings(server_id="eu-1").effective_server_id == "eu-1"
    settings = Settings(data_dir=tmp_path, jds={"server_id": "eu-1"})
    args = server_arguments(settings, (0x0003,), identity=IDENTITY, mode=None)
    assert args["server_id"] == "eu-1"
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\n[jds]\nlisten = "127.0.0.1:4000"\n')
    out = CliRunner().invoke(app, ["config", "show", "--config", str(cfg)])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)["jds"]["server_id"]
    assert shown == f"{socket.gethostname()}/127.0.0.1:4000"


def test_set_custom_mining_job_with_another_servers_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job declared on JD server A, committed to through B's SetCustomMiningJob check: refused
    (and logged on B); through A's, the token passes (the accepted path with a whole matching
    job: tests/jdc/test_custom_job.py)."""

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelTestNode(chain)
            dist = make_distribution()
            srv_a = await start_server(node, dist, server_id="pool-a")
            srv_b = JobDeclarationServer(identity=IDENTITY, node=node,  # type: ignore[arg-type]
                                         distribution_source=dist, server_id="pool-b")
            srv_b.publish(dist)
            c = await JdClient.connect(srv_a.address)
            try:
                await c.setup()
                await c.expect(SetPayoutDistribution)
                await c.expect(SetSettlementMode)
                tok = (await c.token()).mining_job_token
                c.send(build_declaration(dist, chain).message(tok))
                ok = await c.expect(DeclareMiningJobSuccess)
                job = srv_a.declared_job(ok.new_mining_job_token)
                assert job is not None
                # Only the token matters here: it is the check's first step.
                msg = SetCustomMiningJob(7, 3, ok.new_mining_job_token, 0x20000000, bytes(32),
                                         0, 0, 2, b"", 0, b"", 0, ())
                with caplog.at_level(logging.WARNING, "sv2.jds.server"):
                    assert CustomJobChecker(srv_b).check(msg) == SetCustomMiningJobError(
                        7, 3, INVALID_TOKEN)
                assert "JDS pool-b: refused a token of another JD server" in caplog.text
                assert f"token tag {server_tag('pool-a').hex()}" in caplog.text
                # On A the token names its job: the check goes on to the job's fields.
                assert srv_a.token_refusal(ok.new_mining_job_token) is None
                assert CustomJobChecker(srv_a).check(msg).error_code != INVALID_TOKEN
            finally:
                c.close()
                await srv_a.stop()

    asyncio.run(main())


def test_request_limits_refuse_declarations_and_hold_allocations() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            dist = make_distribution()
            limits = RequestLimits(tokens=TokenBucketLimiter(5.0, 1),  # one every 0.2 s
                                   declarations=TokenBucketLimiter(0.01, 1))
            srv = await start_server(KernelTestNode(chain), dist, request_limits=limits)
            c = await JdClient.connect(srv.address)
            try:
                await c.setup()
                await c.expect(SetPayoutDistribution)
                await c.expect(SetSettlementMode)
                t0 = time.monotonic()
                first = (await c.token(1)).mining_job_token
                second = (await c.token(2)).mining_job_token
                assert time.monotonic() - t0 >= 0.15  # the second waited for the limit
                assert srv.stats["tokens-delayed"] >= 1
                decl = build_declaration(dist, chain)
                c.send(decl.message(first, 10))
                assert isinstance(await c.expect(DeclareMiningJobSuccess), DeclareMiningJobSuccess)
                c.send(decl.message(second, 11))
                err = await c.expect(DeclareMiningJobError)
                assert (err.request_id, err.error_code) == (11, "rate-limited")
                assert bytes(err.error_details).startswith(
                    b"over 0.01 declarations/s from this address; retry in ")
                assert srv.stats["declare-rejected:rate-limited"] == 1
                # Nothing consumed: the token is still there for a later declaration.
                assert srv.tokens.get(second) is not None
            finally:
                c.close()
                await srv.stop()

    asyncio.run(main())
