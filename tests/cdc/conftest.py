"""Fixtures: a fresh user database per test on the real PostgreSQL and MariaDB, a table to
capture, the stand-in model upstream and a Runtime whose pipeline runs the tasks."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import yaml

from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from lockgate.testing.stub_upstream import StubUpstream
from tests.support.postgres import fresh_database

MARIA = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}

TASKS = """
jobs:
  tasks:
    - {name: gist, prompt: "echo:{{input.body}}", json_mode: false}
    - name: label
      prompt: 'echo:{"label": "{{input.kind}}"}'
      output_schema: {type: object, properties: {label: {type: string}}, required: [label]}
      json_mode: false
"""

TABLE_SQL = {
    "postgres": "CREATE TABLE tickets (id integer PRIMARY KEY, body text, status text, "
                "note text, summary text)",
    "mariadb": "CREATE TABLE tickets (id INT PRIMARY KEY, body TEXT, status VARCHAR(16), "
               "note TEXT, summary TEXT) ENGINE=InnoDB",
}


class UserDb:
    """Plain synchronous SQL on the user's database (what an application would do)."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url

    def q(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "postgres":
            with psycopg.connect(self.url, autocommit=True) as c:
                cur = c.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        name = self.url.rsplit("/", 1)[1]
        conn = pymysql.connect(database=name, autocommit=True, **MARIA)  # type: ignore[arg-type]
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    @property
    def outbox(self) -> str:
        return "lockgate_cdc.outbox" if self.kind == "postgres" else "lockgate_cdc_outbox"


def _maria_database() -> Iterator[str]:
    name = "lgcdc_" + uuid.uuid4().hex[:10]
    conn = pymysql.connect(autocommit=True, **MARIA)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(params=["postgres", "mariadb"])
def userdb(request: pytest.FixtureRequest) -> Iterator[UserDb]:
    kind = str(request.param)
    gen = fresh_database("lgcdc") if kind == "postgres" else _maria_database()
    url = next(gen)
    db = UserDb(kind, url)
    db.q(TABLE_SQL[kind])
    try:
        yield db
    finally:
        with contextlib.suppress(StopIteration):
            next(gen)


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    yield s
    await s.stop()


def config_text(stub: StubUpstream, home: Path, model: str = "stub-1") -> str:
    doc = yaml.safe_load(TASKS)
    doc.update({"home": str(home), "models": [
        {"name": "local", "provider": "openai", "base_url": stub.openai_base, "model": model,
         "max_retries": 0}]})
    return yaml.safe_dump(doc)


@pytest.fixture
async def runtime(stub: StubUpstream, tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await Runtime.start(parse_config(config_text(stub, tmp_path / "home")), jobs=False,
                             warm_up=False)
    yield rt
    await rt.aclose()
