"""End to end through a real gateway: shadow samples stored; a rules deployment answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.gateway.conftest import MASTER, ServerThread, gateway_config

from lockgate.shadow import ShadowStats, shadow_report
from lockgate.store import Store
from lockgate.testing.stub_upstream import run_stub_in_thread

EXTRA = """
  - name: nonai
    provider: rules
    rules: {template: "offline; you asked: {{ last_user_message }}"}
shadow:
  routes:
    - {model: fast, candidate: other, percent: 100}
    - {model: nonai, candidate: fast, percent: 100}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with run_stub_in_thread() as stub:
        yield stub.base_url


async def _report(url: str) -> list[ShadowStats]:
    store = await Store.open(url)
    try:
        return await shadow_report(store)
    finally:
        await store.close()


def test_gateway_mirrors_and_rules_answer(upstream: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lg.db'}"
    server = ServerThread(gateway_config(upstream, tmp_path / "home", url, EXTRA), tmp_path)
    base = server.start()
    try:
        headers = {"Authorization": f"Bearer {MASTER}"}
        for i in range(4):
            r = httpx.post(base + "/v1/chat/completions", headers=headers, timeout=10,
                           json={"model": "fast",
                                 "messages": [{"role": "user", "content": f"q {i}"}]})
            assert r.status_code == 200, r.text
        r = httpx.post(base + "/v1/chat/completions", headers=headers, timeout=10,
                       json={"model": "nonai", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["choices"][0]["message"]["content"] == "offline; you asked: hi"
        assert doc["system_fingerprint"] == "lockgate-rules"
        assert r.headers["x-lockgate-deployment"].startswith("nonai/rules")
    finally:
        server.stop()  # drains the mirror and writes its rows
    report = {s.model: s for s in asyncio.run(_report(url))}
    fast = report["fast"]
    assert fast.count == 4 and fast.candidate == "other/openai:stub-other"
    assert fast.text_agreement == 1.0 and fast.candidate_error_rate == 0.0
    nonai = report["nonai"]  # the model answers differently from the rules text
    assert nonai.count == 1 and nonai.text_agreement == 0.0
    assert nonai.candidate_cost > 0  # "fast" has pricing
