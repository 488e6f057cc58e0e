"""Pass-through: what no rule matches reaches the service and comes back unchanged."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import orjson

from tests.facade.conftest import FacadeFactory

IGNORED = {"date", "server", "connection", "keep-alive", "transfer-encoding"}


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(auto_decompress=False,
                                 skip_auto_headers=("User-Agent", "Accept-Encoding"))


async def _fetch(s: aiohttp.ClientSession, method: str, url: str, **kw: object
                 ) -> tuple[int, str, list[tuple[str, str]], bytes]:
    async with s.request(method, url, allow_redirects=False, **kw) as r:  # type: ignore[arg-type]
        body = await r.read()
        headers = [(k.lower(), v) for k, v in r.headers.items() if k.lower() not in IGNORED]
        return r.status, r.reason or "", headers, body


async def test_same_answer_as_the_service_itself(facade: FacadeFactory, legacy: str) -> None:
    base = await facade()
    cases: list[tuple[str, str, dict[str, object]]] = [
        ("GET", "/tickets/7", {}),
        ("GET", "/tickets/7?x=%2F%20y&z=1", {}),
        ("POST", "/echo/a%2Fb?q=1", {"data": b"\x00\x01binary\xff", "headers": {
            "Content-Type": "application/octet-stream", "X-Custom": "v1"}}),
        ("PUT", "/echo", {"json": {"a": [1, 2, 3]}}),
        ("PATCH", "/echo", {"data": b"x" * 200_000}),
        ("DELETE", "/echo?status=202&reason=Queued", {}),
        ("OPTIONS", "/echo", {}),
        ("GET", "/gzip", {}),
        ("GET", "/status/404", {}),
        ("GET", "/status/503", {}),
        ("GET", "/status/204", {}),
        ("GET", "/status/304", {}),
        ("HEAD", "/tickets/3", {}),
        ("GET", "/big", {}),
        ("GET", "/no/such/route", {}),
    ]
    async with _session() as s:
        for method, path, kw in cases:
            direct = await _fetch(s, method, legacy + path, **kw)
            proxied = await _fetch(s, method, base + path, **kw)
            if path.startswith("/echo"):
                # the echo reports the request as the service saw it: only Host may differ
                d, p = orjson.loads(direct[3]), orjson.loads(proxied[3])
                assert d["method"] == p["method"] and d["path"] == p["path"], path
                assert d["body"] == p["body"], path
                strip = {"host", "connection"}
                assert [h for h in d["headers"] if h[0].lower() not in strip] == \
                    [h for h in p["headers"] if h[0].lower() not in strip], path
                assert direct[:2] == proxied[:2], path
            else:
                assert proxied == direct, (method, path)
    async with _session() as s, s.get(base + "/gzip") as r:  # still compressed, untouched
        assert r.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await r.read()) == b"hello compressed world " * 50


async def test_repeated_headers_and_status_reason_pass(facade: FacadeFactory) -> None:
    base = await facade()
    async with _session() as s:
        async with s.get(base + "/tickets/1") as r:
            assert r.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
            assert r.headers["Server"] == "legacy/1.0"
        async with s.delete(base + "/echo?status=299&reason=Odd%20Reason") as r:
            assert (r.status, r.reason) == (299, "Odd Reason")


async def test_hop_by_hop_headers_are_not_forwarded(facade: FacadeFactory) -> None:
    base = await facade()
    async with _session() as s, s.get(base + "/echo", headers={
            "Connection": "keep-alive, X-Hop", "X-Hop": "secret", "TE": "trailers",
            "Proxy-Authorization": "Basic abc", "X-End": "kept"}) as r:
        seen = {k.lower(): v for k, v in orjson.loads(await r.read())["headers"]}
    assert seen["x-end"] == "kept"
    for name in ("x-hop", "te", "proxy-authorization"):
        assert name not in seen


async def test_chunked_request_body_streams_upstream(facade: FacadeFactory) -> None:
    base = await facade()

    async def gen():  # type: ignore[no-untyped-def]
        for i in range(5):
            yield f"part{i};".encode()

    async with _session() as s, s.post(base + "/echo", data=gen()) as r:
        doc = orjson.loads(await r.read())
    assert doc["body"] == "part0;part1;part2;part3;part4;"
    assert doc["chunked"] is True


async def test_streaming_response_is_not_buffered(facade: FacadeFactory) -> None:
    base = await facade()
    async with _session() as s, s.get(base + "/stream?n=4&gap=0.4") as r:
        first = await r.content.readline()
        # the service is still sending (it needs ~1.2 s more); the first line is already here
        assert first == b"line 0 mail0@example.com\n"
        assert not r.content.at_eof()
        rest = await r.read()
    assert rest.count(b"\n") == 3


async def test_upstream_down_is_a_502(facade: FacadeFactory) -> None:
    from tests.facade.legacy import free_port

    base = await facade(upstream=f"http://127.0.0.1:{free_port()}")
    async with _session() as s, s.get(base + "/x") as r:
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "upstream_unreachable"


async def test_concurrent_requests(facade: FacadeFactory) -> None:
    base = await facade()
    async with _session() as s:
        async def one(i: int) -> int:
            async with s.post(base + f"/echo?i={i}", data=str(i).encode()) as r:
                return int(orjson.loads(await r.read())["body"])
        got = await asyncio.gather(*(one(i) for i in range(100)))
    assert got == list(range(100))
