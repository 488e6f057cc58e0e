"""The read-only SQL tool on SQLite and PostgreSQL: rows capped, writes refused even when
hidden in a CTE (read-only transaction), long queries cut by the statement timeout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.agents import ToolContext, ToolFailed, ToolRefused
from lockgate.agents.builtins import sql_tool
from lockgate.settings.agents import SqlToolSpec
from lockgate.store.engine import create_engine
from tests.agents.conftest import OPERATOR
from tests.support.postgres import fresh_database

CTX = ToolContext(principal=OPERATOR, acting_for=None, run_id="r", agent="a", depth=0)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'plant.db'}"
    else:
        yield from fresh_database("lg_agsql")


async def test_sql_tool(url: str) -> None:
    engine = create_engine(url)
    import sqlalchemy as sa

    async with engine.begin() as conn:
        await conn.execute(sa.text("create table pumps (id varchar(8), temp float)"))
        await conn.execute(sa.text("insert into pumps values ('p1', 91.5), ('p2', 60), "
                                   "('p3', 55)"))
    tool = sql_tool("plant", SqlToolSpec(url=url, row_cap=2, timeout_s=0.5), engine)
    out = await tool.call({"query": "select id from pumps order by temp desc"}, CTX)
    assert out == {"columns": ["id"], "rows": [["p1"], ["p2"]], "truncated": True}
    with pytest.raises(ToolRefused):
        await tool.call({"query": "update pumps set temp = 0"}, CTX)
    with pytest.raises(ToolRefused):
        await tool.call({"query": "select 1; delete from pumps"}, CTX)
    if engine.dialect.name == "postgresql":  # SQLite has no DML inside a SELECT
        with pytest.raises(ToolFailed, match="read-only transaction"):
            await tool.call({"query": "with gone as (delete from pumps returning id) "
                                      "select id from gone"}, CTX)
    slow = ("select pg_sleep(3)" if engine.dialect.name == "postgresql" else
            "with recursive c(x) as (select 1 union all select x + 1 from c) "
            "select count(*) from c")
    with pytest.raises(ToolFailed):
        await tool.call({"query": slow}, CTX)
    out = await tool.call({"query": "select count(*) from pumps"}, CTX)
    assert out["rows"] == [[3]]  # nothing was deleted
    await engine.dispose()
