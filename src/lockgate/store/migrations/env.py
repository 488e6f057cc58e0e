"""Alembic environment for the store.

Normally run by :func:`lockgate.store.migrate.run_migrations`, which passes an
open connection (already holding the migration lock) in
``config.attributes["connection"]``. Run standalone (developers generating
revisions), it takes the URL from ``-x url=...`` or ``sqlalchemy.url``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from lockgate.store.tables import metadata, schema_filter

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=schema_filter(connection.dialect.name),
    )


def _run_with(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _standalone_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("give the database with -x url=sqlite:///path.db (or postgresql://...)")
    return url


async def _run_standalone() -> None:
    from lockgate.store.engine import create_engine

    engine = create_engine(_standalone_url())
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run_with)
            await conn.commit()
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        from lockgate.store.urls import to_async_url

        context.configure(
            url=to_async_url(_standalone_url()),
            target_metadata=metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
    else:
        asyncio.run(_run_standalone())


_main()
