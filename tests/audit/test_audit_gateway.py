"""End to end: two gateways writing to one database produce one chain that verifies."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.gateway.conftest import MASTER, ServerThread, gateway_config

from lockgate.store import Store
from lockgate.store.chain import verify_chain
from lockgate.testing.stub_upstream import run_stub_in_thread


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with run_stub_in_thread() as stub:
        yield stub.base_url


async def _verify(url: str) -> tuple[bool, int, str | None]:
    store = await Store.open(url)
    try:
        async with store.engine.connect() as conn:
            report = await verify_chain(conn)
        return report.ok, report.records, report.problem
    finally:
        await store.close()


def test_two_gateways_share_one_verifiable_chain(
    upstream: str, db_url: str, tmp_path: Path
) -> None:
    servers = [
        ServerThread(gateway_config(upstream, tmp_path / f"home{i}", db_url), tmp_path)
        for i in range(2)
    ]
    urls = [s.start() for s in servers]
    try:
        with httpx.Client(base_url=urls[0], timeout=10,
                          headers={"Authorization": f"Bearer {MASTER}"}) as admin:
            team = "audit-" + uuid.uuid4().hex[:6]
            assert admin.post("/admin/teams", json={"name": team}).status_code == 201
            key = admin.post("/admin/keys", json={"team": team}).json()["key"]

        def send(n: int) -> int:
            url = urls[n % 2]
            r = httpx.post(url + "/v1/chat/completions", timeout=10,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": "fast" if n % 5 else "missing",
                                 "messages": [{"role": "user", "content": f"n {n}"}]})
            return r.status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(send, range(60)))
        assert statuses.count(200) == 48 and statuses.count(404) == 12
    finally:
        for s in servers:
            s.stop()  # drains each gateway's audit writer
    ok, records, problem = asyncio.run(_verify(db_url))
    assert ok, problem
    assert records == 62  # 60 calls + the admin's team.create and key.create
