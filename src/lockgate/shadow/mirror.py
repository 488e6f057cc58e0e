"""The mirror: a dice roll, a bounded queue, and workers that send samples through the pipeline.

After a successful chat call the pipeline calls
``maybe_mirror(call, facts, body, answer, cost)`` (see
:class:`lockgate.pipeline.mirror.Mirror`): synchronous and O(1), a dice roll
against the model's route, then ``put_nowait`` into a bounded queue. When the
queue is full (candidate slow or down) the sample is dropped and counted; the
client never waits for its shadow. Streams are mirrored too: after the stream
ended, with the answer the pipeline assembled from its chunks, and only for models
where :meth:`ShadowMirror.mirrors` is True (so other streams are not assembled). The
candidate is always called without streaming (``stream``/``stream_options`` removed),
so its answer compares like for like.

Each of ``concurrency`` workers takes a sample and sends it to the candidate
*through the pipeline*, as one more :class:`~lockgate.pipeline.Call`:

- ``source="shadow"``, the original caller's principal (no key lookup), its own
  request id (``<primary id>:shadow:<candidate>``), the body the primary sent
  upstream (``stream`` removed);
- ``deployment_pin=<candidate>``: only that deployment, no fallback; its retries,
  timeouts and circuit breaker apply; no task routing or kill switch, and a
  pinned call is never mirrored again;
- ``governed=False``: no rate limits, no budget reservation or charge;
- ``no_cache=True``: the response cache is neither read nor filled;
- guards, metrics and the audit row apply like for any call (the audit row has
  source ``shadow``, the caller's key/team and the candidate's deployment;
  usage summaries count such rows apart and never bill them).

The whole candidate call is bounded by the route's ``timeout``. Its answer is
compared with the primary's (:mod:`lockgate.shadow.compare`) and the row
(:mod:`lockgate.shadow.rows`) is handed to the shared batched writer
(``AuditWriter.submit_shadow``), which writes it with the next audit batch.
A failed candidate call is a result too (``candidate_error``); nothing here can
change the primary answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lockgate.errors import GatewayError
from lockgate.observability.tracing import STAGE, span
from lockgate.pipeline import Call, CallFacts, Principal
from lockgate.settings import ModelDeployment, ShadowSettings
from lockgate.shadow.compare import completion_text
from lockgate.shadow.routes import ShadowRoute, resolve_routes, settings_of
from lockgate.shadow.rows import Outcome, Sample, result_row
from lockgate.store.records import SHADOW_SOURCE

__all__ = [
    "Answer",
    "CallRunner",
    "ResultSink",
    "ShadowMirror",
    "build_mirror",
    "shadow_request_id",
]

log = logging.getLogger(__name__)


class TokenCounts(Protocol):
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...


class Answer(Protocol):
    """What the mirror reads from a finished chat call (OpenAI JSON and its usage)."""

    @property
    def body(self) -> Mapping[str, Any]: ...
    @property
    def usage(self) -> TokenCounts: ...


class CallRunner(Protocol):
    """What the mirror needs from the pipeline: run one non-stream chat call."""

    def chat(self, call: Call) -> Awaitable[Answer]: ...


class ResultSink(Protocol):
    """Where result rows go: the shared batched writer (``AuditWriter``)."""

    def submit_shadow(self, row: Mapping[str, Any]) -> None: ...


def shadow_request_id(request_id: str, candidate: str) -> str:
    """The shadow call's own request id (audit rows need unique ids), tied to the primary's."""
    return f"{request_id}:shadow:{candidate}"


@dataclass(frozen=True, slots=True)
class _Job:
    sample: Sample
    route: ShadowRoute
    principal: Principal | None
    body: dict[str, Any]


class ShadowMirror:
    """Mirrors sampled calls to candidate deployments from background tasks (module doc)."""

    def __init__(
        self,
        pipeline: CallRunner,
        routes: Mapping[str, ShadowRoute] | Sequence[ShadowRoute],
        sink: ResultSink | None = None,
        *,
        concurrency: int = 4,
        max_pending: int = 1000,
        drain_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(routes, Mapping):
            self._routes = dict(routes)
        else:
            self._routes = {r.model: r for r in routes}
        self._pipeline = pipeline
        self._sink = sink
        self._concurrency = concurrency
        self._max_pending = max_pending
        self._drain_timeout = drain_timeout
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False
        self._busy = 0
        self.mirrored = 0
        """Samples accepted into the queue."""
        self.dropped = 0
        """Samples not mirrored because the queue was full (or the mirror closing)."""
        self.completed = 0
        self.failed = 0
        """Candidate calls that failed (stored with candidate_error)."""
        self.submitted = 0
        """Rows handed to the writer."""
        self.write_errors = 0
        """Rows the writer refused (its queue full without a spill dir)."""
        self.abandoned = 0
        """Queued samples still pending when ``aclose`` gave up."""
        self.results: deque[dict[str, Any]] = deque(maxlen=100)
        """The last rows produced (also without a sink): for tests and debugging."""

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
            "submitted": self.submitted,
            "write_errors": self.write_errors,
            "abandoned": self.abandoned,
            "pending": self.pending,
        }

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the workers (needs a running loop). Idempotent."""
        if self._queue is not None:
            return
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self._max_pending)
        self._workers = [
            loop.create_task(self._work(), name=f"lockgate-shadow-{i}")
            for i in range(self._concurrency)
        ]

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop accepting, wait up to ``timeout`` for queued samples, then stop the workers.

        Rows already produced are with the writer; whoever owns it drains it.
        """
        if self._closing:
            return
        self._closing = True
        queue = self._queue
        if queue is None:
            return
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
        if self.abandoned:
            log.warning("shadow: %d queued samples abandoned at shutdown", self.abandoned)

    async def flush(self) -> None:
        """Wait until every queued sample has produced its row (tests, admin)."""
        if self._queue is not None:
            await self._queue.join()

    # -------------------------------------------------------------- hot path

    def mirrors(self, model: str) -> bool:
        """True when calls of ``model`` may be sampled (O(1); False once closing)."""
        route = self._routes.get(model)
        return route is not None and route.percent > 0 and not self._closing

    def maybe_mirror(
        self, call: Call, facts: CallFacts, body: dict[str, Any], answer: Answer,
        cost: float,
    ) -> None:
        """Maybe queue a shadow sample of this call. Synchronous, O(1), never blocks."""
        route = self._routes.get(call.model)
        if route is None or route.percent <= 0 or call.source == SHADOW_SOURCE:
            return
        if route.percent < 100 and self._rng.random() * 100.0 >= route.percent:
            return
        queue = self._queue
        if queue is None or self._closing or queue.full():
            self.dropped += 1
            return
        sample = Sample(
            request_id=call.request_id,
            model=call.model,
            primary_deployment=facts.deployment,
            primary_text=completion_text(answer.body),
            primary_latency_ms=facts.upstream_seconds * 1000.0,
            primary_cost=cost,
        )
        queue.put_nowait(_Job(sample, route, call.principal, body))
        self.mirrored += 1

    # --------------------------------------------------------------- workers

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            job = await queue.get()
            self._busy += 1
            try:
                row = result_row(job.sample, await self._run(job))
                self._emit(row)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not kill the worker
                log.exception("shadow: sample of %s failed unexpectedly",
                              job.sample.request_id)
            finally:
                self._busy -= 1
                queue.task_done()

    def _shadow_call(self, job: _Job) -> Call:
        body = {k: v for k, v in job.body.items() if k not in ("stream", "stream_options")}
        route = job.route
        return Call(
            kind="chat",
            model=job.sample.model,
            body=body,
            principal=job.principal,
            request_id=shadow_request_id(job.sample.request_id, route.candidate_id),
            source=SHADOW_SOURCE,
            no_cache=True,
            deployment_pin=route.candidate_id,
            governed=False,
        )

    async def _run(self, job: _Job) -> Outcome:
        """One candidate call through the pipeline, bounded by the route's timeout."""
        route = job.route
        call = self._shadow_call(job)
        error: str | None = None
        text: str | None = None
        prompt = completion = 0
        started = time.perf_counter()
        try:
            async with asyncio.timeout(route.timeout):
                with span(STAGE.SHADOW, request_id=job.sample.request_id,
                          model=job.sample.model, candidate=route.candidate_id):
                    answer = await self._pipeline.chat(call)
            prompt, completion = answer.usage.prompt_tokens, answer.usage.completion_tokens
            text = completion_text(answer.body)
            if text is None:
                error = "no_text"
        except GatewayError as exc:  # the upstream's failure kind when there was one
            error = exc.upstream_kind or exc.error_class
        except TimeoutError:
            error = "timeout_total"
        except Exception as exc:  # any other failure of the candidate is a result too
            error = type(exc).__name__
        latency_ms = (time.perf_counter() - started) * 1000.0
        cost = 0.0
        if error is None or prompt or completion:
            try:
                cost = float(route.price(prompt, completion))
            except Exception:
                cost = 0.0
        if error is None:
            self.completed += 1
        else:
            self.failed += 1
        return Outcome(candidate=route.candidate_id, text=text, error=error,
                       latency_ms=latency_ms, prompt_tokens=prompt,
                       completion_tokens=completion, cost=cost)

    def _emit(self, row: dict[str, Any]) -> None:
        self.results.append(row)
        if self._sink is None:
            return
        try:
            self._sink.submit_shadow(row)
        except Exception as exc:
            self.write_errors += 1
            log.warning("shadow: result row for %s not accepted (%s)", row["request_id"], exc)
            return
        self.submitted += 1


# ------------------------------------------------------------- runtime glue


class _Config(Protocol):
    @property
    def models(self) -> Sequence[ModelDeployment]: ...
    @property
    def shadow(self) -> ShadowSettings | None: ...


class _Runtime(Protocol):
    @property
    def config(self) -> _Config: ...
    @property
    def pipeline(self) -> CallRunner: ...
    @property
    def audit(self) -> ResultSink | None: ...


def build_mirror(runtime: _Runtime) -> ShadowMirror | None:
    """The started mirror for ``runtime.config.shadow`` (None when nothing is configured).

    Candidates are resolved against ``runtime.config.models`` (ValueError for an
    unknown model or candidate); samples go through ``runtime.pipeline`` and rows
    to ``runtime.audit`` (the shared batched writer).
    """
    settings = settings_of(getattr(runtime.config, "shadow", None))
    if settings is None or not settings.routes:
        return None
    routes = resolve_routes(list(runtime.config.models), settings)
    mirror = ShadowMirror(
        runtime.pipeline,
        routes,
        runtime.audit,
        concurrency=settings.concurrency,
        max_pending=settings.max_pending,
        drain_timeout=settings.drain_timeout,
    )
    mirror.start()
    return mirror
