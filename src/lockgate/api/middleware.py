"""Pure ASGI middleware: a request id and the overhead header on every response.

Model routes set ``x-lockgate-overhead-ms`` themselves (they subtract upstream
time); for every other response the whole handling time is overhead.
"""

from __future__ import annotations

import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lockgate.observability.logging import bind_request

_RID = b"x-request-id"
_OVH = b"x-lockgate-overhead-ms"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = "req_" + uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["started"] = started
        bind_request(request_id=rid)  # every log line of this request's task carries it

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if _RID not in names:
                    headers.append((_RID, rid.encode()))
                if _OVH not in names:
                    ms = (time.perf_counter() - started) * 1000.0
                    headers.append((_OVH, f"{ms:.3f}".encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
