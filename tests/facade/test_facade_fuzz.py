"""Fuzz a facade with every kind of rule: whatever arrives, no 500 of its own, and its own
errors are the documented JSON shape. (The service behind echoes, so anything else is its
answer passed through.)"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.facade import Facades
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from lockgate.testing.stub_upstream import StubUpstream
from tests.facade.conftest import TASKS
from tests.facade.legacy import free_port, start_legacy

RULES = [
    {"name": "gist", "match": {"methods": ["POST", "PUT"], "path": "/echo/a/**"},
     "task": "label", "select": "label", "side": "request",
     "to": {"response_header": "X-Label"}, "budget_ms": 2000},
    {"name": "field", "match": {"methods": ["POST"], "path": "/echo/a/**",
                                "content_type": "application/json"},
     "task": "label", "select": "label", "to": {"request_field": "ai.label"}, "budget_ms": 2000},
    {"name": "resp", "match": {"methods": ["GET", "POST", "PATCH"], "path": "/echo/**"},
     "task": "gist", "input": "body", "select": "text", "to": {"response_field": "ai.g"},
     "budget_ms": 2000},
    {"name": "pii", "action": "redact", "match": {"methods": ["GET", "DELETE"],
                                                  "path": "/echo/b/**"}},
    {"name": "block", "action": "block", "detector": "pii",
     "match": {"methods": ["PUT", "PATCH"], "path": "/echo/**"}},
]
FACADE_CODES = {"upstream_unreachable", "upstream_timeout", "body_too_large",
                "protective_rule_failed", "blocked_by_rule"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home: Path = tmp_path_factory.mktemp("facade-fuzz")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def start() -> None:
        stub = StubUpstream()
        await stub.start()
        runner, legacy = await start_legacy()
        port = free_port()
        doc = yaml.safe_load(TASKS)
        doc.update({"home": str(home), "models": [
            {"name": "local", "provider": "openai", "base_url": stub.openai_base,
             "model": "stub-1", "max_retries": 0}],
            "facades": [{"name": "fz", "port": port, "upstream": legacy, "rules": RULES,
                         "max_body_bytes": 4096}]})
        rt = await Runtime.start(parse_config(yaml.safe_dump(doc)), warm_up=False)
        fac = await Facades.start(rt)
        state.update(stub=stub, runner=runner, rt=rt, fac=fac, url=f"http://127.0.0.1:{port}")

    async def stop() -> None:
        await state["fac"].aclose()  # type: ignore[attr-defined]
        await state["rt"].aclose()  # type: ignore[attr-defined]
        await state["runner"].cleanup()  # type: ignore[attr-defined]
        await state["stub"].stop()  # type: ignore[attr-defined]

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(stop())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(30)
    yield str(state["url"])
    loop.call_soon_threadsafe(loop.stop)
    t.join(30)


SEGMENT = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                         blacklist_characters="/?#%"), min_size=1, max_size=8)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                       lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6),
                                                                             c, max_size=4),
                       max_leaves=12)
BODY = st.one_of(
    st.binary(max_size=200),
    JSONISH.map(lambda v: json.dumps(v).encode()),  # big ints too
    st.just(b"{\"kind\": \"x\", \"body\": \"mail a@b.example\"}"),
    st.binary(min_size=5000, max_size=6000),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
       prefix=st.sampled_from(["/echo/a", "/echo/b", "/echo", "/other"]),
       rest=st.lists(SEGMENT, max_size=3),
       ctype=st.sampled_from(["application/json", "text/plain", "application/octet-stream",
                              "application/json; charset=latin-1", ""]),
       body=BODY)
def test_facade_never_fails_itself(base: str, method: str, prefix: str, rest: list[str],
                                   ctype: str, body: bytes) -> None:
    path = prefix + "".join("/" + s for s in rest)
    headers = {"Content-Type": ctype} if ctype else {}
    content = None if method in ("GET", "OPTIONS") else body
    r = httpx.request(method, base + path, headers=headers, content=content, timeout=30)
    assert r.status_code != 500, r.text
    if r.headers.get("content-type", "").startswith("application/json") and r.status_code >= 400:
        doc = r.json()
        if "error" in doc:
            assert doc["error"]["code"] in FACADE_CODES, doc
