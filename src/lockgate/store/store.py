"""The Store: teams, virtual keys and usage rows on SQLite or PostgreSQL.

``store = await Store.open(url)`` builds the async engine for a plain config URL
(``sqlite:///...``, ``postgresql://...``), runs migrations once under a lock
(unless ``migrate=False``) and returns the store; ``await store.close()``
disposes the engine. Everything returned is a frozen dataclass or a plain dict.
Usage rows on the request path go through :class:`~lockgate.store.AuditWriter`,
not :meth:`Store.write_usage` directly.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.store.chain import YIELD_EVERY, RowsAlreadyStored, insert_chained, padded_parts
from lockgate.store.engine import create_engine, writer_engine
from lockgate.store.errors import (
    AlreadyExists,
    DatabaseUnavailable,
    InvalidInput,
    NotFoundError,
    StoreError,
)
from lockgate.store.migrate import migrate_engine
from lockgate.store.records import (
    ApiKey,
    Team,
    UsageRecordLike,
    UsageRow,
    admin_row,
    hash_key,
    usage_row,
)
from lockgate.store.tables import api_keys, facade_calls, shadow_results, teams
from lockgate.store.urls import safe_url
from lockgate.store.usage import recent_usage_rows, summarise_usage, to_datetime

__all__ = ["KEY_PREFIX", "UNSET", "Store"]

KEY_PREFIX: Final = "lg-"
_DISPLAY_PREFIX_LEN: Final = 10
_MAX_NAME_LEN: Final = 200


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


def _now() -> datetime:
    return datetime.now(UTC)


def _clean_name(value: str, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    name = value.strip()
    if not name and not allow_empty:
        raise InvalidInput(f"{what} must not be empty")
    if len(name) > _MAX_NAME_LEN:
        raise InvalidInput(f"{what} is longer than {_MAX_NAME_LEN} characters")
    if any(ord(ch) < 32 for ch in name):
        raise InvalidInput(f"{what} must not contain control characters")
    return name


def _clean_models(models: Iterable[str] | None) -> list[str] | None:
    if models is None:
        return None
    if isinstance(models, str):
        raise InvalidInput("allowed_models must be a list of model names, not one string")
    out: list[str] = []
    for model in models:
        if not isinstance(model, str) or not model.strip():
            raise InvalidInput("allowed_models must contain non-empty model names")
        if model.strip() not in out:
            out.append(model.strip())
    return out


def _team(row: RowMapping) -> Team:
    return Team(
        id=row["id"],
        name=row["name"],
        business_unit=row["business_unit"],
        settings=dict(row["settings"] or {}),
        created_at=row["created_at"],
    )


def _key(row: RowMapping) -> ApiKey:
    models = row["allowed_models"]
    return ApiKey(
        id=row["id"],
        team_id=row["team_id"],
        team_name=row["team_name"],
        name=row["name"],
        key_prefix=row["key_prefix"],
        allowed_models=tuple(models) if models is not None else None,
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.team_id,
    teams.c.name.label("team_name"),
    api_keys.c.name,
    api_keys.c.key_prefix,
    api_keys.c.allowed_models,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
)
_KEY_SOURCE = api_keys.join(teams, teams.c.id == api_keys.c.team_id)


class Store:
    """Teams, keys and usage over one async engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer_engine(engine)
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, **engine_kwargs: Any) -> Store:
        """Connect to ``url`` (plain ``sqlite:///`` / ``postgresql://``) and migrate to head.

        Raises UnsupportedDatabase for a bad URL and DatabaseUnavailable when the
        database cannot be reached. No connection is made when ``migrate`` is False.
        """
        engine = create_engine(url, **engine_kwargs)
        store = cls(engine)
        if migrate:
            try:
                await migrate_engine(engine)
            except StoreError:
                await engine.dispose()
                raise
            except (sa_exc.SQLAlchemyError, OSError) as exc:
                await engine.dispose()
                raise DatabaseUnavailable(
                    f"cannot migrate database {safe_url(url)}: {_one_line(exc)}"
                ) from exc
        return store

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._engine.dispose()

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    @property
    def url(self) -> str:
        """The async URL with the password hidden."""
        return safe_url(self._engine.url)

    async def ping(self) -> bool:
        """True when a trivial query succeeds (for readiness checks); never raises."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    def transaction(
        self, *, write: bool
    ) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """One transaction for a feature's own tables (``write``: ``BEGIN IMMEDIATE`` on
        SQLite, so writers serialise). Connection errors become DatabaseUnavailable (503)."""
        return self._tx(write=write)

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        engine = self._writer if write else self._engine
        try:
            async with engine.begin() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, OSError) as exc:
            raise DatabaseUnavailable(f"database error: {_one_line(exc)}") from exc

    # ---------------------------------------------------------------- teams

    async def create_team(
        self,
        name: str,
        business_unit: str | None = None,
        *,
        settings: Mapping[str, Any] | None = None,
    ) -> Team:
        """Create a team; AlreadyExists when the name is taken."""
        name = _clean_name(name, "team name")
        if business_unit is not None:
            business_unit = _clean_name(business_unit, "business_unit") or None
        team = Team(
            id="team_" + secrets.token_hex(8),
            name=name,
            business_unit=business_unit,
            settings=dict(settings or {}),
            created_at=_now(),
        )
        try:
            async with self._tx(write=True) as conn:
                await conn.execute(
                    teams.insert().values(
                        id=team.id,
                        name=team.name,
                        business_unit=team.business_unit,
                        settings=dict(team.settings),
                        created_at=team.created_at,
                    )
                )
        except sa_exc.IntegrityError:
            raise AlreadyExists(f"team '{name}' already exists") from None
        return team

    async def list_teams(self) -> list[Team]:
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(sa.select(teams).order_by(teams.c.name))).mappings()
            return [_team(row) for row in rows]

    async def get_team(self, id_or_name: str) -> Team | None:
        """The team with this id, else with this name; None when neither exists."""
        async with self._tx(write=False) as conn:
            return await self._find_team(conn, id_or_name)

    async def _find_team(self, conn: AsyncConnection, id_or_name: str) -> Team | None:
        stmt = sa.select(teams).where(sa.or_(teams.c.id == id_or_name, teams.c.name == id_or_name))
        rows = [_team(row) for row in (await conn.execute(stmt)).mappings()]
        for team in rows:
            if team.id == id_or_name:
                return team
        return rows[0] if rows else None

    async def _require_team(self, conn: AsyncConnection, id_or_name: str) -> Team:
        team = await self._find_team(conn, id_or_name)
        if team is None:
            raise NotFoundError(f"unknown team '{id_or_name}'")
        return team

    async def update_team(
        self,
        team: str,
        *,
        business_unit: str | _Unset | None = UNSET,
        settings: Mapping[str, Any] | _Unset = UNSET,
    ) -> Team:
        """Change a team's business_unit and/or replace its settings (budgets, policies)."""
        values: dict[str, Any] = {}
        if not isinstance(business_unit, _Unset):
            values["business_unit"] = (
                _clean_name(business_unit, "business_unit") or None
                if business_unit is not None
                else None
            )
        if not isinstance(settings, _Unset):
            if not isinstance(settings, Mapping):
                raise InvalidInput("team settings must be a mapping")
            values["settings"] = dict(settings)
        async with self._tx(write=True) as conn:
            found = await self._require_team(conn, team)
            if values:
                await conn.execute(teams.update().where(teams.c.id == found.id).values(**values))
            row = (await conn.execute(sa.select(teams).where(teams.c.id == found.id))).mappings()
            return _team(row.one())

    # ----------------------------------------------------------------- keys

    async def create_key(
        self, team: str, name: str = "", allowed_models: Sequence[str] | None = None
    ) -> tuple[str, ApiKey]:
        """Create a virtual key for a team (id or name).

        Returns ``(plaintext, key)``; the plaintext (``lg-`` + 43 url-safe chars)
        is shown once and only its sha256 is stored. NotFoundError for an
        unknown team.
        """
        name = _clean_name(name, "key name", allow_empty=True)
        models = _clean_models(allowed_models)
        for _attempt in range(3):
            plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
            key_id = "key_" + secrets.token_hex(6)
            now = _now()
            try:
                async with self._tx(write=True) as conn:
                    found = await self._require_team(conn, team)
                    await conn.execute(
                        api_keys.insert().values(
                            id=key_id,
                            team_id=found.id,
                            name=name,
                            key_hash=hash_key(plaintext),
                            key_prefix=plaintext[:_DISPLAY_PREFIX_LEN],
                            allowed_models=models,
                            created_at=now,
                        )
                    )
            except sa_exc.IntegrityError:
                continue  # a random id or hash collided (or the team vanished): try again
            key = ApiKey(
                id=key_id,
                team_id=found.id,
                team_name=found.name,
                name=name,
                key_prefix=plaintext[:_DISPLAY_PREFIX_LEN],
                allowed_models=tuple(models) if models is not None else None,
                created_at=now,
                revoked_at=None,
                last_used_at=None,
            )
            return plaintext, key
        raise StoreError("could not create a key (repeated id collision); try again")

    async def list_keys(
        self, team: str | None = None, *, include_revoked: bool = True
    ) -> list[ApiKey]:
        """Keys, oldest first, of one team (id or name) or all; NotFoundError if unknown."""
        async with self._tx(write=False) as conn:
            stmt = sa.select(*_KEY_COLUMNS).select_from(_KEY_SOURCE)
            if team is not None:
                found = await self._require_team(conn, team)
                stmt = stmt.where(api_keys.c.team_id == found.id)
            if not include_revoked:
                stmt = stmt.where(api_keys.c.revoked_at.is_(None))
            stmt = stmt.order_by(api_keys.c.created_at, api_keys.c.id)
            return [_key(row) for row in (await conn.execute(stmt)).mappings()]

    async def get_key(self, key_id: str) -> ApiKey | None:
        async with self._tx(write=False) as conn:
            stmt = sa.select(*_KEY_COLUMNS).select_from(_KEY_SOURCE).where(api_keys.c.id == key_id)
            row = (await conn.execute(stmt)).mappings().first()
            return _key(row) if row is not None else None

    async def find_key(self, plaintext: str) -> ApiKey | None:
        """The key whose hash matches, revoked or not (check ``revoked_at``); None if unknown."""
        async with self._tx(write=False) as conn:
            stmt = (
                sa.select(*_KEY_COLUMNS)
                .select_from(_KEY_SOURCE)
                .where(api_keys.c.key_hash == hash_key(plaintext))
            )
            row = (await conn.execute(stmt)).mappings().first()
            return _key(row) if row is not None else None

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke a key now. False when no active key has this id (unknown or already revoked)."""
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
            return bool(result.rowcount == 1)

    async def touch_keys(self, key_ids: Iterable[str], at: datetime | None = None) -> int:
        """Set ``last_used_at`` for many keys in one transaction (batch it, not per request).

        The ids go in parts padded to a power of two, so the statement shapes stay few (see
        :func:`~lockgate.store.chain.padded_parts`)."""
        ids = sorted(set(key_ids))
        if not ids:
            return 0
        touched, when = 0, at or _now()
        async with self._tx(write=True) as conn:
            for part in padded_parts(ids):
                result = await conn.execute(
                    api_keys.update().where(api_keys.c.id.in_(part)).values(last_used_at=when)
                )
                touched += int(result.rowcount)
        return touched

    # ---------------------------------------------------------------- usage

    async def write_usage(self, records: Sequence[UsageRecordLike]) -> int:
        """Insert records in one transaction; duplicates (same request_id) are skipped.

        Returns the number of new rows. InvalidInput if a record is malformed
        (nothing written then). The request path uses AuditWriter instead.
        """
        try:
            rows = [usage_row(r) for r in records]
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"malformed usage record: {exc}") from None
        return await self.write_usage_rows(rows)

    async def write_usage_rows(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert already-converted rows (see ``records.usage_row``) in one transaction.

        The rows extend the tamper-evident hash chain (:mod:`lockgate.store.chain`):
        the transaction locks the chain head, so concurrent writers (tasks or
        processes) serialise per batch. Raw SQLAlchemy errors propagate (the
        AuditWriter classifies them).
        """
        return (await self.write_rows(rows))[0]

    async def write_rows(
        self,
        usage_rows: Sequence[Mapping[str, Any]],
        shadow_rows: Sequence[Mapping[str, Any]] = (),
        facade_rows: Sequence[Mapping[str, Any]] = (),
        *,
        yield_every: int = YIELD_EVERY,
    ) -> tuple[int, int]:
        """Insert usage rows (chained, as :meth:`write_usage_rows`), ``shadow_results``
        rows (``records.shadow_row``) and ``facade_calls`` rows
        (``records.facade_call_row``) in one transaction: the AuditWriter's batch.
        ``yield_every``: rows hashed between returns to the event loop.

        Returns (new usage rows, shadow rows). Raw SQLAlchemy errors propagate.
        """
        if not usage_rows and not shadow_rows and not facade_rows:
            return 0, 0
        try:
            return await self._write_rows(usage_rows, shadow_rows, facade_rows,
                                          assume_new=True, yield_every=yield_every)
        except RowsAlreadyStored:  # a retried batch or a replayed spill: leave those out
            return await self._write_rows(usage_rows, shadow_rows, facade_rows,
                                          assume_new=False, yield_every=yield_every)

    async def _write_rows(
        self,
        usage_rows: Sequence[Mapping[str, Any]],
        shadow_rows: Sequence[Mapping[str, Any]],
        facade_rows: Sequence[Mapping[str, Any]],
        *,
        assume_new: bool,
        yield_every: int,
    ) -> tuple[int, int]:
        async with self._writer.begin() as conn:
            written = (
                await insert_chained(conn, usage_rows, assume_new=assume_new,
                                     yield_every=yield_every)
                if usage_rows else 0
            )
            if shadow_rows:
                await conn.execute(
                    shadow_results.insert(),
                    [{**r, "created_at": to_datetime(r["created_at"])} for r in shadow_rows],
                )
            if facade_rows:
                await conn.execute(facade_calls.insert(), list(facade_rows))
        return written, len(shadow_rows)

    async def _team_filter(self, conn: AsyncConnection, team: str | None) -> str | None:
        if team is None:
            return None
        return (await self._require_team(conn, team)).id

    async def usage_by_business_unit(
        self, team: str | None = None, since: datetime | float | None = None
    ) -> list[dict[str, Any]]:
        """Usage totals per team's ``business_unit`` (teams without one: ``null``).

        Each dict: business_unit, teams, requests, prompt_tokens, completion_tokens,
        cost, errors; sorted by unit, ``null`` last. ``team``/``since`` as in
        :meth:`usage_summary`.
        """
        rows = await self.usage_summary(team=team, since=since, group_by=("team",))
        units = {t.id: t.business_unit for t in await self.list_teams()}
        out: dict[str | None, dict[str, Any]] = {}
        for row in rows:
            bu = units.get(row.get("team_id") or "")
            agg = out.setdefault(bu, {"business_unit": bu, "teams": 0, "requests": 0,
                                      "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0,
                                      "errors": 0, "shadow_requests": 0, "shadow_cost": 0.0})
            agg["teams"] += 1
            for name in ("requests", "prompt_tokens", "completion_tokens", "cost", "errors",
                         "shadow_requests", "shadow_cost"):
                agg[name] += row[name]
        return sorted(out.values(), key=lambda r: (r["business_unit"] is None,
                                                    r["business_unit"] or ""))

    async def usage_summary(
        self,
        team: str | None = None,
        since: datetime | float | None = None,
        group_by: Sequence[str] = ("team", "key", "model"),
        *,
        until: datetime | float | None = None,
        key_id: str | None = None,
        model: str | None = None,
    ) -> list[dict[str, Any]]:
        """Totals per group over ``[since, until)``.

        ``group_by`` items: team, key, model, deployment, kind, source, status.
        Each dict holds the group columns (``team_id`` + ``team_name`` for team,
        ``key_id`` + ``key_name`` for key, else the name itself) and requests,
        prompt_tokens, completion_tokens, cost, errors (status >= 400 or an
        error_class), avg_latency_ms over the caller's own calls, and
        shadow_requests, shadow_cost: shadow calls, counted apart (never billed).
        ``team`` is an id or name (NotFoundError if unknown); ``since``/``until``
        are datetimes (naive = UTC) or epoch seconds.
        """
        async with self._tx(write=False) as conn:
            team_id = await self._team_filter(conn, team)
            return await summarise_usage(
                conn,
                group_by=group_by,
                team_id=team_id,
                key_id=key_id,
                model=model,
                since=since,
                until=until,
            )

    async def recent_usage(
        self,
        limit: int = 50,
        *,
        team: str | None = None,
        key_id: str | None = None,
        model: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        errors_only: bool = False,
        kind: str | None = None,
    ) -> list[UsageRow]:
        """The newest usage rows first (``UsageRow.as_dict()`` for JSON); administrators'
        actions only with ``kind='admin'`` (see :meth:`record_admin_action`)."""
        async with self._tx(write=False) as conn:
            team_id = await self._team_filter(conn, team)
            return await recent_usage_rows(
                conn,
                limit=limit,
                team_id=team_id,
                key_id=key_id,
                model=model,
                since=since,
                until=until,
                errors_only=errors_only,
                kind=kind,
            )

    async def record_admin_action(
        self,
        action: str,
        *,
        actor: str | None,
        target: str | None = None,
        team_id: str | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> str:
        """Append an administrator's action to the audit chain now (its own transaction,
        not the batched writer: admin actions are rare and must not wait or be lost).
        Returns the row's request id. See :func:`lockgate.store.records.admin_row`."""
        row = admin_row(action, actor=actor, target=target, team_id=team_id, changes=changes)
        async with self._tx(write=True) as conn:
            await insert_chained(conn, [row])
        return str(row["request_id"])


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
