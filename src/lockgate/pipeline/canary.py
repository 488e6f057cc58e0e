"""Canary deployments with automatic rollback.

A deployment with ``canary:`` (:class:`~lockgate.settings.models.CanarySpec`) takes
its ``weight`` of its model's traffic like any weighted deployment. Every call to a
deployment of that model is observed (:class:`ObservedProvider` wraps the providers:
outcome and latency of each upstream attempt; a stream's latency is its time to the
first chunk; ``bad_request`` failures are the client's and are not counted). Each
gateway adds its counts to the shared window (:mod:`lockgate.governance.canary_stats`:
Redis when ``redis_url`` is set, else this process) every ``check_seconds`` and
evaluates it. When, over the last ``window_seconds`` and with at least
``min_samples`` calls on each side, the canary's error rate exceeds the stable
deployments' by more than ``max_error_rate_margin``, or its p95 latency (successful
calls) exceeds theirs by more than ``max_p95_margin_ms``, the canary is rolled back:

- a rollback mark is stored in the shared state (first writer wins), so every gateway
  takes the canary out of its routing plans (not even as a fallback) within
  ``check_seconds``; shadow traffic pinned to it is not affected;
- the gateway that stored the mark writes one audit row (``source: control``,
  ``kind: canary_rollback``, ``error_class: canary_rollback``, the window's numbers
  in ``response_body``), logs a warning, counts ``lockgate_canary_rollbacks`` and
  runs the ``on_rollback`` hooks (the runtime raises a ``canary`` alert: a signed ``alert.raised``
  webhook to ``jobs.alerts.url`` when one is configured);
- ``GET /admin/controls`` shows each canary, its window and its mark;
  ``POST /admin/controls/canary`` ``{"deployment": id}`` restores it (clears the
  mark and the canary's window, audited as ``canary_restore``).

A rolled-back canary stays out until restored (or the mark is deleted), across
restarts when the state is Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from lockgate.governance.canary_stats import CanaryStats, Tally
from lockgate.metrics import Metrics
from lockgate.pipeline.accounting import RecordSink
from lockgate.pipeline.call import UsageRecord
from lockgate.pipeline.routing import Router, Target
from lockgate.providers.base import Completion, Provider, ProviderError, StreamChunk
from lockgate.settings.models import CanarySpec, ModelDeployment
from lockgate.state.base import StateUnavailable

__all__ = ["CanaryControl", "CanaryGroup", "ObservedProvider", "build_canary", "verdict"]

log = logging.getLogger("lockgate.canary")

BUCKETS_PER_WINDOW = 10
CONTROL_SOURCE = "control"

RollbackHook = Callable[[dict[str, Any]], Awaitable[None]]


def verdict(spec: CanarySpec, canary: Tally, stable: Tally) -> str | None:
    """Why the canary is worse than the stable deployments by the margin, or None."""
    if canary.calls < spec.min_samples or stable.calls < spec.min_samples:
        return None
    diff = canary.error_rate - stable.error_rate
    if diff > spec.max_error_rate_margin + 1e-12:
        return (f"error rate {canary.error_rate:.1%} vs stable {stable.error_rate:.1%} "
                f"(margin {spec.max_error_rate_margin:.1%})")
    margin = spec.max_p95_margin_ms
    if margin is not None and min(canary.latency_samples,
                                  stable.latency_samples) >= spec.min_samples:
        cp, sp = canary.p95_ms(), stable.p95_ms()
        if cp is not None and sp is not None and cp - sp > margin:
            return f"p95 latency {cp:.0f} ms vs stable {sp:.0f} ms (margin {margin:.0f} ms)"
    return None


@dataclass(frozen=True, slots=True)
class CanaryGroup:
    """One public model with canaries: which deployments are canaries, which are stable."""

    model: str
    canaries: dict[str, CanarySpec]
    stable: tuple[str, ...]

    @property
    def bucket_seconds(self) -> float:
        return min(s.window_seconds for s in self.canaries.values()) / BUCKETS_PER_WINDOW

    @property
    def check_seconds(self) -> float:
        return min(s.check_seconds for s in self.canaries.values())


class ObservedProvider:
    """A provider whose every call outcome is reported to the canary control."""

    def __init__(self, inner: Provider, deployment: str, control: CanaryControl) -> None:
        self.inner = inner
        self.deployment = deployment
        self._control = control

    def __getattr__(self, name: str) -> Any:  # warmup, stats, ... of the real provider
        return getattr(self.inner, name)

    async def _observed(self, fn: Callable[[], Awaitable[Completion]]) -> Completion:
        t0 = time.perf_counter()
        try:
            result = await fn()
        except ProviderError as exc:
            if exc.kind != "bad_request":
                self._control.observe(self.deployment, False, time.perf_counter() - t0)
            raise
        except Exception:
            self._control.observe(self.deployment, False, time.perf_counter() - t0)
            raise
        self._control.observe(self.deployment, True, time.perf_counter() - t0)
        return result

    async def chat(self, body: dict[str, Any]) -> Completion:
        return await self._observed(lambda: self.inner.chat(body))

    async def embeddings(self, body: dict[str, Any]) -> Completion:
        return await self._observed(lambda: self.inner.embeddings(body))

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        t0 = time.perf_counter()
        first: float | None = None
        stream = self.inner.chat_stream(body)
        try:
            async for chunk in stream:
                if first is None:
                    first = time.perf_counter() - t0
                yield chunk
        except ProviderError as exc:
            if exc.kind != "bad_request":
                self._control.observe(self.deployment, False, time.perf_counter() - t0)
            raise
        except Exception:
            self._control.observe(self.deployment, False, time.perf_counter() - t0)
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        self._control.observe(self.deployment, True,
                              first if first is not None else time.perf_counter() - t0)

    async def aclose(self) -> None:
        await self.inner.aclose()


class CanaryControl:
    """Observes a model's deployments, shares the window, rolls canaries back."""

    def __init__(
        self,
        groups: Iterable[CanaryGroup],
        stats: CanaryStats,
        router: Router,
        *,
        sink: RecordSink | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.groups = {g.model: g for g in groups}
        self.stats = stats
        self.router = router
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.gateway = f"{socket.gethostname()}:{os.getpid()}"
        self.on_rollback: list[RollbackHook] = []
        """Called with the mark document by the gateway that rolled a canary back."""
        self._bucket_s: dict[str, float] = {}
        self._group_of: dict[str, CanaryGroup] = {}
        for g in self.groups.values():
            for dep in (*g.canaries, *g.stable):
                self._bucket_s[dep] = g.bucket_seconds
                self._group_of[dep] = g
        self._pending: dict[tuple[str, int], Tally] = {}
        self._marks: dict[str, dict[str, Any]] = {}
        self._local_marks: dict[str, dict[str, Any]] = {}
        """Verdicts this gateway reached but could not store (Redis down): applied here."""
        self._windows: dict[str, dict[str, Any]] = {}
        self.checks = 0
        self.state_errors = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._hooks: set[asyncio.Task[None]] = set()

    @property
    def check_seconds(self) -> float:
        return min(g.check_seconds for g in self.groups.values())

    # ------------------------------------------------------------ wiring

    def wrap(self, targets: dict[str, list[Target]]) -> dict[str, list[Target]]:
        """``targets`` with the providers of canary models wrapped in :class:`ObservedProvider`."""
        out: dict[str, list[Target]] = {}
        for model, group in targets.items():
            if model in self.groups:
                out[model] = [Target(t.deployment, ObservedProvider(t.provider, t.id, self))
                              for t in group]
            else:
                out[model] = group
        return out

    # ------------------------------------------------------------ hot path

    def observe(self, deployment: str, ok: bool, latency_s: float) -> None:
        """One upstream attempt's outcome (sync, O(1), no I/O)."""
        width = self._bucket_s.get(deployment)
        if width is None:
            return
        key = (deployment, int(self.clock() // width))
        tally = self._pending.get(key)
        if tally is None:
            tally = self._pending[key] = Tally()
        tally.add_call(ok, latency_s)

    # ------------------------------------------------------------ checks

    def _buckets(self, group: CanaryGroup, spec: CanarySpec, now: float) -> list[int]:
        width = group.bucket_seconds
        current = int(now // width)
        n = max(1, math.ceil(spec.window_seconds / width))
        return list(range(current - n + 1, current + 1))

    async def check(self) -> list[dict[str, Any]]:
        """Share this gateway's counts, read the marks, judge every canary; the rollbacks
        this gateway made (mark documents)."""
        self.checks += 1
        now = self.clock()
        pending, self._pending = self._pending, {}
        ttl = max(g.bucket_seconds * (BUCKETS_PER_WINDOW + 2) for g in self.groups.values())
        try:
            await self.stats.add(pending, ttl)
        except StateUnavailable as exc:
            self.state_errors += 1
            log.warning("canary stats not shared: %s", exc)
            self._keep_recent(pending, now)
            self._apply()
            return []
        try:
            self._marks = await self.stats.marks()
        except StateUnavailable as exc:
            self.state_errors += 1
            log.warning("canary rollback marks not read: %s", exc)
            self._apply()
            return []
        made: list[dict[str, Any]] = []
        for group in self.groups.values():
            for dep, spec in group.canaries.items():
                if dep in self._marks:
                    continue
                try:
                    doc = await self._judge(group, dep, spec, now)
                except StateUnavailable as exc:
                    self.state_errors += 1
                    log.warning("canary window not read: %s", exc)
                    continue
                if doc is not None:
                    made.append(doc)
        self._apply()
        return made

    def _keep_recent(self, pending: dict[tuple[str, int], Tally], now: float) -> None:
        """Put unshared counts back (newest window only, so memory stays bounded)."""
        for (dep, bucket), tally in pending.items():
            width = self._bucket_s[dep]
            if bucket >= int(now // width) - BUCKETS_PER_WINDOW:
                self._pending.setdefault((dep, bucket), Tally()).merge(tally)

    async def _judge(self, group: CanaryGroup, dep: str, spec: CanarySpec,
                     now: float) -> dict[str, Any] | None:
        buckets = self._buckets(group, spec, now)
        tallies = await self.stats.window([dep, *group.stable], buckets)
        canary = tallies[dep]
        stable = Tally()
        for s in group.stable:
            stable.merge(tallies[s])
        self._windows[dep] = {"canary": canary.as_dict(), "stable": stable.as_dict()}
        reason = verdict(spec, canary, stable)
        if reason is None:
            self._local_marks.pop(dep, None)
            return None
        doc = {
            "deployment": dep, "model": group.model, "at": now, "reason": reason,
            "window_seconds": spec.window_seconds, "canary": canary.as_dict(),
            "stable": stable.as_dict(), "stable_deployments": list(group.stable),
            "gateway": self.gateway,
        }
        try:
            first = await self.stats.mark(dep, doc)
        except StateUnavailable:
            self._local_marks[dep] = doc  # route around it here; store it next check
            raise
        if not first:
            return None
        self._marks[dep] = doc
        self._local_marks.pop(dep, None)
        self._rolled_back(doc)
        return doc

    def _apply(self) -> None:
        rolled = set(self._marks) | set(self._local_marks)
        self.router.disable(rolled)
        if self.metrics is not None:
            for g in self.groups.values():
                for dep in g.canaries:
                    self.metrics.canary_state.labels(dep).set(1 if dep in rolled else 0)

    # ------------------------------------------------------------ rollback / restore

    def _audit(self, kind: str, doc: dict[str, Any], request_id: str) -> None:
        if self.sink is None:
            return
        self.sink.submit(UsageRecord(
            request_id=request_id, created_at=time.time(), key_id=None, team_id=None,
            model=str(doc.get("model") or ""), deployment=str(doc.get("deployment") or ""),
            kind=kind, source=CONTROL_SOURCE, status=0, error_class=kind,
            prompt_tokens=0, completion_tokens=0, cost=0.0, latency_ms=0.0, overhead_ms=0.0,
            stream=False, response_body=orjson.dumps(doc).decode(),
        ))

    def _rolled_back(self, doc: dict[str, Any]) -> None:
        dep = doc["deployment"]
        log.warning("canary %s of model %s rolled back: %s", dep, doc["model"], doc["reason"])
        self._audit("canary_rollback", doc, f"canary_rollback:{dep}:{int(doc['at'] * 1000)}")
        if self.metrics is not None:
            self.metrics.canary_rollbacks.labels(dep).inc()
        for hook in self.on_rollback:
            task = asyncio.get_running_loop().create_task(self._run_hook(hook, doc))
            self._hooks.add(task)
            task.add_done_callback(self._hooks.discard)

    @staticmethod
    async def _run_hook(hook: RollbackHook, doc: dict[str, Any]) -> None:
        try:
            await hook(doc)
        except Exception:
            log.exception("canary rollback hook failed for %s", doc.get("deployment"))

    def canaries(self) -> dict[str, CanaryGroup]:
        """Canary deployment id -> its group."""
        return {dep: g for g in self.groups.values() for dep in g.canaries}

    async def restore(self, deployment: str, *, by: str | None = None) -> bool:
        """Put a rolled-back canary back into routing on every gateway (clears its window)."""
        group = self.canaries().get(deployment)
        if group is None:
            return False
        spec = group.canaries[deployment]
        now = self.clock()
        was = await self.stats.clear(deployment, self._buckets(group, spec, now))
        self._marks.pop(deployment, None)
        self._local_marks.pop(deployment, None)
        self._windows.pop(deployment, None)
        for key in [k for k in self._pending if k[0] == deployment]:
            del self._pending[key]
        self._apply()
        doc = {"deployment": deployment, "model": group.model, "at": now, "by": by,
               "was_rolled_back": was, "gateway": self.gateway}
        self._audit("canary_restore", doc, f"canary_restore:{deployment}:{int(now * 1000)}")
        log.warning("canary %s of model %s restored", deployment, group.model)
        return True

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for dep, group in self.canaries().items():
            spec = group.canaries[dep]
            mark = self._marks.get(dep) or self._local_marks.get(dep)
            out[dep] = {
                "model": group.model,
                "stable": list(group.stable),
                "state": "rolled_back" if mark else "serving",
                "rollback": mark,
                "window": self._windows.get(dep),
                "settings": spec.model_dump(),
            }
        return {"store": self.stats.name, "checks": self.checks,
                "state_errors": self.state_errors, "canaries": out}

    # ------------------------------------------------------------ background loop

    async def start(self) -> None:
        """Read the shared marks now, then check every ``check_seconds`` in the background."""
        with contextlib.suppress(StateUnavailable):
            self._marks = await self.stats.marks()
        self._apply()
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lockgate-canary")

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.check_seconds)
            try:
                await self.check()
            except Exception:
                log.exception("canary check failed")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None
        for task in list(self._hooks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)


def canary_groups(models: Iterable[ModelDeployment]) -> list[CanaryGroup]:
    """The models that have canaries, from the ``models:`` config."""
    by_name: dict[str, list[ModelDeployment]] = {}
    for m in models:
        by_name.setdefault(m.name, []).append(m)
    groups = []
    for name, deps in by_name.items():
        canaries = {d.deployment_id: d.canary for d in deps if d.canary is not None}
        if canaries:
            stable = tuple(d.deployment_id for d in deps if d.canary is None)
            groups.append(CanaryGroup(name, canaries, stable))
    return groups


def build_canary(
    models: Iterable[ModelDeployment],
    targets: dict[str, list[Target]],
    stats: CanaryStats,
    router: Router,
    *,
    sink: RecordSink | None = None,
    metrics: Metrics | None = None,
) -> CanaryControl | None:
    """A control for the configured canaries (None when there are none); wraps the
    providers of their models in ``targets`` and installs them in ``router``."""
    groups = canary_groups(models)
    if not groups:
        return None
    control = CanaryControl(groups, stats, router, sink=sink, metrics=metrics)
    router.replace_targets(control.wrap(targets))
    return control
