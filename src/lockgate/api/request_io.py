"""Reading requests (size-limited JSON bodies, API keys) and writing responses."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message

from lockgate.errors import BadRequest, GatewayError, PayloadTooLarge
from lockgate.formats.json_limits import MAX_JSON_DEPTH, JsonTooDeep, loads_checked

JSON = "application/json"


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object; 413 past ``limit`` bytes, 400 if not JSON or
    nested deeper than :data:`~lockgate.formats.json_limits.MAX_JSON_DEPTH`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise BadRequest("Invalid Content-Length header.") from None
        if too_big:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    raw = await _read_body(request, limit)
    if not raw:
        raise BadRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    body = parse_json(raw, "Request body")
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object.", code="invalid_json")
    return body


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, 413 past ``limit`` bytes: what ``async for chunk in request.stream()`` read
    (ClientDisconnect when the client leaves first), without an async generator (each one
    is registered with the loop: ~2 us a request on the hot path)."""
    cached: bytes | None = getattr(request, "_body", None)  # read before (request.body())
    if cached is not None:
        if len(cached) > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        return cached
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise ClientDisconnect
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(raw: bytes | str, what: str, param: str | None = None) -> Any:
    """Client JSON (a body, a form field, a file line) with the depth limit; 400 otherwise."""
    try:
        return loads_checked(raw)
    except JsonTooDeep:
        raise BadRequest(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep.",
                         param=param, code="json_too_deep") from None
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}", param=param,
                         code="invalid_json") from None


def capped(request: Request, limit: int, what: str = "Request body") -> Request:
    """The same request whose body reader raises 413 as soon as more than ``limit`` bytes
    arrived (for multipart uploads, which would otherwise spool everything first; a
    chunked upload has no Content-Length to check up front)."""
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"{what} exceeds the limit of {limit} bytes.")
        return message

    return Request(request.scope, receive)


_DIGITS = re.compile(r"[0-9]{1,9}")


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``low..high`` (ASCII digits only); 400 otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = int(raw) if _DIGITS.fullmatch(raw) else None
    if value is None or not low <= value <= high:
        raise BadRequest(f"'{name}' must be an integer from {low} to {high}", param=name,
                         code="invalid_value")
    return value


def api_key_of(request: Request) -> str | None:
    """Bearer token, or the ``x-api-key`` / ``api-key`` headers other SDKs send."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return request.headers.get("x-api-key") or request.headers.get("api-key")


def request_id_of(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return str(rid) if rid else ""


def started_of(request: Request) -> float:
    """When the ASGI middleware first saw the request (perf_counter), so the overhead
    header covers parsing and routing too."""
    started = request.scope.get("state", {}).get("started")
    return float(started) if started is not None else time.perf_counter()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status, media_type=JSON, headers=headers)


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    merged = {**exc.headers, **(headers or {})}
    return Response(exc.body_bytes(), status_code=exc.status, media_type=JSON, headers=merged)


def query_text(request: Request, name: str, max_len: int = 200) -> str | None:
    """A query parameter, None when absent or empty; over ``max_len`` is a 400."""
    value = request.query_params.get(name)
    if not value:
        return None
    if len(value) > max_len:
        raise BadRequest(f"'{name}' is at most {max_len} characters.", param=name)
    return value
