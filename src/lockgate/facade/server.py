"""Listeners: one per configured facade, each an aiohttp low-level server on its own port.

:class:`Facades` is what ``lockgate serve``/``up`` (inside the gateway's lifespan) and
``lockgate facade`` (alone) start: ``await Facades.start(runtime)`` binds every facade of
``config.facades`` (``SO_REUSEPORT``, so the gateway's worker processes share each port)
and ``await facades.aclose()`` stops accepting, lets background deliveries finish and
closes the upstream connections.

Rules run their tasks through the runtime's pipeline as source ``facade`` (audited,
governed, metered like every call) with the principal ``system:facade``. Every answered
call goes to the facade's call log (``log_calls``), handed to the runtime's AuditWriter as
one ``facade_calls`` row per batch: what process mining reads (``--source facade``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lockgate.facade.calllog import CallLog, Sink
from lockgate.facade.fastpath import FastFront
from lockgate.facade.metrics import FacadeMetrics
from lockgate.facade.proxy import FacadeProxy, JobSubmitter
from lockgate.facade.rules import RuleEngine
from lockgate.jobs.tasks import TaskRunner
from lockgate.pipeline import Principal
from lockgate.settings.facades import FacadeSettings

if TYPE_CHECKING:
    from lockgate.runtime import Runtime

__all__ = ["FACADE_PRINCIPAL", "Facades", "Listener", "serve_facade"]

FACADE_PRINCIPAL = Principal(key_id="system:facade", team_id=None, is_master=True)


@dataclass
class Listener:
    """One facade's sockets: the public front and the rule engine's private Unix socket."""

    front: FastFront
    servers: list[asyncio.AbstractServer]
    socket_dir: str

    async def aclose(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=5)
        self.front.close()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


async def serve_facade(proxy: FacadeProxy, sink: Sink | None = None) -> Listener:
    """Bind ``proxy``'s public listener (reuse_port: every worker process of the gateway
    binds it) and its rule engine's Unix socket (one per process). ``sink`` takes the call
    log's ``facade_calls`` rows (the AuditWriter's ``submit_facade``)."""
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return await proxy.handle(request)

    lowlevel = web.Server(handler, access_log=None)
    loop = asyncio.get_running_loop()
    s = proxy.settings
    socket_dir = tempfile.mkdtemp(prefix="lockgate-facade-")
    path = os.path.join(socket_dir, "rules.sock")
    inner = await loop.create_unix_server(lowlevel, path)
    call_log = None
    if sink is not None and s.log_calls:
        call_log = CallLog(sink, s.name, s.upstream.split("://", 1)[1].split("/", 1)[0])
    front = FastFront(s.upstream, path, proxy.has_rule, preserve_host=s.preserve_host,
                      connect_timeout=s.connect_timeout, read_timeout=s.read_timeout,
                      on_pass=proxy.count_pass, on_error=proxy.count_upstream_error,
                      call_log=call_log, case_header=s.case_header, rules_of=proxy.rule_names,
                      idle_timeout=s.idle_timeout, max_tunnels=s.max_tunnels)
    try:
        outer = await loop.create_server(front, s.host, s.port, reuse_port=True, backlog=1024)
    except BaseException:
        inner.close()
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise
    return Listener(front, [outer, inner], socket_dir)


def _job_submitter(runtime: Runtime) -> JobSubmitter | None:
    if runtime.jobs is None:
        return None
    service = runtime.jobs.service

    async def submit(task: str, value: Any, key: str) -> str:
        result = await service.submit(task, value, idempotency_key=key,
                                      principal=FACADE_PRINCIPAL)
        return result.job.id

    return submit


@dataclass
class Facades:
    proxies: list[FacadeProxy] = field(default_factory=list)
    servers: list[Listener] = field(default_factory=list)

    @classmethod
    def build(cls, settings: list[FacadeSettings], runtime: Runtime) -> Facades:
        metrics = FacadeMetrics(runtime.metrics.registry)
        runner: TaskRunner = runtime.task_runner("facade")
        runner.default_principal = FACADE_PRINCIPAL
        engine = RuleEngine(runner)
        submit = _job_submitter(runtime)
        return cls([FacadeProxy(s, engine, metrics, submit_job=submit) for s in settings])

    @classmethod
    async def start(cls, runtime: Runtime) -> Facades:
        facades = cls.build(runtime.config.facades, runtime)
        try:
            for proxy in facades.proxies:
                facades.servers.append(await serve_facade(proxy, runtime.audit.submit_facade))
        except BaseException:
            await facades.aclose()
            raise
        return facades

    def addresses(self) -> list[str]:
        return [f"{p.settings.name}: http://{p.settings.host}:{p.settings.port} -> "
                f"{p.settings.upstream}" for p in self.proxies]

    async def aclose(self) -> None:
        for listener in self.servers:
            await listener.aclose()
        for proxy in self.proxies:
            await proxy.aclose()
