"""Server-side rendering of console pages (Jinja2, autoescaped) and their security headers.

Every value from a model, a document or a user is escaped by Jinja's autoescape; templates
never mark data ``|safe``. Chart data goes into ``<script type="application/json">`` as
escaped JSON text (``tojson``), read by ``console.js``; there is no inline script, and the
Content-Security-Policy allows scripts and styles from the gateway only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

__all__ = ["SECURITY_HEADERS", "STATIC_DIR", "TEMPLATES_DIR", "page", "render"]

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _when(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _money(value: Any) -> str:
    try:
        return f"${float(value):,.4f}"
    except (TypeError, ValueError):
        return ""


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):,.{digits}f}"


def _dur(seconds: Any) -> str:
    """Seconds as ``42 s``, ``3 min 20 s``, ``3 h 36 min``."""
    try:
        total = max(0, round(float(seconds)))
    except (TypeError, ValueError):
        return ""
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:,} h {minutes} min"


_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES_DIR)),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["when"] = _when
_env.filters["money"] = _money
_env.filters["num"] = _num
_env.filters["dur"] = _dur


def render(template: str, **ctx: Any) -> str:
    return _env.get_template(template).render(**ctx)


def page(request: Request, template: str, *, status: int = 200, user: Any = None,
         headers: dict[str, str] | None = None, **ctx: Any) -> Response:
    """A full console page (or an htmx fragment when ``template`` is one)."""
    body = render(template, request=request, user=user, path=request.url.path, **ctx)
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
