"""Runtime: everything one lockgate process holds, built from a Config.

``await Runtime.start(config)`` opens the store (running migrations once, under
a lock), starts the batched audit writer, builds one provider per deployment
and the pipeline. ``await runtime.aclose()`` drains the audit writer and closes
connections. The HTTP server, workers and CLI commands all use this.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from lockgate.config import Config
from lockgate.metrics import Metrics
from lockgate.pipeline import Pipeline
from lockgate.pipeline.auth import Authenticator, sha256_hex
from lockgate.pipeline.routing import Router, Target
from lockgate.providers import Provider, build_provider
from lockgate.store import AuditWriter, Store

MASTER_HASH_FILE = "master_key.sha256"

log = structlog.get_logger("lockgate.runtime")


def _log_warmup_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("lockgate.warmup_failed", error=str(task.exception()))


def master_key_hash(config: Config) -> str | None:
    """The master key's hash: from config/env, else the one ``lockgate up`` generated."""
    key = config.resolved_master_key()
    if key:
        return sha256_hex(key)
    stored = config.home_path / MASTER_HASH_FILE
    if stored.exists():
        return stored.read_text().strip() or None
    return None


def save_master_key_hash(home: Path, key: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    path = home / MASTER_HASH_FILE
    path.write_text(sha256_hex(key) + "\n")
    path.chmod(0o600)


@dataclass
class Runtime:
    config: Config
    store: Store
    audit: AuditWriter
    pipeline: Pipeline
    metrics: Metrics
    providers: list[Provider] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, config: Config, *, metrics: Metrics | None = None) -> Runtime:
        config.home_path.mkdir(parents=True, exist_ok=True)
        metrics = metrics or Metrics()
        store = await Store.open(config.effective_database_url)
        audit = AuditWriter(
            store,
            flush_interval_ms=config.audit.flush_interval_ms,
            batch_size=config.audit.batch_size,
            max_queue=config.audit.max_queue,
            spill_dir=config.home_path / "audit-spill",
        )
        audit.start()
        targets: dict[str, list[Target]] = {}
        providers: list[Provider] = []
        for deployment in config.models:
            provider = build_provider(deployment, home=config.home_path)
            providers.append(provider)
            targets.setdefault(deployment.name, []).append(Target(deployment, provider))
        auth = Authenticator(
            store, master_key_hash=master_key_hash(config), cache_ttl=config.key_cache_ttl
        )
        pipeline = Pipeline(
            auth=auth,
            router=Router(targets),
            sink=audit,
            metrics=metrics,
            log_bodies=config.log_bodies,
        )
        runtime = cls(config, store, audit, pipeline, metrics, providers)
        runtime._warm_up()
        return runtime

    def _warm_up(self) -> None:
        """Load local models in the background so the first request does not pay for it."""
        for provider in self.providers:
            warmup = getattr(provider, "warmup", None)
            if warmup is not None:
                task = asyncio.get_running_loop().create_task(warmup())
                task.add_done_callback(_log_warmup_failure)
                self._tasks.append(task)

    async def aclose(self) -> None:
        for task in self._tasks:
            if not task.done():
                task.cancel()
        for provider in self.providers:
            await provider.aclose()
        await self.audit.close()
        await self.store.close()
