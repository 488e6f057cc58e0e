"""The console's records: sign-in sessions, widget tokens and the request-log queries.

:class:`ConsoleData` is built once by the Runtime (``Runtime.console``); the console and the
widget routes call it, never SQL of their own.

- Sessions: a random 256-bit id in an httpOnly cookie; only its sha256 is stored, with the
  CSRF token, who signed in (key id, team, master or not) and the expiry. No key is stored.
- Widget tokens: ``lgw_`` + 256 random bits, only the sha256 stored, bound to an origin, a
  model (``rag/<collection>`` for RAG), an end user (id + groups) and an expiry.
- Request log: filters on team, key, model, deployment, status class and time; newest
  first with an id cursor; one row by request id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.store.engine import writer_engine
from lockgate.store.records import NOT_CALLS, UsageRow
from lockgate.store.rollups import Rollups
from lockgate.store.tables import console_sessions, usage_records, widget_tokens
from lockgate.store.usage import to_datetime

__all__ = ["ConsoleData", "LogFilter", "SessionRecord", "WidgetToken", "token_hash"]

WIDGET_PREFIX = "lgw_"


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    csrf: str
    key_id: str
    team_id: str | None
    team_name: str | None
    is_master: bool
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class WidgetToken:
    key_id: str
    team_id: str | None
    origin: str
    model: str
    user_id: str
    groups: tuple[str, ...]
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class LogFilter:
    team_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    deployment: str | None = None
    status: str | None = None
    """``ok`` (< 400), ``error`` (>= 400 or an error class), or an exact code."""
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None


class ConsoleData:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer_engine(engine)
        self.rollups = Rollups(engine, self._writer)

    # -------------------------------------------------------------- sessions

    async def create_session(self, *, key_id: str, team_id: str | None, team_name: str | None,
                             is_master: bool, ttl: float) -> tuple[str, SessionRecord]:
        """A new session (always a fresh id: a session id is never reused or adopted)."""
        sid = secrets.token_urlsafe(32)
        now = time.time()
        rec = SessionRecord(csrf=secrets.token_urlsafe(32), key_id=key_id, team_id=team_id,
                            team_name=team_name, is_master=is_master, created_at=now,
                            expires_at=now + ttl)
        async with self._writer.begin() as conn:
            await conn.execute(console_sessions.delete()
                               .where(console_sessions.c.expires_at < now))
            await conn.execute(console_sessions.insert().values(
                id_hash=token_hash(sid), csrf=rec.csrf, key_id=key_id, team_id=team_id,
                team_name=team_name, is_master=is_master, created_at=now,
                expires_at=rec.expires_at))
        return sid, rec

    async def get_session(self, sid: str) -> SessionRecord | None:
        """The live session with this id (None when unknown or expired)."""
        if not sid or len(sid) > 200:
            return None
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(console_sessions).where(
                console_sessions.c.id_hash == token_hash(sid)))).mappings().first()
        if row is None or float(row["expires_at"]) <= time.time():
            return None
        return SessionRecord(csrf=row["csrf"], key_id=row["key_id"], team_id=row["team_id"],
                             team_name=row["team_name"], is_master=bool(row["is_master"]),
                             created_at=float(row["created_at"]),
                             expires_at=float(row["expires_at"]))

    async def end_session(self, sid: str) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(console_sessions.delete()
                               .where(console_sessions.c.id_hash == token_hash(sid)))

    # --------------------------------------------------------- widget tokens

    async def mint_widget_token(self, *, key_id: str, team_id: str | None, origin: str,
                                model: str, user_id: str, groups: Sequence[str],
                                ttl: float) -> tuple[str, WidgetToken]:
        token = WIDGET_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        rec = WidgetToken(key_id=key_id, team_id=team_id, origin=origin, model=model,
                          user_id=user_id, groups=tuple(groups), created_at=now,
                          expires_at=now + ttl)
        async with self._writer.begin() as conn:
            # expired tokens are kept a day for support questions, then dropped
            await conn.execute(widget_tokens.delete()
                               .where(widget_tokens.c.expires_at < now - 86400))
            await conn.execute(widget_tokens.insert().values(
                token_hash=token_hash(token), key_id=key_id, team_id=team_id, origin=origin,
                model=model, user_id=user_id, groups=orjson.dumps(list(groups)).decode(),
                created_at=now, expires_at=rec.expires_at))
        return token, rec

    async def widget_token(self, token: str) -> WidgetToken | None:
        """The token's record, expired or not (the caller checks ``expires_at``)."""
        if not token.startswith(WIDGET_PREFIX) or len(token) > 200:
            return None
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(widget_tokens).where(
                widget_tokens.c.token_hash == token_hash(token)))).mappings().first()
        if row is None:
            return None
        return WidgetToken(key_id=row["key_id"], team_id=row["team_id"], origin=row["origin"],
                           model=row["model"], user_id=row["user_id"],
                           groups=tuple(orjson.loads(row["groups"])),
                           created_at=float(row["created_at"]),
                           expires_at=float(row["expires_at"]))

    # ------------------------------------------------------------ request log

    async def request_log(self, flt: LogFilter, limit: int = 50) -> list[tuple[int, UsageRow]]:
        """(row id, row) newest first; ``before_id`` of the next page is the last row id."""
        u = usage_records
        where: list[sa.ColumnElement[bool]] = [u.c.kind.not_in(NOT_CALLS)]
        if flt.team_id is not None:
            where.append(u.c.team_id == flt.team_id)
        if flt.key_id is not None:
            where.append(u.c.key_id == flt.key_id)
        if flt.model is not None:
            where.append(u.c.model == flt.model)
        if flt.deployment is not None:
            where.append(u.c.deployment == flt.deployment)
        if flt.status == "ok":
            where.append(sa.and_(u.c.status < 400, u.c.error_class.is_(None)))
        elif flt.status == "error":
            where.append(sa.or_(u.c.status >= 400, u.c.error_class.is_not(None)))
        elif flt.status is not None:
            where.append(u.c.status == int(flt.status))
        if flt.since is not None:
            where.append(u.c.created_at >= to_datetime(flt.since))
        if flt.until is not None:
            where.append(u.c.created_at < to_datetime(flt.until))
        if flt.before_id is not None:
            where.append(u.c.id < flt.before_id)
        cols = [c for c in u.c if c.name not in ("request_body", "response_body")]
        stmt = sa.select(*cols).where(*where).order_by(u.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [(int(m["id"]), _usage_row(dict(m))) for m in rows]

    async def request(self, request_id: str) -> UsageRow | None:
        if not request_id or len(request_id) > 200:
            return None
        stmt = sa.select(usage_records).where(usage_records.c.request_id == request_id,
                                              usage_records.c.kind.not_in(NOT_CALLS))
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return _usage_row(dict(row)) if row is not None else None


def _usage_row(m: dict[str, Any]) -> UsageRow:
    fields = {f.name for f in dataclasses.fields(UsageRow)}
    data = {k: v for k, v in m.items() if k in fields}
    for name in fields - set(data):
        data[name] = None
    return UsageRow(**data)
