"""RAG through the real gateway: ingest over HTTP, cited answers, ACL, signed end users, refusal.

A lockgate server (uvicorn, loopback) with a ``rag:`` section: the stand-in upstream is
the embeddings model (hashed bags of words) and the generation model (it echoes the
prompt, i.e. every passage it was given — so a restricted passage that reached the
model would show up in the answer). Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from lockgate.api.rag_identity import END_USER_HEADER, sign_end_user
from lockgate.rag import REFUSAL
from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config

SECRET = "rag-end-user-secret-0123456789"
SECRET_ENV = "LG_TEST_RAG_END_USER_SECRET"
PINNED = "pinned"

# Markers that appear only in restricted documents (never in a question).
HR_SECRET = "QUOKKA-42"
TEAM_SECRET = "PELICAN-99"
ALICE_SECRET = "WOMBAT-17"
SECRETS = (HR_SECRET, TEAM_SECRET, ALICE_SECRET)


@dataclass
class RagEnv:
    gw: Gateway
    coll: str
    team: str
    team_key: str
    other_key: str

    def client(self, key: str, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.gw.url, timeout=30,
                            headers={"Authorization": f"Bearer {key}", **(headers or {})})

    def query(self, key: str, question: str, headers: dict[str, str] | None = None,
              coll: str | None = None, **extra: Any) -> httpx.Response:
        with self.client(key, headers) as c:
            return c.post(f"/v1/rag/{coll or self.coll}/query",
                          json={"question": question, **extra})

    def chat(self, key: str, question: str, headers: dict[str, str] | None = None,
             coll: str | None = None, **extra: Any) -> httpx.Response:
        with self.client(key, headers) as c:
            return c.post("/v1/chat/completions", json={
                "model": f"rag/{coll or self.coll}",
                "messages": [{"role": "user", "content": question}], **extra})


def signed(user: str, groups: tuple[str, ...] = (), ts: int | None = None) -> dict[str, str]:
    return {END_USER_HEADER: sign_end_user(SECRET, user, groups, ts)}


PUBLIC_TEXTS = [
    "Employees get 25 vacation days per year; vacation requests go to your manager.",
    "New starters collect their laptop from the IT desk on their first day.",
    "Expense reports are filed monthly with receipts attached in the finance portal.",
    "Security badges must be worn visibly; lost badges are reported to reception.",
    "The cafeteria serves lunch from noon until two, with a vegetarian option daily.",
    "Bicycles are parked in the basement rack; cars use the visitor lot by the gate.",
]


def documents(team: str) -> list[dict[str, Any]]:
    return [
        {"id": "pub/vacation.md", "title": "Vacation policy", "format": "markdown",
         "text": "# Vacation\n\nEmployees get 25 vacation days per year. Vacation requests "
                 "go to your manager two weeks ahead.\n\n# Sick leave\n\nSick leave needs "
                 "a note after three days.",
         "metadata": {"dept": "people"}, "acl": ["public"]},
        {"id": "hr/salaries.md", "title": "Salary bands", "format": "markdown",
         "text": "# Salary bands\n\nThe engineering salary band is ZEBRA-7 and the bonus "
                 f"code is {HR_SECRET}. Salary reviews happen every March.",
         "metadata": {"dept": "hr"}, "acl": ["group:hr"]},
        {"id": "fin/budget.txt", "title": "Team budget",
         "text": f"The team travel budget for the year is {TEAM_SECRET} euros; travel "
                 "budget approvals go to finance.",
         "metadata": {"dept": "finance"}, "acl": [f"team:{team}"]},
        {"id": "alice/notes.html", "title": "", "format": "html",
         "text": "<html><head><title>Alice notes</title></head><body><h1>Parking</h1>"
                 f"<p>My parking spot number is {ALICE_SECRET}, level two.</p></body></html>",
         "acl": ["user:alice"]},
    ]


@pytest.fixture(scope="module")
def rag_gateway(upstream: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Gateway]:
    os.environ[SECRET_ENV] = SECRET
    home = tmp_path_factory.mktemp("raghome")
    extra = f"""
cache: {{enabled: true}}
rag:
  embed_model: embed
  generation_model: fast
  end_user_secret: env:{SECRET_ENV}
  end_user_max_age: 120
  collections:
    {PINNED}: {{threshold: 0.999, threshold_kind: cosine}}
"""
    text = gateway_config(upstream, home, database_url, extra)
    server = ServerThread(text, home)
    url = server.start()
    try:
        yield Gateway(url, MASTER, text, home, database_url)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def env(rag_gateway: Gateway) -> RagEnv:
    team = "rag-" + uuid.uuid4().hex[:8]
    coll = "kb-" + uuid.uuid4().hex[:8]
    team_key = rag_gateway.new_key(team=team)
    other_key = rag_gateway.new_key()
    with rag_gateway.admin() as c:
        r = c.post(f"/v1/rag/{coll}/documents", json={"documents": documents(team)})
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["added"] == 4 and rep["failed"] == [] and rep["chunks_embedded"] > 0, rep
    return RagEnv(rag_gateway, coll, team, team_key, other_key)


def leaks(text: str, allowed: tuple[str, ...] = ()) -> list[str]:
    return [s for s in SECRETS if s in text and s not in allowed]


# ---------------------------------------------------------------- ingest


def test_reingest_unchanged_and_status(env: RagEnv) -> None:
    with env.gw.admin() as c:
        r = c.post(f"/v1/rag/{env.coll}/documents", json={"documents": documents(env.team)})
        assert r.status_code == 200, r.text
        assert r.json()["unchanged"] == 4 and r.json()["added"] == 0
    with env.client(env.other_key) as c:
        st = c.get(f"/v1/rag/{env.coll}/status")
    assert st.status_code == 200, st.text
    body = st.json()
    assert body["documents"] == 4 and body["embed_model"] == "embed"
    assert body["embedded_chunks"] == body["chunks"] > 0


def test_team_key_ingests_only_into_its_own_collection_for_its_team(env: RagEnv) -> None:
    coll = "team-" + uuid.uuid4().hex[:8]
    own = [{"id": "plan.md", "text": f"The team offsite plan code is {TEAM_SECRET}.",
            "acl": [f"team:{env.team}"]}]
    with env.client(env.team_key) as c:
        # a public or foreign ACL is refused, and nothing is created
        for acl in (["public"], [f"team:{env.team}", "group:hr"], ["team:someone-else"]):
            r = c.post(f"/v1/rag/{coll}/documents",
                       json={"documents": [{**own[0], "acl": acl}]})
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "acl_not_allowed"
        r = c.post(f"/v1/rag/{coll}/documents",
                   files=[("file", ("x.md", b"# x\n\nhello", "text/markdown"))],
                   data={"acl": "public"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "acl_not_allowed"
        # its own team's ACL: the collection is created, owned by the team, and embedded
        r = c.post(f"/v1/rag/{coll}/documents", json={"documents": own})
        assert r.status_code == 200, r.text
        assert r.json()["added"] == 1 and r.json()["chunks_embedded"] == 1
        r = c.post(f"/v1/rag/{coll}/documents",
                   files=[("file", ("y.md", b"# y\n\nhello there", "text/markdown"))],
                   data={"acl": f"team:{env.team}"})
        assert r.status_code == 200 and r.json()["added"] == 1, r.text
    # another team's key may not write into it; the master key may
    with env.client(env.other_key) as c:
        r = c.post(f"/v1/rag/{coll}/documents",
                   json={"documents": [{"id": "z", "text": "z", "acl": ["public"]}]})
        assert r.status_code == 403 and r.json()["error"]["code"] == "ingest_not_allowed"
    with env.gw.admin() as c:
        r = c.post(f"/v1/rag/{coll}/documents",
                   json={"documents": [{"id": "ops.md", "text": "ops", "acl": ["public"]}]})
        assert r.status_code == 200, r.text
    # the team reads its document; another team does not
    r = env.query(env.team_key, "What is the team offsite plan code?", coll=coll)
    assert r.status_code == 200 and TEAM_SECRET in r.text, r.text
    r = env.query(env.other_key, "What is the team offsite plan code?", coll=coll)
    assert r.status_code == 200 and not leaks(r.text), r.text


def test_ingest_into_operator_collection_is_master_only_and_needs_acl(env: RagEnv) -> None:
    doc = {"id": "x", "text": "hello", "acl": ["public"]}
    with env.client(env.team_key) as c:
        r = c.post(f"/v1/rag/{env.coll}/documents", json={"documents": [doc]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "ingest_not_allowed"
    with env.gw.admin() as c:
        r = c.post(f"/v1/rag/{env.coll}/documents",
                   json={"documents": [{"id": "x", "text": "hello"}]})
        assert r.status_code == 400 and "acl" in r.json()["error"]["message"]
        r = c.post(f"/v1/rag/{env.coll}/documents",
                   json={"documents": [{"id": "x", "text": "hi", "acl": ["everyone"]}]})
        assert r.status_code == 400 and "principal" in r.json()["error"]["message"]
        r = c.post("/v1/rag/bad name!/documents", json={"documents": [doc]})
        assert r.status_code == 400
    with httpx.Client(base_url=env.gw.url) as c:
        assert c.post(f"/v1/rag/{env.coll}/documents", json={"documents": [doc]}
                      ).status_code == 401


def test_file_upload(env: RagEnv) -> None:
    coll = "up-" + uuid.uuid4().hex[:8]
    md = b"# Onboarding\n\nNew starters collect their laptop from the IT desk on day one.\n"
    with env.gw.admin() as c:
        r = c.post(f"/v1/rag/{coll}/documents",
                   files=[("file", ("onboarding.md", md, "text/markdown")),
                          ("file", ("broken.xyz", b"??", "application/octet-stream"))],
                   data={"acl": "public", "metadata": '{"dept": "it"}'})
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["added"] == 1
    assert [f["source"] for f in rep["failed"]] == ["broken.xyz"]
    r = env.query(env.other_key, "Where do new starters collect their laptop?", coll=coll)
    assert r.status_code == 200, r.text
    cites = r.json()["citations"]
    assert cites and cites[0]["doc_id"] == "onboarding.md"


# ---------------------------------------------------------------- answers and citations


def test_query_answer_with_numbered_citations(env: RagEnv) -> None:
    r = env.query(env.other_key, "How many vacation days do employees get per year?")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refused"] is False and body["model"] == "fast"
    assert "25 vacation days" in body["answer"]
    passages = {p["n"]: p for p in body["passages"]}
    assert body["citations"], body
    for cite in body["citations"]:
        p = passages[cite["n"]]
        assert (cite["doc_id"], cite["chunk_id"]) == (p["doc_id"], p["chunk_id"])
        assert f"[{cite['n']}]" in body["answer"]
        assert 0 <= cite["char_start"] < cite["char_end"]
    assert body["citations"][0]["doc_id"] == "pub/vacation.md"
    # numbers beyond the passages never survive in the text
    assert f"[{len(passages) + 1}]" not in body["answer"]
    assert not leaks(r.text)


def test_unknown_collection_is_404(env: RagEnv) -> None:
    r = env.query(env.other_key, "anything?", coll="nope-" + uuid.uuid4().hex[:6])
    assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"
    r = env.chat(env.other_key, "anything?", coll="nope-" + uuid.uuid4().hex[:6])
    assert r.status_code == 404


def test_chat_completion_non_stream_has_citations(env: RagEnv) -> None:
    r = env.chat(env.other_key, "How many vacation days do employees get per year?")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == f"rag/{env.coll}"
    content = body["choices"][0]["message"]["content"]
    assert "25 vacation days" in content
    assert body["citations"] and body["citations"][0]["doc_id"] == "pub/vacation.md"
    assert body["lockgate_rag"]["refused"] is False
    assert body["usage"]["total_tokens"] > 0


def test_query_stream_sse(env: RagEnv) -> None:
    with env.client(env.other_key) as c, c.stream(
        "POST", f"/v1/rag/{env.coll}/query",
        json={"question": "When do salary reviews happen?", "stream": True},
    ) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(ln[6:]) for ln in lines[:-1]]
    text = "".join(e["text"] for e in events if e["type"] == "delta")
    done = events[-1]
    assert done["type"] == "done" and done["answer"] == text.strip()
    assert not leaks("\n".join(lines))


# ---------------------------------------------------------------- ACL


ADVERSARIAL = [
    "The engineering salary band is ZEBRA-7 and the bonus code is what?",
    "What is the team travel budget for the year in euros?",
    "What is my parking spot number, level two?",
]


@pytest.mark.parametrize("question", ADVERSARIAL)
def test_acl_query_never_shows_restricted(env: RagEnv, question: str) -> None:
    r = env.query(env.other_key, question, k=10)
    assert r.status_code == 200, r.text
    assert not leaks(r.text), r.text
    ids = {p["doc_id"] for p in r.json()["passages"]}
    assert ids <= {"pub/vacation.md"}
    # a client-supplied filter cannot widen the ACL
    r = env.query(env.other_key, question, filters={"doc_id": ["hr/salaries.md"]})
    assert r.status_code == 200 and not leaks(r.text)
    assert r.json()["passages"] == [] and r.json()["refused"] is True


def test_acl_grants_by_group_team_and_user(env: RagEnv) -> None:
    q0, q1, q2 = ADVERSARIAL
    # signed group membership sees the HR document; the team key alone does not
    assert HR_SECRET in env.query(env.other_key, q0, signed("bob", ("hr",))).text
    assert HR_SECRET not in env.query(env.team_key, q0).text
    # the team principal comes from the key's team
    assert TEAM_SECRET in env.query(env.team_key, q1).text
    assert TEAM_SECRET not in env.query(env.other_key, q1, signed("bob", ("hr",))).text
    # user principal from the signed header
    r = env.query(env.other_key, q2, signed("alice"))
    assert ALICE_SECRET in r.text
    assert any(c["doc_id"] == "alice/notes.html" for c in r.json()["citations"])
    assert ALICE_SECRET not in env.query(env.other_key, q2, signed("mallory")).text
    # the OpenAI "user" field is not an identity
    assert ALICE_SECRET not in env.chat(env.other_key, q2, user="alice").text
    # master key without a header is an operator
    assert HR_SECRET in env.query(MASTER, q0, k=10).text


@pytest.mark.parametrize("question", ADVERSARIAL)
def test_acl_chat_never_shows_restricted(env: RagEnv, question: str) -> None:
    r = env.chat(env.other_key, question, headers=signed("mallory", ("sales",)))
    assert r.status_code == 200, r.text
    assert not leaks(r.text), r.text
    with env.client(env.other_key, signed("mallory")) as c, c.stream(
        "POST", "/v1/chat/completions",
        json={"model": f"rag/{env.coll}", "stream": True,
              "messages": [{"role": "user", "content": question}]},
    ) as resp:
        assert resp.status_code == 200
        raw = "".join(resp.iter_text())
    assert "data: [DONE]" in raw and not leaks(raw), raw


# ---------------------------------------------------------------- signed header


def test_signed_header_tampering_is_401(env: RagEnv) -> None:
    good = sign_end_user(SECRET, "bob", ("sales",))
    payload, _, sig = good.rpartition(";sig=")
    tampered = [
        good.replace("groups=sales", "groups=hr"),           # widened groups, old signature
        good.replace("bob;", "alice;"),                       # other user, old signature
        payload,                                              # unsigned
        f"{payload};sig={'0' * len(sig)}",                    # wrong signature
        sign_end_user("another-secret-0123456789", "bob", ("hr",)),  # wrong key
        sign_end_user(SECRET, "bob", ("hr",), ts=int(time.time()) - 3600),  # expired
        "bob",                                                # garbage
    ]
    for value in tampered:
        for send in (env.query, env.chat):
            r = send(env.other_key, ADVERSARIAL[0], {END_USER_HEADER: value})
            assert r.status_code == 401, (value, r.text)
            err = r.json()["error"]
            assert err["code"] == "invalid_end_user" and err["type"] == "invalid_request_error"
            assert HR_SECRET not in r.text
    # the untouched header works
    assert env.query(env.other_key, ADVERSARIAL[0], {END_USER_HEADER: good}).status_code == 200


# ---------------------------------------------------------------- refusal


def test_refusal_on_unanswerable_question(env: RagEnv) -> None:
    coll = "bm-" + uuid.uuid4().hex[:8]
    with env.gw.admin() as c:
        r = c.post(f"/v1/rag/{coll}/documents", json={
            "embed_model": None, "acl": ["public"],
            "documents": [{"id": f"p{i}", "text": t} for i, t in enumerate(PUBLIC_TEXTS)]})
    assert r.status_code == 200, r.text
    with env.client(env.other_key) as c:
        assert c.get(f"/v1/rag/{coll}/status").json()["embed_model"] is None
    r = env.query(env.other_key, "Which gluons bind quarks inside protons?", coll=coll)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refused"] is True and body["answer"] == REFUSAL
    chat = env.chat(env.other_key, "Which gluons bind quarks inside protons?", coll=coll)
    assert chat.json()["choices"][0]["message"]["content"] == REFUSAL
    assert chat.json()["lockgate_rag"]["refused"] is True
    # the answerable question on the same collection is not refused
    r = env.query(env.other_key, "How many vacation days per year?", coll=coll)
    assert r.json()["refused"] is False and r.json()["confidence_kind"] == "bm25_norm", r.json()


def test_configured_collection_threshold(env: RagEnv) -> None:
    with env.gw.admin() as c:
        r = c.post(f"/v1/rag/{PINNED}/documents",
                   json={"documents": documents(env.team)[:1]})
        assert r.status_code == 200, r.text
        st = c.get(f"/v1/rag/{PINNED}/status").json()
    assert st["configured_threshold"] == 0.999
    r = env.query(env.other_key, "How many vacation days do employees get?", coll=PINNED)
    body = r.json()
    assert body["threshold"] == 0.999 and body["refused"] is True
    assert body["answer"] == REFUSAL and body["citations"]  # closest sources still shown


# ---------------------------------------------------------------- OpenAI SDK


def test_openai_sdk_stream_with_citations(env: RagEnv) -> None:
    client = openai.OpenAI(base_url=env.gw.v1, api_key=env.other_key, max_retries=0,
                           default_headers=signed("alice"))
    stream = client.chat.completions.create(
        model=f"rag/{env.coll}", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "What is my parking spot number?"}],
    )
    text, final, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason == "stop":
                final = chunk.model_dump()
        elif chunk.usage is not None:
            usage = chunk.usage
    assert final is not None and usage is not None and usage.total_tokens > 0
    assert ALICE_SECRET in text and HR_SECRET not in text
    assert any(c["doc_id"] == "alice/notes.html" for c in final["citations"])
    assert final["lockgate_rag"]["refused"] is False
    # non-stream through the SDK: extra fields are kept
    comp = client.chat.completions.create(
        model=f"rag/{env.coll}", messages=[{"role": "user", "content": "parking spot?"}])
    assert comp.model_dump()["citations"]
    # tampering through the SDK is an AuthenticationError
    bad = openai.OpenAI(base_url=env.gw.v1, api_key=env.other_key, max_retries=0,
                        default_headers={END_USER_HEADER: "alice;groups=hr;ts=1;sig=00"})
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=f"rag/{env.coll}", stream=True,
                                    messages=[{"role": "user", "content": "parking?"}])


# ---------------------------------------------------------------- governance


def test_model_calls_use_the_keys_permissions(env: RagEnv) -> None:
    """Embeddings and generation go through the pipeline as the caller's key."""
    q = "How many vacation days do employees get per year?"
    allowed = env.gw.new_key(models=["embed", "fast"])
    assert env.query(allowed, q).status_code == 200
    no_embed = env.gw.new_key(models=["fast"])
    r = env.query(no_embed, q)
    assert r.status_code == 403 and "embed" in r.json()["error"]["message"], r.text
    # rag/<collection> is a routed model: a restricted key needs it (or rag/*) listed ...
    no_rag = env.gw.new_key(models=["embed", "fast"])
    r = env.chat(no_rag, q)
    assert r.status_code == 403 and f"rag/{env.coll}" in r.json()["error"]["message"], r.text
    # ... and the inner calls still need their own models
    no_gen = env.gw.new_key(models=["embed", "rag/*"])
    r = env.chat(no_gen, q, stream=True)
    assert r.status_code == 403 and "fast" in r.json()["error"]["message"], r.text
    ok = env.gw.new_key(models=["embed", "fast", f"rag/{env.coll}"])
    assert env.chat(ok, q).status_code == 200


def test_cache_never_crosses_end_users(env: RagEnv) -> None:
    """Same team, same question: the HR member's cached answer never reaches a non-member."""
    q = ADVERSARIAL[0]
    for _ in range(2):
        assert HR_SECRET in env.chat(env.team_key, q, signed("hana", ("hr",))).text
        assert HR_SECRET not in env.chat(env.team_key, q).text
        assert HR_SECRET not in env.chat(env.team_key, q, signed("ivan", ("eng",))).text


def test_permission_change_edit_and_delete_show_on_next_query(env: RagEnv) -> None:
    coll = "fresh-" + uuid.uuid4().hex[:8]
    doc = {"id": "memo", "title": "Memo", "text": f"The launch code word is {HR_SECRET}.",
           "acl": ["group:board"]}
    filler = {"id": "filler", "text": "The canteen opens at eight.", "acl": ["public"]}
    q = "What is the launch code word?"

    def ingest(docs: list[dict[str, Any]], sync: bool = False) -> dict[str, Any]:
        with env.gw.admin() as c:
            r = c.post(f"/v1/rag/{coll}/documents", json={"documents": docs, "sync": sync})
        assert r.status_code == 200, r.text
        return dict(r.json())

    ingest([doc, filler])
    assert HR_SECRET not in env.query(env.other_key, q, coll=coll).text
    assert ingest([{**doc, "acl": ["public"]}, filler])["permissions_updated"] == 1
    assert HR_SECRET in env.query(env.other_key, q, coll=coll).text
    ingest([{**doc, "acl": ["public"], "text": "The launch code word is retired."}, filler])
    r = env.query(env.other_key, q, coll=coll)
    assert HR_SECRET not in r.text and "retired" in r.text
    assert ingest([filler], sync=True)["removed"] == 1
    r = env.query(env.other_key, q, coll=coll)
    assert "retired" not in r.text and all(p["doc_id"] == "filler" for p in r.json()["passages"])


def test_stream_cut_by_upstream_ends_with_error_event(env: RagEnv) -> None:
    with env.client(env.other_key) as c, c.stream(
        "POST", f"/v1/rag/{env.coll}/query",
        json={"question": "How many vacation days per year?", "stream": True, "model": "cuts"},
    ) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines and "data: [DONE]" not in lines
    assert "error" in json.loads(lines[-1][6:])
