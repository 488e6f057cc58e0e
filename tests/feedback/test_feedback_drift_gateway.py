"""End to end on one PostgreSQL: two gateways, the openai SDK, the stand-in upstream.
The upstream slows down mid-stream; the drift monitors (one holds the lease) raise one
p95-latency alert, delivered once across both gateways."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from lockgate.testing.stub_upstream import run_stub_in_thread
from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config
from tests.support.postgres import fresh_database

DRIFT = """
log_bodies: true
feedback:
  drift: {interval: 0.2, window: 10, window_min_samples: 10, lease_seconds: 5}
alerts: {gauge_interval: 0.2}
"""


@pytest.fixture
def two_gateways(tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[list[Gateway], str]]:
    pg = fresh_database("lg_fbdrift")
    db = next(pg)
    with run_stub_in_thread() as stub:
        servers, gateways = [], []
        try:
            for _ in range(2):
                home = tmp_path_factory.mktemp("drift")
                text = gateway_config(stub.base_url, home, db, extra=DRIFT)
                server = ServerThread(text, home)
                servers.append(server)
                gateways.append(Gateway(server.start(), MASTER, text, home, db))
            yield gateways, stub.base_url
        finally:
            for s in servers:
                s.stop()
    for _ in pg:
        pass


def _raised(metrics: str) -> float:
    m = re.search(r'lockgate_alerts_total\{event="raised",kind="drift"\} ([0-9.]+)', metrics)
    return float(m.group(1)) if m else 0.0


def test_latency_shift_in_the_upstream_alerts_once_across_two_gateways(
    two_gateways: tuple[list[Gateway], str],
) -> None:
    gateways, upstream = two_gateways
    key = gateways[0].new_key("drift-team")
    clients = [OpenAI(base_url=g.v1, api_key=key, max_retries=0) for g in gateways]
    time.sleep(0.5)  # a drift monitor has taken the lease and set its usage cursor

    def calls(n: int) -> None:
        for i in range(n):
            clients[i % 2].chat.completions.create(
                model="fast", messages=[{"role": "user", "content": "hi"}],
                metadata={"task": "invoices"})

    calls(150)  # baseline: 10 windows of 10 calls, then more of the same
    httpx.post(upstream + "/_script", json=["slow:120"] * 80).raise_for_status()
    calls(80)
    subject = "p95_latency|task=invoices|deployment="
    deadline = time.monotonic() + 20
    with gateways[1].admin() as admin:
        while True:
            found = [a for a in admin.get("/v1/alerts", params={"kind": "drift"}).json()["data"]
                     if a["subject"].startswith(subject)]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert len(found) == 1, found
    assert found[0]["details"]["baseline_mean"] < 120
    time.sleep(1.0)  # more rounds on both gateways: still one incident, one delivery
    with gateways[0].admin() as admin:
        drift = admin.get("/v1/alerts", params={"kind": "drift"}).json()["data"]
    assert [a["subject"] for a in drift] == [found[0]["subject"]]
    total = sum(_raised(httpx.get(g.url + "/metrics").text) for g in gateways)
    assert total == 1.0
