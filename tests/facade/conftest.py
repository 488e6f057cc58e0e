"""Fixtures: the stand-in model upstream, a legacy service, and facades built on a Runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockgate.facade import Facades
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from lockgate.testing.stub_upstream import StubUpstream
from tests.facade.legacy import free_port, start_legacy

# tasks whose answers the stand-in model makes deterministic ("echo:" answers verbatim)
TASKS = """
jobs:
  tasks:
    - {name: gist, prompt: "echo:{{input}}", json_mode: false}
    - name: label
      prompt: 'echo:{"label": "{{input.kind}}"}'
      output_schema: {type: object, properties: {label: {type: string}}, required: [label]}
      json_mode: false
    - {name: slow_gist, model: slow, prompt: "echo:{{input}}", json_mode: false}
"""


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def legacy() -> AsyncIterator[str]:
    runner, url = await start_legacy()
    yield url
    await runner.cleanup()


FacadeFactory = Callable[..., Awaitable[str]]
RUNTIMES: dict[str, Runtime] = {}
"""Facade base URL -> the Runtime serving it (metrics, job queue)."""
FACADES: dict[str, Facades] = {}
"""Facade base URL -> its Facades (listeners: open tunnels, tasks)."""


def runtime_of(base: str) -> Runtime:
    return RUNTIMES[base]


@pytest.fixture
async def facade(stub: StubUpstream, legacy: str, tmp_path: Path
                 ) -> AsyncIterator[FacadeFactory]:
    """``await facade(rules=[...], shadow=False)`` -> the facade's base URL."""
    opened: list[tuple[Runtime, Facades]] = []

    async def make(rules: list[dict[str, Any]] | None = None, **extra: Any) -> str:
        port = free_port()
        doc = yaml.safe_load(TASKS)
        doc.update({
            "home": str(tmp_path / f"home{len(opened)}"),
            "models": [
                {"name": "local", "provider": "openai", "base_url": stub.openai_base,
                 "model": "stub-1", "max_retries": 0},
                {"name": "slow", "provider": "openai", "base_url": stub.openai_base,
                 "model": "slow:1500", "max_retries": 0},
            ],
            "facades": [{"name": "legacy", "port": port, "upstream": legacy,
                         "rules": rules or [], **extra}],
        })
        cfg = parse_config(yaml.safe_dump(doc))
        rt = await Runtime.start(cfg, warm_up=False)
        fac = await Facades.start(rt)
        opened.append((rt, fac))
        RUNTIMES[f"http://127.0.0.1:{port}"] = rt
        FACADES[f"http://127.0.0.1:{port}"] = fac
        return f"http://127.0.0.1:{port}"

    yield make
    for rt, fac in opened:
        await fac.aclose()
        await rt.aclose()
