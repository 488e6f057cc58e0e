"""Fuzz the console's forms and query parameters and the widget's JSON routes: no 5xx, ever;
the widget's errors in OpenAI's shape."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as S
from tests.fuzz.conftest import assert_openai_error
from tests.fuzz.test_fuzz_routes import FUZZ, post
from tests.gateway.conftest import Gateway

ORIGIN = "http://fuzz.example"
FORM_VALUE = st.one_of(st.text(max_size=30), st.sampled_from(
    ["fast", "model", "team", "true", "false", "approve", "edit", "reject", "escalate",
     "24h", "1h", "7d", "error", "ok", "500", "x" * 300]))
FORM = st.dictionaries(st.sampled_from(
    ["name", "business_unit", "team", "models", "what", "off", "question", "user", "groups",
     "model", "prompt", "action", "output", "reason", "resolve", "junk"]), FORM_VALUE,
    max_size=6)
QUERY = st.dictionaries(st.sampled_from(
    ["window", "team", "key", "model", "deployment", "status", "since", "until", "before",
     "state", "next", "agent", "level", "page"]), st.one_of(FORM_VALUE, st.sampled_from(
         ["fuzzbot", "top", "all", "running", "succeeded", "stopped", "awaiting_approval",
          "1765000000.5~run_0a", "1e400~run_x", "~", "2", "\u00b2", "9" * 30])), max_size=4)


@pytest.fixture(scope="module")
def console(fuzz_gateway: Gateway) -> Any:
    c = httpx.Client(base_url=fuzz_gateway.url, timeout=30)
    form = c.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    r = c.post("/console/login", data={"key": fuzz_gateway.master, "csrf": token})
    assert r.status_code == 303
    csrf = re.search(r'data-csrf="([^"]+)"', c.get("/console").text).group(1)  # type: ignore[union-attr]
    yield c, csrf
    c.close()


@pytest.fixture(scope="module")
def widget_token(client: httpx.Client, fuzz_key: str) -> str:
    r = post(client, "/v1/widget/tokens", fuzz_key,
             {"origin": ORIGIN, "model": "fast", "user": "fuzzer"})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


TOKEN_BODY = S.body({"origin": S.maybe(st.sampled_from([ORIGIN, "http://evil", ""])),
                     "user": S.maybe(S.SMALL_TEXT)},
                    {"model": S.maybe(S.MODELS), "collection": S.maybe(st.sampled_from(
                        ["fuzzdocs", "none", ""])), "groups": S.JSON, "ttl_seconds": S.NUMBER})
CHAT_BODY = S.body({"messages": st.one_of(S.JSON, st.lists(st.fixed_dictionaries(
    {"role": S.maybe(st.sampled_from(["user", "assistant", "system"])),
     "content": S.maybe(S.SMALL_TEXT)}), max_size=3))}, {})
FEEDBACK_BODY = S.body({"request_id": S.maybe(S.SMALL_TEXT)},
                       {"thumbs": S.maybe(st.sampled_from(["up", "down", "x"])),
                        "comment": S.JSON})


@FUZZ
@given(body=TOKEN_BODY)
def test_widget_tokens(client: httpx.Client, fuzz_key: str, body: dict[str, Any]) -> None:
    r = post(client, "/v1/widget/tokens", fuzz_key, body)
    assert_openai_error(r)
    assert r.status_code in (201, 400, 403, 404), (r.status_code, r.text[:300])


@FUZZ
@given(body=CHAT_BODY, origin=st.sampled_from([ORIGIN, "http://evil"]))
def test_widget_chat(client: httpx.Client, widget_token: str, body: dict[str, Any],
                     origin: str) -> None:
    r = post(client, "/v1/widget/chat", widget_token, body, headers={"origin": origin})
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert_openai_error(r)


@FUZZ
@given(body=FEEDBACK_BODY)
def test_widget_feedback(client: httpx.Client, widget_token: str, body: dict[str, Any]) -> None:
    r = post(client, "/v1/widget/feedback", widget_token, body, headers={"origin": ORIGIN})
    assert_openai_error(r)
    assert r.status_code in (201, 400, 404), (r.status_code, r.text[:300])


@FUZZ
@given(form=FORM, path=st.sampled_from([
    "/console/teams", "/console/keys", "/console/controls/kill", "/console/rag/fuzzdocs/query",
    "/console/rag/nope/query", "/console/playground", "/console/reviews/rev_x/decide",
    "/console/keys/key_nope/revoke", "/console/jobs/job_x/retry", "/console/jobs/job_x/purge",
    "/console/alerts/12/ack", "/console/alerts/x/ack", "/console/agents/runs/run_0a/cancel",
    "/console/agents/runs/x%00y/cancel", "/console/agents/runs/" + "run_" + "f" * 70 + "/cancel"]),
    with_csrf=st.booleans())
def test_console_forms(console: Any, form: dict[str, str], path: str, with_csrf: bool) -> None:
    c, csrf = console
    data = {**form, "csrf": csrf} if with_csrf else form
    r = c.post(path, data=data)
    assert r.status_code < 500, (path, r.status_code, r.text[:300])
    if not with_csrf:
        assert r.status_code in (400, 403, 413), (path, r.status_code)


@FUZZ
@given(query=QUERY, path=st.sampled_from([
    "/console", "/console/requests", "/console/reviews", "/console/alerts", "/console/login",
    "/console/requests/req_x", "/console/rag/fuzzdocs", "/console/jobs/job_x",
    "/console/agents", "/console/agents/runs/run_0a", "/console/agents/runs/%3Cx%3E",
    "/console/budgets", "/console/teams", "/console/keys"]))
def test_console_queries(console: Any, query: dict[str, str], path: str) -> None:
    c, _csrf = console
    r = c.get(path, params=query)
    assert r.status_code < 500, (path, query, r.status_code, r.text[:300])


@pytest.fixture(scope="module")
def agent_run(fuzz_gateway: Gateway) -> str:
    """A real finished run of ``fuzzbot`` (its model answers at once)."""
    key = fuzz_gateway.new_key("fuzzers")
    r = httpx.post(f"{fuzz_gateway.url}/v1/agents/fuzzbot/runs",
                   json={"input": "hello", "wait": True},
                   headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    return str(r.json()["id"])


@FUZZ
@given(query=QUERY, form=FORM, with_csrf=st.booleans())
def test_console_agent_run(console: Any, agent_run: str, query: dict[str, str],
                           form: dict[str, str], with_csrf: bool) -> None:
    c, csrf = console
    r = c.get(f"/console/agents/runs/{agent_run}", params=query)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    r = c.post(f"/console/agents/runs/{agent_run}/cancel",
               data={**form, "csrf": csrf} if with_csrf else form)
    # a finished run cannot be cancelled: 409 (or 400/413 for a bad form, 403 without CSRF)
    assert r.status_code in ((400, 409, 413) if with_csrf else (400, 403, 413)), (
        r.status_code, r.text[:300])
