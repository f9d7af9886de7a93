"""Alembic environment: the URL comes from the programmatic Config, never from an ini file.

``payouts.store.migrate`` sets ``sqlalchemy.url`` (and may hand over an open connection in
``config.attributes["connection"]``, e.g. a PostgreSQL connection with a test schema on its
search_path). SQLite runs in batch mode because it cannot ALTER most things in place.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

# payouts.store imports every model module, so Base.metadata holds the whole schema.
# them (without it, ``alembic revision --autogenerate`` would propose dropping them).
import payouts.store  # noqa: F401  (registers every model module on Base.metadata)
from payouts.store.engine import make_engine
from payouts.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade --sql``) without a database."""
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url is not None and url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no sqlalchemy.url in the Alembic config; use payouts.store.migrate")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
