"""The filters and paging cursor of an agent-run list, read from query parameters.

Shared by ``GET /v1/agents/{name}/runs`` and the console's run list
(:mod:`lockgate.console.pages_agents`), so both accept the same ``status``, ``since``,
``until``, ``level`` and ``before`` and refuse the same bad values (400, never a 500).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.requests import Request

from lockgate.agents.model import Run
from lockgate.api.admin import parse_since
from lockgate.api.request_io import query_text
from lockgate.errors import BadRequest

__all__ = ["STATES", "RunFilter", "cursor_of", "run_filter"]

STATES = ("running", "awaiting_approval", "succeeded", "failed", "stopped")
_CURSOR = re.compile(r"^(\d{1,12}(?:\.\d{1,9})?)~(run_[0-9a-f]{1,64})$")


@dataclass(frozen=True)
class RunFilter:
    """What :meth:`lockgate.agents.AgentService.search` takes besides agent and team."""

    state: str | None = None
    since: float | None = None
    until: float | None = None
    before: tuple[float, str] | None = None
    roots_only: bool = False


def _when(request: Request, name: str) -> float | None:
    raw = query_text(request, name, 40)
    if raw is None:
        return None
    try:
        return parse_since(raw).timestamp()
    except BadRequest as exc:  # parse_since names 'since': say which parameter it was
        raise BadRequest(exc.message.replace("'since'", f"'{name}'", 1), param=name,
                         code="invalid_value") from None


def _cursor(raw: str | None) -> tuple[float, str] | None:
    if raw is None:
        return None
    m = _CURSOR.match(raw)
    if m is None:
        raise BadRequest("'before' is not a cursor this list gave.", param="before")
    return float(m.group(1)), m.group(2)


def run_filter(request: Request) -> RunFilter:
    """``status`` (one of :data:`STATES`), ``since``/``until`` (ISO or like 24h),
    ``level`` (``all`` or ``top``: runs that are no one's sub-run) and ``before`` (the
    cursor of the previous page's last run)."""
    state = query_text(request, "status", 20)
    if state is not None and state not in STATES:
        raise BadRequest(f"'status' must be one of {', '.join(STATES)}.", param="status")
    level = query_text(request, "level", 10) or "all"
    if level not in ("all", "top"):
        raise BadRequest("'level' must be all or top.", param="level")
    return RunFilter(state=state, since=_when(request, "since"), until=_when(request, "until"),
                     before=_cursor(query_text(request, "before", 100)),
                     roots_only=level == "top")


def cursor_of(run: Run) -> str:
    """The ``before`` value that pages on after ``run`` (runs are listed newest first)."""
    return f"{run.created_at!r}~{run.id}"
