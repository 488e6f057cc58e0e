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


PG_BIN = Path("/usr/lib/postgresql/15/bin")
WAL2JSON = Path("/usr/lib/postgresql/15/lib/wal2json.so")


@pytest.fixture(scope="session")
def logical_pg() -> Iterator[str]:
    """A private PostgreSQL cluster with ``wal_level=logical`` on a free port (the shared
    server runs ``replica``; restarting it would disturb everything else), dropped after.
    Skipped when the PostgreSQL binaries or wal2json are not installed."""
    import shutil
    import socket
    import subprocess
    import tempfile

    if not (PG_BIN / "initdb").exists() or not WAL2JSON.exists() or not shutil.which("runuser"):
        pytest.skip("needs PostgreSQL 15 binaries and postgresql-15-wal2json")
    tmp = Path(tempfile.mkdtemp(prefix="lgcdc-pg-"))
    shutil.chown(tmp, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp / "data"
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "postgres"], check=True, capture_output=True)
    opts = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={tmp} "
            "-c wal_level=logical -c max_replication_slots=8 -c fsync=off "
            "-c output_plugin_libraries=wal2json")
    started = subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts,
                              "-l", str(tmp / "log"), "-w", "start"], capture_output=True)
    if started.returncode != 0:  # e.g. a build without output_plugin_libraries
        opts = opts.replace(" -c output_plugin_libraries=wal2json", "")
        subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                        str(tmp / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def walldb(logical_pg: str) -> Iterator[UserDb]:
    """A fresh database with the tickets table on the logical-decoding cluster."""
    name = "lgwal_" + uuid.uuid4().hex[:8]
    with psycopg.connect(logical_pg, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = logical_pg.rsplit("/", 1)[0] + "/" + name
    db = UserDb("postgres", url)
    db.q(TABLE_SQL["postgres"])
    try:
        yield db
    finally:
        with psycopg.connect(logical_pg, autocommit=True) as admin:
            for (slot,) in admin.execute("SELECT slot_name FROM pg_replication_slots WHERE "
                                         "database = %s", (name,)).fetchall():
                admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
