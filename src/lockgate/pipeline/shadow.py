"""Shadow traffic: mirror a share of a model's calls to a candidate deployment, off the hot path.

A :class:`ShadowMirror` holds one route per public model (:class:`ShadowConfig`:
model, candidate deployment id or model name, percent). After a successful
non-stream chat call the pipeline hands it the call, the body sent upstream,
the primary answer, its upstream latency and cost::

    mirror.maybe_mirror(call, body, primary, primary_latency_s, primary_cost)

which is synchronous and O(1): a dice roll, then ``put_nowait`` into a bounded
queue. When the queue is full (candidate slow or down) the sample is *dropped*
and counted (``dropped``); the client never waits for the candidate. Worker
tasks (``concurrency`` of them) call the candidate provider (``chat`` with the
same body, ``stream`` off, one ``timeout``), measure its latency, price its
usage, compare the answers and buffer a row; rows are written to the
``shadow_results`` table in batches (one transaction each), so neither side
touches the database per request. Candidate calls bypass budgets and rate
limits (they are the operator's experiment) and are not audited as usage:
their cost is in ``shadow_results``.

Comparison: ``text_match`` is equality of the normalised texts (whitespace
collapsed, case folded); ``json_match`` is equality of the parsed JSON when
both texts parse as JSON (``````json`` fences allowed), else NULL. A failed
candidate call stores ``candidate_error`` (the ProviderError kind, or the
exception class) and NULL matches.

:func:`shadow_report` aggregates the table per (model, candidate): count,
mean/p50/p95 latency and total cost of primary and candidate, agreement
rates and error rates (``lockgate shadow report [--model M]``).

Wiring (pipeline/runtime/config owner)
--------------------------------------
* config.py: ``from lockgate.observability.settings import ShadowSettings``
  (re-exported here; defined there because ``lockgate.pipeline`` imports
  ``lockgate.config``) and add ``shadow: ShadowSettings | None = None`` to
  ``Config``. YAML::

      shadow:
        concurrency: 4          # candidate calls in flight
        max_pending: 1000       # queued samples; beyond: dropped
        routes:
          - {model: support, candidate: support-next, percent: 10}

  ``candidate`` is a deployment id (``x-lockgate-deployment``) or a public
  model name (its first deployment).
* runtime.py: ``_attach_mirror`` already calls :func:`build_mirror` with the
  runtime (it returns None when nothing is configured and starts the mirror's
  tasks). In ``Runtime.aclose`` add, *before* the providers are closed::

      mirror = self.pipeline.controls.mirror
      if mirror is not None:
          await mirror.aclose()          # drains up to drain_timeout, writes rows

* pipeline.py: already calls ``maybe_mirror`` after a successful non-stream
  chat (cache hits are not mirrored). Streams are not mirrored (no assembled
  primary text).
* metrics.py (optional): export ``mirror.stats()`` (mirrored, dropped,
  failed, written, pending, write_errors) as gauges/counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import orjson
import sqlalchemy as sa

from lockgate.observability.tracing import STAGE, span
from lockgate.providers.base import Completion, Provider, ProviderError, Usage
from lockgate.settings import ShadowConfig, ShadowSettings
from lockgate.store.engine import writer_engine
from lockgate.store.tables import shadow_results

if TYPE_CHECKING:
    from lockgate.pipeline.call import Call
    from lockgate.store import Store

__all__ = [
    "ShadowConfig",
    "ShadowMirror",
    "ShadowRoute",
    "ShadowSettings",
    "ShadowStats",
    "build_mirror",
    "compare",
    "completion_text",
    "shadow_report",
]

log = logging.getLogger(__name__)

_MAX_TEXT: Final = 65_536
_WS = re.compile(r"\s+")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ShadowRoute:
    """A resolved route: the candidate's provider object and how to price its usage."""

    model: str
    candidate_id: str
    provider: Provider
    price: Callable[[int, int], float]
    percent: float
    timeout: float = 60.0


@dataclass(slots=True)
class _Job:
    request_id: str
    model: str
    primary_deployment: str | None
    body: dict[str, Any]
    primary_text: str | None
    primary_latency_ms: float
    primary_cost: float
    route: ShadowRoute


# ------------------------------------------------------------------ comparison


def completion_text(doc: Mapping[str, Any]) -> str | None:
    """The first choice's text (tool calls as JSON) of an OpenAI chat completion."""
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if message.get("tool_calls"):
        return orjson.dumps(message["tool_calls"]).decode()
    return None


def _normalise(text: str) -> str:
    return _WS.sub(" ", text).strip().casefold()


def _json_of(text: str) -> tuple[bool, Any]:
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    if not stripped or stripped[0] not in "{[":
        return False, None
    try:
        return True, orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return False, None


def compare(primary: str | None, candidate: str | None) -> tuple[bool | None, bool | None]:
    """``(text_match, json_match)``; None where not comparable (missing text / not JSON)."""
    if primary is None or candidate is None:
        return None, None
    text_match = _normalise(primary) == _normalise(candidate)
    ok_a, doc_a = _json_of(primary)
    ok_b, doc_b = _json_of(candidate)
    return text_match, (doc_a == doc_b) if ok_a and ok_b else None


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT]


# ---------------------------------------------------------------------- mirror


class ShadowMirror:
    """Mirrors sampled calls to candidate deployments from background tasks (see module doc)."""

    def __init__(
        self,
        store: Store | None,
        routes: Mapping[str, ShadowRoute] | Sequence[ShadowRoute],
        *,
        concurrency: int = 4,
        max_pending: int = 1000,
        drain_timeout: float = 10.0,
        batch_size: int = 50,
        flush_interval: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(routes, Mapping):
            self._routes = dict(routes)
        else:
            self._routes = {r.model: r for r in routes}
        self._store = store
        self._engine = writer_engine(store.engine) if store is not None else None
        self._concurrency = concurrency
        self._max_pending = max_pending
        self._drain_timeout = drain_timeout
        self._batch_size = batch_size
        self._interval = flush_interval
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._rows: deque[dict[str, Any]] = deque()
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._stopping = False
        self._write_lock = asyncio.Lock()
        self._busy = 0
        self.mirrored = 0
        """Samples accepted into the queue."""
        self.dropped = 0
        """Samples not mirrored because the queue was full (or the mirror closing)."""
        self.completed = 0
        self.failed = 0
        """Candidate calls that raised (stored with candidate_error)."""
        self.written = 0
        self.write_errors = 0
        self.abandoned = 0
        """Queued samples still pending when ``aclose`` gave up."""
        self.results: deque[dict[str, Any]] = deque(maxlen=100)
        """The last rows produced (also without a store): for tests and debugging."""

    @property
    def routes(self) -> dict[str, ShadowRoute]:
        return dict(self._routes)

    @property
    def pending(self) -> int:
        return (self._queue.qsize() if self._queue is not None else 0) + self._busy

    def stats(self) -> dict[str, int]:
        return {
            "mirrored": self.mirrored,
            "dropped": self.dropped,
            "completed": self.completed,
            "failed": self.failed,
            "written": self.written,
            "write_errors": self.write_errors,
            "abandoned": self.abandoned,
            "pending": self.pending,
        }

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the workers and the writer (needs a running loop). Idempotent."""
        if self._queue is not None:
            return
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self._max_pending)
        self._wake = asyncio.Event()
        self._workers = [
            loop.create_task(self._work(), name=f"lockgate-shadow-{i}")
            for i in range(self._concurrency)
        ]
        self._flusher = loop.create_task(self._flush_loop(), name="lockgate-shadow-writer")

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop accepting, wait up to ``timeout`` for queued samples, write all rows."""
        if self._closing:
            return
        self._closing = True
        queue = self._queue
        if queue is not None:
            limit = self._drain_timeout if timeout is None else timeout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.join(), limit)
            self.abandoned += queue.qsize() + self._busy  # queued + calls cut short
            for task in self._workers:
                task.cancel()
            for task in self._workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            while not queue.empty():
                queue.get_nowait()
                queue.task_done()
        if self._flusher is not None:
            self._stopping = True  # let the writer finish its current batch, then exit
            if self._wake is not None:
                self._wake.set()
            await self._flusher
        await self._write_pending()
        if self.abandoned:
            log.warning("shadow: %d queued samples abandoned at shutdown", self.abandoned)

    # -------------------------------------------------------------- hot path

    def maybe_mirror(
        self,
        call: Call,
        body: dict[str, Any],
        primary: Completion,
        primary_latency_s: float,
        primary_cost: float,
    ) -> None:
        """Maybe queue a shadow sample of this call. Synchronous, O(1), never blocks."""
        route = self._routes.get(call.model)
        if route is None or route.percent <= 0:
            return
        if route.percent < 100 and self._rng.random() * 100.0 >= route.percent:
            return
        queue = self._queue
        if queue is None or self._closing or queue.full():
            self.dropped += 1
            return
        queue.put_nowait(
            _Job(
                request_id=call.request_id,
                model=call.model,
                primary_deployment=call.deployment,
                body=body,
                primary_text=completion_text(primary.body),
                primary_latency_ms=primary_latency_s * 1000.0,
                primary_cost=primary_cost,
                route=route,
            )
        )
        self.mirrored += 1

    # --------------------------------------------------------------- workers

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            job = await queue.get()
            self._busy += 1
            try:
                self._add_row(await self._run(job))
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not kill the worker
                log.exception("shadow: sample for %s failed unexpectedly", job.request_id)
            finally:
                self._busy -= 1
                queue.task_done()

    async def _run(self, job: _Job) -> dict[str, Any]:
        route = job.route
        body = {k: v for k, v in job.body.items() if k not in ("stream", "stream_options")}
        error: str | None = None
        text: str | None = None
        usage = Usage()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(route.timeout):
                with span(STAGE.SHADOW, request_id=job.request_id, model=job.model,
                          candidate=route.candidate_id):
                    answer = await route.provider.chat(body)
            usage = answer.usage
            text = completion_text(answer.body)
            if text is None:
                error = "no_text"
        except ProviderError as exc:
            error = exc.kind
        except TimeoutError:
            error = "timeout_total"
        except Exception as exc:  # any other failure of the candidate is a result too
            error = type(exc).__name__
        latency_ms = (time.perf_counter() - started) * 1000.0
        cost = 0.0
        if error is None or usage.total_tokens:
            try:
                cost = float(route.price(usage.prompt_tokens, usage.completion_tokens))
            except Exception:
                cost = 0.0
        if error is None:
            self.completed += 1
        else:
            self.failed += 1
        text_match, json_match = compare(job.primary_text, text) if error is None else (None, None)
        return {
            "created_at": datetime.now(UTC),
            "request_id": job.request_id,
            "model": job.model,
            "primary_deployment": job.primary_deployment,
            "candidate_deployment": route.candidate_id,
            "primary_text": _clip(job.primary_text),
            "candidate_text": _clip(text),
            "primary_latency_ms": float(job.primary_latency_ms),
            "candidate_latency_ms": latency_ms,
            "primary_cost": float(job.primary_cost),
            "candidate_cost": cost,
            "candidate_prompt_tokens": usage.prompt_tokens,
            "candidate_completion_tokens": usage.completion_tokens,
            "candidate_error": error,
            "text_match": text_match,
            "json_match": json_match,
        }

    # ---------------------------------------------------------------- writer

    def _add_row(self, row: dict[str, Any]) -> None:
        self.results.append(row)
        if self._engine is None:
            return
        self._rows.append(row)
        limit = self._batch_size * 20
        while len(self._rows) > limit:  # database down for long: keep memory bounded
            self._rows.popleft()
            self.write_errors += 1
        if len(self._rows) >= self._batch_size and self._wake is not None:
            self._wake.set()

    async def _flush_loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self._write_pending()

    async def _write_pending(self) -> None:
        """Write buffered rows in batches; one writer at a time, a failed batch is kept."""
        if self._engine is None:
            return
        async with self._write_lock:
            while self._rows:
                count = min(self._batch_size, len(self._rows))
                batch = [self._rows.popleft() for _ in range(count)]
                try:
                    async with self._engine.begin() as conn:
                        await conn.execute(shadow_results.insert(), batch)
                except BaseException as exc:
                    self._rows.extendleft(reversed(batch))
                    if not isinstance(exc, Exception):
                        raise  # cancelled: the rows stay buffered
                    self.write_errors += 1
                    log.warning("shadow: writing %d rows failed (%s); will retry", count, exc)
                    return
                self.written += len(batch)

    async def flush(self) -> None:
        """Wait for queued samples and write every produced row (tests, admin)."""
        if self._queue is not None:
            await self._queue.join()
        await self._write_pending()


# ------------------------------------------------------------- runtime glue


def build_mirror(runtime: Any) -> ShadowMirror | None:
    """The started mirror for ``runtime.config.shadow`` (None when nothing is configured).

    Resolves each route's candidate against ``runtime.config.models`` and the
    provider objects the runtime built for them (``runtime.providers``, same
    order). Raises ValueError for an unknown model or candidate.
    """
    settings = getattr(runtime.config, "shadow", None)
    if settings is None:
        return None
    if isinstance(settings, Mapping):
        settings = ShadowSettings.model_validate(settings)
    if isinstance(settings, list):
        settings = ShadowSettings(routes=settings)
    if not settings.routes:
        return None
    deployments = list(runtime.config.models)
    providers = list(runtime.providers)
    routes: list[ShadowRoute] = []
    names = {d.name for d in deployments}
    for cfg in settings.routes:
        if cfg.model not in names:
            raise ValueError(f"shadow: unknown model '{cfg.model}'")
        index = next(
            (i for i, d in enumerate(deployments) if d.deployment_id == cfg.candidate),
            None,
        )
        if index is None:
            index = next((i for i, d in enumerate(deployments) if d.name == cfg.candidate), None)
        if index is None:
            raise ValueError(
                f"shadow: candidate '{cfg.candidate}' is neither a deployment id nor a model"
            )
        dep = deployments[index]
        routes.append(
            ShadowRoute(
                model=cfg.model,
                candidate_id=dep.deployment_id,
                provider=providers[index],
                price=dep.pricing.cost,
                percent=cfg.percent,
                timeout=cfg.timeout,
            )
        )
    mirror = ShadowMirror(
        runtime.store,
        routes,
        concurrency=settings.concurrency,
        max_pending=settings.max_pending,
        drain_timeout=settings.drain_timeout,
    )
    mirror.start()
    return mirror


# ------------------------------------------------------------------ report


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """One (model, candidate) line of ``lockgate shadow report``."""

    model: str
    candidate: str
    count: int
    primary_latency_mean_ms: float
    primary_latency_p50_ms: float
    primary_latency_p95_ms: float
    candidate_latency_mean_ms: float
    candidate_latency_p50_ms: float
    candidate_latency_p95_ms: float
    primary_cost: float
    candidate_cost: float
    text_agreement: float | None
    """Share of successful pairs whose normalised texts are equal (None: no pairs)."""
    json_agreement: float | None
    """Share of pairs where both answers were JSON whose documents are equal."""
    json_pairs: int
    primary_error_rate: float
    candidate_error_rate: float

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


async def shadow_report(
    store: Store, model: str | None = None, *, since: datetime | None = None
) -> list[ShadowStats]:
    """Aggregate ``shadow_results`` per (model, candidate deployment), sorted by model."""
    t = shadow_results
    stmt = sa.select(
        t.c.model,
        t.c.candidate_deployment,
        t.c.primary_latency_ms,
        t.c.candidate_latency_ms,
        t.c.primary_cost,
        t.c.candidate_cost,
        t.c.candidate_error,
        t.c.text_match,
        t.c.json_match,
    )
    if model is not None:
        stmt = stmt.where(t.c.model == model)
    if since is not None:
        stmt = stmt.where(t.c.created_at >= since)
    groups: dict[tuple[str, str], list[Any]] = {}
    async with store.engine.connect() as conn:
        for row in await conn.execute(stmt):
            groups.setdefault((row[0], row[1]), []).append(row)
    out: list[ShadowStats] = []
    for (name, candidate), rows in sorted(groups.items()):
        p_lat = sorted(float(r[2]) for r in rows)
        c_lat = sorted(float(r[3]) for r in rows)
        ok = [r for r in rows if r[6] is None]
        json_pairs = [r for r in ok if r[8] is not None]
        out.append(
            ShadowStats(
                model=name,
                candidate=candidate,
                count=len(rows),
                primary_latency_mean_ms=sum(p_lat) / len(p_lat),
                primary_latency_p50_ms=_percentile(p_lat, 50),
                primary_latency_p95_ms=_percentile(p_lat, 95),
                candidate_latency_mean_ms=sum(c_lat) / len(c_lat),
                candidate_latency_p50_ms=_percentile(c_lat, 50),
                candidate_latency_p95_ms=_percentile(c_lat, 95),
                primary_cost=sum(float(r[4]) for r in rows),
                candidate_cost=sum(float(r[5]) for r in rows),
                text_agreement=_rate(sum(1 for r in ok if r[7]), len(ok)),
                json_agreement=_rate(sum(1 for r in json_pairs if r[8]), len(json_pairs)),
                json_pairs=len(json_pairs),
                primary_error_rate=0.0,  # only successful primary calls are mirrored
                candidate_error_rate=(len(rows) - len(ok)) / len(rows),
            )
        )
    return out
