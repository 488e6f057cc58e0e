"""Authenticator: concurrent cache misses for one key share one store lookup."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from lockgate.errors import Unauthorized, Unavailable
from lockgate.pipeline.auth import Authenticator


@dataclass
class Record:
    id: str = "key_1"
    team_id: str = "team_1"
    team_name: str | None = "t"
    allowed_models: tuple[str, ...] | None = None
    revoked_at: object | None = None


class SlowKeys:
    """A key store whose lookups take ``delay`` seconds and are counted."""

    def __init__(self, result: Any = None, delay: float = 0.05) -> None:
        self.result = result if result is not None else Record()
        self.delay = delay
        self.calls = 0

    async def find_key(self, plaintext: str) -> Any:
        self.calls += 1
        result = self.result  # what the database held when the query ran
        await asyncio.sleep(self.delay)
        if isinstance(result, BaseException):
            raise result
        return None if plaintext == "lg-unknown" else result


async def test_concurrent_misses_share_one_lookup_then_the_cache_answers() -> None:
    keys = SlowKeys()
    auth = Authenticator(keys, master_key_hash=None, cache_ttl=60)
    got = await asyncio.gather(*(auth.authenticate("lg-a") for _ in range(20)))
    assert keys.calls == 1 and {p.key_id for p in got} == {"key_1"}
    await auth.authenticate("lg-a")
    assert keys.calls == 1  # cached
    await asyncio.gather(auth.authenticate("lg-b"), auth.authenticate("lg-b"))
    assert keys.calls == 2  # another key: its own lookup


async def test_errors_reach_every_waiter_and_are_not_cached() -> None:
    keys = SlowKeys()
    auth = Authenticator(keys, master_key_hash=None, cache_ttl=60)
    results = await asyncio.gather(*(auth.authenticate("lg-unknown") for _ in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in results) and keys.calls == 1
    keys.result = OSError("connection refused")
    results = await asyncio.gather(*(auth.authenticate("lg-a") for _ in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results) and keys.calls == 2
    keys.result = Record()
    assert (await auth.authenticate("lg-a")).key_id == "key_1" and keys.calls == 3


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    keys = SlowKeys(delay=0.1)
    auth = Authenticator(keys, master_key_hash=None, cache_ttl=60)
    first = asyncio.ensure_future(auth.authenticate("lg-a"))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(auth.authenticate("lg-a"))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second).key_id == "key_1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert keys.calls == 1


async def test_revocation_during_a_lookup_is_not_undone_by_its_result() -> None:
    keys = SlowKeys(delay=0.1)
    auth = Authenticator(keys, master_key_hash=None, cache_ttl=60)
    pending = asyncio.ensure_future(auth.authenticate("lg-a"))
    await asyncio.sleep(0.02)
    auth.invalidate("key_1")  # the key was revoked while its lookup ran
    keys.result = Record(revoked_at=object())
    assert (await pending).key_id == "key_1"  # answered from the lookup it joined
    with pytest.raises(Unauthorized, match="revoked"):
        await auth.authenticate("lg-a")  # the stale result was not cached
    assert keys.calls == 2


async def test_an_unknown_key_is_remembered_for_the_ttl_then_asked_again() -> None:
    keys = SlowKeys(delay=0.0)
    auth = Authenticator(keys, master_key_hash=None, cache_ttl=0.2)
    for _ in range(5):
        with pytest.raises(Unauthorized, match="Invalid API key"):
            await auth.authenticate("lg-unknown")
    assert keys.calls == 1  # a client stuck on a bad key costs one query per TTL
    await asyncio.sleep(0.25)
    with pytest.raises(Unauthorized):
        await auth.authenticate("lg-unknown")
    assert keys.calls == 2
    auth.drop()  # an invalidation forgets unknown keys too
    with pytest.raises(Unauthorized):
        await auth.authenticate("lg-unknown")
    assert keys.calls == 3


async def test_unknown_keys_are_not_remembered_without_a_cache_or_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lockgate.pipeline import auth as auth_module

    keys = SlowKeys(delay=0.0)
    no_cache = Authenticator(keys, master_key_hash=None, cache_ttl=0)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await no_cache.authenticate("lg-unknown")
    assert keys.calls == 3
    monkeypatch.setattr(auth_module, "UNKNOWN_CACHE_SIZE", 2)
    bounded = Authenticator(NoKeys(), master_key_hash=None, cache_ttl=60)
    for key in ("lg-x1", "lg-x2", "lg-x3"):
        with pytest.raises(Unauthorized):
            await bounded.authenticate(key)
    assert len(bounded._unknown) <= 2


class NoKeys:
    async def find_key(self, plaintext: str) -> None:
        return None


async def test_known_answers_without_a_lookup_only_what_is_cached() -> None:
    from lockgate.pipeline.auth import sha256_hex

    keys = SlowKeys(delay=0)
    auth = Authenticator(keys, master_key_hash=sha256_hex("lg-master"), cache_ttl=0.2)
    assert auth.known(None) is None and auth.known("") is None
    master = auth.known("lg-master")
    assert master is not None and master.is_master
    assert auth.known("lg-a") is None and keys.calls == 0  # never looked up by known()
    principal = await auth.authenticate("lg-a")
    assert auth.known("lg-a") == principal and keys.calls == 1
    with pytest.raises(Unauthorized):
        await auth.authenticate("lg-unknown")
    assert auth.known("lg-unknown") is None  # refusals stay authenticate()'s
    await asyncio.sleep(0.25)
    assert auth.known("lg-a") is None  # expired: look it up again
