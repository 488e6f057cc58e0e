"""ACL leakage suite: restricted chunks never reach results, citations or answers."""

from __future__ import annotations

import random

import pytest

from lockgate.rag.service import RagService
from lockgate.rag.types import Caller, SourceDocument
from tests.rag.rag_support import OPERATOR, FakePipeline

USERS = [f"u{i}" for i in range(12)]
GROUPS = ["eng", "sales", "hr", "legal", "exec"]
TOPICS = ["payroll", "merger", "roadmap", "lawsuit", "bonus", "layoffs", "pricing", "audit"]


def _corpus(seed: int = 7) -> list[SourceDocument]:
    rng = random.Random(seed)
    docs = []
    for i in range(120):
        topic = TOPICS[i % len(TOPICS)]
        kind = i % 4
        if kind == 0:
            acl: tuple[str, ...] = ("public",)
        elif kind == 1:
            acl = (f"group:{rng.choice(GROUPS)}",)
        elif kind == 2:
            acl = (f"user:{rng.choice(USERS)}",)
        else:
            acl = (f"group:{rng.choice(GROUPS)}", f"user:{rng.choice(USERS)}")
        secret = f"codeword{i:03d}"
        text = (f"# {topic.title()} memo {i}\n\nThe {topic} plan {secret} covers the {topic} "
                f"budget for quarter {i % 4 + 1}.\n\nDetails about {topic} and {secret} follow.")
        docs.append(SourceDocument(doc_id=f"doc{i:03d}", title=f"{topic} memo {i}", text=text,
                                   principals=acl))
    return docs


def _allowed(doc: SourceDocument, caller: Caller) -> bool:
    return bool(set(doc.principals) & set(caller.principals()))


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
async def test_no_restricted_chunk_in_results_or_answers(service: RagService, mode: str) -> None:
    pipe = service.pipeline
    assert isinstance(pipe, FakePipeline)
    docs = _corpus()
    await service.ingest_documents("acl", docs, principal=OPERATOR)
    by_id = {d.doc_id: d for d in docs}
    callers = [Caller()] + [Caller(user_id=u) for u in USERS[:4]] + [
        Caller(user_id=USERS[5], groups=(g,)) for g in GROUPS[:3]]
    checked = 0
    for caller in callers:
        for d in docs[::9]:
            # adversarial: quote the restricted text verbatim
            query = d.text.split("\n\n")[1]
            res = await service.retrieve("acl", query, caller, mode=mode, k=10)  # type: ignore[arg-type]
            assert res.hits, "public documents always exist, so something comes back"
            for h in res.hits:
                assert _allowed(by_id[h.doc_id], caller), (caller, h.doc_id)
            ans = await service.answer("acl", query, caller, principal=OPERATOR, mode=mode,  # type: ignore[arg-type]
                                       model="local")
            events = [e async for e in service.answer_stream(
                "acl", query, caller, principal=OPERATOR, mode=mode, model="local")]  # type: ignore[arg-type]
            done = events[-1].answer
            assert done is not None
            prompt = pipe.prompts[-1].split("\n\nQuestion: ")[0]  # the passages, not the query
            for c in ans.citations + done.citations:
                assert _allowed(by_id[c["doc_id"]], caller)
            for other in docs:
                secret = f"codeword{int(other.doc_id[3:]):03d}"
                if not _allowed(other, caller):
                    assert secret not in ans.answer and secret not in done.answer
                    assert secret not in prompt, "restricted text sent to the model"
                    assert all(secret not in p.text for p in ans.passages + done.passages)
            checked += 1
    assert checked == len(callers) * len(docs[::9])


async def test_selective_acl_still_returns_k(service: RagService) -> None:
    """1% of documents visible to the caller: k results come back, all of them visible."""
    docs = []
    for i in range(300):
        acl = ("user:rare",) if i % 100 == 0 else ("group:others",)
        docs.append(SourceDocument(doc_id=f"d{i}", title=f"report {i}",
                                   text=f"Quarterly report number {i} about widgets and gears.",
                                   principals=acl))
    # two more visible docs that do not match the query well
    docs.append(SourceDocument(doc_id="x1", title="misc", text="unrelated gardening notes",
                               principals=("user:rare",)))
    await service.ingest_documents("sel", docs, principal=OPERATOR)
    caller = Caller(user_id="rare")
    for mode in ("bm25", "dense", "hybrid"):
        res = await service.retrieve("sel", "quarterly report widgets gears", caller,
                                     mode=mode, k=3, candidates=3)  # type: ignore[arg-type]
        ids = {h.doc_id for h in res.hits}
        assert ids <= {"d0", "d100", "d200", "x1"}
        # the three matching visible documents, even though 297 better-or-equal ones are hidden
        if mode == "bm25":
            assert ids == {"d0", "d100", "d200"}
        else:
            assert len(res.hits) == 3


async def test_filters_are_anded_with_acl(service: RagService) -> None:
    docs = [
        SourceDocument(doc_id="a", title="a", text="alpha plan for eng", principals=("group:eng",),
                       metadata={"dept": "eng"}),
        SourceDocument(doc_id="b", title="b", text="alpha plan for hr", principals=("group:hr",),
                       metadata={"dept": "hr"}),
    ]
    await service.ingest_documents("flt", docs, principal=OPERATOR)
    eng = Caller(user_id="x", groups=("eng",))
    # a filter naming another department cannot widen access
    res = await service.retrieve("flt", "alpha plan", eng, mode="hybrid", filters={"dept": "hr"})
    assert res.hits == []
    res = await service.retrieve("flt", "alpha plan", eng, mode="hybrid", filters={"dept": "eng"})
    assert [h.doc_id for h in res.hits] == ["a"]
    res = await service.retrieve("flt", "alpha plan", eng, mode="bm25",
                                 filters={"doc_id": ["a", "b"]})
    assert [h.doc_id for h in res.hits] == ["a"]
