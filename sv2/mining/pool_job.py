"""The pool's own job, for miners that do not declare (sv2-spec 05-Mining-Protocol.md §5.1.1,
§5.1.2): the node's template, and a coinbase paying the current distribution in the current
settlement mode -- built by :func:`sv2.job_coinbase.build_job_coinbase`, the function a JD client
declares with, so a pool job pays miners exactly as a declared job the JD server would accept
(ARCHITECTURE invariant 3). It is a :class:`~sv2.declared_job.DeclaredJob` the pool made itself,
so shares and blocks on it go through the same code as on custom jobs.
"""

from __future__ import annotations

from payouts.node.interface import BlockTemplate
from sv2.declared_job import DeclaredCoinbase, DeclaredJob, KnownTx
from sv2.distribution_book import Published
from sv2.job_coinbase import build_job_coinbase
from sv2.template import JobTemplate

POOL_TAG = b"/payouts-pool/"


def build_pool_job(
    bt: BlockTemplate, published: Published, *, extranonce_size: int, tag: bytes = POOL_TAG
) -> DeclaredJob:
    """The job on ``bt`` paying ``published`` with ``extranonce_size`` bytes of extranonce (the
    channel prefix plus what an extended channel's miner rolls)."""
    template = JobTemplate.from_block_template(bt)
    cb = build_job_coinbase(
        published.distribution, template, published.mode,
        extranonce_size=extranonce_size, tag=tag,
    )
    parts = cb.parts
    fees = {t.tx.txid: t.fee for t in bt.transactions}
    return DeclaredJob(
        connection_id=0,
        request_id=0,
        token=b"",
        user_identifier="",
        prev_hash=template.prev_hash,
        bits=template.bits,
        version=template.version & 0xFFFFFFFF,
        height=template.height,
        coinbase=DeclaredCoinbase(
            parts.tx(bytes(extranonce_size)), parts.prefix, parts.suffix, extranonce_size
        ),
        txs=tuple(KnownTx.of(tx, fee=fees.get(tx.txid)) for tx in template.transactions),
        revenue=template.revenue,
        payout_outputs=cb.payout_outputs,
        distribution_id=cb.distribution_id,
        mode=cb.mode,
        distribution=published.distribution,
        fitted=published.fitted,
    )


__all__ = ["POOL_TAG", "build_pool_job"]
