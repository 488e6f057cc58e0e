"""``knowledge_graph.enabled`` through a real gateway: ingest and query over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config


@pytest.fixture(scope="module")
def kg_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    from lockgate.testing.stub_upstream import run_stub_in_thread

    home = tmp_path_factory.mktemp("kg-home")
    db = f"sqlite:///{home / 'lockgate.db'}"
    with run_stub_in_thread() as stub:
        text = gateway_config(stub.base_url, home, db, "knowledge_graph: {enabled: true}\n")
        server = ServerThread(text, home)
        url = server.start()
        try:
            yield Gateway(url, MASTER, text, home, db)
        finally:
            server.stop()


def test_query_answers_with_cited_graph_facts_and_no_hidden_ones(kg_gateway: Gateway) -> None:
    gw = kg_gateway
    docs = [{"id": "alice.md", "text": "Alice Smith works for Acme Robotics as a welder."},
            {"id": "acme.md", "text": "Acme Robotics is headquartered in Lyon."}]
    secret = [{"id": "owner.md", "text": "Acme Robotics is owned by Zorg Holdings."}]
    noise = [{"id": f"n{i}.md", "text": f"Firm {i} is headquartered in a harbour town."}
             for i in range(20)]
    with gw.admin() as c:
        for batch, acl in ((docs + noise, ["public"]), (secret, ["group:board"])):
            r = c.post("/v1/rag/kb/documents", json={"acl": acl, "embed_model": None,
                                                     "documents": batch})
            assert r.status_code == 200, r.text
    key = gw.new_key()
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as c:
        r = c.post("/v1/rag/kb/query", json={
            "question": "Where is the employer of Alice Smith headquartered, and who owns it?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {p["doc_id"] for p in body["passages"][:2]} == {"alice.md", "acme.md"}
    facts = body["facts"]
    assert any(f["object"] == "Lyon" and f["doc_id"] == "acme.md" for f in facts)
    assert any(f["cited"] for f in facts) and "[G1]" in body["answer"]
    assert "Zorg" not in json.dumps(body)
