"""Tracing through the real gateway (HTTP in, stand-in upstream out) into an in-memory exporter.

The runtime calls ``configure_tracing(config.tracing)`` at start-up; the fixture swaps that
hook for one that installs an ``InMemorySpanExporter`` (lockgate uses its own provider).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.gateway.conftest import Gateway, ServerThread, gateway_config, upstream

import lockgate.runtime
from lockgate.observability import tracing
from lockgate.observability.tracing import STAGE
from lockgate.settings import TracingSettings

__all__ = ["upstream"]  # the session fixture, re-exported for this module

EXTRA = """
  - name: slow-stream
    provider: openai
    base_url: {upstream}/v1
    model: stall-mid:0.3
    max_retries: 0
"""


@pytest.fixture(scope="module")
def traced(upstream: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Gateway, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()

    def configure(settings: TracingSettings | None = None, **_: Any) -> bool:
        return tracing.configure_tracing(settings, exporter=exporter)

    home = tmp_path_factory.mktemp("trace-home")
    db = f"sqlite:///{home / 'lockgate.db'}"
    text = gateway_config(upstream, home, db, EXTRA.format(upstream=upstream))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lockgate.runtime, "configure_tracing", configure)
        server = ServerThread(text, home)
        url = server.start()
        try:
            yield Gateway(url, "test-master-key-0123456789", text, home, db), exporter
        finally:
            server.stop()
            tracing.shutdown_tracing()


def attrs(s: ReadableSpan) -> Mapping[str, Any]:
    assert s.attributes is not None
    return s.attributes


def request_span(exporter: InMemorySpanExporter, request_id: str) -> ReadableSpan:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for s in exporter.get_finished_spans():
            if s.name == STAGE.REQUEST and attrs(s).get("request_id") == request_id:
                return s
        time.sleep(0.02)
    raise AssertionError(f"no request span for {request_id}")


def in_trace(exporter: InMemorySpanExporter, root: ReadableSpan) -> list[ReadableSpan]:
    assert root.context is not None
    return [s for s in exporter.get_finished_spans()
            if s.context is not None and s.context.trace_id == root.context.trace_id
            and s is not root]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None
            and s.parent.span_id == parent.context.span_id]


def test_a_chat_has_a_request_span_with_stage_children(
        traced: tuple[Gateway, InMemorySpanExporter]) -> None:
    gw, exporter = traced
    key = gw.new_key()
    r = httpx.post(gw.v1 + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
                   timeout=10)
    assert r.status_code == 200, r.text
    request_id = r.headers["x-request-id"]
    root = request_span(exporter, request_id)
    a = attrs(root)
    assert a["model"] == "fast" and a["stream"] is False and a["source"] == "http"
    assert a["status"] == 200
    assert a["deployment"] == "fast/openai:stub-fast"
    assert a["deployment"] == r.headers["x-lockgate-deployment"]
    assert a["prompt_tokens"] == r.json()["usage"]["prompt_tokens"]
    kids = children(in_trace(exporter, root), root)
    names = [s.name for s in kids]
    assert STAGE.POLICY in names and STAGE.UPSTREAM in names
    upstream_span = next(s for s in kids if s.name == STAGE.UPSTREAM)
    assert attrs(upstream_span)["deployment"] == "fast/openai:stub-fast"
    assert attrs(upstream_span)["attempt"] == 1
    assert root.start_time is not None and root.end_time is not None
    for s in kids:
        assert s.start_time is not None and s.end_time is not None
        assert root.start_time <= s.start_time and s.end_time <= root.end_time


def test_a_refused_call_is_traced_with_its_status(
        traced: tuple[Gateway, InMemorySpanExporter]) -> None:
    gw, exporter = traced
    key = gw.new_key(models=["other"])
    r = httpx.post(gw.v1 + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
                   timeout=10)
    assert r.status_code == 403
    root = request_span(exporter, r.headers["x-request-id"])
    assert attrs(root)["status"] == 403
    assert STAGE.UPSTREAM not in [s.name for s in in_trace(exporter, root)]


def test_a_streamed_chat_request_span_covers_the_whole_stream(
        traced: tuple[Gateway, InMemorySpanExporter]) -> None:
    gw, exporter = traced
    key = gw.new_key()
    body = {"model": "slow-stream", "stream": True,
            "messages": [{"role": "user", "content": "tell me more"}]}
    first_chunk_ns = last_chunk_ns = 0
    with httpx.stream("POST", gw.v1 + "/chat/completions", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status_code == 200
        request_id = r.headers["x-request-id"]
        for line in r.iter_lines():
            if line.startswith("data: {"):
                orjson.loads(line[6:])
                last_chunk_ns = time.time_ns()
                first_chunk_ns = first_chunk_ns or last_chunk_ns
    assert last_chunk_ns
    root = request_span(exporter, request_id)
    assert attrs(root)["stream"] is True
    # The stand-in stalls 0.3 s mid-stream: the request span must last through the stall
    # (before the fix it closed when the stream opened, ~0.3 s before the last chunk). The
    # span ends when the relay finishes, which races the client's read of the last chunk by
    # a fraction of a millisecond, so compare with a 50 ms margin.
    assert last_chunk_ns - first_chunk_ns >= 250_000_000
    assert root.end_time is not None and root.end_time >= last_chunk_ns - 50_000_000
    spans = in_trace(exporter, root)
    upstream_span = next(s for s in spans if s.name == STAGE.UPSTREAM)
    assert upstream_span.parent is not None and root.context is not None
    assert upstream_span.parent.span_id == root.context.span_id
    assert attrs(root)["status"] == 200
