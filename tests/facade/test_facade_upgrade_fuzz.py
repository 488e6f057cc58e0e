"""Fuzz the Upgrade path with raw bytes: whatever handshake and whatever follows it, the
facade answers with an HTTP/1.1 status line or tunnels, never a 500 of its own, every
connection ends, and no tunnel or task is left behind."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.facade import Facades
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from tests.facade.legacy import free_port, start_legacy


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home: Path = tmp_path_factory.mktemp("facade-upgrade-fuzz")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {"loop": loop}

    async def start() -> None:
        runner, legacy = await start_legacy()
        port = free_port()
        doc = {"home": str(home), "models": [], "facades": [
            {"name": "up", "port": port, "upstream": legacy, "idle_timeout": 2,
             "rules": [{"name": "r", "action": "redact",
                        "match": {"methods": ["GET", "POST"], "path": "/ws"}}]}]}
        rt = await Runtime.start(parse_config(yaml.safe_dump(doc)), warm_up=False)
        fac = await Facades.start(rt)
        state.update(runner=runner, rt=rt, fac=fac, port=port)

    async def stop() -> None:
        await state["fac"].aclose()
        await state["rt"].aclose()
        await state["runner"].cleanup()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(stop())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(30)
    yield state
    loop.call_soon_threadsafe(loop.stop)
    t.join(30)


HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                       max_size=30)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "POST", "PUT"]),
       path=st.sampled_from(["/ws", "/echo", "/tickets/1", "/nope"]),
       upgrade=st.sampled_from(["websocket", "WebSocket", "h2c", "foo/1.0"]) | HEADER_VALUE,
       connection=st.sampled_from(["Upgrade", "keep-alive, Upgrade", "close", "upgrade"]),
       with_key=st.booleans(),
       after=st.binary(max_size=300))
def test_any_upgrade_attempt_ends_cleanly(served: dict[str, Any], method: str, path: str,
                                          upgrade: str, connection: str, with_key: bool,
                                          after: bytes) -> None:
    port = served["port"]
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: {upgrade}\r\n"
            f"Connection: {connection}\r\nContent-Length: 0\r\n")
    if with_key:
        key = base64.b64encode(b"0123456789abcdef").decode()
        head += f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + after)
        sock.shutdown(socket.SHUT_WR)  # the client is done: every path must end
        got = b""
        while True:
            chunk = sock.recv(65536)  # a hang raises socket.timeout: the test fails
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 "), got[:200]
    status = int(got[9:12])
    assert status != 500, got[:300]
    settle(served)


def settle(served: dict[str, Any]) -> None:
    front = served["fac"].servers[0].front

    async def idle() -> None:
        for _ in range(400):
            if front.tunnels == 0 and not front._tasks:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{front.tunnels} tunnels, {len(front._tasks)} tasks left")

    asyncio.run_coroutine_threadsafe(idle(), served["loop"]).result(30)
