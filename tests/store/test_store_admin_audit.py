"""Admin actions and guard findings (``usage_records.detail``) in the audit chain: rows
without ``detail`` hash as before; a changed ``detail`` is caught by verify."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import sqlalchemy as sa

from lockgate.pipeline.call import UsageRecord
from lockgate.store import Store
from lockgate.store.chain import canonical, verify_chain
from lockgate.store.records import usage_row


def _record(rid: str, detail: str | None = None) -> UsageRecord:
    return UsageRecord(rid, time.time(), "k", "t", "m", "d", "chat", "http", 200, None,
                       1, 2, 0.1, 3.0, 0.5, False, detail=detail)


def test_canonical_unchanged_without_detail() -> None:
    row = usage_row(_record("req_a"))
    legacy = {k: v for k, v in row.items() if k != "detail"}
    assert canonical(1, row) == canonical(1, legacy)
    assert len(orjson.loads(canonical(1, row))) == 21
    with_detail = usage_row(_record("req_a", '{"guards": {}}'))
    assert canonical(1, with_detail) != canonical(1, row)


async def test_admin_actions_chain_and_tamper(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        await store.write_usage([_record("req_1"), _record("req_2", '{"guards": {"x": 1}}')])
        rid = await store.record_admin_action("key.create", actor="master", target="key_1",
                                              team_id="t", changes={"name": "ci"})
        async with store.engine.connect() as conn:
            report = await verify_chain(conn)
        assert report.ok and report.records == 3
        (adm,) = await store.recent_usage(10, kind="admin")
        assert adm.request_id == rid and adm.key_id == "master" and adm.model == "key.create"
        assert orjson.loads(adm.detail or "")["changes"] == {"name": "ci"}
        assert [r.request_id for r in await store.recent_usage(10)] == ["req_2", "req_1"]
        assert all(s["requests"] == 2 for s in await store.usage_summary(group_by=()))
        async with store.engine.begin() as conn:
            await conn.execute(sa.text(
                "UPDATE usage_records SET detail = '{\"changes\": {}}' "
                f"WHERE request_id = '{rid}'"))
        async with store.engine.connect() as conn:
            bad = await verify_chain(conn)
        assert not bad.ok and "was edited" in (bad.problem or "")
    finally:
        await store.close()
