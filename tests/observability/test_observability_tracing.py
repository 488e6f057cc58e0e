"""Tracing: spans per stage reach an in-memory exporter; disabled mode records nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from lockgate.observability.tracing import (
    STAGE,
    configure_tracing,
    current_trace_ids,
    set_attributes,
    shutdown_tracing,
    span,
    tracing_enabled,
)
from lockgate.settings import TracingSettings


def attrs(s: ReadableSpan) -> Mapping[str, Any]:
    assert s.attributes is not None
    return s.attributes


@pytest.fixture(autouse=True)
def tracing_off() -> Iterator[None]:
    shutdown_tracing()
    yield
    shutdown_tracing()


async def fake_pipeline(request_id: str, fail: bool = False) -> None:
    with span(STAGE.REQUEST, request_id=request_id, model="support", team=None):
        with span(STAGE.AUTHENTICATE):
            await asyncio.sleep(0)
        with span(STAGE.UPSTREAM, deployment="support/a", attempt=1):
            await asyncio.sleep(0)
            if fail:
                raise RuntimeError("upstream exploded")
        set_attributes(status=200, cost=0.5)


async def test_spans_per_stage_nest_under_the_request() -> None:
    exporter = InMemorySpanExporter()
    assert configure_tracing(exporter=exporter) is True and tracing_enabled()
    await asyncio.gather(fake_pipeline("req_a"), fake_pipeline("req_b"))
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == sorted(
        [STAGE.REQUEST, STAGE.AUTHENTICATE, STAGE.UPSTREAM] * 2)
    roots = {attrs(s)["request_id"]: s for s in spans if s.name == STAGE.REQUEST}
    assert set(roots) == {"req_a", "req_b"}
    root_a = roots["req_a"]
    assert "team" not in attrs(root_a)  # None attributes are left out
    assert attrs(root_a)["status"] == 200 and attrs(root_a)["cost"] == 0.5
    children = [s for s in spans if s.parent is not None
                and s.parent.span_id == root_a.context.span_id]
    assert sorted(s.name for s in children) == [STAGE.AUTHENTICATE, STAGE.UPSTREAM]
    assert all(s.context.trace_id == root_a.context.trace_id for s in children)
    upstream = next(s for s in children if s.name == STAGE.UPSTREAM)
    assert attrs(upstream)["deployment"] == "support/a"


async def test_an_exception_marks_the_span_as_error() -> None:
    exporter = InMemorySpanExporter()
    configure_tracing(exporter=exporter)
    with pytest.raises(RuntimeError):
        await fake_pipeline("req_x", fail=True)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans[STAGE.UPSTREAM].status.status_code is StatusCode.ERROR
    assert spans[STAGE.UPSTREAM].events[0].name == "exception"
    assert spans[STAGE.REQUEST].status.status_code is StatusCode.ERROR


async def test_disabled_mode_records_nothing() -> None:
    assert configure_tracing(TracingSettings(), env={}) is False
    assert not tracing_enabled()
    first, second = span("a", x=1), span("b")
    assert first is second  # one shared no-op object, no per-call allocation
    await fake_pipeline("req_off")
    set_attributes(a=1)
    assert current_trace_ids() is None
    # switched on and off again: the earlier exporter sees only the enabled period
    exporter = InMemorySpanExporter()
    configure_tracing(exporter=exporter)
    with span("on"):
        ids = current_trace_ids()
        assert ids is not None and len(ids[0]) == 32
    shutdown_tracing()
    with span("off"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["on"]


def test_env_endpoint_enables_otlp_without_network() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    assert configure_tracing(TracingSettings(), env=env) is True
    shutdown_tracing()  # nothing recorded: nothing to send
    assert configure_tracing(TracingSettings(enabled=True, exporter="console"), env={}) is True
    assert configure_tracing(TracingSettings(enabled=False), env={}) is False


def test_disabled_tracing_never_imports_opentelemetry() -> None:
    code = (
        "import sys\n"
        "from lockgate.observability.tracing import configure_tracing, span\n"
        "from lockgate.settings import TracingSettings\n"
        "configure_tracing(TracingSettings(), env={})\n"
        "with span('x', a=1):\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
