"""Builds the ASGI app and its lifespan (the one place that does)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from lockgate import __version__
from lockgate.api import (
    admin,
    agents,
    alerts,
    anthropic,
    controls,
    feedback,
    health,
    jobs,
    mining,
    openai,
    rag,
    reviews,
)
from lockgate.api.error_render import gateway_error_of
from lockgate.api.error_render import render_error as render_error_as
from lockgate.api.lean import LeanGateway
from lockgate.api.middleware import RequestIdMiddleware
from lockgate.api.openapi_bodies import declare_request_bodies
from lockgate.api.request_io import request_id_of
from lockgate.errors import BadRequest, GatewayError
from lockgate.events.embedded import EmbeddedConsumers
from lockgate.interpreter import settle_after_startup
from lockgate.jobs.embedded import EmbeddedWorker, embedded_worker_enabled
from lockgate.observability.logging import configure_logging
from lockgate.runtime import Runtime
from lockgate.settings import Config, load_config
from lockgate.store import StoreError

log = structlog.get_logger("lockgate.server")

CONFIG_ENV = "LOCKGATE_CONFIG"


def create_app(config: Config | None = None) -> LeanGateway:
    """The gateway app. Without ``config`` it loads ``$LOCKGATE_CONFIG`` (or the default).

    The model routes run on the lean path (:mod:`lockgate.api.lean`); the rest is FastAPI."""
    if config is None:
        config = load_config(os.environ.get(CONFIG_ENV) or None)
    cfg = config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(cfg.logging)  # once per process; JSON lines with the request id
        runtime = await Runtime.start(cfg, monitor=True)
        app.state.runtime = runtime
        worker = (EmbeddedWorker(runtime.new_worker()).start()
                  if embedded_worker_enabled(cfg.jobs) else None)
        app.state.embedded_worker = worker
        consumers = (EmbeddedConsumers.start(cfg.events.consumers, runtime.task_runner("events"),
                                             runtime.review)
                     if worker is not None and cfg.events.consumers and runtime.review else None)
        log.info("lockgate.started", models=runtime.pipeline.router.models(), pid=os.getpid(),
                 embedded_worker=worker is not None)
        facades = None
        if cfg.facades:  # lockgate.facade (aiohttp): imported only when facades are configured
            from lockgate.facade import Facades

            facades = await Facades.start(runtime)
        settle_after_startup()  # gc.freeze() and a short GIL switch interval
        try:
            yield
        finally:
            if consumers is not None:
                await consumers.stop()
            if worker is not None:
                await worker.stop()
            if facades is not None:
                await facades.aclose()
            await runtime.aclose()
            log.info("lockgate.stopped", pid=os.getpid())

    app = LeanGateway(
        title="lockgate", version=__version__, lifespan=lifespan,
        docs_url="/docs", redoc_url=None,
        # lockgate has its own metrics/tracing; FastAPI's per-request telemetry probe cost ~9%
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.include_router(openai.router)
    app.include_router(anthropic.router)
    app.include_router(admin.router)
    app.include_router(controls.router)
    app.include_router(health.router)
    app.include_router(rag.router)
    app.include_router(jobs.router)
    app.include_router(reviews.router)
    app.include_router(feedback.router)
    app.include_router(alerts.router)
    app.include_router(mining.router)
    if cfg.console.enabled:
        from lockgate import console

        console.install(app)
    app.include_router(agents.router)
    app.include_router(agents.admin_router)
    declare_request_bodies(app)
    app.body_timeout = cfg.server.body_timeout_seconds  # the lean model routes' body timeout
    app.add_middleware(RequestIdMiddleware, body_timeout=cfg.server.body_timeout_seconds)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        err = GatewayError(str(exc.detail), status=exc.status_code,
                           type="invalid_request_error", code=code)
        return render_error(request, err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first["loc"])
        return render_error(request, BadRequest(f"{loc}: {first['msg']}", param=loc))

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return render_error(request, exc)

    @app.exception_handler(StoreError)
    @app.exception_handler(ClientDisconnect)
    @app.exception_handler(Exception)
    async def other_error(request: Request, exc: Exception) -> Response:
        # Exception's handler runs outside the request-id middleware (Starlette's outermost
        # layer): render_error adds the id itself
        return render_error(request, gateway_error_of(exc, request.url.path))

    return app


def render_error(request: Request, exc: GatewayError) -> Response:
    """An error in the shape of the API the client called, always carrying the request id."""
    return render_error_as(request.url.path, request_id_of(request), exc)
