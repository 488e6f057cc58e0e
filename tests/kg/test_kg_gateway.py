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


def test_model_extraction_goes_through_the_pipeline(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    import sqlite3
    import time

    from lockgate.testing.stub_upstream import run_stub_in_thread

    home = tmp_path_factory.mktemp("kg-model")
    db = f"sqlite:///{home / 'lockgate.db'}"
    texts = ["Alice Smith works for Acme Robotics.", "Acme Robotics is headquartered in Lyon."]
    with run_stub_in_thread() as stub:
        cfg = gateway_config(stub.base_url, home, db,
                             "knowledge_graph: {enabled: true, extractor_model: fast}\n")
        server = ServerThread(cfg, home)
        gw = Gateway(server.start(), MASTER, cfg, home, db)
        try:
            with gw.admin() as c:
                r = c.post("/v1/rag/m/documents", json={
                    "acl": ["public"], "embed_model": None,
                    "documents": [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)]})
                assert r.status_code == 200 and not r.json()["failed"], r.text
        finally:
            server.stop()
    path = home / "lockgate.db"
    deadline = time.monotonic() + 10
    calls: list[tuple[str, str, str]] = []
    while time.monotonic() < deadline and len(calls) < 2:
        with sqlite3.connect(path) as conn:
            calls = conn.execute("SELECT source, model, key_id FROM usage_records WHERE "
                                 "kind = 'chat'").fetchall()
        time.sleep(0.1)
    # one extraction call per chunk, audited as RAG calls of the ingesting (master) key
    assert [(s, m) for s, m, _ in calls] == [("rag", "fast"), ("rag", "fast")]
    with sqlite3.connect(path) as conn:
        facts = conn.execute(
            "SELECT s.name, o.name FROM kg_relations r JOIN kg_entities s ON s.id = r.subject_id"
            " JOIN kg_entities o ON o.id = r.object_id").fetchall()
    for subject, obj in facts:  # grounded: both ends occur in a source text
        assert any(subject in t and obj in t for t in texts), (subject, obj)
