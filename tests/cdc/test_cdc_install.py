"""``install`` captures what it should (and nothing else); ``uninstall`` removes it all."""

from __future__ import annotations

import pytest

from lockgate.cdc import CdcSqlError, install_capture, open_database
from tests.cdc.conftest import UserDb


def _triggers(db: UserDb) -> list[str]:
    if db.kind == "postgres":
        return [r[0] for r in db.q("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")]
    return [r[0] for r in db.q("SELECT trigger_name FROM information_schema.triggers WHERE "
                               "trigger_schema = DATABASE()")]


def _lockgate_objects(db: UserDb) -> list[str]:
    if db.kind == "postgres":
        rows = db.q("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'lockgate%%'")
        rows += db.q("SELECT proname FROM pg_proc WHERE proname LIKE 'capture_%%'")
        return [r[0] for r in rows]
    return [r[0] for r in db.q("SELECT table_name FROM information_schema.tables WHERE "
                               "table_schema = DATABASE() AND table_name LIKE 'lockgate%%'")]


async def test_install_captures_watched_changes_only(userdb: UserDb) -> None:
    db = open_database(userdb.url)
    await db.open()
    try:
        spec = await install_capture(db, "tickets", "tickets", ["body", "status"],
                                     where="status = 'open'")
        assert spec.key == ("id",) and spec.epoch
        userdb.q("INSERT INTO tickets (id, body, status) VALUES (1, 'printer fire', 'open')")
        userdb.q("INSERT INTO tickets (id, body, status) VALUES (2, 'old', 'closed')")  # where
        userdb.q("UPDATE tickets SET note = 'unwatched' WHERE id = 1")  # no watched change
        userdb.q("UPDATE tickets SET body = 'printer fire, again' WHERE id = 1")
        userdb.q("UPDATE tickets SET body = 'still closed' WHERE id = 2")  # where: no
        rows = userdb.q(f"SELECT op, row_key, data FROM {userdb.outbox} ORDER BY id")
        assert [(r[0], r[1].replace(" ", "")) for r in rows] == [("INSERT", "[1]"),
                                                                 ("UPDATE", "[1]")]
        assert '"printer fire, again"' in str(rows[1][2]).replace("'", '"')
        with pytest.raises(CdcSqlError, match="already installed"):
            await install_capture(db, "tickets", "tickets", ["body"])
        assert await db.depth(spec) == 2
        removed = await db.uninstall(None)
        assert removed == ["tickets"]
        assert _triggers(userdb) == [] and _lockgate_objects(userdb) == []
        userdb.q("UPDATE tickets SET body = 'after uninstall' WHERE id = 1")  # still works
    finally:
        await db.aclose()


async def test_install_refuses_bad_names(userdb: UserDb) -> None:
    db = open_database(userdb.url)
    await db.open()
    try:
        with pytest.raises(CdcSqlError, match="no column 'nope'"):
            await install_capture(db, "t", "tickets", ["nope"])
        with pytest.raises(CdcSqlError, match="does not exist"):
            await install_capture(db, "t", "missing_table", ["body"])
        with pytest.raises(CdcSqlError, match="plain identifier"):
            await install_capture(db, "t;drop", "tickets", ["body"])
        with pytest.raises(CdcSqlError, match="';'"):
            await install_capture(db, "t", "tickets", ["body"], where="1=1; drop table x")
        assert _triggers(userdb) == []
    finally:
        await db.aclose()
