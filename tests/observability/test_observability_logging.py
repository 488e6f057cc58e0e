"""JSON logs: one object per line, request id bound per task, stdlib loggers included."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lockgate.observability.logging import (
    bind_request,
    configure_logging,
    is_configured,
    request_context,
    reset_logging,
)
from lockgate.observability.tracing import configure_tracing, shutdown_tracing, span
from lockgate.settings import LoggingSettings


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    reset_logging()
    out = io.StringIO()
    assert configure_logging(LoggingSettings(level="info"), stream=out) is True
    yield out
    reset_logging()
    shutdown_tracing()


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_json_lines_with_the_bound_request_id(stream: io.StringIO) -> None:
    log = structlog.get_logger("lockgate.test")
    log.info("before")
    with request_context(request_id="req_1", model="support"):
        log.warning("inside", attempt=2)
        logging.getLogger("lockgate.store").error("stdlib %s", "too")
    log.debug("filtered out")
    log.info("after")
    got = lines(stream)
    assert [g["event"] for g in got] == ["before", "inside", "stdlib too", "after"]
    assert "request_id" not in got[0] and "request_id" not in got[3]
    assert got[1]["request_id"] == "req_1" and got[1]["model"] == "support"
    assert got[1]["attempt"] == 2 and got[1]["level"] == "warning"
    assert got[1]["logger"] == "lockgate.test" and got[1]["timestamp"].endswith("Z")
    assert got[2]["request_id"] == "req_1" and got[2]["logger"] == "lockgate.store"
    assert got[2]["level"] == "error"


async def test_each_task_keeps_its_own_request_id(stream: io.StringIO) -> None:
    log = structlog.get_logger("lockgate.test")

    async def handle(request_id: str) -> None:
        bind_request(request_id=request_id)
        for step in range(3):
            await asyncio.sleep(0)
            log.info("step", step=step, expect=request_id)

    await asyncio.gather(*(asyncio.create_task(handle(f"req_{i}")) for i in range(4)))
    got = lines(stream)
    assert len(got) == 12
    assert all(g["request_id"] == g["expect"] for g in got)


def test_trace_ids_are_added_when_tracing_is_on(stream: io.StringIO) -> None:
    configure_tracing(exporter=InMemorySpanExporter())
    with span("lockgate.request"):
        structlog.get_logger("lockgate.test").info("traced")
    got = lines(stream)[0]
    assert len(got["trace_id"]) == 32 and len(got["span_id"]) == 16


def test_configured_once(stream: io.StringIO) -> None:
    assert is_configured()
    other = io.StringIO()
    assert configure_logging(stream=other) is False  # no second handler, no double lines
    structlog.get_logger("x").info("once")
    assert len(lines(stream)) == 1 and other.getvalue() == ""
    assert configure_logging(LoggingSettings(format="console"), stream=other, force=True)
    structlog.get_logger("x").info("human")
    assert "human" in other.getvalue() and not other.getvalue().startswith("{")
