"""A stand-in legacy HTTP service (aiohttp, loopback) the facade tests put lockgate in front of.

Routes:
    GET  /tickets/{id}        JSON ticket (status open unless id starts with "c"), 2 cookies
    ANY  /echo[/...]          JSON of what arrived: method, raw path, headers, body (latin-1)
    GET  /stream?n=&gap=      chunked body of n lines, gap seconds apart
    GET  /gzip                a gzip-encoded body with Content-Encoding: gzip
    GET  /customers/{id}      JSON with an e-mail address and a phone number
    GET  /big                 a 200 kB JSON document
    GET  /status/{code}       that status with a short body (no body for 204/304)
    GET  /ws                  a WebSocket echo (aiohttp)
"""

from __future__ import annotations

import asyncio
import gzip
import socket

import orjson
from aiohttp import web

TICKET_TEXT = "The printer on floor 3 is on fire and nobody can print invoices."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ticket(request: web.Request) -> web.Response:
    tid = request.match_info["id"]
    doc = {"id": tid, "status": "closed" if tid.startswith("c") else "open",
           "description": TICKET_TEXT}
    resp = web.json_response(doc, headers={"X-Legacy": "yes", "Server": "legacy/1.0"})
    resp.headers.add("Set-Cookie", "a=1; Path=/")
    resp.headers.add("Set-Cookie", "b=2; Path=/")
    return resp


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    doc = {"method": request.method, "path": request.raw_path,
           "headers": [[k, v] for k, v in request.headers.items()],
           "body": body.decode("latin-1"), "chunked": request.headers.get(
               "Transfer-Encoding", "") == "chunked"}
    status = int(request.query.get("status", "200"))
    return web.Response(status=status, reason=request.query.get("reason"),
                        body=orjson.dumps(doc), content_type="application/json")


async def _stream(request: web.Request) -> web.StreamResponse:
    n = int(request.query.get("n", "5"))
    gap = float(request.query.get("gap", "0.05"))
    resp = web.StreamResponse(headers={"Content-Type": request.query.get(
        "type", "text/plain; charset=utf-8")})
    await resp.prepare(request)
    for i in range(n):
        await resp.write(f"line {i} mail{i}@example.com\n".encode())
        await asyncio.sleep(gap)
    await resp.write_eof()
    return resp


async def _gzip(request: web.Request) -> web.Response:
    data = gzip.compress(b"hello compressed world " * 50)
    return web.Response(body=data, headers={"Content-Encoding": "gzip",
                                            "Content-Type": "text/plain"})


async def _customer(request: web.Request) -> web.Response:
    return web.json_response({"id": request.match_info["id"], "name": "Ada",
                              "contact": {"email": "ada.lovelace@example.com",
                                          "phone": "+44 20 7946 0958"},
                              "note": "call after 5pm"})


async def _big(request: web.Request) -> web.Response:
    return web.json_response({"rows": ["x" * 100] * 2000})


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if code in (204, 304):
        return web.Response(status=code)
    return web.Response(status=code, text=f"status {code}")


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == web.WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == web.WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def legacy_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/tickets/{id}", _ticket)
    app.router.add_route("*", "/echo", _echo)
    app.router.add_route("*", "/echo/{rest:.*}", _echo)
    app.router.add_get("/stream", _stream)
    app.router.add_get("/gzip", _gzip)
    app.router.add_get("/customers/{id}", _customer)
    app.router.add_get("/big", _big)
    app.router.add_get("/status/{code}", _status)
    app.router.add_get("/ws", _ws)
    return app


async def start_legacy() -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(legacy_app(), access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, f"http://127.0.0.1:{port}"
