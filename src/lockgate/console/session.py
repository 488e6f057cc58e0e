"""Console sign-in: the session cookie, who is signed in, CSRF checks.

What holds:

- Sign-in takes the master key (admin) or a team key (that team's view); the key is checked
  by the pipeline's authenticator and then forgotten: the session row holds the key id,
  never the key. The cookie (``lg_console``) is httpOnly, SameSite=Strict, Path=/console,
  Secure over https (``console.secure_cookies``), with Max-Age = the session lifetime; the
  server refuses it after ``expires_at`` too.
- Session fixation: every sign-in mints a new random id; an id the browser already had is
  never adopted (it is ended when present).
- CSRF: every form carries the session's token (``csrf`` field, or the ``x-csrf-token``
  header for htmx); the sign-in form carries a pre-session token that must match its
  cookie (``lg_console_pre``). A mismatch is a 403 and changes nothing.
- A team key revoked after sign-in ends its sessions at their next request.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from lockgate.errors import Forbidden
from lockgate.pipeline.call import Principal
from lockgate.runtime import Runtime
from lockgate.store.console import ConsoleData, SessionRecord

__all__ = [
    "COOKIE",
    "PRE_COOKIE",
    "ConsoleUser",
    "check_csrf",
    "check_pre_csrf",
    "clear_cookie",
    "console_data",
    "current_user",
    "pre_token",
    "set_pre_cookie",
    "set_session_cookie",
]

COOKIE = "lg_console"
PRE_COOKIE = "lg_console_pre"
PATH = "/console"


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """Who is signed in to this request."""

    sid: str
    record: SessionRecord
    principal: Principal

    @property
    def is_admin(self) -> bool:
        return self.record.is_master

    @property
    def csrf(self) -> str:
        return self.record.csrf

    @property
    def team_id(self) -> str | None:
        return None if self.is_admin else self.record.team_id

    @property
    def label(self) -> str:
        if self.is_admin:
            return "admin (master key)"
        return f"team {self.record.team_name or self.record.team_id}"


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def console_data(rt: Runtime) -> ConsoleData:
    assert rt.console is not None  # Runtime.start always builds it
    return rt.console


async def current_user(request: Request) -> ConsoleUser | None:
    """The signed-in user, or None (no cookie, unknown, expired, or the key was revoked)."""
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    rt = runtime_of(request)
    data = console_data(rt)
    rec = await data.get_session(sid)
    if rec is None:
        return None
    if rec.is_master:
        principal = Principal(key_id=rec.key_id, team_id=None, is_master=True)
    else:
        key = await rt.store.get_key(rec.key_id)
        if key is None or key.revoked_at is not None:
            await data.end_session(sid)
            return None
        principal = Principal(
            key_id=key.id, team_id=key.team_id, team_name=key.team_name,
            allowed_models=frozenset(key.allowed_models)
            if key.allowed_models is not None else None,
            key_name=key.name or None,
        )
    return ConsoleUser(sid=sid, record=rec, principal=principal)


def _secure(request: Request, rt: Runtime) -> bool:
    mode = rt.config.console.secure_cookies
    if mode == "auto":
        proto = request.headers.get("x-forwarded-proto") or request.url.scheme
        return proto == "https"
    return mode == "always"


def set_session_cookie(response: Response, request: Request, sid: str) -> None:
    rt = runtime_of(request)
    response.set_cookie(COOKIE, sid, max_age=int(rt.config.console.session_ttl_seconds),
                        path=PATH, httponly=True, samesite="strict",
                        secure=_secure(request, rt))
    response.delete_cookie(PRE_COOKIE, path=PATH)


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def pre_token(request: Request) -> str:
    """The sign-in form's CSRF token: the browser's pre-session cookie, else a new one."""
    token = request.cookies.get(PRE_COOKIE)
    if not token or len(token) > 100:
        token = secrets.token_urlsafe(24)
    return token


def set_pre_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(PRE_COOKIE, token, max_age=1800, path=PATH, httponly=True,
                        samesite="strict", secure=_secure(request, runtime_of(request)))


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def check_pre_csrf(request: Request, sent: str | None) -> None:
    if not _same(request.cookies.get(PRE_COOKIE), sent):
        raise Forbidden("The sign-in form expired or was not sent by this console; "
                        "reload the page and try again.", code="csrf_failed")


def check_csrf(request: Request, user: ConsoleUser, sent: str | None) -> None:
    token = sent or request.headers.get("x-csrf-token")
    if not _same(user.csrf, token):
        raise Forbidden("The form's CSRF token is missing or wrong; reload the page.",
                        code="csrf_failed")
