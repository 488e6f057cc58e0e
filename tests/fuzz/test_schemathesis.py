"""schemathesis over the OpenAPI document (which declares every request body): no route
answers a generated request with a server error, and errors keep their API's shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from lockgate.server import create_app
from lockgate.settings import parse_config
from tests.gateway.conftest import Gateway, gateway_config

# the document does not depend on the runtime: build it at collection time (no lifespan)
_DOC = create_app(parse_config(gateway_config("http://127.0.0.1:9", "/tmp",
                                              "sqlite:////tmp/unused.db"))).openapi()
SCHEMA = schemathesis.openapi.from_dict(_DOC)
OPERATIONS = {f"{r.ok().method.upper()} {r.ok().path}": r.ok()
              for r in SCHEMA.get_all_operations()}


def test_openapi_declares_request_bodies(fuzz_gateway: Gateway) -> None:
    doc = httpx.get(fuzz_gateway.url + "/openapi.json").json()
    posts = {p: ops["post"] for p, ops in doc["paths"].items() if "post" in ops}
    missing = [p for p, op in posts.items()
               if "requestBody" not in op and not p.endswith(("/revoke", "/cancel",
                                                                "/invalidate", "/claim",
                                                                "/release"))]
    assert not missing, missing
    assert "Block" in doc["components"]["schemas"]


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_server_errors(label: str, fuzz_gateway: Gateway) -> None:
    operation = OPERATIONS[label]

    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        check(case, fuzz_gateway)

    run()


def check(case: Any, fuzz_gateway: Gateway) -> None:
    response = case.call(base_url=fuzz_gateway.url,
                         headers={"Authorization": f"Bearer {fuzz_gateway.master}"},
                         timeout=30)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    ctype = response.headers.get("content-type") or ""
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    if response.status_code >= 400 and ctype.startswith("application/json"):
        body = response.json()
        if case.path == "/v1/messages":
            assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        else:
            assert set(body["error"]) >= {"message", "type", "param", "code"}
