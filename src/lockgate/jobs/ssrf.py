"""The SSRF guard for user-supplied URLs (job ``webhook_url``): no requests into the network.

A destination is refused when *any* address its host resolves to is not a public unicast
address: loopback, private (RFC 1918, ULA), link-local (including the cloud metadata
address 169.254.169.254), shared (100.64/10), multicast, reserved or unspecified, and the
same for IPv4-mapped IPv6 addresses. Checks happen twice:

* at submit (:meth:`AddressPolicy.check_url`: resolve now, 400 on a bad address), and
* at every connection (:class:`lockgate.jobs.ssrf_resolver.GuardedResolver`, the resolver
  of the webhook client), so a
  name that later resolves somewhere else (DNS rebinding) is still refused, and an IP
  literal is checked before the request. Redirects are never followed by the sender.

The explicit allow-list (``jobs.webhook_allow``: host names and IP networks in CIDR form)
admits named destinations anyway, e.g. ``127.0.0.1/32`` for tests or an internal receiver;
``jobs.allow_private_webhooks: true`` turns the guard off entirely.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["AddressPolicy", "UnsafeDestination", "literal_refusal"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeDestination(ValueError):
    """The URL points at an address the policy refuses (or cannot be resolved)."""


def _why_blocked(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for what, hit in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if hit:
            return what
    if not ip.is_global:
        return "not public"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    allow: tuple[str, ...] = ()
    """Host names (exact, case-insensitive) and CIDR networks admitted even if not public."""
    allow_private: bool = False
    """Admit every address (the guard is off)."""
    _names: frozenset[str] = field(init=False, repr=False)
    _nets: tuple[IPNetwork, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names: set[str] = set()
        nets: list[IPNetwork] = []
        for entry in self.allow:
            try:
                nets.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                names.add(entry.strip().strip("[]").lower().rstrip("."))
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_nets", tuple(nets))

    @classmethod
    def of(cls, allow: Iterable[str] = (), allow_private: bool = False) -> AddressPolicy:
        return cls(tuple(allow), allow_private)

    def name_allowed(self, host: str) -> bool:
        return self.allow_private or host.strip("[]").lower().rstrip(".") in self._names

    def refusal(self, address: str) -> str | None:
        """Why ``address`` (an IP literal) is refused, or None when it may be used."""
        if self.allow_private:
            return None
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "not an IP address"
        if any(ip in net for net in self._nets):
            return None
        return _why_blocked(ip)

    def check_addresses(self, host: str, addresses: Iterable[str]) -> None:
        """UnsafeDestination unless every one of ``addresses`` may be used."""
        if self.name_allowed(host):
            return
        seen = False
        for address in addresses:
            seen = True
            reason = self.refusal(address)
            if reason is not None:
                raise UnsafeDestination(f"{host} resolves to a {reason} address ({address})")
        if not seen:
            raise UnsafeDestination(f"{host} does not resolve to any address")

    async def check_url(self, url: str) -> None:
        """Resolve the URL's host now and check every address (for submit-time 400s)."""
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            raise UnsafeDestination("the URL has no host")
        if self.name_allowed(host):
            return
        if _is_literal(host):
            self.check_addresses(host, [host])
            return
        if host == "localhost" or host.endswith(".localhost"):
            raise UnsafeDestination(f"{host} is a loopback name")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UnsafeDestination("the URL has an invalid port") from None
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise UnsafeDestination(f"cannot resolve {host}: {exc}") from None
        self.check_addresses(host, [str(info[4][0]) for info in infos])


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def literal_refusal(policy: AddressPolicy, url: str) -> str | None:
    """For an IP-literal URL host (never passed to a resolver): why it is refused, or None."""
    host = urlsplit(url).hostname or ""
    if not _is_literal(host) or policy.name_allowed(host):
        return None
    return policy.refusal(host.strip("[]"))
