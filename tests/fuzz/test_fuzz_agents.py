"""Fuzz the agent routes: ``/v1/agents`` runs, run lookups and ``model: agent/<name>``.
No 5xx, every error in OpenAI's shape; an unknown agent is a 404."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as S
from tests.fuzz.conftest import assert_openai_error, auth
from tests.fuzz.test_fuzz_routes import FUZZ, post
from tests.gateway.conftest import Gateway

AGENTS = st.sampled_from(["fuzzbot", "nope", "", "fuzz bot", "a" * 120, "ünï", "..", "%2F"])
_MSG = st.fixed_dictionaries({"role": S.maybe(st.sampled_from(["user", "system", "assistant",
                                                               "tool"])),
                              "content": st.one_of(S.SMALL_TEXT, S.JSON)})
RUN = S.body({"input": st.one_of(S.SMALL_TEXT, st.lists(_MSG, max_size=3), S.JSON)},
             {"wait": S.maybe(st.booleans())})


@FUZZ
@given(agent=AGENTS, body=RUN)
def test_agent_runs(client: httpx.Client, fuzz_gateway: Gateway, agent: str,
                    body: dict[str, Any]) -> None:
    r = post(client, f"/v1/agents/{quote(agent, safe='')}/runs", fuzz_gateway.master, body)
    err = assert_openai_error(r)
    assert r.status_code in (200, 202, 400, 404, 405), (r.status_code, r.text[:300])
    if agent != "fuzzbot" and r.status_code == 404:
        assert err["code"] in ("agent_not_found", "not_found", None)
    if r.status_code == 202:
        run_id = r.json()["id"]
        got = client.get(f"/v1/agents/fuzzbot/runs/{run_id}", headers=auth(fuzz_gateway.master))
        assert got.status_code == 200 and got.json()["id"] == run_id


@FUZZ
@given(agent=AGENTS, run_id=st.one_of(S.SMALL_TEXT, st.just("run_" + "0" * 32)),
       limit=st.one_of(st.none(), S.SMALL_TEXT, st.integers(-5, 600).map(str)))
def test_agent_lookups(client: httpx.Client, fuzz_gateway: Gateway, agent: str, run_id: str,
                       limit: str | None) -> None:
    a = quote(agent, safe="")
    h = auth(fuzz_gateway.master)
    r = client.get(f"/v1/agents/{a}/runs/{quote(run_id, safe='') or 'x'}", headers=h)
    assert_openai_error(r)
    # an empty name makes ``//`` in the path: the framework redirects (not our route)
    assert r.status_code in ((404, 405, 307) if not agent else (404, 405)), r.text[:300]
    r = client.get(f"/v1/agents/{a}/runs", headers=h,
                   params={"limit": limit} if limit is not None else None)
    assert_openai_error(r)
    assert r.status_code in (200, 400, 404, 405, 307)


_FILTER = st.one_of(st.none(), S.SMALL_TEXT, st.sampled_from(
    ["running", "stopped", "top", "all", "24h", "2026-01-01", "9999-12-31T23:59:59+14:00",
     "1.5~run_00", "99999999999999~run_0a", "-1d", "0m"]))


@FUZZ
@given(agent=AGENTS, params=st.fixed_dictionaries({}, optional={
    k: _FILTER.filter(lambda v: v is not None)
    for k in ("status", "level", "since", "until", "before", "limit")}),
       run_id=st.one_of(S.SMALL_TEXT, st.just("run_" + "0" * 32)),
       body=st.one_of(st.none(), S.JSON, S.body({}, {"reason": st.one_of(S.SMALL_TEXT,
                                                                          S.JSON)})),
       master=st.booleans())
def test_agent_run_filters_and_cancel(client: httpx.Client, fuzz_gateway: Gateway,
                                      fuzz_key: str, agent: str, params: dict[str, str],
                                      run_id: str, body: Any, master: bool) -> None:
    a = quote(agent, safe="") or "x"
    h = auth(fuzz_gateway.master if master else fuzz_key)
    r = client.get(f"/v1/agents/{a}/runs", headers=h, params=params)
    assert_openai_error(r)
    assert r.status_code in (200, 400, 403, 404), (r.status_code, r.text[:300])
    path = f"/v1/agents/{a}/runs/{quote(run_id, safe='') or 'x'}/cancel"
    r = client.post(path, headers=h) if body is None else post(
        client, path, fuzz_gateway.master if master else fuzz_key, body)
    assert_openai_error(r)
    assert r.status_code in (200, 400, 403, 404, 405, 409, 413), (r.status_code, r.text[:300])


@FUZZ
@given(messages=st.one_of(st.lists(_MSG, max_size=3), S.JSON),
       model=st.sampled_from(["agent/fuzzbot", "agent/nope", "agent/", "agent/*"]),
       stream=S.maybe(st.booleans()))
def test_agent_models(client: httpx.Client, fuzz_gateway: Gateway, fuzz_key: str,
                      messages: Any, model: str, stream: Any) -> None:
    body: dict[str, Any] = {"model": model, "messages": messages}
    if stream is not None:
        body["stream"] = stream
    r = post(client, "/v1/chat/completions", fuzz_gateway.master, body)
    assert_openai_error(r)
    assert r.status_code in (200, 400, 404, 403), (r.status_code, r.text[:300])
    if model == "agent/nope":
        assert r.status_code in (400, 404)


DEF = S.body({"model": S.maybe(st.sampled_from(["fast", "nope", ""]))}, {
    "tools": st.one_of(st.lists(S.SMALL_TEXT, max_size=3), S.JSON),
    "mode": S.maybe(st.sampled_from(["read_only", "approve_writes", "autonomous"])),
    "max_steps": S.INT, "max_cost": S.NUMBER, "delegates": st.lists(S.SMALL_TEXT, max_size=2),
    "output_contract": S.JSON, "instructions": S.maybe(S.SMALL_TEXT)})


@FUZZ
@given(agent=AGENTS, body=st.one_of(DEF, S.JSON))
def test_admin_agent_definitions(client: httpx.Client, fuzz_gateway: Gateway, agent: str,
                                 body: Any) -> None:
    path = f"/admin/agents/{quote(agent, safe='') or 'x'}"
    r = client.put(path, content=__import__("json").dumps(body),
                   headers={**auth(fuzz_gateway.master), "content-type": "application/json"})
    assert_openai_error(r)
    assert r.status_code in (200, 400, 404, 405, 409), (r.status_code, r.text[:300])
    if r.status_code == 200:
        assert client.delete(path, headers=auth(fuzz_gateway.master)).status_code == 200


KINDS = st.sampled_from(["openapi", "rag", "sql", "mcp", "ftp", "", "ünï", "a" * 60])
SOURCE_NAMES = st.sampled_from(["fz", "fz_2", "a__b", "x" * 60, "ünï", "..", "%2F", "-"])
SOURCE = S.body({}, {
    "spec": S.maybe(st.sampled_from(["/nonexistent.json", "", "examples/plant_twin/openapi.json"])),
    "base_url": S.maybe(S.SMALL_TEXT), "collection": S.maybe(S.SMALL_TEXT),
    "url": S.maybe(st.sampled_from(["sqlite:///:memory:", "nonsense://", "env:NOPE", ""])),
    "transport": S.maybe(st.sampled_from(["stdio", "http", "smoke"])),
    "command": st.one_of(st.lists(S.SMALL_TEXT, max_size=2), S.JSON),
    "k": S.INT, "timeout_s": S.NUMBER, "rate_per_minute": S.INT, "classes": S.JSON,
    "pool": S.maybe(st.booleans())})


@FUZZ
@given(kind=KINDS, name=SOURCE_NAMES, body=st.one_of(SOURCE, S.JSON))
def test_admin_tool_sources(client: httpx.Client, fuzz_gateway: Gateway, kind: str,
                            name: str, body: Any) -> None:
    path = f"/admin/agents/tools/{quote(kind, safe='') or 'x'}/{quote(name, safe='')}"
    h = {**auth(fuzz_gateway.master), "content-type": "application/json"}
    r = client.put(path, content=__import__("json").dumps(body), headers=h)
    assert_openai_error(r)
    assert r.status_code in (200, 400, 404, 405, 409), (r.status_code, r.text[:300])
    if r.status_code == 200:
        assert r.json()["source"] == "api"
        assert client.delete(path, headers=h).status_code == 200
    r = client.delete(path, headers=h)
    assert_openai_error(r)
    assert r.status_code in (400, 404, 405, 409), (r.status_code, r.text[:300])
    r = client.get("/admin/agents/tools", headers=h)
    assert r.status_code == 200


PARTS = st.sampled_from(["teams", "keys", "end_users", "groups", "", "ünï"])
SUBJECTS = st.sampled_from(["fz-team", "user:fz", "group:fz", "alice", "a" * 250, "ünï",
                            "%20", "user:"])
GRANT = S.body({"tools": st.one_of(st.lists(st.sampled_from(["*", "twin__*", "bad one!",
                                                             "", "x" * 90]), max_size=3),
                                   S.JSON)}, {"extra": S.maybe(S.JSON)})


@FUZZ
@given(part=PARTS, subject=SUBJECTS, body=st.one_of(GRANT, S.JSON))
def test_admin_grants(client: httpx.Client, fuzz_gateway: Gateway, part: str, subject: str,
                      body: Any) -> None:
    path = f"/admin/agents/grants/{quote(part, safe='') or 'x'}/{quote(subject, safe='')}"
    h = {**auth(fuzz_gateway.master), "content-type": "application/json"}
    r = client.put(path, content=__import__("json").dumps(body), headers=h)
    assert_openai_error(r)
    assert r.status_code in (200, 400, 404, 405, 409), (r.status_code, r.text[:300])
    if r.status_code == 200:
        assert client.delete(path, headers=h).status_code == 200
    r = client.delete(path, headers=h)
    assert_openai_error(r)
    assert r.status_code in (400, 404, 405, 409), (r.status_code, r.text[:300])
    assert client.get("/admin/agents/grants", headers=h).status_code == 200
