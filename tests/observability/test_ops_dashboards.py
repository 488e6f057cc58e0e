"""The shipped Grafana dashboard and Prometheus alert rules only name metrics that a live
gateway exports: every ``lockgate_*`` series they query appears on ``/metrics`` after
traffic that exercises each control (calls, cache, budget denial, PII guard, kill switch,
upstream errors, breaker, audit, a queued job)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "lockgate.json"
ALERTS = ROOT / "docs" / "prometheus" / "lockgate-alerts.yml"
NAME = re.compile(r"\blockgate_[a-z0-9_]+\b")

EXTRA = """
cache: {enabled: true, ttl_seconds: 60}
guards:
  pii: {action: redact}
teams:
  broke: {budget: {daily: 0.0000001}}
jobs:
  default_model: fast
  alerts: {interval: 0.2}
"""


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    out += [str(v.get("definition", "")) for v in doc["templating"]["list"]]
    return out


def alert_exprs() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [str(r["expr"]) for g in doc["groups"] for r in g["rules"]]


def test_dashboard_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] == "lockgate"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [p for p in doc["panels"] if p["type"] != "row"]
    assert len(graphs) >= 20
    for p in graphs:
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24


def test_alert_rules_are_well_formed() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 10
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for r in rules:
        assert r["labels"]["severity"] in ("page", "warn", "info"), r["alert"]
        assert r["annotations"]["summary"], r["alert"]
        assert NAME.search(r["expr"]), r["alert"]


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    return tool


def test_promtool_accepts_the_alert_rules() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, as a recording rule."""
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"]
             for t in p.get("targets", [])]
    rules = [{"record": f"lockgate:panel_{i}",
              "expr": e.replace("$__rate_interval", "5m").replace("$model", ".*")}
             for i, e in enumerate(exprs)]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    out = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_metrics_doc_links_them() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    assert "grafana/lockgate.json" in text and "prometheus/lockgate-alerts.yml" in text


@pytest.fixture(scope="module")
def busy_gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("opsgw")
    db = f"sqlite:///{home / 'lockgate.db'}"
    text = gateway_config(upstream, home, db, EXTRA)
    server = ServerThread(text, home)
    url = server.start()
    try:
        yield Gateway(url, MASTER, text, home, db)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    from lockgate.testing.stub_upstream import run_stub_in_thread

    with run_stub_in_thread() as stub:
        yield stub.base_url


def _traffic(gw: Gateway) -> None:
    key = gw.new_key()
    c = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=30)
    for _ in range(2):  # a miss then a hit
        c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    c.chat.completions.create(model="fast", messages=[
        {"role": "user", "content": "mail me at jane.doe@example.com"}])  # PII redact
    c.embeddings.create(model="embed", input="vectors")
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="always-500",
                                      messages=[{"role": "user", "content": "x"}])
    broke = openai.OpenAI(base_url=gw.v1, api_key=gw.new_key(team="broke"), max_retries=0)
    with pytest.raises(openai.RateLimitError):
        broke.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
    with gw.admin() as a:
        assert a.post("/admin/controls/kill", json={"model": "other"}).status_code == 200
        try:
            with pytest.raises(openai.APIStatusError):
                c.chat.completions.create(model="other",
                                          messages=[{"role": "user", "content": "x"}])
        finally:
            a.post("/admin/controls/kill", json={"model": "other", "off": False})
    r = httpx.post(gw.v1 + "/jobs", headers={"Authorization": f"Bearer {key}"},
                   json={"task": "summarize", "input": "queued for the gauges"}, timeout=10)
    assert r.status_code == 202, r.text


def _exported(gw: Gateway) -> set[str]:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
    return names


def test_every_metric_they_name_is_exported(busy_gateway: Gateway) -> None:
    _traffic(busy_gateway)
    wanted: dict[str, list[str]] = {}
    for where, exprs in (("dashboard", dashboard_exprs()), ("alerts", alert_exprs())):
        for expr in exprs:
            for name in NAME.findall(expr):
                wanted.setdefault(name, []).append(where)
    assert len(wanted) >= 15
    missing: dict[str, Any] = {}
    deadline = time.monotonic() + 10  # the jobs monitor sets its gauges every 0.2 s
    while True:
        exported = _exported(busy_gateway)
        missing = {n: w for n, w in wanted.items() if n not in exported}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not missing, f"named but not on /metrics: {missing}"
