"""The lean Redis connection (lockgate.state.resp): URLs, order under concurrency, AUTH and
SELECT against the real server, error replies, and the failure modes of a bad server."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from pathlib import Path

import pytest
import redis as sync_redis
from tests.providers.test_http1_tls import cert_files  # noqa: F401  (the self-signed pair)

from lockgate.state.base import RateCounter, StateUnavailable
from lockgate.state.redis_state import RedisState
from lockgate.state.resp import NoScript, RespConnection, RespError, parse_redis_url

URL = "redis://127.0.0.1:6379/0"


def test_parse_redis_urls() -> None:
    t = parse_redis_url("redis://alice:s%40cret@cache.internal:6380/4")
    assert (t.host, t.port, t.db, t.username, t.password, t.tls) == (
        "cache.internal", 6380, 4, "alice", "s@cret", False)
    t = parse_redis_url("redis://:pw@127.0.0.1")
    assert (t.port, t.db, t.username, t.password) == (6379, 0, None, "pw")
    t = parse_redis_url("rediss://h:6390/0?ssl_cert_reqs=none")
    assert t.tls and not t.tls_verify
    t = parse_redis_url("rediss://h/0?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem")
    assert t.tls_verify and (t.ca_certs, t.certfile, t.keyfile) == ("/ca.pem", "/c.pem", "/k.pem")
    t = parse_redis_url("unix:///run/redis.sock?db=2&password=x")
    assert (t.path, t.db, t.password) == ("/run/redis.sock", 2, "x")
    for bad in ("http://h:1/0", "redis://h/notanumber", "unix://"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


@pytest.mark.redis
async def test_replies_reach_their_callers_under_concurrency(redis_prefix: str) -> None:
    conn = RespConnection(URL)
    try:
        keys = [f"{redis_prefix}k{i}" for i in range(500)]
        await asyncio.gather(*(conn.call("SET", k, f"v{i}") for i, k in enumerate(keys)))
        got = await asyncio.gather(*(conn.call("GET", k) for k in keys))
        assert got == [f"v{i}".encode() for i in range(500)]
        assert conn.pipelined_writes >= 1 and conn.writes < 1000  # coalesced writes
        assert await conn.call("INCR", redis_prefix + "n") == 1
        assert await conn.call("GET", redis_prefix + "missing") is None
        assert await conn.call("MGET", keys[0], keys[1]) == [b"v0", b"v1"]
    finally:
        await conn.close()


@pytest.mark.redis
async def test_error_replies_raise_and_the_connection_goes_on(redis_prefix: str) -> None:
    conn = RespConnection(URL)
    try:
        await conn.call("SET", redis_prefix + "s", "text")
        with pytest.raises(RespError, match="not an integer"):
            await conn.call("INCR", redis_prefix + "s")
        with pytest.raises(NoScript):
            await conn.call("EVALSHA", "0" * 40, 0)
        assert await conn.call("GET", redis_prefix + "s") == b"text"
        assert conn.connects == 1
    finally:
        await conn.close()


@pytest.mark.redis
async def test_select_and_acl_auth_on_the_real_server(redis_prefix: str) -> None:
    admin = sync_redis.Redis.from_url(URL)
    user = "lg-test-" + uuid.uuid4().hex[:8]
    admin.acl_setuser(user, enabled=True, passwords=["+s3cret"], keys=["*"],
                      commands=["+@all"])
    key = redis_prefix + "db3"
    try:
        conn = RespConnection(f"redis://{user}:s3cret@127.0.0.1:6379/3")
        await conn.call("SET", key, "in-three")
        await conn.close()
        assert sync_redis.Redis.from_url("redis://127.0.0.1:6379/3").get(key) == b"in-three"
        assert admin.get(key) is None  # not in db 0
        wrong = RespConnection(f"redis://{user}:wrong@127.0.0.1:6379/0")
        with pytest.raises(ConnectionError, match="refused the connection setup"):
            await wrong.call("PING")
        state = RedisState(f"redis://{user}:wrong@127.0.0.1:6379/0", timeout=0.5)
        with pytest.raises(StateUnavailable, match="refused"):
            await state.bump_version("x")
        await state.close()
    finally:
        admin.acl_deluser(user)
        sync_redis.Redis.from_url("redis://127.0.0.1:6379/3").delete(key)
        admin.close()


async def _serve(handler: object) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    return server, server.sockets[0].getsockname()[1]


async def test_a_server_that_hangs_up_fails_the_calls_in_flight() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.close()

    server, port = await _serve(hang_up)
    conn = RespConnection(f"redis://127.0.0.1:{port}/0")
    try:
        results = await asyncio.gather(*(conn.call("GET", "k") for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results), results
        assert not conn.connected
    finally:
        server.close()
        await conn.close()


async def test_garbage_from_the_server_is_a_connection_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"?this is not RESP\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    server, port = await _serve(garbage)
    conn = RespConnection(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(ConnectionError, match="protocol error"):
            await asyncio.wait_for(conn.call("GET", "k"), 5)
    finally:
        server.close()
        await conn.close()


async def test_a_stalled_server_times_out_and_the_next_call_reconnects() -> None:
    # first connection: never answers; later ones: a tiny server answering +OK / $-1
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)
            return
        while data := await reader.read(1000):
            writer.write(b"$-1\r\n" * data.count(b"*"))
            await writer.drain()

    server, port = await _serve(handler)
    state = RedisState(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    try:
        with pytest.raises(StateUnavailable, match="no answer"):
            await state.get_version("x")
        assert await state.get_version("x") == 0  # a new connection, answered
        assert state._conn.connects == 2
    finally:
        server.close()
        await state.close()


async def test_admit_on_a_closed_port_is_state_unavailable_quickly() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    state = RedisState(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(StateUnavailable, match="unreachable"):
        await state.admit([RateCounter("rl:x", 1, 1.0, 1)], [], now=0.0, reservation_id="r",
                          reservation_expires=1.0)
    assert loop.time() - t0 < 1.0
    await state.close()


@pytest.mark.redis
async def test_rediss_through_a_tls_terminator_to_the_real_server(
    cert_files: tuple[Path, Path], redis_prefix: str,  # noqa: F811 (the imported fixture)
) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert_files)
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def terminate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection("127.0.0.1", 6379)
        for t in (asyncio.create_task(pipe(reader, w2)), asyncio.create_task(pipe(r2, writer))):
            pipes.add(t)
            t.add_done_callback(pipes.discard)

    server = await asyncio.start_server(terminate, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    cert = cert_files[0]
    try:
        conn = RespConnection(f"rediss://localhost:{port}/0?ssl_ca_certs={cert}")
        await conn.call("SET", redis_prefix + "tls", "over-tls")
        assert await conn.call("GET", redis_prefix + "tls") == b"over-tls"
        await conn.close()
        insecure = RespConnection(f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none")
        assert await insecure.call("GET", redis_prefix + "tls") == b"over-tls"
        await insecure.close()
        # an unknown CA is refused: the backend reports Redis unreachable, never a 500
        state = RedisState(f"rediss://localhost:{port}/0", timeout=1.0)
        with pytest.raises(StateUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await state.get_version("x")
        await state.close()
    finally:
        server.close()
        for t in list(pipes):
            t.cancel()


@pytest.mark.redis
def test_one_connection_object_used_from_two_event_loops_in_turn(redis_prefix: str) -> None:
    conn = RespConnection(URL)

    async def use(value: str) -> bytes:
        await conn.call("SET", redis_prefix + "loop", value)
        got: bytes = await conn.call("GET", redis_prefix + "loop")
        return got

    assert asyncio.run(use("first")) == b"first"
    assert asyncio.run(use("second")) == b"second"  # reconnected on the new loop
    assert conn.connects == 2
    asyncio.run(conn.close())
