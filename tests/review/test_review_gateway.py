"""Chat calls routed into review, driven with the openai SDK; the /v1/reviews API."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.conftest import Gateway
from tests.review.conftest import INVOICE_SCHEMA


def _invoice(client: openai.OpenAI, doc: dict[str, Any], task: str = "invoice",
             **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="fast",
        messages=[{"role": "user", "content": "echo:" + json.dumps(doc)}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "invoice", "schema": INVOICE_SCHEMA}},
        extra_headers={"x-lockgate-task": task},
        **extra,
    )


def _client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def _http(gw: Gateway, key: str) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_small_confident_invoice_is_auto_approved(review_gateway: Gateway) -> None:
    key = review_gateway.new_key("finance")
    raw = _invoice(_client(review_gateway, key),
                   {"vendor": "ACME", "amount": 120, "confidence": 0.97})
    assert raw.http_response.status_code == 200
    assert raw.headers["x-lockgate-review"] == "auto_approved"
    body = raw.parse()
    assert json.loads(body.choices[0].message.content)["amount"] == 120


def test_large_invoice_waits_then_202_and_poll(review_gateway: Gateway) -> None:
    caller = review_gateway.new_key("accounts")
    reviewer = review_gateway.new_key("finance")
    doc = {"vendor": "Big Co", "amount": 25000, "confidence": 0.99}
    r = httpx.post(
        review_gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {caller}", "x-lockgate-task": "invoice"},
        json={"model": "fast",
              "messages": [{"role": "user", "content": "echo:" + json.dumps(doc)}]},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    item = r.json()
    assert item["object"] == "review" and item["state"] == "pending"
    assert r.headers["location"] == f"/v1/reviews/{item['id']}"
    assert item["impact"] == {"field": "amount", "value": 25000}
    assert "predicate $.amount > 10000" in item["policy"]["reasons"]
    assert item["team"] == "finance" and item["sla"]["seconds_left"] > 3000
    # the caller may poll its own item; another team's key may not see it
    with _http(review_gateway, caller) as c:
        assert c.get(r.headers["location"]).json()["completion"] is None
    stranger = review_gateway.new_key("marketing")
    with _http(review_gateway, stranger) as c:
        assert c.get(r.headers["location"]).status_code == 404
        assert c.post(f"/v1/reviews/{item['id']}/claim").status_code == 404
    with _http(review_gateway, reviewer) as c:
        listed = c.get("/v1/reviews", params={"task": "invoice"}).json()
        assert item["id"] in [i["id"] for i in listed["data"]]
        claimed = c.post(f"/v1/reviews/{item['id']}/claim")
        assert claimed.status_code == 200 and claimed.json()["claimed_by"]
        edit = {"vendor": "Big Co Ltd", "amount": 2500, "confidence": 1.0}
        d = c.post(f"/v1/reviews/{item['id']}/decide", json={"action": "edit", "output": edit})
        assert d.status_code == 200, d.text
        assert d.json()["state"] == "edited"
    with _http(review_gateway, caller) as c:
        polled = c.get(r.headers["location"]).json()
    assert polled["state"] == "edited" and polled["output"] == edit
    content = polled["completion"]["choices"][0]["message"]["content"]
    assert json.loads(content) == edit


def test_sync_wait_returns_the_decision(review_gateway: Gateway) -> None:
    caller = review_gateway.new_key("accounts")
    reviewer = review_gateway.new_key("finance")
    # a policy with a longer wait: decide from another thread while the caller waits
    doc = {"vendor": "Slow", "amount": 50000, "confidence": 0.9}
    result: dict[str, Any] = {}

    def call() -> None:
        result["r"] = httpx.post(
            review_gateway.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {caller}", "x-lockgate-task": "invoice"},
            json={"model": "fast",
                  "messages": [{"role": "user", "content": "echo:" + json.dumps(doc)}]},
            timeout=10,
        )

    t = threading.Thread(target=call)
    t.start()
    with _http(review_gateway, reviewer) as c:
        deadline = time.monotonic() + 5
        claimed = None
        while claimed is None and time.monotonic() < deadline:
            got = c.post("/v1/reviews/claim", json={"task": "invoice"}).json()["item"]
            claimed = got if got and got["input"]["messages"][0]["content"].find("Slow") > 0 \
                else None
            if got and claimed is None:
                c.post(f"/v1/reviews/{got['id']}/release")
        assert claimed is not None
        c.post(f"/v1/reviews/{claimed['id']}/decide", json={"action": "approve"})
    t.join(10)
    r = result["r"]
    # either the caller was still waiting (200, approved) or its wait had ended (202)
    assert r.status_code in (200, 202)
    if r.status_code == 200:
        assert r.headers["x-lockgate-review"] == "approved"
        assert json.loads(r.json()["choices"][0]["message"]["content"]) == doc


def test_reject_edit_and_conflicts(review_gateway: Gateway) -> None:
    caller = review_gateway.new_key("accounts")
    reviewer = review_gateway.new_key("finance")
    client = _client(review_gateway, caller)
    raw = _invoice(client, {"vendor": "X", "amount": 99999, "confidence": 0.9},
                   task="invoice_async")
    assert raw.http_response.status_code == 202
    rid = raw.headers["x-lockgate-review-id"]
    with _http(review_gateway, reviewer) as c:
        assert c.post("/v1/reviews/rev_nope/decide", json={"action": "approve"}).status_code == 404
        bad = c.post(f"/v1/reviews/{rid}/decide", json={"action": "reject"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "reason"
        bad = c.post(f"/v1/reviews/{rid}/decide", json={"action": "maybe"})
        assert bad.status_code == 400
        broken = c.post(f"/v1/reviews/{rid}/decide",
                        json={"action": "edit", "output": {"vendor": "X", "amount": -5}})
        assert broken.status_code == 422
        assert "amount" in broken.json()["error"]["message"]
        assert c.post(f"/v1/reviews/{rid}/decide", json={"action": "edit"}).status_code == 400
        ok = c.post(f"/v1/reviews/{rid}/decide", json={"action": "reject", "reason": "duplicate"})
        assert ok.status_code == 200 and ok.json()["state"] == "rejected"
        again = c.post(f"/v1/reviews/{rid}/decide", json={"action": "approve"})
        assert again.status_code == 409
        assert c.post(f"/v1/reviews/{rid}/claim").status_code == 409
        for q in ("limit=0", "limit=%C2%B2", "state=weird", "after=zzz"):
            assert c.get("/v1/reviews?" + q).status_code == 400, q


def test_exclusive_claim_and_escalation(review_gateway: Gateway) -> None:
    caller = review_gateway.new_key("accounts")
    a = review_gateway.new_key("finance")
    b = review_gateway.new_key("finance")
    lead = review_gateway.new_key("finance-leads")
    raw = _invoice(_client(review_gateway, caller),
                   {"vendor": "Y", "amount": 20000, "confidence": 0.9}, task="invoice_async")
    rid = raw.headers["x-lockgate-review-id"]
    with _http(review_gateway, a) as ca, _http(review_gateway, b) as cb:
        assert ca.post(f"/v1/reviews/{rid}/claim").status_code == 200
        assert cb.post(f"/v1/reviews/{rid}/claim").status_code == 409
        assert cb.post(f"/v1/reviews/{rid}/decide", json={"action": "approve"}).status_code == 409
        esc = ca.post(f"/v1/reviews/{rid}/decide",
                      json={"action": "escalate", "team": "finance-leads", "reason": "big"})
        assert esc.status_code == 200 and esc.json()["team"] == "finance-leads"
        # finance no longer owns it
        assert cb.post(f"/v1/reviews/{rid}/claim").status_code in (403, 404)
    with _http(review_gateway, lead) as cl:
        assert cl.post(f"/v1/reviews/{rid}/decide", json={"action": "approve"}).status_code == 200


def test_logprob_confidence_routes_unsure_answers(review_gateway: Gateway) -> None:
    key = review_gateway.new_key("support")
    client = _client(review_gateway, key)
    sure = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "route this ticket"}],
        extra_headers={"x-lockgate-task": "triage_lp"})
    assert sure.http_response.status_code == 200
    assert sure.headers["x-lockgate-review"] == "auto_approved"
    unsure = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "unsure what this is"}],
        extra_headers={"x-lockgate-task": "triage_lp"})
    assert unsure.http_response.status_code == 202
    with _http(review_gateway, key) as c:
        item = c.get(f"/v1/reviews/{unsure.headers['x-lockgate-review-id']}").json()
    assert item["confidence"] == pytest.approx(0.2231, abs=1e-3)
    assert item["policy"]["reasons"][0].startswith("confidence 0.223")


def test_stream_refused_for_reviewed_task(review_gateway: Gateway) -> None:
    key = review_gateway.new_key("finance")
    with pytest.raises(openai.BadRequestError) as err:
        _client(review_gateway, key).chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hi"}], stream=True,
            extra_headers={"x-lockgate-task": "invoice"})
    assert err.value.code == "review_requires_non_stream"


def test_review_rows_are_in_the_audit_chain(review_gateway: Gateway) -> None:
    import asyncio

    import sqlalchemy as sa

    from lockgate.store import Store
    from lockgate.store.chain import verify_chain
    from lockgate.store.tables import usage_records

    async def check() -> tuple[bool, list[str]]:
        store = await Store.open(review_gateway.database_url, migrate=False)
        try:
            async with store.engine.connect() as conn:
                report = await verify_chain(conn)
                rows = (await conn.execute(
                    sa.select(usage_records.c.error_class)
                    .where(usage_records.c.kind == "review"))).scalars().all()
            return report.ok, list(rows)
        finally:
            await store.close()

    ok, events = asyncio.run(check())
    assert ok
    for event in ("created", "claimed", "decided", "escalated"):
        assert event in events


def test_decisions_become_feedback_and_outcomes_link_by_review_id(
        review_gateway: Gateway) -> None:
    caller = review_gateway.new_key("accounts")
    reviewer = review_gateway.new_key("finance")
    client = _client(review_gateway, caller)
    ids = []
    for amount in (30000, 40000, 50000):
        raw = _invoice(client, {"vendor": "Q", "amount": amount, "confidence": 0.9},
                       task="invoice_async")
        ids.append(raw.headers["x-lockgate-review-id"])
    with _http(review_gateway, reviewer) as c:
        assert c.post(f"/v1/reviews/{ids[0]}/decide", json={"action": "approve"}).status_code == 200
        assert c.post(f"/v1/reviews/{ids[1]}/decide", json={
            "action": "edit", "output": {"vendor": "Q", "amount": 4000}}).status_code == 200
        assert c.post(f"/v1/reviews/{ids[2]}/decide", json={
            "action": "reject", "reason": "fraud"}).status_code == 200
    with _http(review_gateway, caller) as c:
        # a business outcome arriving later, linked by the review id
        r = c.post("/v1/feedback", json={"review_id": ids[0], "outcome": "invoice_paid"})
        assert r.status_code == 201, r.text
        assert c.post("/v1/feedback", json={"review_id": "rev_unknown",
                                            "outcome": "x"}).status_code == 404
    with review_gateway.admin() as c:
        q = c.get("/v1/feedback/quality", params={"task": "invoice_async"})
        assert q.status_code == 200, q.text
    rows = q.json()["data"]
    reviews = sum(r["reviews"] for r in rows)
    overridden = sum(r["overridden"] for r in rows)
    assert sum(r["outcomes"] for r in rows) >= 1
    assert reviews >= 3 and overridden >= 2


def test_agreement_confidence(review_gateway: Gateway) -> None:
    key = review_gateway.new_key("support")
    client = _client(review_gateway, key)
    same = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "classify me"}],
        extra_headers={"x-lockgate-task": "agree_same"})
    assert same.http_response.status_code == 200  # 3 identical answers: 1.0
    assert same.headers["x-lockgate-review"] == "auto_approved"
    other = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "classify me"}],
        extra_headers={"x-lockgate-task": "agree_other"})
    assert other.http_response.status_code == 202  # the second deployment disagrees: 0.5
    with review_gateway.admin() as c:
        item = c.get(f"/v1/reviews/{other.headers['x-lockgate-review-id']}").json()
    assert item["confidence"] == 0.5
    answers = sorted(str(a["answer"]) for a in item["alternatives"])
    assert len(answers) == 2 and any("a different answer" in a for a in answers)


def test_unknown_agreement_deployment_is_a_config_error() -> None:
    from lockgate.errors import ConfigError
    from lockgate.settings import parse_config

    with pytest.raises(ConfigError) as err:
        parse_config("review: {policies: {t: {when: {confidence_below: 0.5}, confidence: "
                     "{source: agreement, deployments: [nope]}}}}")
    assert "unknown deployment id 'nope'" in str(err.value)


def test_anthropic_messages_are_reviewed_too(review_gateway: Gateway) -> None:
    import anthropic

    caller = review_gateway.new_key("accounts")
    reviewer = review_gateway.new_key("finance")
    client = anthropic.Anthropic(base_url=review_gateway.url, api_key=caller, max_retries=0)

    def ask(amount: int) -> Any:
        doc = json.dumps({"vendor": "A", "amount": amount})
        return client.messages.with_raw_response.create(
            model="fast", max_tokens=100, messages=[{"role": "user", "content": "echo:" + doc}],
            extra_headers={"x-lockgate-task": "invoice_async"})

    small = ask(50)
    assert small.http_response.status_code == 200
    assert small.headers["x-lockgate-review"] == "skipped"
    assert json.loads(small.parse().content[0].text)["amount"] == 50
    big = ask(70000)
    assert big.http_response.status_code == 202
    rid = big.headers["x-lockgate-review-id"]
    with _http(review_gateway, reviewer) as c:
        assert c.post(f"/v1/reviews/{rid}/decide",
                      json={"action": "reject", "reason": "over limit"}).status_code == 200
    with _http(review_gateway, caller) as c:
        polled = c.get(f"/v1/reviews/{rid}").json()
    assert polled["state"] == "rejected" and polled["completion"] is None
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="fast", max_tokens=10, stream=True,
                               messages=[{"role": "user", "content": "hi"}],
                               extra_headers={"x-lockgate-task": "invoice_async"})
