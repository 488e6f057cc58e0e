"""Runtime: the one composition root. Everything a lockgate process holds, built once.

``await Runtime.start(config)`` opens the store (running migrations once, under
a lock), starts the batched audit writer, builds one provider per deployment,
the pipeline with its controls, the shadow mirror, the RAG service (registered
with the router as the virtual deployment ``rag/<collection>``), the alert center
(``Runtime.alerts``), the feedback service (``Runtime.feedback``) and — unless
``jobs=False`` — the job queue with the job and batch services (and, with
``monitor=True``, the queue monitor: gauges, alerts, result expiry, and the drift
monitor of lockgate.feedback).
``await runtime.aclose()`` stops them in reverse order: it drains the audit
writer and closes connections.

The HTTP server, the worker, the event consumer and every CLI command take what
they need from a Runtime; none of them wires objects itself, so the same config
gives the same behaviour on every path (e.g. RAG refusal thresholds, mode and k).

Governance: the shared state (``open_state(redis_url)``, process memory when
unset) backs the :class:`~lockgate.governance.Governor` (limits, budgets), the
:class:`~lockgate.governance.CircuitBreaker`, the response cache and the kill
switch. With Redis, key revocations are announced to every gateway
(:class:`~lockgate.state.Invalidations` on channel ``keys``): a local
``auth.invalidate(key_id)`` (admin API revoke, ``/admin/cache/invalidate``)
publishes it, and every gateway's listener drops the key from its cache.
Nothing here connects at start-up except the Redis subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from lockgate.admin import AdminService, UsageNow
from lockgate.agents import AgentDeployment, AgentService, build_agent_service
from lockgate.alerts import AlertCenter, AlertCounter
from lockgate.alerts.webhooks import WebhookSender as OperatorSender
from lockgate.errors import ConfigError
from lockgate.feedback import DriftMonitor, FeedbackService
from lockgate.governance import STATE_CODES, CircuitBreaker, Governor
from lockgate.governance.canary_stats import open_canary_stats
from lockgate.guards import Guards
from lockgate.jobs.backends import open_queue
from lockgate.jobs.monitor import JobsGauges, QueueMonitor
from lockgate.jobs.openai_batch import REVIEW_SOURCE, OpenAIBatchService, batch_aware_handler
from lockgate.jobs.outbox import OutboxDeliverer
from lockgate.jobs.queue import JobQueue, queue_options
from lockgate.jobs.review_gate import job_resumer, reviewed_handler
from lockgate.jobs.submission import JobService, job_service
from lockgate.jobs.tasks import TaskRunner
from lockgate.jobs.taskspec import task_specs
from lockgate.jobs.webhooks import WebhookSender
from lockgate.jobs.worker import Handler, Worker, task_handler
from lockgate.metrics import Metrics
from lockgate.mining import MiningService
from lockgate.observability.tracing import configure_tracing, shutdown_tracing
from lockgate.pipeline import Pipeline
from lockgate.pipeline.auth import Authenticator, sha256_hex
from lockgate.pipeline.cache import ResponseCache
from lockgate.pipeline.canary import CanaryControl, build_canary
from lockgate.pipeline.kill_switch import KillSwitch
from lockgate.pipeline.pipeline import Controls
from lockgate.pipeline.quotas import Limits
from lockgate.pipeline.resilience import in_background
from lockgate.pipeline.routing import Router, Target
from lockgate.providers import Provider, build_provider
from lockgate.rag import RagService, RagSettings, RagStore
from lockgate.rag.dense import DenseOptions
from lockgate.rag.deployment import RagDeployment
from lockgate.rag.graph import GraphOptions
from lockgate.review import ReviewItem, ReviewRepository, ReviewService
from lockgate.review.feedback_link import decision_recorder, review_subject
from lockgate.review.webhook_outbox import ReviewWebhookOutbox
from lockgate.settings import Config, resolve_secret
from lockgate.state import Invalidations, MemoryState, StateBackend, open_state
from lockgate.state.base import StateUnavailable
from lockgate.store import AuditWriter, Store
from lockgate.store.console import ConsoleData
from lockgate.store.retention import AuditRetainer

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


def review_webhooks(config: Config, store: Store, sender: WebhookSender | None
                    ) -> ReviewWebhookOutbox | None:
    """Signed ``review.*`` webhooks to ``review.webhook_url`` through the outbox (None when
    not configured)."""
    url = config.review.webhook_url
    if not url or sender is None:
        return None
    return ReviewWebhookOutbox(store, sender, url)


def rag_settings(config: Config) -> RagSettings:
    """``rag:`` of the config as the RAG service's settings (one mapping for every path)."""
    rc = config.rag
    pinned = {name: (c.threshold, c.threshold_kind)
              for name, c in rc.collections.items() if c.threshold is not None}
    embed = rc.embed_model or next(
        (m.name for m in config.models if m.mode == "embeddings"), None)
    kg = config.knowledge_graph
    graph = GraphOptions(hops=kg.hops, weight=kg.weight, max_facts=kg.max_facts) \
        if kg.enabled else None
    return RagSettings(embed_model=embed, generation_model=rc.generation_model,
                       mode=rc.mode, k=rc.k, pinned_thresholds=pinned, graph=graph,
                       graph_model=kg.extractor_model)


def dense_options(config: Config) -> DenseOptions:
    """``rag.dense`` as the dense index's options; graphs saved per database under the home."""
    d = config.rag.dense
    url = config.effective_database_url
    where = hashlib.sha256(url.encode()).hexdigest()[:12]
    return DenseOptions(ann_min_rows=d.ann_min_rows, exact_below=d.exact_below,
                        index_dir=config.home_path / "rag-index" / where if d.persist else None)


async def require_redis_cache(config: Config) -> None:
    """``cache.backend: redis`` means Redis or nothing: ConfigError (one line) when it is down."""
    probe = open_state(config.redis_url, prefix=config.redis_prefix, timeout=2.0)
    try:
        await probe.get_version("startup-probe")
    except StateUnavailable as exc:
        raise ConfigError(f"cache.backend is 'redis' but Redis is unavailable: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            await probe.close()


@dataclass
class JobsParts:
    """The job queue and what serves it in this process (``Runtime.jobs``)."""

    queue: JobQueue
    service: JobService
    """Submit/get/cancel (``/v1/jobs``, ``lockgate jobs``)."""
    batches: OpenAIBatchService
    """``/v1/files``, ``/v1/batches`` and the worker's batch handler."""
    webhooks: WebhookSender | None = None
    """Signs and sends webhooks (None: no ``jobs.webhook_secret`` and unsigned not allowed)."""
    alerts: OperatorSender | None = None
    """Sends queue alerts (``jobs.alerts.url``, an operator URL: no SSRF guard)."""
    outbox: OutboxDeliverer | None = None
    """Delivers completion webhooks from the queue's outbox (workers run it)."""
    monitor: QueueMonitor | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await asyncio.wait_for(self._task, timeout=5)
                except TimeoutError:
                    self._task.cancel()
                    await self._task
        for sender in (self.webhooks, self.alerts):
            if sender is not None:
                await sender.aclose()
        await self.queue.aclose()


def alert_center(config: Config, store: Store, metrics: Metrics | None = None) -> AlertCenter:
    """``alerts:`` (falling back to ``jobs.alerts.url`` / ``jobs.webhook_secret``)."""
    ac = config.alerts
    secret = (resolve_secret(ac.webhook_secret, "alerts.webhook_secret")
              or resolve_secret(config.jobs.webhook_secret, "jobs.webhook_secret"))
    url = ac.webhook_url or config.jobs.alerts.url
    sender = OperatorSender(secret, attempts=ac.webhook_attempts) if secret and url else None
    return AlertCenter(store.engine, sender=sender, url=url,
                       counter=AlertCounter(metrics.registry if metrics else None))


@dataclass
class Runtime:
    config: Config
    store: Store
    audit: AuditWriter
    pipeline: Pipeline
    metrics: Metrics
    rag: RagService
    providers: list[Provider] = field(default_factory=list)
    state: StateBackend | None = None
    governor: Governor | None = None
    invalidations: Invalidations | None = None
    jobs: JobsParts | None = None
    """None when started with ``jobs=False`` (commands that never touch the queue)."""
    review: ReviewService | None = None
    """The review queue (lockgate.review); always built (no policies: nothing is routed)."""
    alerts: AlertCenter | None = None
    """Alerts once per incident across processes (lockgate.alerts); set by ``start``."""
    feedback: FeedbackService | None = None
    """Feedback on calls (lockgate.feedback); set by ``start``."""
    drift: DriftMonitor | None = None
    """The drift monitor (with ``monitor=True`` and ``feedback.drift.enabled``)."""
    canary: CanaryControl | None = None
    """Canary deployments with automatic rollback (None when none is configured)."""
    mining: MiningService | None = None
    """Process mining over the store's records and imported logs (lockgate.mining)."""
    console: ConsoleData | None = None
    """Console sessions, widget tokens, request log and usage rollups (lockgate.console)."""
    retainer: AuditRetainer | None = None
    """Archives old audit rows on a timer (with ``monitor=True`` and ``audit.retention``)."""
    agents: AgentService | None = None
    """Permissioned agents (lockgate.agents), ``model: agent/<name>``; set by ``start``."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _review_sender: WebhookSender | None = None
    """Signs and posts ``review.*`` webhooks (an operator URL: no SSRF guard)."""

    @property
    def controls(self) -> Controls:
        return self.pipeline.controls

    @property
    def admin(self) -> AdminService:
        """Teams and keys (create, list, revoke; audited): the admin API and the console."""
        return AdminService(self.store, grantable=self.pipeline.grantable,
                            revoke=self.revoke_key)

    @property
    def usage_now(self) -> UsageNow:
        """Budget spend and rate-limit headroom of teams and keys, from the shared state."""
        return UsageNow(self.config, self.governor)

    def job_handler(self) -> Handler:
        """What a worker runs: batch rows, else the job's task under its review policy."""
        assert self.jobs is not None and self.review is not None
        runner = self.task_runner("jobs")
        return batch_aware_handler(
            self.jobs.batches, self.pipeline,
            reviewed_handler(task_handler(runner), runner, self.review),
        )

    def new_worker(self, concurrency: int | None = None, lease: float | None = None) -> Worker:
        """A job worker on this runtime's queue (``lockgate worker``, the embedded one)."""
        assert self.jobs is not None
        settings = self.config.jobs
        return Worker(self.jobs.queue, self.job_handler(),
                      concurrency=concurrency or settings.concurrency,
                      lease=lease or settings.lease, poll_interval=settings.poll_interval,
                      grace=settings.grace, webhooks=self.jobs.webhooks, outbox=self.jobs.outbox)

    def task_runner(self, source: str = "jobs") -> TaskRunner:
        """Runs declared tasks (``jobs.tasks``) through the pipeline as ``source``."""
        settings = self.config.jobs
        return TaskRunner(self.pipeline, task_specs(settings),
                          default_model=settings.default_model,
                          task_routes=self.config.tasks, source=source)

    @classmethod
    async def start(
        cls,
        config: Config,
        *,
        metrics: Metrics | None = None,
        jobs: bool = True,
        queue_url: str | None = None,
        monitor: bool = False,
        warm_up: bool = True,
    ) -> Runtime:
        """Build everything; ``queue_url`` overrides ``jobs.queue_url``; ``monitor`` runs
        the queue monitor (the server and the worker do); ``warm_up`` loads local models
        in the background."""
        config.home_path.mkdir(parents=True, exist_ok=True)
        if config.cache.enabled and config.cache.backend == "redis":
            await require_redis_cache(config)
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
        state = open_state(config.redis_url, prefix=config.redis_prefix)
        shared = not isinstance(state, MemoryState)
        gov_cfg = config.governance
        if not shared:
            gov_cfg = gov_cfg.model_copy(update={"version_key": None})
        governor = Governor(state, gov_cfg)
        controls = Controls(
            limits=Limits(config, governor),
            breaker=CircuitBreaker(state, config.breaker) if config.breaker else None,
            guards=Guards(config.guards) if config.guards is not None else None,
            kill_switch=KillSwitch(state, models=config.kill_switch.models,
                                   teams=config.kill_switch.teams, shared=shared),
            tasks=dict(config.tasks),
            fallbacks={m: p.fallback_model for m, p in config.model_policies.items()
                       if p.fallback_model},
        )
        if config.cache.enabled:
            cache_state: StateBackend = state
            if config.cache.backend == "memory" and shared:
                cache_state = MemoryState()
            controls.cache = ResponseCache(cache_state, config.cache.ttl_seconds)
        router = Router(targets)
        canary = build_canary(config.models, targets, open_canary_stats(state), router,
                              sink=audit, metrics=metrics)
        pipeline = Pipeline(
            auth=auth,
            router=router,
            sink=audit,
            metrics=metrics,
            log_bodies=config.log_bodies,
            controls=controls,
        )
        rag = RagService(RagStore(store.engine), pipeline, rag_settings(config),
                         dense=dense_options(config))
        router.add_virtual(RagDeployment(rag))
        runtime = cls(config, store, audit, pipeline, metrics, rag, providers, state=state,
                      governor=governor, canary=canary)
        secret = resolve_secret(config.review.webhook_secret, "review.webhook_secret")
        if config.review.webhook_url and secret:
            runtime._review_sender = WebhookSender(secret)
        runtime.review = ReviewService(config.review, ReviewRepository(store),
                                       webhooks=review_webhooks(config, store,
                                                                runtime._review_sender))
        runtime.alerts = alert_center(config, store, metrics)
        runtime.mining = MiningService(store.engine, pipeline, config.mining)
        runtime.feedback = FeedbackService(store.engine,
                                           max_text_chars=config.feedback.max_text_chars)
        runtime.feedback.resolvers["review"] = review_subject(runtime.review.repo)
        runtime.review.on_decided.append(decision_recorder(runtime.feedback))
        runtime.review.on_breach.append(runtime._review_breach_alert)
        runtime.console = ConsoleData(store.engine)
        try:
            runtime.agents = build_agent_service(
                config, pipeline, store, review=runtime.review, alerts=runtime.alerts,
                rag=rag, jobs=lambda: runtime.jobs.service if runtime.jobs else None,
                state=state)
            router.add_virtual(AgentDeployment(runtime.agents))
            if runtime.agents.approvals is not None:
                runtime.review.resumers["agent"] = runtime.agents.approvals.resume
            if shared:
                await runtime._start_shared()
            elif controls.kill_switch is not None:
                await controls.kill_switch.start()
            runtime._attach_mirror()
            if jobs:
                runtime.jobs = await runtime._start_jobs(queue_url, monitor)
                runtime.review.resumers["jobs"] = job_resumer(runtime.jobs.queue)
                batches = runtime.jobs.batches
                batches.review = runtime.review
                batches.contracts = controls.guards.contracts if controls.guards else None
                runtime.review.resumers[REVIEW_SOURCE] = batches.resume_row
            if monitor:
                runtime._tasks.append(asyncio.create_task(
                    runtime.review.run_sweeper(runtime._stop), name="lockgate-review-sweeper"))
                runtime._tasks.append(asyncio.create_task(
                    runtime.agents.run_recovery(runtime._stop), name="lockgate-agent-runs"))
                assert runtime.alerts is not None
                runtime._tasks.append(asyncio.create_task(
                    runtime.alerts.watch(runtime._stop, config.alerts.gauge_interval),
                    name="lockgate-alerts-gauge"))
            if monitor and config.console.enabled:
                runtime._tasks.append(asyncio.create_task(
                    runtime._fold_rollups(), name="lockgate-console-rollups"))
            if monitor and config.feedback.drift.enabled:
                runtime._start_drift()
            if monitor:
                runtime._start_retention()
            if canary is not None:
                canary.on_rollback.append(runtime._canary_alert)
                await canary.start()
        except BaseException:
            await runtime.aclose()
            raise
        configure_tracing(config.tracing)
        runtime._watch_metrics()
        if warm_up:
            runtime._warm_up()
        return runtime

    async def _start_jobs(self, queue_url: str | None, monitor: bool) -> JobsParts:
        config = self.config
        settings = config.jobs
        url = queue_url or settings.effective_queue_url(config.effective_database_url,
                                                        config.home_path)
        queue = open_queue(url, queue_options(settings))
        await queue.open()
        secret = resolve_secret(settings.webhook_secret, "jobs.webhook_secret")
        service = job_service(queue, settings, task_specs(settings), secret=secret)
        sender = None
        if secret or settings.allow_unsigned_webhooks:
            sender = WebhookSender(secret or None, attempts=settings.webhook_attempts,
                                   policy=service.policy)
        parts = JobsParts(
            queue=queue,
            service=service,
            batches=OpenAIBatchService(self.store.engine, queue,
                                       max_attempts=max(settings.max_attempts, 5)),
            webhooks=sender,
            outbox=OutboxDeliverer(queue, sender, attempts=settings.webhook_attempts,
                                   backoff_cap=settings.backoff_cap,
                                   poll_interval=max(settings.poll_interval, 0.05)),
        )
        if monitor:
            # alerts go to the operator's own URL: signed, but not through the SSRF guard
            alerts = (OperatorSender(secret, attempts=settings.webhook_attempts)
                      if secret else None)
            parts.alerts = alerts
            parts.monitor = QueueMonitor(queue, settings.alerts,
                                         gauges=JobsGauges(self.metrics.registry),
                                         sender=alerts, tombstone_ttl=settings.tombstone_ttl,
                                         center=self.alerts)
            parts._task = asyncio.create_task(parts.monitor.run(parts._stop),
                                              name="lockgate-jobs-monitor")
        return parts

    async def _fold_rollups(self) -> None:
        """Fold new audit rows into the console's rollups every ``console.rollup_interval``."""
        assert self.console is not None
        while not self._stop.is_set():
            try:
                await self.console.rollups.refresh()
            except Exception as exc:  # the database is down: try again next round
                log.warning("lockgate.rollups_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.console.rollup_interval)

    def _start_drift(self) -> None:
        assert self.alerts is not None
        self.drift = DriftMonitor(self.store.engine, self.alerts, self.config.feedback.drift)
        self._tasks.append(asyncio.create_task(self.drift.run(self._stop),
                                               name="lockgate-drift-monitor"))

    async def _start_shared(self) -> None:
        """Key invalidations and kill-switch changes from other gateways (Redis pub/sub)."""
        assert self.state is not None
        auth = self.pipeline.auth
        inv = Invalidations(self.state, "keys", on_message=lambda m: auth.drop(m or None),
                            on_reset=auth.drop)
        self.invalidations = inv
        self.pipeline.controls.on_version = inv.observe_version

        def announce(key_id: str | None) -> None:
            async def send() -> None:
                try:
                    await inv.announce(key_id or "")
                except StateUnavailable as exc:
                    log.warning("lockgate.invalidation_not_sent", error=str(exc))
            in_background(send())

        auth.on_invalidate = announce
        await inv.start()
        ks = self.pipeline.controls.kill_switch
        if ks is not None:
            await ks.start()

    async def _review_breach_alert(self, item: ReviewItem) -> None:
        """An SLA breach is an alert too (once per item: the sweeper marks it once)."""
        if self.alerts is not None:
            await self.alerts.raise_once(
                "review_sla", item.id,
                f"review {item.id} (task {item.task}) breached its SLA; now with team "
                f"{item.team or 'admins'}",
                {"task": item.task, "team": item.team, "escalations": item.escalations},
            )

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke in the store, drop it here and tell every gateway (awaited)."""
        if not await self.store.revoke_key(key_id):
            return False
        self.pipeline.auth.drop(key_id)
        if self.invalidations is not None:
            await self.invalidations.announce(key_id)
        return True

    async def _canary_alert(self, doc: dict[str, object]) -> None:
        """A canary was rolled back: an alert (``kind: canary``), delivered once per incident
        (log, ``lockgate_alerts_total``, signed ``alert.raised`` webhook to ``alerts:``)."""
        if self.alerts is not None:
            deployment = str(doc.get("deployment", "?"))
            await self.alerts.raise_once(
                "canary", deployment,
                f"canary {deployment} rolled back: {doc.get('reason', '')}", dict(doc),
            )

    def _attach_mirror(self) -> None:
        """Shadow traffic (lockgate.shadow): samples go through this pipeline, rows to ``audit``."""
        if self.config.shadow is None:
            return
        from lockgate.shadow import build_mirror

        self.pipeline.controls.mirror = build_mirror(self)

    def _watch_metrics(self) -> None:
        """Copy plain-int governance and audit stats into gauges when /metrics is rendered."""
        breaker = self.pipeline.controls.breaker
        governor = self.governor
        limits = self.pipeline.controls.limits
        gauge = self.metrics.breaker_state
        gov_gauge = self.metrics.governance
        audit = self.audit
        audit_gauge, pending_gauge = self.metrics.audit, self.metrics.audit_pending
        backlog_gauge = self.metrics.audit_backlog

        def refresh() -> None:
            for name, value in asdict(audit.stats()).items():
                if name == "pending":
                    pending_gauge.set(value)
                else:
                    audit_gauge.labels(name).set(value)
            backlog_gauge.set(audit.backlog_seconds())
            if self.retainer is not None:
                audit_gauge.labels("archived").set(self.retainer.archived)
                audit_gauge.labels("archive_failures").set(self.retainer.failures)
            if breaker is not None:
                for dep, code in breaker.state_codes().items():  # STATE_CODES values
                    gauge.labels(dep).set(code)
            if governor is not None and limits is not None and limits.active:
                for name, value in governor.stats.as_dict().items():
                    gov_gauge.labels(name).set(value)

        assert STATE_CODES
        self.metrics.on_render(refresh)

    def _warm_up(self) -> None:
        """Load local models in the background so the first request does not pay for it."""
        for provider in self.providers:
            warmup = getattr(provider, "warmup", None)
            if warmup is not None:
                task = asyncio.get_running_loop().create_task(warmup())
                task.add_done_callback(_log_warmup_failure)
                self._tasks.append(task)

    def _start_retention(self) -> None:
        """Archive old audit rows on a timer (``audit.retention``; lockgate.store.retention)."""
        retention = self.config.audit.retention
        if retention is None or retention.interval_seconds <= 0:
            return
        self.retainer = AuditRetainer(
            self.store, retention.directory(self.config.home_path),
            interval=retention.interval_seconds, max_age=retention.max_age,
            max_rows=retention.max_rows, file_rows=retention.file_rows)
        self._tasks.append(asyncio.create_task(self.retainer.run(self._stop),
                                               name="lockgate-audit-retention"))

    async def aclose(self) -> None:
        self._stop.set()
        if self.drift is not None:
            drift_tasks = [t for t in self._tasks if t.get_name() == "lockgate-drift-monitor"]
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.gather(*drift_tasks), timeout=5)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        if self.agents is not None:
            await self.agents.aclose()
        await self.rag.aclose()
        if self.review is not None:
            await self.review.aclose()
        if self._review_sender is not None:
            await self._review_sender.aclose()
        if self.canary is not None:
            await self.canary.stop()
        if self.jobs is not None:
            await self.jobs.aclose()
        if self.invalidations is not None:
            await self.invalidations.stop()
        ks = self.pipeline.controls.kill_switch
        if ks is not None:
            await ks.stop()
        mirror = self.pipeline.controls.mirror
        if mirror is not None:
            await mirror.aclose()  # finishes queued samples; their rows drain with the audit
        for provider in self.providers:
            await provider.aclose()
        if self.alerts is not None and self.alerts.sender is not None:
            await self.alerts.sender.aclose()
        await self.audit.close()
        await self.store.close()
        if self.governor is not None:
            with contextlib.suppress(StateUnavailable):
                await self.governor.retry_pending()
        if self.state is not None:
            await self.state.close()
        shutdown_tracing()
