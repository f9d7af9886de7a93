"""``payouts serve``'s wiring end to end (SQLite and PostgreSQL): the JD server started by
:meth:`payouts.served.ServedPool.start_jds` on a kernel node, a raw JD client declaring a bad job
and the real JD client (sv2.jdc) declaring, solving and pushing a good one over TCP + Noise.
GET /metrics then counts both declarations by reason; the block the node accepted is recorded
with its coinbase, tracked by the settlement runner, walked to paid as the kernel chain grows,
and the miners' payout history points at their outputs in that coinbase."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from payouts.node.kernel import KernelNode
from payouts.node.kernel_chain import KernelChain
from payouts.served import ServedPool
from payouts.service import PoolService
from payouts.settlement.runner import SettlementRunner
from payouts.store.ledger import list_blocks
from sv2.authority import encode_authority_secret_key
from sv2.jdc import JobDeclarationClient, JobTemplate, solve
from sv2.messages import DeclareMiningJobError, SetPayoutDistribution, SetSettlementMode
from tests.api.settle_helpers import add_miners_and_shares, miner_script
from tests.jds.helpers import (
    AUTHORITY_PK,
    AUTHORITY_SK,
    JdClient,
    KernelTestNode,
    build_declaration,
    make_distribution,
    setup_chain,
)

ACCEPTED = 'payouts_declarations_total{reason="ok",result="accepted"}'
REJECTED = 'payouts_declarations_total{reason="invalid-payout-distribution",result="rejected"}'


def sample(text: str, name: str) -> float:
    """A sample's value in a Prometheus text exposition (0 when absent)."""
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_served_jds_feeds_declaration_metrics_and_settles_its_block(
    service: PoolService
) -> None:
    service.settings.jds.enabled = True
    service.settings.jds.listen = "127.0.0.1:0"
    service.settings.jds.authority_secret_key = encode_authority_secret_key(AUTHORITY_SK)
    add_miners_and_shares(service, 3)
    http = TestClient(create_app(service, rate_limit=None))
    before = http.get("/metrics").text

    async def main() -> tuple[str, str, Any]:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelNode(chain)
            runner = SettlementRunner(service, node, interval=3600.0)
            served = ServedPool(service.settings, service=service, node=node, runner=runner)
            jds = await served.start_jds()
            try:
                host, port = jds.address
                dist_id = service.latest_distribution().distribution.distribution_id  # type: ignore[union-attr]
                # A bad job: outputs of another distribution under the current id.
                raw = await JdClient.connect((host, port))
                await raw.setup()
                await raw.expect(SetPayoutDistribution)
                await raw.expect(SetSettlementMode)
                tok = await raw.token()
                raw.send(build_declaration(make_distribution(), chain).message(
                    tok.mining_job_token, 7, dist_id))
                reply = await raw.recv()
                assert isinstance(reply, DeclareMiningJobError), reply
                assert reply.error_code == "invalid-payout-distribution"
                raw.close()
                # A good job, solved and pushed by the real JD client.
                async with JobDeclarationClient(host, port, AUTHORITY_PK, timeout=5.0) as jdc:
                    template = JobTemplate.from_block_template(
                        await KernelTestNode(chain).block_template())
                    job = await jdc.declare_job(template)
                    sol = solve(template, job.coinbase, bytes.fromhex("0011223344556677"))
                    jdc.push_solution(job, sol)
                    for _ in range(500):
                        if list_blocks(service.engine):
                            break
                        await asyncio.sleep(0.01)
                found = jds.found_blocks[0]
                assert chain.tip_hash == found.block_hash
                during = http.get("/metrics").text
                assert [e.kind for e in await runner.poll_once()] == ["confirmed"]
                await node.generate_to_script(99, miner_script(50))
                assert [e.kind for e in await runner.poll_once()] == ["mature", "paid"]
                paid = http.get("/metrics").text
            finally:
                await served.stop()
            return during, paid, found

    during, paid, found = asyncio.run(main())
    assert sample(during, ACCEPTED) - sample(before, ACCEPTED) == 1
    assert sample(during, REJECTED) - sample(before, REJECTED) == 1
    assert sample(during, 'payouts_settlements{state="found"}') == 1
    assert sample(paid, 'payouts_settlements{state="paid"}') == 1
    assert sample(paid, 'payouts_settlements{state="found"}') == 0
    # The JD server stopped: its counters are no longer exported.
    after = http.get("/metrics").text
    assert sample(after, REJECTED) == sample(before, REJECTED)
    # The block paid in its coinbase: every miner's history names its output there.
    cb = found.coinbase
    for i in range(3):
        (b,) = http.get(f"/v1/miners/m{i}/payouts").json()["blocks"]
        assert b["status"] == "paid" and b["payout_txid"] == cb.txid[::-1].hex()
        out = cb.outputs[b["payout_vout"]]
        assert (out.value, out.script) == (b["paid_sats"], miner_script(i))
