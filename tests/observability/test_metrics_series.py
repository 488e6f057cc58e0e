"""Metrics.observe_call keeps its labelled series per label set; what /metrics shows is what
prometheus_client's own ``labels()`` calls gave before (counts, sums, which series exist)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import lockgate.metrics as metrics_module
from lockgate.metrics import MAX_LABEL_CHARS, UNKNOWN_MODEL, Metrics


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_repeated_calls_add_up_in_their_own_series() -> None:
    m = Metrics(CollectorRegistry())
    for _ in range(3):
        m.observe_call("gpt", "chat", 200, 0.5, 0.001, 10, 5, 0.25)
    m.observe_call("gpt", "chat", 429, 0.1, 0.001, 0, 0, 0.0)
    m.observe_call("emb", "embeddings", 200, 0.2, 0.002, 7, 0, 0.0)
    assert value(m, "lockgate_requests_total", model="gpt", kind="chat", status="200") == 3
    assert value(m, "lockgate_requests_total", model="gpt", kind="chat", status="429") == 1
    assert value(m, "lockgate_request_latency_seconds_count", model="gpt") == 4
    assert value(m, "lockgate_request_latency_seconds_sum", model="gpt") == 1.6
    assert value(m, "lockgate_overhead_seconds_count", model="emb") == 1
    assert value(m, "lockgate_tokens_total", model="gpt", direction="prompt") == 30
    assert value(m, "lockgate_tokens_total", model="gpt", direction="completion") == 15
    assert value(m, "lockgate_cost_total", model="gpt") == 0.75
    assert value(m, "lockgate_tokens_total", model="emb", direction="prompt") == 7


def test_token_and_cost_series_appear_only_once_counted() -> None:
    m = Metrics(CollectorRegistry())
    m.observe_call("emb", "embeddings", 200, 0.2, 0.002, 7, 0, 0.0)
    text = m.render().decode()
    assert 'lockgate_tokens_total{direction="prompt",model="emb"} 7.0' in text
    assert 'direction="completion",model="emb"' not in text
    assert 'lockgate_cost_total{model="emb"}' not in text


def test_over_long_names_count_as_unknown() -> None:
    m = Metrics(CollectorRegistry())
    m.observe_call("x" * (MAX_LABEL_CHARS + 1), "chat", 404, 0.0, 0.0, 0, 0, 0.0)
    assert value(m, "lockgate_requests_total", model=UNKNOWN_MODEL, kind="chat",
                 status="404") == 1


def test_the_series_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_MAX_CACHED_CHILDREN", 2)
    m = Metrics(CollectorRegistry())
    for status in range(200, 210):
        m.observe_call("gpt", "chat", status, 0.1, 0.0, 1, 0, 0.0)
        m.observe_call("gpt", "chat", status, 0.1, 0.0, 1, 0, 0.0)
    for status in range(200, 210):  # uncached label sets still count
        assert value(m, "lockgate_requests_total", model="gpt", kind="chat",
                     status=str(status)) == 2
    assert len(m._children) == 2


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in m.registry.collect() for s in fam.samples
            if not s.name.endswith("_created")}


def test_tallied_calls_read_exactly_as_observed_ones() -> None:
    """The tally (one process) and prometheus_client's own observe/inc (what the multiprocess
    mode does) give the same samples, bucket edges and values past the last bound included."""
    tallied, direct = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    assert tallied._tally is not None
    direct._tally = None
    values = [0.0, 0.0001, 0.00025, 0.0003, 0.005, 0.0051, 1.0, 2.5, 119.0, 120.0, 500.0]
    for i, v in enumerate(values):
        for m in (tallied, direct):
            m.observe_call("gpt" if i % 3 else "emb", "chat", 200 if i % 4 else 502, v, v / 10,
                           i, i % 2, 0.5 * i)
    got, want = _samples(tallied), _samples(direct)
    assert got == want
    assert want[("lockgate_request_latency_seconds_bucket", (("le", "+Inf"), ("model", "gpt")))]


def test_reads_between_calls_add_up() -> None:
    m = Metrics(CollectorRegistry())
    m.observe_call("gpt", "chat", 200, 0.5, 0.001, 10, 5, 0.25)
    assert value(m, "lockgate_requests_total", model="gpt", kind="chat", status="200") == 1
    assert 'lockgate_request_latency_seconds_count{model="gpt"} 1.0' in m.render().decode()
    m.observe_call("gpt", "chat", 200, 0.5, 0.001, 10, 5, 0.25)
    m.observe_call("gpt", "chat", 200, 0.25, 0.001, 10, 5, 0.25)
    assert value(m, "lockgate_requests_total", model="gpt", kind="chat", status="200") == 3
    assert value(m, "lockgate_request_latency_seconds_sum", model="gpt") == 1.25
    assert value(m, "lockgate_request_latency_seconds_bucket", model="gpt", le="0.5") == 3
    assert value(m, "lockgate_tokens_total", model="gpt", direction="completion") == 15


def test_multiprocess_mode_writes_each_call_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several workers another process renders the files: no tally to wait for."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    m = Metrics(CollectorRegistry())
    assert m._tally is None
    m.observe_call("gpt", "chat", 200, 0.5, 0.001, 10, 5, 0.25)
    # in the series at once, before anything reads the registry (which would flush a tally)
    assert m._series(m.requests, "gpt", "chat", "200")._value.get() == 1
    assert m._series(m.latency, "gpt")._sum.get() == 0.5
