"""Fixtures: one opened job queue per backend, isolated by unique names, dropped after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockgate.jobs.backends import open_queue
from lockgate.jobs.nats_queue import NatsQueue
from lockgate.jobs.queue import JobQueue, QueueOptions

BACKENDS = ["sqlite", "postgres", "redis", "nats"]


def queue_url(backend: str, tmp_path: Path) -> str:
    tag = "lgjobs_" + uuid.uuid4().hex[:10]
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    if backend == "postgres":
        return f"postgresql://postgres@127.0.0.1:5432/test?schema={tag}"
    if backend == "redis":
        return f"redis://127.0.0.1:6379/0?prefix={tag}"
    if backend == "nats":
        return f"nats://127.0.0.1:4222?prefix={tag}"
    raise AssertionError(backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, tmp_path: Path) -> str:
    return queue_url(backend, tmp_path)


@pytest.fixture
def options() -> QueueOptions:
    return QueueOptions(max_depth=1000, result_ttl=3600, backoff_base=0.05, backoff_cap=0.2)


@pytest.fixture
async def queue(url: str, options: QueueOptions) -> AsyncIterator[JobQueue]:
    q = open_queue(url, options)
    await q.open()
    try:
        yield q
    finally:
        await q.drop()
        await q.aclose()


@pytest.fixture
async def nq() -> AsyncIterator[NatsQueue]:
    """A NATS queue of its own (prefix), fast backoff, dropped after."""
    q = NatsQueue(f"nats://127.0.0.1:4222?prefix=lgjobs_{uuid.uuid4().hex[:10]}",
                  QueueOptions(backoff_base=0.05, backoff_cap=0.2))
    await q.open()
    yield q
    await q.drop()
    await q.aclose()
