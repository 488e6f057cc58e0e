"""A throwaway PostgreSQL database on the local server (trust auth), dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Generator

import psycopg

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def fresh_database(prefix: str) -> Generator[str, None, None]:
    """Yield the URL of a new empty database named ``<prefix>_<random>``; drop it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
