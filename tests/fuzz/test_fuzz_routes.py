"""Fuzz every route with hypothesis: no 5xx, ever, and errors in the right API's shape.

Bodies come from :mod:`tests.fuzz.strategies` (every known field, plausible or any JSON),
ids and query values include the inputs that once gave 500s (``limit=²``, 5,000-character
ids, far-future ``since`` with odd offsets). Examples per test are bounded so the module
stays within a few seconds.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz import strategies as S
from tests.fuzz.conftest import (
    COLLECTION,
    assert_anthropic_error,
    assert_openai_error,
    auth,
    is_slash_redirect,
)
from tests.gateway.conftest import Gateway

FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


def dumps(value: Any) -> bytes:
    """Like a client would send it (the standard library writes integers of any size)."""
    return json.dumps(value).encode()


def post(client: httpx.Client, path: str, key: str, body: Any,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(path, content=dumps(body),
                       headers={**auth(key), "content-type": "application/json",
                                **(headers or {})})


@FUZZ
@given(body=S.CHAT, task=st.one_of(st.none(), S.HEADER_TEXT),
       cache=st.one_of(st.none(), st.sampled_from(["no-cache", "no-store", "x"])))
def test_chat(client: httpx.Client, fuzz_key: str, body: dict[str, Any], task: str | None,
              cache: str | None) -> None:
    headers = {k: v for k, v in (("x-lockgate-task", task), ("cache-control", cache)) if v}
    assert_openai_error(post(client, "/v1/chat/completions", fuzz_key, body, headers))


@FUZZ
@given(body=S.EMBEDDINGS)
def test_embeddings(client: httpx.Client, fuzz_key: str, body: dict[str, Any]) -> None:
    assert_openai_error(post(client, "/v1/embeddings", fuzz_key, body))


@FUZZ
@given(body=S.MESSAGES)
def test_messages(client: httpx.Client, fuzz_key: str, body: dict[str, Any]) -> None:
    r = post(client, "/v1/messages", fuzz_key, body, {"anthropic-version": "2023-06-01"})
    assert_anthropic_error(r)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=64), S.JSON.map(dumps)),
       path=st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/v1/messages",
                             "/v1/jobs", "/v1/batches", f"/v1/rag/{COLLECTION}/query",
                             "/admin/teams", "/admin/keys", "/admin/controls/kill"]))
def test_any_bytes_any_json_route(client: httpx.Client, fuzz_gateway: Gateway, raw: bytes,
                                  path: str) -> None:
    r = client.post(path, content=raw, headers={**auth(fuzz_gateway.master),
                                                "content-type": "application/json"})
    if path == "/v1/messages":
        assert_anthropic_error(r)
    else:
        assert_openai_error(r)


@FUZZ
@given(body=S.JOB, idem=st.one_of(st.none(), S.HEADER_TEXT))
def test_jobs_submit(client: httpx.Client, fuzz_key: str, body: dict[str, Any],
                     idem: str | None) -> None:
    headers = {"idempotency-key": idem} if idem else None
    assert_openai_error(post(client, "/v1/jobs", fuzz_key, body, headers))


@FUZZ
@given(body=S.BATCH)
def test_batches_create(client: httpx.Client, fuzz_key: str, body: dict[str, Any]) -> None:
    assert_openai_error(post(client, "/v1/batches", fuzz_key, body))


@FUZZ
@given(seg=S.PATH_SEGMENT, route=st.sampled_from([
    ("GET", "/v1/jobs/{}"), ("DELETE", "/v1/jobs/{}"), ("GET", "/v1/files/{}"),
    ("GET", "/v1/files/{}/content"), ("DELETE", "/v1/files/{}"), ("GET", "/v1/batches/{}"),
    ("POST", "/v1/batches/{}/cancel"), ("POST", "/admin/keys/{}/revoke"),
    ("GET", "/v1/rag/{}/status"), ("POST", "/v1/rag/{}/query")]))
@example(seg="/", route=("GET", "/v1/jobs/{}"))  # the trailing-slash redirect (CI found it)
@example(seg="/", route=("GET", "/v1/files/{}/content"))  # mid-path: no redirect, a 404
def test_ids_in_paths(client: httpx.Client, fuzz_gateway: Gateway, seg: str,
                      route: tuple[str, str]) -> None:
    method, template = route
    path = template.format(quote(seg, safe=""))
    kwargs: dict[str, Any] = {"json": {"question": "leave?"}} if method == "POST" else {}
    r = client.request(method, path, headers=auth(fuzz_gateway.master), **kwargs)
    assert_openai_error(r)
    if not is_slash_redirect(r, seg):
        assert r.status_code in (200, 400, 404, 409, 410), (path[:80], r.status_code,
                                                            r.text[:300])


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["limit", "after", "purpose", "since", "team",
                                               "group_by"]), S.QUERY_VALUE, max_size=3),
       path=st.sampled_from(["/v1/files", "/v1/batches", "/admin/usage", "/admin/keys",
                             "/admin/teams", "/admin/controls", "/v1/models"]))
def test_query_params(client: httpx.Client, fuzz_gateway: Gateway, params: dict[str, str],
                      path: str) -> None:
    assert_openai_error(client.get(path, params=params, headers=auth(fuzz_gateway.master)))


@FUZZ
@given(body=S.RAG_DOCUMENTS, coll=st.one_of(st.just("fuzzingest"), st.text(max_size=10)))
def test_rag_ingest(client: httpx.Client, fuzz_gateway: Gateway, body: dict[str, Any],
                    coll: str) -> None:
    r = post(client, f"/v1/rag/{quote(coll or 'x', safe='')}/documents", fuzz_gateway.master,
             body)
    assert_openai_error(r)


@FUZZ
@given(body=S.RAG_QUERY, end_user=st.one_of(st.none(), S.HEADER_TEXT))
def test_rag_query(client: httpx.Client, fuzz_key: str, body: dict[str, Any],
                   end_user: str | None) -> None:
    headers = {"x-lockgate-end-user": end_user} if end_user else None
    assert_openai_error(post(client, f"/v1/rag/{COLLECTION}/query", fuzz_key, body, headers))


@FUZZ
@given(route=st.sampled_from([("/admin/teams", S.TEAM), ("/admin/keys", S.KEY),
                              ("/admin/controls/kill", S.KILL)]), data=st.data())
def test_admin(client: httpx.Client, fuzz_gateway: Gateway, route: tuple[str, Any],
               data: st.DataObject) -> None:
    path, strategy = route
    assert_openai_error(post(client, path, fuzz_gateway.master, data.draw(strategy)))
