"""Live-server fuzz, bounded: the driver of ``benchmarks/fuzz_server.py`` throws a few thousand
generated and mutated frames (garbage acts, encrypted mutated JD messages, forged lengths,
truncations) at an in-process JD server on the kernel test node. No connection may hang or end
in the server's internal-error path, the connection count returns to 0, and a well-behaved
client then declares and gets its block accepted by the kernel. The 100,000-frame run against
a server process is ``python -m benchmarks.fuzz_server`` (``make fuzz``)."""

from __future__ import annotations

import asyncio

from benchmarks.fuzz_server import Target, good_client, refresh, run_fuzz, tip_of, wait_drained
from benchmarks.jds_server_process import server_stats
from payouts.node.kernel_chain import KernelChain
from sv2.jds import JdsLimits
from tests.jds.helpers import (
    AUTHORITY_PK,
    OP_TRUE_WSH,
    KernelTestNode,
    fee_tx,
    make_distribution,
    setup_chain,
    start_server,
)

FRAMES = 2_000


def test_live_server_survives_fuzzed_frames() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            chain.mine_empty(5, OP_TRUE_WSH)  # coinbases 1..5 mature for the next block
            node = KernelTestNode(chain)
            for h in range(1, 6):
                node.add_mempool(fee_tx(chain, h, 1_000 + h))
            dist = make_distribution()
            idle = 2.0
            # No per-address limits: every fuzz connection comes from 127.0.0.1, and the garbage
            # ones would evict valid sessions mid-handshake (tests/jds/test_lockout.py).
            limits = JdsLimits(
                handshake_timeout=1.0,
                idle_timeout=idle,
                max_connections_per_address=None,
                max_pending_per_address=None,
                connects_per_address_per_sec=None,
            )
            srv = await start_server(node, dist, limits=limits)
            try:

                async def stats() -> dict[str, object]:
                    return await server_stats(srv, node)  # type: ignore[arg-type]

                st = await stats()
                host, port = srv.address
                target = Target(host, port, AUTHORITY_PK, dist, [], tip_of(st), idle_timeout=idle)
                refresh(target, st)
                assert len(target.mempool) == 5
                tally = await run_fuzz(target, FRAMES, 20_260_101, concurrency=16, stats=stats)
                assert tally.findings == []
                assert tally.frames >= FRAMES
                # the fuzz reached past the handshake and the decoders into validation
                assert srv.stats["declare-accepted"] > 0
                assert srv.stats["unknown-messages"] > 0
                assert any(k.startswith("declare-rejected:") for k in srv.stats)
                end = await wait_drained(stats, idle + 5)
                assert end["connections"] == 0
                assert len(srv.tokens) == 0  # every connection's tokens went with it
                assert "internal-errors" not in srv.stats
                refresh(target, end)
                found = srv.stats.get("blocks-found", 0)
                ok, why = await good_client(target)
                assert ok, why
                for _ in range(200):
                    if srv.stats.get("blocks-found", 0) > found:
                        break
                    await asyncio.sleep(0.02)
                assert srv.stats.get("blocks-found", 0) == found + 1
                assert chain.tip_hash == srv.found_blocks[-1].block_hash
            finally:
                await srv.stop()

    asyncio.run(main())
