"""Liveness/readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from lockgate import __version__
from lockgate.api.request_io import json_response
from lockgate.runtime import Runtime

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    ok = await rt.store.ping()
    body = {
        "status": "ok" if ok else "degraded",
        "version": __version__,
        "database": "ok" if ok else "unreachable",
        "models": rt.pipeline.router.models(),
    }
    return json_response(body, status=200 if ok else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
