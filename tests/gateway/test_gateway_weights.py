"""Weighted routing end to end: a real gateway splits calls by weight (chi-square test).

Three deployments of one model (weights 6:3:1) on the stand-in upstream; 1,500 calls with
distinct prompts (no cache hits); the deployment that answered each is read from
``x-lockgate-deployment``. The gateway's generator is not seeded, so the bound is the
chi-square quantile at 0.9999 (one false alarm in 10,000 runs).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config
from tests.pipeline.test_pipeline_weights import chi_square

CHI2_9999_DF2 = 18.421
WEIGHTS = {"split-a": 6.0, "split-b": 3.0, "split-c": 1.0}
N = 1500

EXTRA = "".join(f"""
  - name: split
    provider: openai
    base_url: {{upstream}}/v1
    model: stub-{dep}
    id: {dep}
    weight: {w}
""" for dep, w in WEIGHTS.items())


@pytest.fixture(scope="module")
def gw(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("weights")
    db = f"sqlite:///{home / 'lockgate.db'}"
    text = gateway_config(upstream, home, db).rstrip() + EXTRA.replace("{upstream}", upstream)
    server = ServerThread(text, home)
    url = server.start()
    try:
        yield Gateway(url, MASTER, text, home, db)
    finally:
        server.stop()


def test_weights_are_honoured_through_the_gateway(gw: Gateway) -> None:
    key = gw.new_key()

    async def run() -> Counter[str]:
        seen: Counter[str] = Counter()

        async def worker(c: httpx.AsyncClient, n: int) -> None:
            for _ in range(n):
                r = await c.post("/chat/completions", json={
                    "model": "split",
                    "messages": [{"role": "user", "content": uuid.uuid4().hex}]})
                assert r.status_code == 200, r.text
                seen[r.headers["x-lockgate-deployment"]] += 1

        async with httpx.AsyncClient(base_url=gw.v1, timeout=30,
                                     headers={"Authorization": f"Bearer {key}"}) as c:
            await asyncio.gather(*(worker(c, N // 10) for _ in range(10)))
        return seen

    seen = asyncio.run(run())
    assert sum(seen.values()) == N and set(seen) == set(WEIGHTS), seen
    assert chi_square(seen, WEIGHTS) < CHI2_9999_DF2, seen
    # and the split is not simply even
    assert chi_square(seen, {k: 1.0 for k in WEIGHTS}) > CHI2_9999_DF2, seen
