"""Graceful shutdown drains the batched audit writer: no record is lost."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from lockgate.store import Store
from tests.gateway.conftest import MASTER, ServerThread, gateway_config


def test_no_record_lost_on_shutdown(upstream: str, database_url: str, tmp_path: Path) -> None:
    # a long flush interval: the records are still buffered when shutdown starts
    text = gateway_config(upstream, tmp_path, database_url).replace(
        "audit: {flush_interval_ms: 50}", "audit: {flush_interval_ms: 60000, batch_size: 100000}")
    server = ServerThread(text, tmp_path)
    url = server.start()
    client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0)

    def one(i: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": f"n{i}"}])
        return raw.headers["x-request-id"]

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(one, range(40)))
    server.stop()

    async def stored() -> set[str]:
        store = await Store.open(database_url)
        try:
            rows = await store.recent_usage(limit=10_000)
            return {r.request_id for r in rows}
        finally:
            await store.close()

    assert ids <= asyncio.run(stored())
