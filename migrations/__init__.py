"""Alembic environment of the payouts store (SQLite and PostgreSQL).

Run through :func:`payouts.store.migrate.upgrade` or ``payouts db upgrade``, which locate this
package directory, so migrations work from any working directory and from an installed wheel.
"""
