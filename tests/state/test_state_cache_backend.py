"""``cache.backend: redis`` means Redis or nothing: a start without it fails with one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lockgate.errors import ConfigError
from lockgate.runtime import Runtime
from lockgate.settings import CacheSettings, Config


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, redis_url: str, backend: str = "redis") -> Config:
    return Config(
        home=str(tmp_path / "home"),
        redis_url=redis_url,
        cache=CacheSettings(enabled=True, backend=backend),  # type: ignore[arg-type]
    )


async def test_redis_cache_without_redis_fails_at_start_in_one_line(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f"redis://127.0.0.1:{_closed_port()}/0")
    with pytest.raises(ConfigError) as err:
        await Runtime.start(cfg, jobs=False, warm_up=False)
    text = str(err.value)
    assert "\n" not in text and "cache.backend is 'redis'" in text and "unavailable" in text


async def test_auto_cache_without_redis_still_starts(tmp_path: Path) -> None:
    rt = await Runtime.start(
        _config(tmp_path, f"redis://127.0.0.1:{_closed_port()}/0", backend="auto"),
        jobs=False, warm_up=False,
    )
    await rt.aclose()


async def test_redis_cache_with_redis_starts(tmp_path: Path) -> None:
    rt = await Runtime.start(_config(tmp_path, "redis://127.0.0.1:6379/0"), jobs=False,
                             warm_up=False)
    try:
        assert rt.pipeline.controls.cache is not None
    finally:
        await rt.aclose()
