"""SetupConnection and 0x0001 negotiation rules, connection limits, and isolation: a garbage
peer loses its connection while a good client declares and gets its block accepted."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from payouts.node.kernel_chain import KernelChain
from sv2.jds import JdsLimits
from sv2.messages import (
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    DeclareMiningJobSuccess,
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
    SetPayoutDistribution,
    SetSettlementMode,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from tests.jds.helpers import (
    JdClient,
    KernelTestNode,
    build_declaration,
    make_distribution,
    setup_chain,
    solve_push,
    start_server,
)


def with_server(scenario: Any, **kw: Any) -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelTestNode(chain)
            srv = await start_server(node, **kw)
            try:
                await scenario(chain, node, srv)
            finally:
                await srv.stop()

    asyncio.run(main())


def test_setup_connection_errors() -> None:
    cases = [
        (SetupConnection(0, 2, 2, 1, "", 0, "", "", "", ""), 0, "unsupported-protocol"),
        (SetupConnection(2, 2, 2, 1, "", 0, "", "", "", ""), 0, "unsupported-protocol"),
        (SetupConnection(1, 3, 4, 1, "", 0, "", "", "", ""), 0, "protocol-version-mismatch"),
        (SetupConnection(1, 1, 1, 1, "", 0, "", "", "", ""), 0, "protocol-version-mismatch"),
        (SetupConnection(1, 2, 2, 0, "", 0, "", "", "", ""), 0, "missing-declare-tx-data-flag"),
        (SetupConnection(1, 2, 2, 5, "", 0, "", "", "", ""), 4, "unsupported-feature-flags"),
    ]

    async def scenario(chain: Any, node: Any, srv: Any) -> None:
        for msg, flags, code in cases:
            c = await JdClient.connect(srv.address)
            c.send(msg)
            err = await c.expect(SetupConnectionError)
            assert (err.flags, err.error_code) == (flags, code)
            assert await c.closed()
        # Version range including 2 is fine.
        c = await JdClient.connect(srv.address)
        c.send(SetupConnection(1, 1, 3, 1, "", 0, "", "", "", ""))
        ok = await c.expect(SetupConnectionSuccess)
        assert (ok.used_version, ok.flags) == (2, 0)
        c.close()
        # Anything before SetupConnection ends the connection.
        c = await JdClient.connect(srv.address)
        c.send(AllocateMiningJobToken("x", 1))
        assert await c.closed()

    with_server(scenario)


def test_extension_negotiation() -> None:
    async def scenario(chain: Any, node: Any, srv: Any) -> None:
        # Required 0x0003 not requested -> Error listing it; no retry -> disconnected.
        c = await JdClient.connect(srv.address)
        await c.setup(extensions=None)
        c.send(RequestExtensions(5, (0x0002,)))
        err = await c.expect(RequestExtensionsError)
        assert (err.request_id, err.unsupported_extensions, err.required_extensions) == (
            5,
            (0x0002,),
            (0x0003,),
        )
        c.send(AllocateMiningJobToken("x", 1))
        assert await c.closed()
        # ... the retry with it succeeds, and the distribution follows at once.
        c = await JdClient.connect(srv.address)
        await c.setup(extensions=None)
        c.send(RequestExtensions(1, ()))
        await c.expect(RequestExtensionsError)
        c.send(RequestExtensions(2, (0x0003, 0x0002)))
        ok = await c.expect(RequestExtensionsSuccess)
        assert ok.supported_extensions == (0x0003,)
        await c.expect(SetPayoutDistribution)  # no 0x4003 -> no SetSettlementMode
        tok = await c.token()
        assert tok.coinbase_tx_outputs == b"\x00"
        c.close()
        # Skipping negotiation altogether while an extension is required -> disconnected.
        c = await JdClient.connect(srv.address)
        await c.setup(extensions=None)
        c.send(AllocateMiningJobToken("x", 1))
        assert await c.closed()
        # 0x4003 alone is not granted (it refers to 0x0003 distributions).
        c = await JdClient.connect(srv.address)
        await c.setup(extensions=None)
        c.send(RequestExtensions(3, (0x4003, 0x0003)))
        ok = await c.expect(RequestExtensionsSuccess)
        assert set(ok.supported_extensions) == {0x0003, 0x4003}
        await c.expect(SetPayoutDistribution)
        await c.expect(SetSettlementMode)
        c.close()

    with_server(scenario, required_extensions=(0x0003,))


def test_handshake_and_idle_timeouts_and_frame_limit() -> None:
    async def scenario(chain: Any, node: Any, srv: Any) -> None:
        # Silent peer: dropped after the handshake timeout.
        r, w = await asyncio.open_connection(*srv.address)
        assert await asyncio.wait_for(r.read(), 3.0) == b""
        w.close()
        # Idle after setup: dropped after the idle timeout.
        c = await JdClient.connect(srv.address)
        await c.setup()
        assert await c.closed(timeout=3.0)
        # A frame above max_frame_size: dropped before the payload is buffered.
        c = await JdClient.connect(srv.address)
        await c.setup()
        await c.expect(SetPayoutDistribution)
        await c.expect(SetSettlementMode)
        tok = await c.token()
        decl = build_declaration(make_distribution(), chain)
        big = decl.message(tok.mining_job_token)
        big = type(big)(**{**big.__dict__, "wtxid_list": tuple(os.urandom(32) for _ in range(64))})
        c.send(big)  # a 2.5 kB payload > 1,000
        assert await c.closed()
        assert srv.connections == 0

    with_server(
        scenario,
        limits=JdsLimits(handshake_timeout=0.3, idle_timeout=0.5, max_frame_size=1_000),
    )


def test_garbage_peer_is_isolated() -> None:
    async def scenario(chain: KernelChain, node: Any, srv: Any) -> None:
        async def garbage(n: int) -> bool:
            r, w = await asyncio.open_connection(*srv.address)
            try:
                for _ in range(n):
                    w.write(os.urandom(4096))
                    await w.drain()
                    await asyncio.sleep(0)
            except (ConnectionError, OSError):
                return True
            try:
                return await asyncio.wait_for(r.read(65536 * 8), 3.0) is not None
            finally:
                w.close()

        async def good() -> bytes:
            c = await JdClient.connect(srv.address)
            try:
                await c.setup()
                await c.expect(SetPayoutDistribution)
                await c.expect(SetSettlementMode)
                tok = await c.token()
                decl = build_declaration(make_distribution(), chain)
                c.send(decl.message(tok.mining_job_token))
                await c.expect(DeclareMiningJobSuccess)
                tip = await node.tip()
                c.send(solve_push(decl, tip.block_hash, tip.time + 1))
                for _ in range(200):
                    if srv.found_blocks:
                        return srv.found_blocks[0].block_hash
                    await asyncio.sleep(0.01)
                raise AssertionError(srv.stats)
            finally:
                c.close()

        # Garbage that is a "valid" act 1 (any 64 bytes decode as EllSwift) then junk
        # ciphertext, and a truncated act 1 -- concurrently with a good client.
        async def truncated() -> None:
            _r, w = await asyncio.open_connection(*srv.address)
            w.write(os.urandom(10))
            await asyncio.sleep(0.1)
            w.close()

        results = await asyncio.gather(garbage(20), garbage(1), truncated(), good())
        assert chain.tip_hash == results[-1]
        assert srv.stats.get("blocks-found") == 1
        await asyncio.sleep(0.1)
        assert srv.connections == 0

    with_server(scenario)


def test_per_job_payout_outputs_adapter() -> None:
    """PR #202 under 0x4002: one round trip, single use per token, checked on declare."""
    from payouts.distribution import compute_outputs
    from payouts.tx.compact import read_compact_size
    from payouts.tx.txout import TxOut
    from sv2.messages import (
        DeclareMiningJobError,
        RequestPayoutOutputs,
        RequestPayoutOutputsError,
        RequestPayoutOutputsSuccess,
    )

    async def scenario(chain: KernelChain, node: Any, srv: Any) -> None:
        c = await JdClient.connect(srv.address)
        await c.setup(extensions=(0x4002,))
        t = chain.subsidy(chain.tip_height + 1)
        tok = (await c.token()).mining_job_token
        c.send(RequestPayoutOutputs(1, tok, t))
        ok = await c.expect(RequestPayoutOutputsSuccess)
        n, pos = read_compact_size(ok.coinbase_tx_outputs, 0)
        want = compute_outputs(make_distribution(), t).outputs
        assert n == len(want) and ok.coinbase_tx_outputs[pos:] == b"".join(
            o.serialize() for o in want
        )
        c.send(RequestPayoutOutputs(2, tok, t))
        assert (await c.expect(RequestPayoutOutputsError)).error_code == (
            "payout-outputs-already-requested"
        )
        c.send(RequestPayoutOutputs(3, os.urandom(16), t))
        assert (await c.expect(RequestPayoutOutputsError)).error_code == "invalid-mining-job-token"
        tok0 = (await c.token()).mining_job_token
        c.send(RequestPayoutOutputs(4, tok0, 0))
        assert (await c.expect(RequestPayoutOutputsError)).error_code == "invalid-payout-value"
        decl = build_declaration(make_distribution(), chain, payout_outputs=want)
        c.send(decl.message(tok, 9, None))
        assert isinstance(await c.recv(), DeclareMiningJobSuccess)
        # A set requested for another T, or tampered outputs, are refused.
        tok2 = (await c.token()).mining_job_token
        c.send(RequestPayoutOutputs(5, tok2, t - 1000))
        await c.expect(RequestPayoutOutputsSuccess)
        c.send(decl.message(tok2, 10, None))
        err = await c.recv()
        assert isinstance(err, DeclareMiningJobError) and err.error_code == "invalid-payout-outputs"
        tok3 = (await c.token()).mining_job_token
        c.send(RequestPayoutOutputs(6, tok3, t))
        await c.expect(RequestPayoutOutputsSuccess)
        bad = [TxOut(want[0].value + 1, want[0].script), TxOut(want[1].value - 1, want[1].script)]
        tampered = build_declaration(make_distribution(), chain, payout_outputs=[*bad, *want[2:]])
        c.send(tampered.message(tok3, 11, None))
        err = await c.recv()
        assert isinstance(err, DeclareMiningJobError) and err.error_code == "invalid-payout-outputs"
        c.close()

    with_server(scenario)


def test_allocate_success_is_bound_to_request() -> None:
    async def scenario(chain: Any, node: Any, srv: Any) -> None:
        c = await JdClient.connect(srv.address)
        await c.setup(extensions=())
        c.send(AllocateMiningJobToken("a", 41))
        c.send(AllocateMiningJobToken("b", 42))
        a = await c.expect(AllocateMiningJobTokenSuccess)
        b = await c.expect(AllocateMiningJobTokenSuccess)
        assert (a.request_id, b.request_id) == (41, 42)
        assert a.mining_job_token != b.mining_job_token
        c.close()

    with_server(scenario)
