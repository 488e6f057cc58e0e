"""Metric labels come from a closed set: made-up model names never become Prometheus series.

10,000 requests naming distinct bogus models (1 KB each) — unauthenticated (401), with a key
(404), and as ``rag/<collection that does not exist>`` (404) — leave ``/metrics`` the same
size and the process's memory flat; configured models and existing ``rag/<collection>``
names still get their own series.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import MASTER, Gateway, free_port, gateway_config

N = 10_000
NAME_BYTES = 1024


@pytest.fixture(scope="module")
def gw(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``lockgate serve`` as its own process, so its memory is measured alone."""
    home = tmp_path_factory.mktemp("labels")
    db = f"sqlite:///{home / 'lockgate.db'}"
    text = gateway_config(upstream, home, db, "rag: {embed_model: embed}\n")
    cfg = home / "lockgate.yaml"
    cfg.write_text(text)
    port = free_port()
    log = (home / "gw.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    proc = subprocess.Popen([sys.executable, "-m", "lockgate", "serve", "-c", str(cfg),
                             "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (home / "gw.log").read_text()[-2000:]
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)
        gateway = Gateway(url, MASTER, text, home, db)
        gateway.pid = proc.pid  # type: ignore[attr-defined]
        yield gateway
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def rss_bytes(pid: int) -> int:
    """Resident memory of the gateway process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def metrics_text(gw: Gateway) -> str:
    with gw.admin() as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    return r.text


def series(text: str) -> set[str]:
    """Every series (name + labels) on the page, values stripped."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def model_labels(text: str) -> set[str]:
    return set(re.findall(r'model="([^"]*)"', text))


def bogus_calls(gw: Gateway, key: str, n: int, tag: str, concurrency: int = 8) -> None:
    async def worker(c: httpx.AsyncClient, ids: range) -> None:
        for i in ids:
            name = f"{tag}-{i}-" + uuid.uuid4().hex
            name = (name * (NAME_BYTES // len(name) + 1))[:NAME_BYTES]
            kind = i % 3
            headers = {} if kind == 0 else {"Authorization": f"Bearer {key}"}
            model = ("rag/" + name[:60]) if kind == 2 else name
            r = await c.post("/v1/chat/completions", headers=headers, json={
                "model": model, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == (401 if kind == 0 else 404), r.text

    async def run() -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
            await asyncio.gather(*(worker(c, range(w, n, concurrency))
                                   for w in range(concurrency)))

    asyncio.run(run())


def test_bogus_model_names_leave_metrics_and_memory_flat(gw: Gateway) -> None:
    key = gw.new_key()
    coll = "labels-" + uuid.uuid4().hex[:6]
    with gw.admin() as c:
        r = c.post(f"/v1/rag/{coll}/documents", json={"documents": [
            {"id": "d1", "title": "Leave", "text": "Employees get 25 vacation days.",
             "acl": ["public"]}]})
    assert r.status_code == 200, r.text
    with httpx.Client(base_url=gw.v1, headers={"Authorization": f"Bearer {key}"},
                      timeout=10) as c:
        assert c.post("/chat/completions", json={
            "model": "fast", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
        assert c.post("/chat/completions", json={
            "model": f"rag/{coll}", "messages": [{"role": "user", "content": "vacation days?"}],
        }).status_code == 200
    bogus_calls(gw, key, 300, "warm")  # first use of every code path, then measure
    text0, rss0 = metrics_text(gw), rss_bytes(gw.pid)  # type: ignore[attr-defined]
    labels0 = model_labels(text0)
    assert {"fast", f"rag/{coll}", "unknown"} <= labels0
    assert all(len(m) < 100 for m in labels0)

    bogus_calls(gw, key, N, "bogus")

    text1, rss1 = metrics_text(gw), rss_bytes(gw.pid)  # type: ignore[attr-defined]
    assert model_labels(text1) == labels0
    assert series(text1) == series(text0)
    assert abs(len(text1) - len(text0)) < 2048  # only counter values changed
    # RSS: the first round fills the allocator's pools and the audit backlog (10-20 MB on
    # this box whatever the labels do); a second round of as many new names must not grow
    # it much again (4-8 MB seen: the audit table and its page cache grow with the rows).
    # Kept names (labels, a cache keyed by model) would add 10 MB of names per round on top.
    bogus_calls(gw, key, N, "again")
    rss2 = rss_bytes(gw.pid)  # type: ignore[attr-defined]
    print(f"gateway RSS {rss0 / 1e6:.1f} -> {rss1 / 1e6:.1f} -> {rss2 / 1e6:.1f} MB")
    assert series(metrics_text(gw)) == series(text0)
    assert rss2 - rss1 < 12 * 1024 * 1024, f"RSS grew by {(rss2 - rss1) / 1e6:.1f} MB again"
    count = re.search(r'lockgate_requests_total\{kind="chat",model="unknown",status="404"\} '
                      r'([0-9.e+]+)', text1)
    assert count is not None and float(count.group(1)) >= N * 2 // 3
