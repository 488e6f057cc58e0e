"""A gateway with review policies (SQLite and PostgreSQL), the stand-in upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.conftest import (  # noqa: F401  (fixtures)
    MASTER,
    Gateway,
    ServerThread,
    database_url,
    gateway_config,
    upstream,
)
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def own_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own (the review webhooks' outbox is one per deployment: a
    sender delivers every row in it, so tests that send must not share one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lockgate.db'}"
    else:
        yield from fresh_database("lg_review")


INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "confidence": {"type": "number"},
    },
    "required": ["vendor", "amount"],
}

REVIEW_YAML = """  - name: opinion
    id: second-opinion
    provider: rules
    rules: {fixed: "a different answer"}
review:
  claim_ttl_s: 30
  sweep_interval_s: 0.2
  policies:
    invoice:
      when: {predicates: ["$.amount > 10000"], confidence_below: 0.5}
      confidence: {source: field, field: confidence}
      mode: sync_wait
      wait_s: 0.3
      reviewers: [finance]
      escalate_to: finance-leads
      impact_field: amount
    invoice_async:
      when: {predicates: ["$.amount > 10000", "request:$.metadata.priority == high"]}
      mode: async
      reviewers: [finance]
    agree_same:
      when: {confidence_below: 0.9}
      confidence: {source: agreement, samples: 3}
      mode: async
    agree_other:
      when: {confidence_below: 0.9}
      confidence: {source: agreement, deployments: [second-opinion]}
      mode: async
    triage_lp:
      when: {confidence_below: 0.5}
      confidence: {source: logprobs}
      mode: async
      reviewers: [support]
"""


@pytest.fixture(scope="module")
def review_gateway(upstream: str, database_url: str,  # noqa: F811
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("revhome")
    text = gateway_config(upstream, home, database_url, REVIEW_YAML)
    server = ServerThread(text, home)
    url = server.start()
    try:
        yield Gateway(url, MASTER, text, home, database_url)
    finally:
        server.stop()
