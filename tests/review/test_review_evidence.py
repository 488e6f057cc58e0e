"""The reviewer sees the evidence: a reviewed answer of ``rag/<collection>`` carries its
citations (document id, title, chunk) into the review item.

A real gateway (SQLite and PostgreSQL) with a ``rag:`` section and a review policy that
sends every answer of task ``kb_answer`` to a person; the stand-in upstream embeds and
generates. The 202 names the item; the item's ``evidence`` lists the citations the caller
would have received.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway.conftest import (  # noqa: F401  (fixtures)
    MASTER,
    Gateway,
    ServerThread,
    database_url,
    gateway_config,
    upstream,
)
from tests.gateway.test_gateway_rag import documents

QUESTION = "How many vacation days do employees get per year?"


@pytest.fixture(scope="module")
def rag_review_gateway(upstream: str, database_url: str,  # noqa: F811
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("ragrev")
    extra = """
rag:
  embed_model: embed
  generation_model: fast
review:
  policies:
    kb_answer:
      when: {sample: 1.0}
      mode: async
      reviewers: [support]
"""
    text = gateway_config(upstream, home, database_url, extra)
    server = ServerThread(text, home)
    url = server.start()
    try:
        yield Gateway(url, MASTER, text, home, database_url)
    finally:
        server.stop()


def test_reviewed_rag_answer_shows_its_citations(rag_review_gateway: Gateway) -> None:
    gw = rag_review_gateway
    team = "ev-" + uuid.uuid4().hex[:8]
    coll = "kb-" + uuid.uuid4().hex[:8]
    with gw.admin() as c:
        r = c.post(f"/v1/rag/{coll}/documents", json={"documents": documents(team)})
        assert r.status_code == 200, r.text
    key = gw.new_key()
    with httpx.Client(base_url=gw.url, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as c:
        r = c.post("/v1/chat/completions", headers={"x-lockgate-task": "kb_answer"},
                   json={"model": f"rag/{coll}",
                         "messages": [{"role": "user", "content": QUESTION}]})
    assert r.status_code == 202, r.text
    assert r.headers["x-lockgate-review"] == "pending"
    item_id = r.json()["id"]
    with gw.admin() as c:
        got = c.get(f"/v1/reviews/{item_id}")
    assert got.status_code == 200, got.text
    item = got.json()
    assert item["policy"]["reasons"] == ["random audit sample (1)"]
    evidence = item["evidence"]
    assert evidence, item
    docs = {e["doc_id"] for e in evidence}
    assert "pub/vacation.md" in docs, evidence
    assert all(e.get("title") is not None and e.get("chunk_id") for e in evidence), evidence
