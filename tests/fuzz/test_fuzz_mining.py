"""Fuzz ``/v1/mining``: analyze bodies, uploaded logs (CSV/XES bytes), log names in paths.

No 5xx, every error in OpenAI's shape.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import strategies as S
from tests.fuzz.conftest import assert_openai_error, auth, is_slash_redirect
from tests.fuzz.test_fuzz_routes import FUZZ, post
from tests.gateway.conftest import Gateway

_ACTS = st.sampled_from(["a", "b", "c", "", "call http/chat"])
ANALYZE = S.body({}, {
    "log": S.maybe(st.sampled_from(["fz", "nope", "", "../x"])),
    "sources": S.maybe(st.lists(st.sampled_from(["calls", "reviews", "jobs", "x"]),
                                max_size=4)),
    "since": S.maybe(st.sampled_from(["1h", "7d", "2026-01-01", "x", ""])),
    "until": S.maybe(st.sampled_from(["2030-01-01", "bad"])),
    "reference": S.maybe(st.lists(st.lists(_ACTS, max_size=4), max_size=3)),
    "reference_name": S.maybe(S.SMALL_TEXT),
    "svg": S.maybe(st.booleans()), "summary": S.maybe(st.booleans()),
    "model": S.maybe(st.sampled_from(["fast", "nope"])), "max_variants": S.INT,
})
_ROW = st.tuples(st.sampled_from(["1", "2", ""]), _ACTS,
                 st.sampled_from(["2026-01-01T00:00:00", "5", "x", "", "1e400", "nan"]))
CSV = st.lists(_ROW, max_size=6).map(
    lambda rows: ("case,activity,timestamp\n" + "".join(",".join(r) + "\n" for r in rows)))


@FUZZ
@given(body=ANALYZE)
def test_analyze(client: httpx.Client, fuzz_gateway: Gateway, body: dict[str, Any]) -> None:
    r = post(client, "/v1/mining/analyze", fuzz_gateway.master, body)
    assert_openai_error(r)
    assert r.status_code in (200, 400, 404, 503), (r.status_code, r.text[:300])


@FUZZ
@given(raw=S.JSON)
def test_analyze_any_json(client: httpx.Client, fuzz_gateway: Gateway, fuzz_key: str,
                          raw: Any) -> None:
    for key in (fuzz_gateway.master, fuzz_key):
        assert_openai_error(post(client, "/v1/mining/analyze", key, raw))


@FUZZ
@given(data=st.one_of(CSV, st.binary(max_size=200).map(lambda b: b.decode("latin-1"))),
       fmt=st.sampled_from(["csv", "xes", "json"]), replace=st.sampled_from(["true", "x"]))
def test_upload(client: httpx.Client, fuzz_gateway: Gateway, data: str, fmt: str,
                replace: str) -> None:
    r = client.put(f"/v1/mining/logs/fz?format={fmt}&replace={replace}",
                   content=data.encode("utf-8", "surrogatepass"),
                   headers=auth(fuzz_gateway.master))
    assert_openai_error(r)
    assert r.status_code in (201, 400, 409), (r.status_code, r.text[:300])


@FUZZ
@given(seg=S.PATH_SEGMENT, method=st.sampled_from(["PUT", "DELETE"]))
@example(seg="/", method="PUT")  # the framework's trailing-slash redirect (CI found it)
def test_names_in_paths(client: httpx.Client, fuzz_gateway: Gateway, seg: str,
                        method: str) -> None:
    r = client.request(method, f"/v1/mining/logs/{quote(seg, safe='')}",
                       content=b"case,activity,timestamp\n1,a,1\n",
                       headers=auth(fuzz_gateway.master))
    assert_openai_error(r)
    if not is_slash_redirect(r, seg):
        assert r.status_code in (200, 201, 400, 404, 405, 409), (r.status_code, r.text[:300])
