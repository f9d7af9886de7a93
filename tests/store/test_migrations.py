"""Migrations vs models: every revision applied from empty must produce exactly ``models.Base``
(all model modules: the store package imports them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from payouts.cli import app
from payouts.store import migrate
from payouts.store.engine import make_engine
from payouts.store.models import Base

# The newest file in migrations/versions is the head: revisions are numbered in order.
HEAD = max(
    p.name.split("_", 1)[0] for p in migrate.script_location().joinpath("versions").glob("0*.py")
)


def _diff(engine: sa.Engine, metadata: sa.MetaData) -> list[Any]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))


def _shape(engine: sa.Engine) -> dict[str, Any]:
    """What compare_metadata does not look at: check constraints, collations, FK/unique names."""
    insp = sa.inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("collation"))
                for c in insp.get_columns(table)
            ],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "checks": sorted(c["name"] or "" for c in insp.get_check_constraints(table)),
            "uniques": sorted(
                (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)
            ),
            "fks": sorted(
                (f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                for f in insp.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(table)
            ),
        }
    return out


def test_migrations_produce_exactly_the_models(empty_url: Callable[[], str]) -> None:
    migrated = make_engine(empty_url())
    created = make_engine(empty_url())
    try:
        migrate.upgrade(migrated)
        Base.metadata.create_all(created)
        assert _diff(migrated, Base.metadata) == []
        assert _shape(migrated) == _shape(created)
        assert (
            set(_shape(migrated))
            == set(Base.metadata.tables)
            >= {
                "miners",
                "shares",
                "blocks",
                "distributions",
                "ledger_entries",
            }
        )
    finally:
        migrated.dispose()
        created.dispose()


def test_comparison_detects_a_model_the_migrations_lack(empty_url: Callable[[], str]) -> None:
    # Negative control: the check above must be able to fail.
    engine = make_engine(empty_url())
    try:
        migrate.upgrade(engine)
        md = sa.MetaData()
        for table in Base.metadata.sorted_tables:
            table.to_metadata(md)
        sa.Table("not_migrated", md, sa.Column("id", sa.BigInteger, primary_key=True))
        md.tables["shares"].append_column(sa.Column("extra", sa.BigInteger))
        kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in _diff(engine, md)}
        assert {"add_table", "add_column"} <= kinds
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(empty_url: Callable[[], str]) -> None:
    engine = make_engine(empty_url())
    try:
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision() == HEAD
        migrate.downgrade(engine, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert _diff(engine, Base.metadata) == []
    finally:
        engine.dispose()


def test_upgrade_by_url_from_any_cwd_creates_sqlite_dir(
    empty_url: Callable[[], str], tmp_path: Path, monkeypatch: Any
) -> None:
    url = empty_url()
    monkeypatch.chdir(tmp_path)  # no alembic.ini here: the config is built in code
    migrate.upgrade(url)
    assert migrate.current_revision(url) == HEAD


def test_cli_db_upgrade_and_current(empty_url: Callable[[], str], monkeypatch: Any) -> None:
    url = empty_url()
    monkeypatch.setenv("PAYOUTS_DATABASE_URL", url)
    monkeypatch.delenv("PAYOUTS_CONFIG", raising=False)
    runner = CliRunner()
    before = runner.invoke(app, ["db", "current"])
    assert before.exit_code == 1 and "(empty)" in before.output, before.output
    first = runner.invoke(app, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert f"upgraded from (empty) to {HEAD}" in first.output
    again = runner.invoke(app, ["db", "upgrade"])
    assert again.exit_code == 0 and "nothing to do" in again.output
    now = runner.invoke(app, ["db", "current"])
    assert now.exit_code == 0 and f"revision {HEAD}, head {HEAD} (up to date)" in now.output


def test_the_head_revision_constant_is_alembics() -> None:
    """payouts.store.migrate.HEAD_REVISION lets a start-up skip Alembic when the database is
    already at the newest revision: it must be the newest revision shipped."""
    from payouts.store.migrate import HEAD_REVISION, head_revision

    assert head_revision() == HEAD_REVISION


def test_large_per_block_values_are_toasted_with_lz4(empty_url: Callable[[], str]) -> None:
    """0010: on PostgreSQL the distribution document and a block's deferred ledger arrays are
    compressed with LZ4 (pglz cost most of a 100k-miner publish and record); downgrading puts
    the server's default back. SQLite has no such setting: the migration does nothing there."""
    engine = make_engine(empty_url())
    query = ("SELECT attrelid::regclass::text, attname, attcompression FROM pg_attribute "
             "WHERE attrelid::regclass::text IN ('distributions', 'ledger_backlog') "
             "AND attname IN ('body', 'miner_ids', 'amounts') ORDER BY 1, 2")
    try:
        migrate.upgrade(engine)
        if engine.dialect.name != "postgresql":
            assert migrate.current_revision(engine) == HEAD
            return
        with engine.connect() as conn:
            assert conn.exec_driver_sql(query).all() == [
                ("distributions", "body", "l"), ("ledger_backlog", "amounts", "l"),
                ("ledger_backlog", "miner_ids", "l")]
        migrate.downgrade(engine, "0009")
        with engine.connect() as conn:
            assert {r[2] for r in conn.exec_driver_sql(query)} == {""}
    finally:
        engine.dispose()
