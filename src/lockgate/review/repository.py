"""The review queue's rows (``review_items``) and its audit links, on SQLite or PostgreSQL.

Exclusive claims without a queue server:

- every state change is one write transaction that first reads the row with
  ``SELECT ... FOR UPDATE`` on PostgreSQL (row lock; ``claim_next`` uses
  ``FOR UPDATE SKIP LOCKED`` so concurrent reviewers take different items) and under
  SQLite's ``BEGIN IMMEDIATE`` (the database write lock) there, then checks the state and
  the claim in Python and updates; so two reviewers never hold or decide the same item;
- a claim is ``claimed_by`` + ``claim_until``: it lapses without any sweeper.

Every claim, release, escalation, decision, SLA breach and creation adds a row to the
tamper-evident audit chain (``usage_records`` with ``kind = 'review'``,
``source = 'review'``, ``request_id = <review id>:<event>:<n>``, the actor as
``key_id`` and what changed as ``request_body``) in the same transaction as the change;
so does the ``review_webhooks`` outbox row of a creation, escalation, decision or SLA
breach when webhooks are configured (:mod:`lockgate.review.webhook_outbox`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.review.model import (
    DECIDED,
    NewReview,
    ReviewConflict,
    ReviewItem,
    ReviewNotFound,
)
from lockgate.review.webhook_outbox import add_webhook
from lockgate.store import Store
from lockgate.store.chain import insert_chained
from lockgate.store.records import REVIEW_KIND, usage_row
from lockgate.store.tables import review_items

__all__ = ["AUDIT_KIND", "ReviewRepository", "fingerprint"]


AUDIT_KIND = REVIEW_KIND
r = review_items
_WORD = re.compile(r"[a-z0-9]+")
_FINGERPRINT_CHARS = 4000
SIMILAR_SCAN = 300
"""Decided items of the same task compared for "similar past decisions" (newest first)."""


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def fingerprint(value: Any) -> str:
    """The words of an input, for nearest-input lookups (lower case, de-duplicated)."""
    text = value if isinstance(value, str) else (_dumps(value) or "")
    words = dict.fromkeys(_WORD.findall(text[: _FINGERPRINT_CHARS * 4].lower()))
    return " ".join(words)[:_FINGERPRINT_CHARS]


def _item(row: RowMapping) -> ReviewItem:
    details = _loads(row["details"]) or {}
    return ReviewItem(
        id=row["id"],
        task=row["task"],
        source=row["source"],
        state=row["state"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        input=_loads(row["input"]),
        output=_loads(row["output"]),
        reasons=list(details.get("reasons", [])),
        team=row["team"],
        source_ref=row["source_ref"],
        request_id=row["request_id"],
        key_id=row["key_id"],
        team_id=row["team_id"],
        model=row["model"],
        deployment=row["deployment"],
        confidence=row["confidence"],
        alternatives=list(details.get("alternatives", [])),
        rationale=details.get("rationale"),
        evidence=list(details.get("evidence", [])),
        impact=details.get("impact"),
        contract=details.get("contract"),
        response=details.get("response"),
        reviewers=list(details.get("reviewers", [])),
        sla_due_at=row["sla_due_at"],
        sla_breached=bool(row["sla_breached"]),
        escalate_to=row["escalate_to"],
        escalations=row["escalations"],
        claimed_by=row["claimed_by"],
        claim_until=row["claim_until"],
        decision=_loads(row["decision"]),
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        resumed_at=row["resumed_at"],
        version=row["version"],
    )


def _audit(
    item_id: str, event: str, version: int, who: str | None, task: str, team_id: str | None,
    what: dict[str, Any], now: float,
) -> dict[str, Any]:
    return usage_row({
        "request_id": f"{item_id}:{event}:{version}",
        "created_at": now,
        "key_id": who,
        "team_id": team_id,
        "model": task,
        "deployment": None,
        "kind": AUDIT_KIND,
        "source": AUDIT_KIND,
        "status": 200,
        "error_class": event,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost": 0.0,
        "latency_ms": 0.0,
        "overhead_ms": 0.0,
        "stream": False,
        "cached": False,
        "request_body": _dumps({"review_id": item_id, "event": event, "by": who, **what}),
        "response_body": None,
    })


class ReviewRepository:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.webhook_events: frozenset[str] = frozenset()
        """Changes (``created``, ``escalated``, ``decided``, ``sla_breached``) that write a
        ``review.<change>`` webhook row in their own transaction (set when webhooks are
        configured; see :mod:`lockgate.review.webhook_outbox`)."""

    @property
    def _pg(self) -> bool:
        return self.store.backend == "postgresql"

    async def _locked(self, conn: AsyncConnection, item_id: str) -> ReviewItem:
        stmt = sa.select(r).where(r.c.id == item_id)
        if self._pg:
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).mappings().first()
        if row is None:
            raise ReviewNotFound(f"No review item '{item_id}'.", param="id")
        return _item(row)

    async def _update(
        self, conn: AsyncConnection, item: ReviewItem, now: float, event: str, who: str | None,
        what: dict[str, Any], **values: Any,
    ) -> ReviewItem:
        version = item.version + 1
        await conn.execute(
            r.update().where(r.c.id == item.id).values(updated_at=now, version=version, **values)
        )
        await insert_chained(
            conn, [_audit(item.id, event, version, who, item.task, item.team_id, what, now)]
        )
        row = (await conn.execute(sa.select(r).where(r.c.id == item.id))).mappings().one()
        after = _item(row)
        if event in self.webhook_events:
            await add_webhook(conn, f"review.{event}", after, now)
        return after

    # ------------------------------------------------------------------ writes

    async def insert(self, new: NewReview, now: float | None = None) -> ReviewItem:
        now = time.time() if now is None else now
        details = {
            "reasons": new.reasons,
            "alternatives": new.alternatives,
            "rationale": new.rationale,
            "evidence": new.evidence,
            "impact": new.impact,
            "contract": new.contract,
            "response": new.response,
            "reviewers": new.reviewers,
        }
        decided = new.state != "pending"
        values = {
            "id": new.id, "task": new.task, "source": new.source, "source_ref": new.source_ref,
            "state": new.state, "created_at": now, "updated_at": now, "team": new.team,
            "request_id": new.request_id, "key_id": new.key_id, "team_id": new.team_id,
            "model": new.model, "deployment": new.deployment, "confidence": new.confidence,
            "input": _dumps(new.input), "output": _dumps(new.output), "details": _dumps(details),
            "fingerprint": fingerprint(new.input), "sla_due_at": now + new.sla_s,
            "sla_breached": False, "escalate_to": new.escalate_to, "escalations": 0,
            "claimed_by": None, "claim_until": None,
            "decision": _dumps({"action": "approve", "automatic": True}) if decided else None,
            "decided_by": "policy" if decided else None, "decided_at": now if decided else None,
            "resumed_at": now if decided else None, "version": 1,
        }
        async with self.store.transaction(write=True) as conn:
            await conn.execute(r.insert().values(**values))
            if not decided:  # auto-approvals are counted in the call's own audit row
                await insert_chained(conn, [_audit(
                    new.id, "created", 1, new.key_id, new.task, new.team_id,
                    {"reasons": new.reasons, "team": new.team, "source": new.source,
                     "source_ref": new.source_ref, "request_id": new.request_id}, now,
                )])
            row = (await conn.execute(sa.select(r).where(r.c.id == new.id))).mappings().one()
            item = _item(row)
            if not decided and "created" in self.webhook_events:
                await add_webhook(conn, "review.created", item, now)
        return item

    async def insert_many_auto(self, rows: Sequence[NewReview], now: float | None = None) -> int:
        """Record calls a policy auto-approved (batched, off the hot path)."""
        if not rows:
            return 0
        now = time.time() if now is None else now
        values = [{
            "id": n.id, "task": n.task, "source": n.source, "source_ref": n.source_ref,
            "state": "auto_approved", "created_at": now, "updated_at": now, "team": n.team,
            "request_id": n.request_id, "key_id": n.key_id, "team_id": n.team_id,
            "model": n.model, "deployment": n.deployment, "confidence": n.confidence,
            "input": None, "output": None,
            "details": _dumps({"reasons": n.reasons}), "fingerprint": None,
            "sla_due_at": now, "sla_breached": False, "escalate_to": None, "escalations": 0,
            "claimed_by": None, "claim_until": None,
            "decision": _dumps({"action": "approve", "automatic": True}),
            "decided_by": "policy", "decided_at": now, "resumed_at": now, "version": 1,
        } for n in rows]
        async with self.store.transaction(write=True) as conn:
            await conn.execute(r.insert(), values)
        return len(values)

    async def claim(
        self, item_id: str, who: str, ttl: float, now: float | None = None
    ) -> ReviewItem:
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            item = await self._locked(conn, item_id)
            self._check_open(item, who, now)
            return await self._update(
                conn, item, now, "claimed", who, {"claim_until": now + ttl},
                claimed_by=who, claim_until=now + ttl,
            )

    async def claim_next(
        self, teams: Iterable[str | None] | None, who: str, ttl: float, *,
        task: str | None = None, now: float | None = None,
    ) -> ReviewItem | None:
        """Claim the pending item with the nearest SLA among ``teams`` (None: any team)."""
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            stmt = sa.select(r).where(
                r.c.state == "pending",
                sa.or_(r.c.claimed_by.is_(None), r.c.claim_until < now),
            )
            if teams is not None:
                names = [t for t in teams if t is not None]
                stmt = stmt.where(r.c.team.in_(names) if names else sa.false())
            if task is not None:
                stmt = stmt.where(r.c.task == task)
            stmt = stmt.order_by(r.c.sla_due_at, r.c.id).limit(1)
            if self._pg:
                stmt = stmt.with_for_update(skip_locked=True)
            row = (await conn.execute(stmt)).mappings().first()
            if row is None:
                return None
            item = _item(row)
            return await self._update(
                conn, item, now, "claimed", who, {"claim_until": now + ttl},
                claimed_by=who, claim_until=now + ttl,
            )

    async def release(self, item_id: str, who: str, now: float | None = None) -> ReviewItem:
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            item = await self._locked(conn, item_id)
            self._check_open(item, who, now)
            return await self._update(
                conn, item, now, "released", who, {}, claimed_by=None, claim_until=None
            )

    async def decide(
        self, item_id: str, who: str, state: str, decision: dict[str, Any],
        now: float | None = None,
    ) -> ReviewItem:
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            item = await self._locked(conn, item_id)
            self._check_open(item, who, now)
            what = {"state": state, "decision": decision, "recommendation": item.output}
            return await self._update(
                conn, item, now, "decided", who, what,
                state=state, decision=_dumps(decision), decided_by=who, decided_at=now,
                claimed_by=None, claim_until=None,
            )

    async def escalate(
        self, item_id: str, who: str, team: str, reason: str | None, now: float | None = None,
        *, check_claim: bool = True, breach: bool = False,
    ) -> ReviewItem:
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            item = await self._locked(conn, item_id)
            if check_claim:
                self._check_open(item, who, now)
            elif item.state != "pending":
                raise ReviewConflict(f"Review item '{item_id}' is already decided ({item.state}).")
            event = "sla_breached" if breach else "escalated"
            values: dict[str, Any] = {
                "team": team, "escalations": item.escalations + 1,
                "claimed_by": None, "claim_until": None,
            }
            if breach:
                values["sla_breached"] = True
            return await self._update(
                conn, item, now, event, who,
                {"from_team": item.team, "to_team": team, "reason": reason}, **values,
            )

    async def mark_breached(self, item_id: str, now: float | None = None) -> ReviewItem | None:
        """Mark an overdue item breached (once; None when another process did it first),
        moving it to its ``escalate_to`` team when it has one."""
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            item = await self._locked(conn, item_id)
            if item.state != "pending" or item.sla_breached or item.sla_due_at > now:
                return None
            values: dict[str, Any] = {"sla_breached": True}
            esc = item.escalate_to
            target = esc if esc and esc != item.team else None
            if target is not None:
                values.update(team=target, escalations=item.escalations + 1,
                              claimed_by=None, claim_until=None)
            return await self._update(
                conn, item, now, "sla_breached", "sla", {"from_team": item.team, "to_team": target},
                **values,
            )

    async def lease_resume(
        self, item_id: str, owner: str, ttl: float, now: float | None = None
    ) -> bool:
        """Take the right to finish a decided item's waiting work for ``ttl`` seconds (the
        claim columns, free once decided, hold the lease): False when it is finished already
        or another process holds a live lease. A holder that dies lets the lease lapse."""
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(
                r.update()
                .where(r.c.id == item_id, r.c.resumed_at.is_(None),
                       r.c.state.in_(tuple(DECIDED)),
                       sa.or_(r.c.claimed_by.is_(None), r.c.claim_until < now))
                .values(claimed_by=owner, claim_until=now + ttl)
            )
            return bool(res.rowcount)

    async def drop_resume_lease(self, item_id: str, owner: str) -> None:
        """Give a resume lease back after a failed attempt (the next sweep retries)."""
        async with self.store.transaction(write=True) as conn:
            await conn.execute(
                r.update().where(r.c.id == item_id, r.c.claimed_by == owner,
                                 r.c.resumed_at.is_(None))
                .values(claimed_by=None, claim_until=None)
            )

    async def mark_resumed(self, item_id: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(
                r.update().where(r.c.id == item_id, r.c.resumed_at.is_(None))
                .values(resumed_at=now, claimed_by=None, claim_until=None)
            )
            return bool(res.rowcount)

    @staticmethod
    def _check_open(item: ReviewItem, who: str, now: float) -> None:
        if item.state in DECIDED or item.state == "auto_approved":
            raise ReviewConflict(f"Review item '{item.id}' is already decided ({item.state}).")
        holder = item.claimed_by
        if holder is not None and holder != who and (item.claim_until or 0) > now:
            raise ReviewConflict(
                f"Review item '{item.id}' is claimed by {holder} until "
                f"{int(item.claim_until or 0)}."
            )

    # ------------------------------------------------------------------ reads

    async def get(self, item_id: str) -> ReviewItem:
        async with self.store.transaction(write=False) as conn:
            row = (await conn.execute(sa.select(r).where(r.c.id == item_id))).mappings().first()
        if row is None:
            raise ReviewNotFound(f"No review item '{item_id}'.", param="id")
        return _item(row)

    async def find(
        self, *, state: str | None = "pending", teams: Iterable[str | None] | None = None,
        task: str | None = None, source: str | None = None, key_id: str | None = None,
        limit: int = 50, after: tuple[float, str] | None = None,
    ) -> list[ReviewItem]:
        """Newest first, ``after`` = (created_at, id) of the last item of the previous page."""
        stmt = sa.select(r)
        if state is not None:
            stmt = stmt.where(r.c.state == state)
        if teams is not None:
            names = [t for t in teams if t is not None]
            stmt = stmt.where(r.c.team.in_(names) if names else sa.false())
        if task is not None:
            stmt = stmt.where(r.c.task == task)
        if source is not None:
            stmt = stmt.where(r.c.source == source)
        if key_id is not None:
            stmt = stmt.where(r.c.key_id == key_id)
        if after is not None:
            ts, last = after
            stmt = stmt.where(sa.tuple_(r.c.created_at, r.c.id) < sa.tuple_(ts, last))
        stmt = stmt.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(limit)
        async with self.store.transaction(write=False) as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_item(row) for row in rows]

    async def overdue(self, now: float, limit: int = 100) -> list[str]:
        stmt = (
            sa.select(r.c.id)
            .where(r.c.state == "pending", r.c.sla_due_at < now, r.c.sla_breached.is_(False))
            .order_by(r.c.sla_due_at).limit(limit)
        )
        async with self.store.transaction(write=False) as conn:
            return [row[0] for row in (await conn.execute(stmt)).all()]

    async def unresumed(self, sources: Sequence[str], limit: int = 100) -> list[ReviewItem]:
        """Decided items whose waiting job/row has not been finished yet."""
        stmt = (
            sa.select(r)
            .where(r.c.state.in_(tuple(DECIDED)), r.c.resumed_at.is_(None),
                   r.c.source.in_(tuple(sources)))
            .order_by(r.c.decided_at).limit(limit)
        )
        async with self.store.transaction(write=False) as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_item(row) for row in rows]

    async def similar(self, item: ReviewItem, limit: int = 3) -> list[dict[str, Any]]:
        """Decided items of the same task with the nearest inputs (word-set Jaccard over the
        newest :data:`SIMILAR_SCAN` decisions), with their decisions as outcomes."""
        mine = set((fingerprint(item.input)).split())
        stmt = (
            sa.select(r.c.id, r.c.fingerprint, r.c.state, r.c.decision, r.c.decided_at,
                      r.c.decided_by, r.c.output)
            .where(r.c.task == item.task, r.c.state.in_(tuple(DECIDED)), r.c.id != item.id)
            .order_by(r.c.decided_at.desc()).limit(SIMILAR_SCAN)
        )
        async with self.store.transaction(write=False) as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        scored: list[tuple[float, RowMapping]] = []
        for row in rows:
            theirs = set((row["fingerprint"] or "").split())
            union = mine | theirs
            score = len(mine & theirs) / len(union) if union else 0.0
            scored.append((score, row))
        scored.sort(key=lambda s: (-s[0], -(s[1]["decided_at"] or 0)))
        out = []
        for score, row in scored[:limit]:
            decision = _loads(row["decision"]) or {}
            out.append({
                "id": row["id"], "similarity": round(score, 3), "outcome": row["state"],
                "reason": decision.get("reason"), "decided_by": row["decided_by"],
                "decided_at": int(row["decided_at"] or 0),
                "recommendation": _loads(row["output"]),
            })
        return out

    async def counts(self) -> dict[str, int]:
        stmt = sa.select(r.c.state, sa.func.count()).group_by(r.c.state)
        async with self.store.transaction(write=False) as conn:
            return {row[0]: int(row[1]) for row in (await conn.execute(stmt)).all()}
