"""Transport-level bad input: short bodies, stalled and chunked uploads, disconnects, and a
500 (if one ever happens) still names its request."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

import lockgate.api.error_render
import lockgate.server
from lockgate.settings import parse_config
from tests.fuzz.conftest import BODY_TIMEOUT, assert_anthropic_error, assert_openai_error, auth
from tests.gateway.conftest import Gateway, gateway_config


def raw_request(gw: Gateway, head: str, body: bytes = b"", read: bool = True,
                timeout: float = 10) -> bytes:
    u = urlparse(gw.url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        if not read:
            return b""
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in data:
                break
        return b"".join(chunks)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/jobs"])
def test_body_shorter_than_content_length_times_out(fuzz_gateway: Gateway, fuzz_key: str,
                                                   path: str) -> None:
    body = b'{"model": "fast"'
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fuzz_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n")
    started = time.monotonic()
    answer = raw_request(fuzz_gateway, head, body, timeout=BODY_TIMEOUT * 10)
    waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"x-request-id: req_" in answer.lower()
    assert waited < BODY_TIMEOUT * 8
    if path == "/v1/messages":
        assert b'"type":"error"' in answer
    else:
        assert b'"code":"request_timeout"' in answer


def test_streaming_answer_is_not_cut_by_the_body_timeout(client: httpx.Client,
                                                         fuzz_key: str) -> None:
    """Once the body is read, the timeout no longer applies (streams wait on receive)."""
    with client.stream("POST", "/v1/chat/completions", headers=auth(fuzz_key), json={
            "model": "pauses", "stream": True,  # silent mid-stream for 2x the body timeout
            "messages": [{"role": "user", "content": "hello"}]}) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert "[DONE]" in text


@pytest.fixture
def small_uploads(monkeypatch: pytest.MonkeyPatch) -> int:
    limit = 64 * 1024
    monkeypatch.setattr("lockgate.api.jobs.MAX_FILE_BYTES", limit)
    return limit


def _chunked(parts: Iterator[bytes]) -> Iterator[bytes]:
    yield from parts


def test_chunked_upload_is_capped_while_streaming(client: httpx.Client, fuzz_key: str,
                                                  small_uploads: int) -> None:
    boundary = "lgboundary"
    sent = 0

    def parts() -> Iterator[bytes]:
        nonlocal sent
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
               f'batch\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
               f'filename="big.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n').encode()
        for _ in range(400):  # 400 x 16 KiB = 6.4 MiB, 100x the limit
            sent += 16384
            yield b"x" * 16384
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        r = client.post("/v1/files", content=_chunked(parts()), headers={
            **auth(fuzz_key), "content-type": f"multipart/form-data; boundary={boundary}"})
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        # the server answered 413 and closed while we were still sending: also fine, but
        # check it did not read everything first
        assert sent < 400 * 16384
        return
    assert r.status_code == 413, r.text
    assert_openai_error(r)
    assert r.request.headers.get("transfer-encoding") == "chunked"  # no Content-Length


def test_client_disconnect_mid_upload_is_not_an_unhandled_error(
        fuzz_gateway: Gateway, fuzz_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    class Spy:
        def exception(self, event: str, **kw: Any) -> None:
            seen.append(("exception", {"event": event, **kw}))

        def info(self, event: str, **kw: Any) -> None:
            seen.append(("info", {"event": event, **kw}))

        def __getattr__(self, name: str) -> Any:
            return lambda *a, **k: None

    monkeypatch.setattr(lockgate.server, "log", Spy())
    monkeypatch.setattr(lockgate.api.error_render, "log", Spy())  # renders handler failures
    for path in ("/v1/chat/completions", "/v1/files"):
        ctype = ("application/json" if path != "/v1/files"
                 else "multipart/form-data; boundary=b")
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fuzz_key}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: 100000\r\n")
        raw_request(fuzz_gateway, head, b'{"model": "fa' if path != "/v1/files"
                    else b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"'
                         b'\r\n\r\nxxxx', read=False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len([s for s in seen if s[0] == "info"]) < 2:
        time.sleep(0.05)
    assert not [s for s in seen if s[0] == "exception"], seen
    assert [s for s in seen if s[1]["event"] == "lockgate.client_disconnected"], seen


def _boom_app(tmp_path: Any, upstream: str) -> FastAPI:
    cfg = parse_config(gateway_config(upstream, tmp_path, f"sqlite:///{tmp_path / 'b.db'}"))
    app = lockgate.server.create_app(cfg)

    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/v1/boom", boom, methods=["GET"])
    app.add_api_route("/v1/messages/boom", boom, methods=["GET"])
    return app


def test_a_500_carries_the_request_id(tmp_path: Any, upstream: str) -> None:
    app = _boom_app(tmp_path, upstream)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/v1/boom")
        assert r.status_code == 500
        assert r.headers["x-request-id"].startswith("req_")
        assert r.json()["error"]["code"] == "internal_error"
        r = c.get("/v1/messages/boom")  # not the messages route itself: OpenAI's shape
        assert r.status_code == 500 and "error" in r.json()


def test_anthropic_404_and_timeouts_keep_anthropic_shape(client: httpx.Client,
                                                         fuzz_key: str) -> None:
    r = client.put("/v1/messages", headers=auth(fuzz_key), json={})
    assert r.status_code == 405
    assert_anthropic_error(r)
