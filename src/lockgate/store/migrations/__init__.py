"""Alembic scripts for the store schema (run via ``lockgate.store.run_migrations``)."""
