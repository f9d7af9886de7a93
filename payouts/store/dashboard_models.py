"""Store models of the dashboards' read index (docs/dashboards.md): derived from shares,
blocks, distributions and settlement rows by :mod:`payouts.dashboard_index`, never the system
of record, so every row here can be rebuilt from those.

- ``worker_hashrate``: per miner, worker and time bucket (``bucket_ms``: the bucket's start,
  a multiple of :data:`BUCKET_MS`), the shares and their summed target difficulty. The miner
  page charts hashrate over time from it with one indexed range read, instead of scanning
  ``shares``, which carries no index but its key (every index costs ingest throughput).
- ``payee_index``: per miner and block, what the block's distribution pays it and, once known,
  where that landed (txid, vout, and the settlement tx it is in: ``role``/``seq``). The miner
  page reads its blocks with one indexed read instead of loading every block's distribution.
- ``payee_index_blocks``: for each block indexed, the settlement state its rows were computed
  from (``landing_key``); a change (the coinbase bound, a musig2 spend sent) re-indexes it.
- ``dashboard_state``: how far the share fold got (``shares_through``: the newest share id
  counted into ``worker_hashrate``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from payouts.accounting.shares import WORKER_MAX
from payouts.store.models import Base

BUCKET_MS = 600_000  # ten minutes: 144 points a day per worker


class WorkerHashrate(Base):
    __tablename__ = "worker_hashrate"

    miner_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    bucket_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    worker: Mapped[str] = mapped_column(String(WORKER_MAX), primary_key=True)
    shares: Mapped[int] = mapped_column(BigInteger)
    difficulty: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_worker_hashrate_bucket_ms", "bucket_ms"),)


class PayeeIndex(Base):
    __tablename__ = "payee_index"

    miner_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    block_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    amount: Mapped[int] = mapped_column(BigInteger)
    txid: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    vout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_payee_index_block_id", "block_id"),)


class PayeeIndexBlock(Base):
    __tablename__ = "payee_index_blocks"

    block_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    landing_key: Mapped[str] = mapped_column(String(64))


class DashboardState(Base):
    __tablename__ = "dashboard_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    shares_through: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)
