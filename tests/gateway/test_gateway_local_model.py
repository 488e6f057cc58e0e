"""End to end through the real bundled llama.cpp model (gemma-3-270m): the openai SDK
against a real lockgate server, stream and non-stream, audited like any other call."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.gateway.conftest import MASTER, ServerThread

pytestmark = pytest.mark.slow

MODEL_HOME = Path(os.environ.get("LOCKGATE_TEST_MODEL_HOME", "/tmp/lockgate-llamacpp-test-home"))


@pytest.fixture(scope="module")
def local_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp", reason="install the local extra: pip install '.[local]'")
    MODEL_HOME.mkdir(parents=True, exist_ok=True)
    db = tmp_path_factory.mktemp("localdb") / "lockgate.db"
    text = f"""
master_key: {MASTER}
home: {MODEL_HOME}
database_url: sqlite:///{db}
audit: {{flush_interval_ms: 50}}
models:
  - name: local
    provider: llamacpp
    path: bundled:gemma-3-270m
    timeouts: {{first_token: 120, total: 300}}
"""
    server = ServerThread(text, MODEL_HOME)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def test_local_model_non_stream_and_stream(local_gateway: str) -> None:
    client = openai.OpenAI(base_url=local_gateway + "/v1", api_key=MASTER, max_retries=0,
                           timeout=300)
    done = client.chat.completions.create(
        model="local", max_tokens=24, temperature=0, seed=1,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert (done.choices[0].message.content or "").strip(), "the local model answered nothing"
    assert done.usage is not None and done.usage.prompt_tokens > 0
    assert done.usage.completion_tokens > 0

    text, usage = "", None
    for chunk in client.chat.completions.create(
        model="local", max_tokens=24, temperature=0, seed=1, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Name a colour."}],
    ):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text.strip()
    assert usage is not None and usage.completion_tokens > 0

    # audited like any other call
    import httpx

    deadline = time.monotonic() + 10
    while True:
        rows = httpx.get(local_gateway + "/admin/usage",
                         headers={"Authorization": f"Bearer {MASTER}"}).json()["data"]
        local = [r for r in rows if r["model"] == "local"]
        if sum(int(r["requests"]) for r in local) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sum(int(r["requests"]) for r in local) == 2
    assert sum(int(r["completion_tokens"]) for r in local) > 0
