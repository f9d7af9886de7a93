"""The store: SQLAlchemy 2 models, Alembic migrations and repositories (SQLite and PostgreSQL).

Entry points: :func:`payouts.store.engine.make_engine`, :func:`payouts.store.migrate.upgrade`,
and the functions of :mod:`payouts.store.repositories`.
"""

# Every model module registers its tables on models.Base.metadata; importing them here means
# anything that imports the store (migrations, tests, create_all) sees the whole schema.
from payouts.store import (
    accounting_models,
    api_models,
    cluster_models,
    dashboard_models,
    models,
    musig_models,
    rate_limits,
    settlement_models,
)

__all__ = ["accounting_models", "api_models", "cluster_models", "dashboard_models", "models",
           "musig_models", "rate_limits",
           "settlement_models"]
