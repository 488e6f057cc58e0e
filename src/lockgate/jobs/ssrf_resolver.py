"""The webhook client's aiohttp resolver: every name checked against the SSRF policy
(:mod:`lockgate.jobs.ssrf`) at every connection, so DNS rebinding cannot reach a refused
address. Its own module so the policy can be imported without aiohttp (~14 MB resident,
loaded only by the processes that send webhooks)."""

from __future__ import annotations

import errno
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from lockgate.jobs.ssrf import AddressPolicy, UnsafeDestination

__all__ = ["GuardedResolver"]


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to any address the policy refuses."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if not self.policy.name_allowed(host) and (
            host == "localhost" or host.endswith(".localhost")
        ):
            raise OSError(errno.EACCES, f"refused: {host} is a loopback name")
        infos = await self._inner.resolve(host, port, family)
        try:
            self.policy.check_addresses(host, [str(i["host"]) for i in infos])
        except UnsafeDestination as exc:
            raise OSError(errno.EACCES, f"refused: {exc}") from None
        return infos

    async def close(self) -> None:
        await self._inner.close()
