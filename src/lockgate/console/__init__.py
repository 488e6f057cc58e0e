"""The web console (``/console``) and the embeddable assistant panel (``/widget.js``).

An adapter beside :mod:`lockgate.api`: server-rendered Jinja2 pages with htmx and uPlot
vendored under ``static/vendor`` (licences beside them; nothing is fetched from a CDN), on
the same runtime services the HTTP APIs use. :func:`install` adds the routes and the static
files to the app (``console.enabled``).

What is here: sign-in with the master key or a team key (:mod:`.session`), overview from
rollups and the request log (:mod:`.pages_core`), teams/keys/budgets, kill switch and
routing, jobs and the DLQ, alerts, budgets and rate limits with their use now per team and
per key (:mod:`.pages_admin`, through :class:`lockgate.admin.AdminService` and
:class:`lockgate.admin.UsageNow`), review queue, RAG collections with a query playground,
chat playground (:mod:`.pages_work`), agent runs (:mod:`.pages_agents`, through
:class:`lockgate.agents.AgentService`), the widget (:mod:`.widget`).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from lockgate.console import pages_admin, pages_agents, pages_core, pages_work, widget
from lockgate.console.render import STATIC_DIR

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Add the console's pages, its static files and the widget routes to ``app``."""
    app.include_router(pages_core.router)
    app.include_router(pages_admin.router)
    app.include_router(pages_work.router)
    app.include_router(pages_agents.router)
    app.include_router(widget.router)
    app.mount("/console/static", StaticFiles(directory=str(STATIC_DIR)), name="console-static")
