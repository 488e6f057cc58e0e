"""Plumbing shared by the console's routes: who may see a page, forms, errors as pages.

:func:`screen` wraps a page handler: it resolves the signed-in user (a GET without one is
redirected to the sign-in page, anything else is a 401 page), refuses team users on admin
screens (403), checks the CSRF token of every POST, and renders any
:class:`~lockgate.errors.GatewayError` or store error as an HTML page with its status —
never a traceback.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lockgate.api.request_io import query_text
from lockgate.console.render import SECURITY_HEADERS, page
from lockgate.console.session import ConsoleUser, check_csrf, current_user
from lockgate.errors import BadRequest, Forbidden, GatewayError, PayloadTooLarge
from lockgate.store.errors import StoreError

__all__ = ["FORM_LIMIT", "Handler", "form_text", "query_text", "read_form", "redirect",
           "screen"]

FORM_LIMIT = 256 * 1024

Handler = Callable[..., Awaitable[Response]]


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


async def read_form(request: Request) -> FormData:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > FORM_LIMIT):
        raise PayloadTooLarge(f"The form is larger than {FORM_LIMIT} bytes.")
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        raise BadRequest("Expected a form (application/x-www-form-urlencoded).",
                         code="invalid_form")
    try:
        return await request.form(max_files=0, max_fields=200)
    except GatewayError:
        raise
    except Exception as exc:  # malformed multipart etc.
        raise BadRequest(f"The form could not be read: {exc}"[:300], code="invalid_form") \
            from None


def form_text(form: FormData, name: str, *, required: bool = False,
              max_len: int = 2000) -> str | None:
    value = form.get(name)
    if value is None or not isinstance(value, str) or not value.strip():
        if required:
            raise BadRequest(f"'{name}' is required.", param=name, code="invalid_value")
        return None
    if len(value) > max_len:
        raise BadRequest(f"'{name}' is at most {max_len} characters.", param=name,
                         code="invalid_value")
    return value.strip()


def error_page(request: Request, exc: GatewayError, user: ConsoleUser | None) -> Response:
    return page(request, "error.html", status=exc.status, user=user,
                title=f"Error {exc.status}", message=exc.message)


def screen(*, admin: bool = False) -> Callable[[Handler], Callable[..., Awaitable[Response]]]:
    """Decorate a console handler ``(request, user, **path_params)``."""

    def wrap(fn: Handler) -> Callable[..., Awaitable[Response]]:
        @functools.wraps(fn)
        async def run(request: Request, **params: Any) -> Response:
            user: ConsoleUser | None = None
            try:
                user = await current_user(request)
                if user is None:
                    if request.method == "GET" and "hx-request" not in request.headers:
                        target = quote(request.url.path, safe="/")
                        return redirect(f"/console/login?next={target}")
                    return page(request, "error.html", status=401, user=None,
                                title="Signed out", message="Sign in again to continue.")
                if admin and not user.is_admin:
                    raise Forbidden("This screen is for administrators (the master key).",
                                    code="admin_only")
                if request.method == "POST":
                    form = await read_form(request)
                    sent = form.get("csrf")
                    check_csrf(request, user, sent if isinstance(sent, str) else None)
                    request.state.form = form
                return await fn(request, user, **params)
            except GatewayError as exc:
                return error_page(request, exc, user)
            except StoreError as exc:
                status = exc.http_status
                return error_page(request, GatewayError(str(exc), status=status), user)

        # FastAPI reads the route's parameters from the signature: the request and the path
        # parameters, without ``user`` (resolved here, not by FastAPI)
        sig = inspect.signature(fn)
        run.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[p for name, p in sig.parameters.items() if name != "user"])
        return run

    return wrap
