"""With the model's own tokenizer the reservation is exact: a token budget sized for K calls
admits exactly K and ends spent to the token (the bundled llama.cpp model; marked slow).

Each call asks for ``max_tokens: 1`` (llama.cpp counts the one sampled token, end-of-turn
included), so true usage equals the reservation only if the prompt count is exact: with the
byte bound the budget would refuse a call early; with an undercount it would admit one more.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from tests.gateway.conftest import MASTER, Gateway, ServerThread

pytestmark = [pytest.mark.slow, pytest.mark.redis]

HOME = Path(os.environ.get("LOCKGATE_TEST_MODEL_HOME", "/tmp/lockgate-llamacpp-test-home"))
REDIS_URL = "redis://127.0.0.1:6379/0"
K = 3
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def _exact_prompt_tokens() -> int:
    pytest.importorskip("llama_cpp")
    from lockgate.providers.llamacpp import LlamaCppProvider
    from lockgate.settings import ModelDeployment

    p = LlamaCppProvider(ModelDeployment(name="local", provider="llamacpp",
                                         path="bundled:gemma-3-270m"), home=HOME)

    async def count() -> int | None:
        try:
            return await p.count_prompt_tokens({"messages": MESSAGES})
        finally:
            await p.aclose()

    n = asyncio.run(count())
    assert n is not None
    return n


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, int]]:
    prompt = _exact_prompt_tokens()
    budget = K * (prompt + 1)
    prefix = "lgt-exact-" + uuid.uuid4().hex[:8] + ":"
    db = tmp_path_factory.mktemp("exactdb") / "lockgate.db"
    text = f"""
master_key: {MASTER}
home: {HOME}
database_url: sqlite:///{db}
audit: {{flush_interval_ms: 50}}
redis_url: {REDIS_URL}
redis_prefix: "{prefix}"
teams:
  exact: {{budget: {{daily_tokens: {budget}}}}}
models:
  - name: local
    provider: llamacpp
    path: bundled:gemma-3-270m
    max_retries: 0
    timeouts: {{first_token: 120, total: 300}}
"""
    server = ServerThread(text, HOME)
    url = server.start()
    try:
        yield Gateway(url, MASTER, text, HOME, f"sqlite:///{db}"), prompt
    finally:
        server.stop()
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=prefix + "*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()


def test_budget_for_k_calls_admits_exactly_k(local: tuple[Gateway, int]) -> None:
    """K + 2 calls at once: reservations are taken before any answer, so exactly K fit."""
    gw, prompt = local
    key = gw.new_key(team="exact")

    async def one() -> tuple[int, int, str | None]:
        c = openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=300)
        try:
            r = await c.chat.completions.create(model="local", max_tokens=1, temperature=0,
                                                seed=1, messages=MESSAGES)
            assert r.usage is not None
            assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt, 1)
            return 200, r.usage.total_tokens, None
        except openai.APIStatusError as exc:
            return exc.status_code, 0, exc.code
        finally:
            await c.close()

    async def run() -> list[tuple[int, int, str | None]]:
        return await asyncio.gather(*(one() for _ in range(K + 2)))

    results = asyncio.run(run())
    ok = [t for s, t, _ in results if s == 200]
    assert len(ok) == K, results  # an undercount admits more, the byte bound fewer
    assert sum(ok) == K * (prompt + 1)  # the whole budget, to the token
    assert sorted(c for s, _, c in results if s != 200) == ["budget_exceeded"] * 2
