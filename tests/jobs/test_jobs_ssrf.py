"""The SSRF guard for job webhooks: every resolved address is checked, at submit and at
connection time (DNS rebinding), IP literals too, redirects are never followed, and the
explicit allow-list admits named hosts/networks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from lockgate.errors import BadRequest
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.ssrf import AddressPolicy, UnsafeDestination
from lockgate.jobs.ssrf_resolver import GuardedResolver
from lockgate.jobs.submission import JobService
from lockgate.jobs.taskspec import task_specs
from lockgate.jobs.webhooks import WebhookSender
from lockgate.settings import JobsSettings

PUBLIC = "93.184.215.14"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.9", "private"),
        ("172.16.5.5", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fd00:ec2::254", "private"),  # AWS IPv6 metadata
        ("100.64.0.1", "not public"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("fe80::1", "link-local"),
        (PUBLIC, None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_classes(address: str, why: str | None) -> None:
    assert AddressPolicy().refusal(address) == why


def test_allow_list_admits_named_networks_and_hosts_only() -> None:
    policy = AddressPolicy.of(["127.0.0.1/32", "hooks.internal"])
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("127.0.0.2") == "loopback"
    assert policy.name_allowed("HOOKS.internal.")
    policy.check_addresses("hooks.internal", ["10.0.0.1"])  # allowed by name
    with pytest.raises(UnsafeDestination):
        policy.check_addresses("other.internal", ["10.0.0.1"])
    assert AddressPolicy(allow_private=True).refusal("10.0.0.1") is None


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}

    async def getaddrinfo(self: Any, host: str, port: Any, *a: Any, **kw: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (ip, port))
            for ip in table[host]
        ]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return table


async def test_check_url_resolves_and_checks_every_address(fake_dns: dict[str, list[str]]) -> None:
    fake_dns.update({
        "public.test": [PUBLIC],
        "mixed.test": [PUBLIC, "10.0.0.7"],
        "meta.test": ["169.254.169.254"],
    })
    policy = AddressPolicy()
    await policy.check_url("https://public.test/hook")
    for url, needle in (
        ("https://mixed.test/hook", "10.0.0.7"),  # one bad address is enough
        ("http://meta.test/latest", "link-local"),
        ("http://nowhere.test/", "cannot resolve"),
        ("http://localhost:8080/", "loopback"),
        ("http://[::1]/", "loopback"),
    ):
        with pytest.raises(UnsafeDestination, match=needle):
            await policy.check_url(url)


async def test_submit_refuses_names_resolving_to_private_addresses(
    queue: JobQueue, fake_dns: dict[str, list[str]]
) -> None:
    fake_dns.update({"sneaky.test": ["192.168.1.1"], "fine.test": [PUBLIC]})
    svc = JobService(queue, task_specs(JobsSettings()), webhooks_signed=True)
    with pytest.raises(BadRequest, match=r"192\.168\.1\.1") as err:
        await svc.submit("summarize", 1, webhook_url="https://sneaky.test/h")
    assert err.value.param == "webhook_url"
    assert (await svc.submit("summarize", 1, webhook_url="https://fine.test/h")).created
    allowed = JobService(queue, task_specs(JobsSettings()), webhooks_signed=True,
                         webhook_allow=("sneaky.test",))
    assert (await allowed.submit("summarize", 1, webhook_url="https://sneaky.test/h")).created


async def test_submit_without_a_secret_is_refused_unless_unsigned_is_allowed(
    queue: JobQueue,
) -> None:
    specs = task_specs(JobsSettings())
    url = "https://hooks.example/x"
    with pytest.raises(BadRequest) as err:
        await JobService(queue, specs, webhook_allow=("hooks.example",)).submit(
            "summarize", 1, webhook_url=url
        )
    assert err.value.param == "webhook_url" and err.value.code == "webhook_secret_missing"
    unsigned = JobService(queue, specs, webhook_allow=("hooks.example",),
                          allow_unsigned_webhooks=True)
    assert (await unsigned.submit("summarize", 1, webhook_url=url)).created
    # no webhook, no secret needed
    assert (await JobService(queue, specs).submit("summarize", 1)).created


class _Rebinding(AbstractResolver):
    """Resolves every name to loopback (a rebinding attacker's DNS)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET,
                              proto=0, flags=0)]

    async def close(self) -> None:
        return None


@pytest.fixture
async def local_hook() -> AsyncIterator[tuple[int, list[str]]]:
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1], hits  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_connect_time_guard_refuses_a_rebound_name(
    local_hook: tuple[int, list[str]],
) -> None:
    port, hits = local_hook
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(AddressPolicy(), _Rebinding()))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientError, match="refused"):
            await session.get(f"http://rebound.test:{port}/hook")
    assert hits == []
    allowed = GuardedResolver(AddressPolicy.of(["127.0.0.0/8"]), _Rebinding())
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=allowed)) as s,
        s.get(f"http://rebound.test:{port}/hook") as resp,
    ):
        assert resp.status == 200
    assert hits == ["/hook"]


async def test_sender_checks_literals_and_names_before_sending(
    local_hook: tuple[int, list[str]],
) -> None:
    port, hits = local_hook
    guarded = WebhookSender("k", policy=AddressPolicy())
    try:
        for url in (f"http://127.0.0.1:{port}/hook", f"http://localhost:{port}/hook"):
            res = await guarded.attempt(url, "job.completed", b"{}", "whd_1")
            assert not res.ok and not res.retryable and "refused" in res.status, res
    finally:
        await guarded.aclose()
    assert hits == []
    allowed = WebhookSender("k", policy=AddressPolicy.of(["127.0.0.1/32"]))
    try:
        res = await allowed.attempt(f"http://127.0.0.1:{port}/hook", "job.completed", b"{}")
        assert res.ok, res
    finally:
        await allowed.aclose()
    assert hits == ["/hook"]
