"""Knowledge-graph RAG: extraction, k-hop retrieval, cited facts, and no ACL leakage."""

from __future__ import annotations

import json

import pytest

from lockgate.rag import Caller, RagService, SourceDocument
from lockgate.rag.graph import GraphOptions, ModelExtractor, RuleExtractor
from lockgate.rag.repository import RagStore
from lockgate.rag.service import RagSettings
from lockgate.store.engine import create_engine
from tests.rag.rag_support import OPERATOR, FakePipeline

PUBLIC = Caller(user_id="pat")
SECRET = Caller(user_id="sam", groups=("secret",))

DOCS = [
    SourceDocument("people/alice.md", "Alice Smith works for Acme Robotics as a welder. "
                   "She lives near the harbour.", title="Alice"),
    SourceDocument("people/bob.md", "Bob Jones works for Zenith Foods as a driver.",
                   title="Bob"),
    SourceDocument("orgs/acme.md", "Acme Robotics is headquartered in Lyon. It builds "
                   "welding arms.", title="Acme"),
    SourceDocument("orgs/zenith.md", "Zenith Foods is headquartered in Porto.", title="Zenith"),
] + [SourceDocument(f"noise/{i}.md", f"Company number {i} is headquartered in a city with "
                    f"a harbour and employs a welder and a driver.", title=f"Noise {i}")
     for i in range(30)]


def test_rule_extractor_names_and_relations() -> None:
    ex = RuleExtractor().extract_sync(
        "Alice Smith works for Acme Robotics as a welder. Acme Robotics is headquartered "
        "in Lyon. The University of Geneva signed a deal with NATO and OpenVault Inc.")
    names = {e.name: e.type for e in ex.entities}
    assert names == {"Alice Smith": "entity", "Acme Robotics": "org", "Lyon": "place",
                     "University of Geneva": "org", "NATO": "entity", "OpenVault Inc": "org"}
    rels = {(r.subject, r.predicate, r.object) for r in ex.relations}
    assert ("Alice Smith", "works for", "Acme Robotics") in rels
    assert ("Acme Robotics", "is headquartered in", "Lyon") in rels
    assert ("University of Geneva", "signed a deal with", "NATO") in rels
    assert all(r.evidence.endswith(".") or r.evidence.endswith("Inc") for r in ex.relations)


async def test_two_hop_question_reaches_the_second_passage(kg_service: RagService) -> None:
    rep = await kg_service.ingest_documents("kb", DOCS, principal=OPERATOR)
    assert rep.added == len(DOCS) and not rep.failed
    q = "In which city is the employer of Alice Smith headquartered?"
    plain = await kg_service.retrieve("kb", q, PUBLIC, k=3, graph=False)
    graph = await kg_service.retrieve("kb", q, PUBLIC, k=3, graph=True)
    assert "orgs/acme.md" not in [h.doc_id for h in plain.hits]  # the noise outranks it
    top = [h.doc_id for h in graph.hits]
    assert top[:2] == ["people/alice.md", "orgs/acme.md"] or \
        set(top[:2]) == {"people/alice.md", "orgs/acme.md"}
    facts = {(f.subject, f.predicate, f.object, f.hop) for f in graph.facts}
    assert ("Alice Smith", "works for", "Acme Robotics", 1) in facts
    assert ("Acme Robotics", "is headquartered in", "Lyon", 2) in facts
    ans = await kg_service.answer("kb", q, PUBLIC)
    cited = [f for f in ans.facts if f["cited"]]
    assert cited and "[G1]" in ans.answer
    assert any(f["object"] == "Lyon" for f in ans.facts)
    assert all(f["doc_id"] in {h.doc_id for h in ans.passages} | {d.doc_id for d in DOCS}
               for f in ans.facts)


async def test_graph_facts_never_cross_the_acl(kg_service: RagService) -> None:
    docs = [
        SourceDocument("pub.md", "Alice Smith works for Acme Robotics.", principals=("public",)),
        SourceDocument("sec.md", "Acme Robotics is secretly owned by Zorg Holdings. "
                       "Zorg Holdings is based in Vaduz.", principals=("group:secret",)),
    ]
    await kg_service.ingest_documents("acl", docs, principal=OPERATOR)
    for q in ("Who owns the employer of Alice Smith?", "Tell me about Zorg Holdings",
              "What is in Vaduz?", "Acme Robotics owner"):
        res = await kg_service.retrieve("acl", q, PUBLIC, k=5, graph=True)
        blob = json.dumps([f.as_dict() for f in res.facts]) + " ".join(h.text for h in res.hits)
        assert "Zorg" not in blob and "Vaduz" not in blob, q
        assert all(f.doc_id == "pub.md" for f in res.facts)
        ans = await kg_service.answer("acl", q, PUBLIC)
        assert "Zorg" not in json.dumps(ans.as_dict(), default=str), q
    # the reader of the secret document gets its facts (hop 2 through the public one)
    res = await kg_service.retrieve("acl", "Who owns the employer of Alice Smith?", SECRET,
                                    k=5, graph=True)
    assert any(f.object == "Zorg Holdings" for f in res.facts)
    # the graph follows the document's ACL as it changes: made public, then deleted
    await kg_service.ingest_documents("acl", [docs[0], SourceDocument(
        "sec.md", docs[1].text, principals=("public",))], principal=OPERATOR)
    res = await kg_service.retrieve("acl", "Tell me about Zorg Holdings", PUBLIC, graph=True)
    assert any("Zorg" in f.subject or "Zorg" in f.object for f in res.facts)
    await kg_service.delete_documents("acl", ["sec.md"])
    res = await kg_service.retrieve("acl", "Tell me about Zorg Holdings", SECRET, graph=True)
    assert res.facts == []
    stats = await kg_service.graph.store.stats((await kg_service.collection("acl")).id)  # type: ignore[union-attr]
    assert stats["relations"] == 1  # only pub.md's


async def test_filters_and_exclusions_apply_to_facts(kg_service: RagService) -> None:
    await kg_service.ingest_documents("f", DOCS[:4], principal=OPERATOR)
    q = "In which city is the employer of Alice Smith headquartered?"
    res = await kg_service.retrieve("f", q, PUBLIC, graph=True,
                                    exclude_doc_ids=["orgs/acme.md"])
    assert all(f.doc_id != "orgs/acme.md" for f in res.facts)
    assert all(h.doc_id != "orgs/acme.md" for h in res.hits)


class _JsonPipeline(FakePipeline):
    def __init__(self, replies: list[str]) -> None:
        super().__init__()
        self.replies = replies

    async def chat(self, call):  # type: ignore[no-untyped-def]
        self.reply = self.replies.pop(0)
        return await super().chat(call)


async def test_model_extractor_keeps_only_grounded_facts() -> None:
    good = json.dumps({"entities": [{"name": "Alice Smith", "type": "person"},
                                    {"name": "Mars", "type": "place"}],
                       "relations": [{"subject": "Alice Smith", "predicate": "Works For",
                                      "object": "Acme Robotics"},
                                     {"subject": "Alice Smith", "predicate": "visited",
                                      "object": "Mars"}]})
    pipe = _JsonPipeline([good, "not json", json.dumps({"entities": "x"})])
    ex = ModelExtractor(pipe, "chat").with_principal(OPERATOR)
    text = "Alice Smith works for Acme Robotics."
    out = await ex.extract(text)
    assert [(r.subject, r.predicate, r.object) for r in out.relations] == [
        ("Alice Smith", "works for", "Acme Robotics")]
    assert {e.name for e in out.entities} == {"Alice Smith", "Acme Robotics"}
    call = pipe.calls[0]
    assert call.source == "rag" and call.principal == OPERATOR
    assert call.body["response_format"]["type"] == "json_schema"
    for _ in range(2):  # broken answers fall back to the rule extractor
        out = await ex.extract(text)
        assert [(r.subject, r.object) for r in out.relations] == [("Alice Smith",
                                                                   "Acme Robotics")]
    assert isinstance(ex, ModelExtractor) and ex.fallbacks == 2


async def test_generated_answer_cites_graph_facts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'g.db'}")
    try:
        store = await RagStore.migrated(engine)
        pipe = FakePipeline(reply="Lyon [1][G2], not [G9].")
        svc = RagService(store, pipe, RagSettings(mode="bm25", generation_model="chat",
                                                  graph=GraphOptions()))
        await svc.ingest_documents("g", DOCS[:4], principal=OPERATOR)
        ans = await svc.answer("g", "In which city is the employer of Alice Smith "
                               "headquartered?", PUBLIC, principal=OPERATOR)
        assert "[G9]" not in ans.answer and "[G2]" in ans.answer
        assert [f["n"] for f in ans.facts if f["cited"]] == [2]
        assert "Graph facts:" in pipe.prompts[-1] and "[G1]" in pipe.prompts[-1]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("graph", [False, True])
async def test_graph_off_changes_nothing(kg_service: RagService, graph: bool) -> None:
    await kg_service.ingest_documents("n", DOCS[:4], principal=OPERATOR)
    res = await kg_service.retrieve("n", "Bob Jones", PUBLIC, graph=graph)
    assert res.hits[0].doc_id == "people/bob.md"
    assert bool(res.facts) is graph


async def test_dropping_the_collection_drops_its_graph(kg_service: RagService) -> None:
    await kg_service.ingest_documents("d", DOCS[:4], principal=OPERATOR)
    cid = (await kg_service.collection("d")).id
    assert kg_service.graph is not None
    assert (await kg_service.graph.store.stats(cid))["relations"] > 0
    await kg_service.drop("d")
    assert await kg_service.graph.store.stats(cid) == {"entities": 0, "relations": 0,
                                                      "mentions": 0}


async def test_fact_names_come_from_the_readable_passage(kg_service: RagService) -> None:
    # the secret passage introduces the entity first, with its own spelling
    await kg_service.ingest_documents("names", [SourceDocument(
        "a-secret.md", "ZORG-HOLDINGS owns Vaduz Bank.", principals=("group:secret",))],
        principal=OPERATOR)
    await kg_service.ingest_documents("names", [SourceDocument(
        "b-public.md", "Alice Smith works for Zorg Holdings.")], principal=OPERATOR)
    res = await kg_service.retrieve("names", "Who employs Alice Smith?", PUBLIC, graph=True)
    assert [(f.subject, f.object) for f in res.facts] == [("Alice Smith", "Zorg Holdings")]


async def test_status_reports_the_graph(kg_service: RagService) -> None:
    await kg_service.ingest_documents("s", DOCS[:4], principal=OPERATOR)
    st = await kg_service.status("s")
    assert st["graph"]["relations"] >= 4 and st["graph"]["entities"] >= 6


async def test_rebuild_fills_the_graph_of_an_existing_collection(kg_db_url: str) -> None:
    engine = create_engine(kg_db_url)
    try:
        store = await RagStore.migrated(engine)
        off = RagService(store, FakePipeline(), RagSettings(mode="bm25"))
        await off.ingest_documents("old", DOCS[:4], principal=OPERATOR)
        on = RagService(store, FakePipeline(), RagSettings(mode="bm25", graph=GraphOptions()))
        q = "In which city is the employer of Alice Smith headquartered?"
        assert (await on.retrieve("old", q, PUBLIC)).facts == []
        # re-sending unchanged documents does not extract (content unchanged): rebuild does
        await on.ingest_documents("old", DOCS[:4], principal=OPERATOR)
        assert (await on.retrieve("old", q, PUBLIC)).facts == []
        stats = await on.rebuild_graph("old", principal=OPERATOR)
        assert stats["documents"] == 4 and stats["relations"] >= 4
        assert any(f.object == "Lyon" for f in (await on.retrieve("old", q, PUBLIC)).facts)
        again = await on.rebuild_graph("old", principal=OPERATOR)
        assert again == stats  # replaced, not duplicated
        with pytest.raises(ValueError, match="off"):
            await off.rebuild_graph("old")
    finally:
        await engine.dispose()


async def test_a_contract_violation_falls_back_to_rules() -> None:
    from lockgate.guards.errors import ContractViolation

    class Violating(FakePipeline):
        async def chat(self, call):  # type: ignore[no-untyped-def]
            raise ContractViolation("response-format-x@0", ["$: not an object"])

    ex = ModelExtractor(Violating(), "chat")
    out = await ex.extract("Alice Smith works for Acme Robotics.")
    assert [(r.subject, r.object) for r in out.relations] == [("Alice Smith", "Acme Robotics")]
    assert ex.fallbacks == 1
