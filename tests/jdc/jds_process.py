"""A JDS on an embedded kernel node in its own process, for the CLI test and docs/jdc.md:

    python -m tests.jdc.jds_process [PORT]

prints one JSON line (``host``, ``port``, ``authority_key``) once listening, then a line per
block the node accepted."""

from __future__ import annotations

import asyncio
import json
import sys

from payouts.node.kernel import KernelNode
from sv2.authority import encode_authority_public_key
from sv2.jds import FoundBlock, JobDeclarationServer
from sv2.messages.payouts import EXT_NON_CUSTODIAL_PAYOUTS, EXT_PER_JOB_PAYOUTS
from sv2.messages.settlement import EXT_SETTLEMENT_MODES
from tests.jdc.helpers import AUTHORITY_PK, IDENTITY, make_distribution


def _found(b: FoundBlock) -> None:
    print(
        json.dumps(
            {
                "block_accepted": b.block_hash[::-1].hex(),
                "height": b.height,
                "distribution_id": b.distribution_id,
                "mode": b.job.mode,
            }
        ),
        flush=True,
    )


async def main(port: int) -> None:
    with KernelNode() as node:
        srv = JobDeclarationServer(
            identity=IDENTITY,
            node=node,
            distribution_source=make_distribution(1, payees=4),
            port=port,
            supported_extensions=(
                EXT_NON_CUSTODIAL_PAYOUTS,
                EXT_SETTLEMENT_MODES,
                EXT_PER_JOB_PAYOUTS,
            ),
            on_block=_found,
        )
        await srv.start()
        host, p = srv.address
        key = encode_authority_public_key(AUTHORITY_PK)
        print(json.dumps({"host": host, "port": p, "authority_key": key}), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await srv.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
