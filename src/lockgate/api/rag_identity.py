"""The verified end user a call acts for: the signed ``x-lockgate-end-user`` header.

The end user travels in one header, signed by the application backend that holds
``rag.end_user_secret`` (clients never see the secret)::

    x-lockgate-end-user: <user-id>;groups=<g1>,<g2>;ts=<unix seconds>;sig=<hex>

``sig`` is ``HMAC-SHA256(secret, payload)`` in lowercase hex, where ``payload`` is
the header value up to (not including) ``;sig=`` — exactly the bytes sent, so
there is no canonicalisation to get wrong. ``groups`` may be empty
(``groups=``). ``ts`` is when it was signed; the header is accepted while
``|now - ts| <= rag.end_user_max_age`` (default 300 s), so a leaked header
expires. :func:`sign_end_user` builds a header (use it in the backend or tests).

User ids and group names are 1-200 characters without whitespace, ``;``, ``,``
or ``=``. A header that is malformed, expired or badly signed — or any header
when no secret is configured — is a 401 (``code: invalid_end_user``); it is
never silently ignored. A valid one becomes :attr:`Call.acting_for
<lockgate.pipeline.call.Call.acting_for>` on every model route; what it grants is
decided by the features (RAG: :func:`lockgate.rag.identity.caller_for`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from starlette.requests import Request

from lockgate.errors import Unauthorized
from lockgate.pipeline import EndUser
from lockgate.settings import RagConfig

__all__ = [
    "END_USER_HEADER",
    "EndUser",
    "end_user_of",
    "parse_end_user",
    "sign_end_user",
]

END_USER_HEADER = "x-lockgate-end-user"

_NAME = re.compile(r"^[^\s;,=]{1,200}$")


def _mac(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def sign_end_user(secret: str, user_id: str, groups: tuple[str, ...] | list[str] = (),
                  ts: int | None = None) -> str:
    """The header value for ``user_id`` in ``groups``, signed now (or at ``ts``)."""
    for name in (user_id, *groups):
        if not _NAME.match(name):
            raise ValueError(f"bad end-user id or group {name!r}")
    stamp = int(time.time()) if ts is None else ts
    payload = f"{user_id};groups={','.join(groups)};ts={stamp}"
    return f"{payload};sig={_mac(secret, payload)}"


def _bad(why: str) -> Unauthorized:
    return Unauthorized(f"Invalid {END_USER_HEADER} header: {why}.", code="invalid_end_user")


def parse_end_user(value: str, secret: str | None, max_age: float,
                   now: float | None = None) -> EndUser:
    """Verify a header value; raises :class:`Unauthorized` (401) on any problem."""
    if not secret:
        raise _bad("signed end users are not enabled (rag.end_user_secret is unset)")
    payload, sep, sig = value.strip().rpartition(";sig=")
    if not sep or not payload:
        raise _bad("no signature")
    if not hmac.compare_digest(_mac(secret, payload), sig.strip().lower()):
        raise _bad("bad signature")
    user_id, *fields = payload.split(";")
    if not _NAME.match(user_id):
        raise _bad("bad user id")
    parts: dict[str, str] = {}
    for f in fields:
        k, eq, v = f.partition("=")
        if not eq or k in parts:
            raise _bad(f"bad field {f!r}")
        parts[k] = v
    if set(parts) != {"groups", "ts"}:
        raise _bad("expected groups= and ts=")
    groups = tuple(g for g in parts["groups"].split(",") if g)
    if any(not _NAME.match(g) for g in groups):
        raise _bad("bad group name")
    try:
        ts = int(parts["ts"])
    except ValueError:
        raise _bad("ts is not an integer") from None
    t = time.time() if now is None else now
    if abs(t - ts) > max_age:
        raise _bad("expired (ts outside the allowed window)")
    return EndUser(user_id=user_id, groups=groups, ts=ts)


def end_user_of(request: Request, rag: RagConfig) -> EndUser | None:
    """The verified end user of a request, or None without the header (401 if invalid)."""
    header = request.headers.get(END_USER_HEADER)
    if header is None:
        return None
    return parse_end_user(header, rag.resolved_end_user_secret(), rag.end_user_max_age)
