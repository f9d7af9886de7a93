"""The store: SQLAlchemy 2 models, Alembic migrations and repositories (SQLite and PostgreSQL).

Entry points: :func:`payouts.store.engine.make_engine`, :func:`payouts.store.migrate.upgrade`,
and the functions of :mod:`payouts.store.repositories`.
"""
