"""Fuzz the round-two routes: the review queue, feedback, alerts, canary and admin audit.

Real review items are seeded (pending ones with a contract, so ``decide`` bodies reach the
contract check) and a real call is made (so feedback bodies reach the audit lookup). No
5xx, and every error in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockgate.review import NewReview, ReviewRepository
from lockgate.store import Store
from tests.fuzz import strategies as S
from tests.fuzz.conftest import assert_openai_error, auth
from tests.fuzz.test_fuzz_routes import FUZZ, post
from tests.gateway.conftest import Gateway


@pytest.fixture(scope="module")
def review_ids(fuzz_gateway: Gateway) -> list[str]:
    async def seed() -> list[str]:
        store = await Store.open(fuzz_gateway.database_url)
        try:
            repo = ReviewRepository(store)
            ids = []
            for i in range(30):
                item = await repo.insert(NewReview(
                    task="fuzz", source="http", input={"i": i}, output={"amount": i},
                    reasons=["r"], team="fuzzers", escalate_to="leads" if i % 2 else None,
                    contract={"type": "object", "required": ["amount"],
                              "properties": {"amount": {"type": "number"}}}))
                ids.append(item.id)
            return ids
        finally:
            await store.close()

    return asyncio.run(seed())


@pytest.fixture(scope="module")
def request_id(client: httpx.Client, fuzz_key: str) -> str:
    r = post(client, "/v1/chat/completions", fuzz_key,
             {"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    return r.headers["x-request-id"]


DECIDE = S.body({"action": S.maybe(st.sampled_from(["approve", "edit", "reject", "escalate"]))},
                {"output": S.JSON, "reason": S.maybe(S.SMALL_TEXT),
                 "team": S.maybe(st.sampled_from(["leads", "fuzzers", ""]))})
FEEDBACK = S.body({}, {
    "request_id": S.maybe(S.SMALL_TEXT), "review_id": S.maybe(S.SMALL_TEXT),
    "job_id": S.maybe(S.SMALL_TEXT), "thumbs": S.maybe(st.sampled_from(["up", "down", "x"])),
    "score": S.NUMBER, "comment": S.maybe(S.SMALL_TEXT), "corrected_output": S.JSON,
    "outcome": S.maybe(S.SMALL_TEXT), "task": S.maybe(S.SMALL_TEXT), "refused": S.JSON,
})


@FUZZ
@given(body=DECIDE, pick=st.integers(0, 29), claim_first=st.booleans())
def test_review_decide(client: httpx.Client, fuzz_gateway: Gateway, review_ids: list[str],
                       body: dict[str, Any], pick: int, claim_first: bool) -> None:
    rid = review_ids[pick]
    if claim_first:
        assert_openai_error(client.post(f"/v1/reviews/{rid}/claim",
                                        headers=auth(fuzz_gateway.master)))
    r = post(client, f"/v1/reviews/{rid}/decide", fuzz_gateway.master, body)
    assert_openai_error(r)
    assert r.status_code in (200, 400, 404, 409, 422), (r.status_code, r.text[:300])


@FUZZ
@given(raw=S.JSON, path=st.sampled_from(["/v1/reviews/claim", "/v1/feedback",
                                         "/admin/controls/canary"]))
def test_any_json(client: httpx.Client, fuzz_key: str, fuzz_gateway: Gateway, raw: Any,
                  path: str) -> None:
    for key in (fuzz_key, fuzz_gateway.master):
        assert_openai_error(post(client, path, key, raw))


@FUZZ
@given(body=FEEDBACK, real=st.booleans())
def test_feedback(client: httpx.Client, fuzz_key: str, request_id: str, review_ids: list[str],
                  body: dict[str, Any], real: bool) -> None:
    if real:
        body = {**body, "request_id": request_id}
        body.pop("review_id", None)
        body.pop("job_id", None)
    r = post(client, "/v1/feedback", fuzz_key, body)
    assert_openai_error(r)
    assert r.status_code in (201, 400, 404), (r.status_code, r.text[:300])


@FUZZ
@given(params=st.dictionaries(
    st.sampled_from(["state", "task", "team", "source", "limit", "after", "since", "action",
                     "model", "deployment", "outcome"]), S.QUERY_VALUE, max_size=4),
    path=st.sampled_from(["/v1/reviews", "/v1/alerts", "/v1/feedback/quality", "/admin/audit"]))
def test_query_params(client: httpx.Client, fuzz_gateway: Gateway, fuzz_key: str,
                      params: dict[str, str], path: str) -> None:
    for key in (fuzz_gateway.master, fuzz_key):
        assert_openai_error(client.get(path, params=params, headers=auth(key)))


@FUZZ
@given(seg=S.PATH_SEGMENT, route=st.sampled_from([
    ("GET", "/v1/reviews/{}"), ("POST", "/v1/reviews/{}/claim"),
    ("POST", "/v1/reviews/{}/release"), ("POST", "/v1/reviews/{}/decide"),
    ("GET", "/v1/alerts/{}"), ("POST", "/v1/alerts/{}/ack")]))
def test_ids_in_paths(client: httpx.Client, fuzz_gateway: Gateway, seg: str,
                      route: tuple[str, str]) -> None:
    method, template = route
    path = template.format(quote(seg, safe=""))
    kwargs: dict[str, Any] = {"json": {"action": "approve"}} if method == "POST" else {}
    r = client.request(method, path, headers=auth(fuzz_gateway.master), **kwargs)
    assert_openai_error(r)
    assert r.status_code in (200, 400, 404, 405, 409), (path[:80], r.status_code, r.text[:300])
