"""Run the Alembic migrations programmatically, from any working directory.

The Alembic ``Config`` is built in code: ``script_location`` is the directory of the installed
``migrations`` package and ``sqlalchemy.url`` the given URL, so no ``alembic.ini`` is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import Connection

import migrations
from payouts.store.engine import make_engine

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in migrations/versions (tests/store/test_migrations.py checks it against
# Alembic's own answer): a start-up whose database is already there needs one query, not
# Alembic (importing it and its scripts was ~0.5 s of every `payouts serve` start).
HEAD_REVISION = "0010"


def script_location() -> Path:
    """The directory holding ``env.py`` and ``versions/``."""
    return Path(next(iter(migrations.__path__)))


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """An Alembic config for ``url``; ``connection`` (optional) is used instead of a new engine."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    # ConfigParser interpolation would choke on '%' in URL-encoded passwords.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _url_of(target: str | Engine) -> str:
    if isinstance(target, Engine):
        return target.url.render_as_string(hide_password=False)
    return target


def upgrade(url: str | Engine, revision: str = "head") -> None:
    """Upgrade the database at ``url`` (or reached through an engine) to ``revision``.

    Passing an :class:`~sqlalchemy.Engine` reuses its connection settings (e.g. a PostgreSQL
    ``search_path`` in ``connect_args``); a URL gets an engine from :func:`make_engine`, which
    also creates a missing SQLite data directory.
    """
    if isinstance(url, Engine) and revision in ("head", HEAD_REVISION) \
            and _stored_revision(url) == HEAD_REVISION:
        return  # already there: no Alembic, not even its import (~0.2 s of every start)
    from alembic import command

    if isinstance(url, Engine):
        with url.begin() as conn:
            command.upgrade(alembic_config(_url_of(url), conn), revision)
        return
    command.upgrade(alembic_config(url), revision)


def _stored_revision(engine: Engine) -> str | None:
    """``alembic_version.version_num`` read directly (None: no such table or row)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    return None if row is None else str(row[0])


def downgrade(url: str | Engine, revision: str) -> None:
    """Downgrade to ``revision`` (``"base"`` drops everything)."""
    from alembic import command

    if isinstance(url, Engine):
        with url.begin() as conn:
            command.downgrade(alembic_config(_url_of(url), conn), revision)
        return
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision shipped with this version of the engine (Alembic's answer)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str | Engine) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    engine = url if isinstance(url, Engine) else make_engine(url)
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if not isinstance(url, Engine):
            engine.dispose()
