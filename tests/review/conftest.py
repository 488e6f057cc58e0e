"""A gateway with review policies (SQLite and PostgreSQL), the stand-in upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.conftest import (  # noqa: F401  (fixtures)
    MASTER,
    Gateway,
    ServerThread,
    database_url,
    gateway_config,
    upstream,
)

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
