"""Agent runs in the store (``agent_runs``, ``agent_steps``), on SQLite or PostgreSQL.

A run row holds what a paused run needs to go on in any process: the conversation
(``messages``), the tool calls still to do (``pending``), the counters the bounds use.
Each save is one write transaction: the new steps and the run row together, the row
updated only when its ``version`` is the one read (:class:`RunConflict` otherwise).
:meth:`RunStore.take_paused` is the compare-and-set that lets exactly one process
resume a run after a review decision.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from lockgate.agents.model import CHILD_PREFIX, FINAL_STATES, Run, RunNotFound, Step
from lockgate.store import Store
from lockgate.store.tables import agent_defs, agent_runs, agent_steps, agent_tool_pins

__all__ = ["DefinitionStore", "RunConflict", "RunStore"]

R = agent_runs
S = agent_steps


class RunConflict(Exception):
    """The run row changed since it was read (another process moved it on)."""


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _run(row: RowMapping) -> Run:
    msgs = _loads(row["messages"]) or {}
    return Run(
        id=row["id"], agent=row["agent"], state=row["state"], root_id=row["root_id"],
        depth=row["depth"], parent_id=row["parent_id"], created_at=row["created_at"],
        updated_at=row["updated_at"], key_id=row["key_id"], team_id=row["team_id"],
        principal=_loads(row["principal"]), acting_for=_loads(row["acting_for"]),
        request_id=row["request_id"], input=_loads(row["input"]),
        messages=msgs.get("messages", []), turns=int(msgs.get("turns", 0)),
        pending=_loads(row["pending"]) or [], review_id=row["review_id"],
        output=_loads(row["output"]), error=row["error"], steps=row["steps"],
        cost=row["cost"], active_s=row["active_s"], delegations=row["delegations"],
        version=row["version"],
    )


def _step(row: RowMapping) -> Step:
    return Step(seq=row["seq"], kind=row["kind"], status=row["status"], name=row["name"],
                arguments=_loads(row["arguments"]), result=_loads(row["result"]),
                duration_ms=row["duration_ms"], cost=row["cost"],
                detail=_loads(row["detail"]) or {}, created_at=row["created_at"])


def _values(run: Run) -> dict[str, Any]:
    return {
        "state": run.state, "updated_at": run.updated_at,
        "messages": _dumps({"messages": run.messages, "turns": run.turns}),
        "pending": _dumps(run.pending), "review_id": run.review_id,
        "output": _dumps(run.output), "error": run.error, "steps": run.steps,
        "cost": run.cost, "active_s": run.active_s, "delegations": run.delegations,
    }


def _step_values(run_id: str, s: Step) -> dict[str, Any]:
    return {"run_id": run_id, "seq": s.seq, "created_at": s.created_at, "kind": s.kind,
            "name": s.name, "status": s.status, "arguments": _dumps(s.arguments),
            "result": _dumps(s.result), "duration_ms": s.duration_ms, "cost": s.cost,
            "detail": _dumps(s.detail) if s.detail else None}


class RunStore:
    """Runs of every process; ``owner`` names this process on the leases it holds.

    A ``running`` run carries a lease (``lease_owner``, ``lease_until``): set by every save,
    extended by :meth:`heartbeat` while this process steps it. A run whose lease ran out
    lost its process; :meth:`claim` lets exactly one other process take it over."""

    def __init__(self, store: Store, *, owner: str | None = None, lease_s: float = 30.0
                 ) -> None:
        self.store = store
        self.owner = owner or "proc-" + uuid.uuid4().hex[:12]
        self.lease_s = lease_s

    def _lease(self, run: Run, now: float) -> dict[str, Any]:
        if run.state == "running":
            return {"lease_owner": self.owner, "lease_until": now + self.lease_s}
        return {"lease_owner": None, "lease_until": None}

    async def create(self, run: Run) -> Run:
        now = time.time()
        run.created_at = run.updated_at = now
        values = {
            "id": run.id, "agent": run.agent, "parent_id": run.parent_id,
            "root_id": run.root_id, "depth": run.depth, "created_at": now,
            "key_id": run.key_id, "team_id": run.team_id, "principal": _dumps(run.principal),
            "acting_for": _dumps(run.acting_for), "request_id": run.request_id,
            "input": _dumps(run.input), "version": run.version, **_values(run),
            **self._lease(run, now),
        }
        async with self.store.transaction(write=True) as conn:
            await conn.execute(R.insert().values(**values))
        return run

    async def save(self, run: Run, steps: Sequence[Step] = ()) -> Run:
        """Write ``steps`` and the run row (version-checked) in one transaction."""
        run.updated_at = time.time()
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(
                R.update().where(R.c.id == run.id, R.c.version == run.version)
                .values(version=run.version + 1, **_values(run),
                        **self._lease(run, run.updated_at)))
            if not res.rowcount:
                raise RunConflict(run.id)
            if steps:
                await conn.execute(S.insert(), [_step_values(run.id, s) for s in steps])
        run.version += 1
        return run

    async def take_paused(self, run_id: str, review_id: str) -> Run | None:
        """``awaiting_approval`` on ``review_id`` -> ``running``, once: the run for the one
        caller that moved it, None for everyone else."""
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(
                R.update().where(R.c.id == run_id, R.c.state == "awaiting_approval",
                                 R.c.review_id == review_id)
                .values(state="running", version=R.c.version + 1, updated_at=time.time(),
                        lease_owner=self.owner, lease_until=time.time() + self.lease_s))
            if not res.rowcount:
                return None
        return await self.get(run_id)

    async def heartbeat(self, run_ids: Sequence[str]) -> int:
        """Extend this process's leases on the runs it is stepping."""
        if not run_ids:
            return 0
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(
                R.update().where(R.c.id.in_(list(run_ids)), R.c.lease_owner == self.owner,
                                 R.c.state == "running")
                .values(lease_until=time.time() + self.lease_s))
            return int(res.rowcount or 0)

    async def expired(self, now: float | None = None, limit: int = 50) -> list[str]:
        """``running`` runs whose lease ran out (their process stopped)."""
        now = time.time() if now is None else now
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(R.c.id).where(R.c.state == "running", sa.or_(
                    R.c.lease_until < now,
                    sa.and_(R.c.lease_until.is_(None), R.c.updated_at < now - self.lease_s)))
                .order_by(R.c.depth.desc()).limit(limit))).all()
        return [r[0] for r in rows]

    async def claim(self, run_id: str, now: float | None = None) -> Run | None:
        """Take over a ``running`` run whose lease ran out: this process, once."""
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(
                R.update().where(R.c.id == run_id, R.c.state == "running", sa.or_(
                    R.c.lease_until < now,
                    sa.and_(R.c.lease_until.is_(None), R.c.updated_at < now - self.lease_s)))
                .values(lease_owner=self.owner, lease_until=now + self.lease_s,
                        version=R.c.version + 1))
            if not res.rowcount:
                return None
        return await self.get(run_id)

    async def parked_on_children(self, limit: int = 50) -> list[tuple[str, str]]:
        """(parent id, child id) of runs waiting on a sub-run that has ended."""
        child = R.alias("child")
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(R.c.id, child.c.id).select_from(
                    R.join(child, child.c.parent_id == R.c.id))
                .where(R.c.state == "awaiting_approval",
                       R.c.review_id == sa.literal(CHILD_PREFIX) + child.c.id,
                       child.c.state.in_(tuple(FINAL_STATES)))
                .limit(limit))).all()
        return [(r[0], r[1]) for r in rows]

    async def fail_stale(self, run: Run, error: str) -> bool:
        """``running`` -> ``failed`` if the row has not moved since it was read."""
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(
                R.update().where(R.c.id == run.id, R.c.version == run.version,
                                 R.c.state == "running")
                .values(state="failed", error=error, pending=_dumps([]),
                        version=run.version + 1, updated_at=time.time()))
            return bool(res.rowcount)

    async def get(self, run_id: str) -> Run:
        async with self.store.engine.connect() as conn:
            row = (await conn.execute(sa.select(R).where(R.c.id == run_id))).mappings().first()
        if row is None:
            raise RunNotFound(f"No agent run '{run_id}'.", param="run_id")
        return _run(row)

    async def steps(self, run_id: str) -> list[Step]:
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(S).where(S.c.run_id == run_id)
                                       .order_by(S.c.seq))).mappings().all()
        return [_step(r) for r in rows]

    async def tree(self, root_id: str) -> list[Run]:
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(R).where(R.c.root_id == root_id)
                                       .order_by(R.c.created_at))).mappings().all()
        return [_run(r) for r in rows]

    async def find(self, *, agent: str | None = None, key_id: str | None = None,
                   team_id: str | None = None, limit: int = 50) -> list[Run]:
        stmt = sa.select(R).order_by(R.c.created_at.desc(), R.c.id.desc()).limit(limit)
        if agent is not None:
            stmt = stmt.where(R.c.agent == agent)
        if key_id is not None and team_id is not None:
            stmt = stmt.where(sa.or_(R.c.key_id == key_id, R.c.team_id == team_id))
        elif key_id is not None:
            stmt = stmt.where(R.c.key_id == key_id)
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_run(r) for r in rows]

    async def search(self, *, agents: Sequence[str] | None = None, state: str | None = None,
                     team_id: str | None = None, reader: tuple[str, str | None] | None = None,
                     since: float | None = None, until: float | None = None,
                     before: tuple[float, str] | None = None, roots_only: bool = False,
                     limit: int = 50) -> list[Run]:
        """Runs newest first, filtered; ``reader`` = (key id, team id) limits them to what
        that key may read (its own runs and its team's); ``before`` = (created_at, id) of
        the last run of the previous page."""
        stmt = sa.select(R).order_by(R.c.created_at.desc(), R.c.id.desc()).limit(limit)
        if agents is not None:
            stmt = stmt.where(R.c.agent.in_(list(agents)))
        if state is not None:
            stmt = stmt.where(R.c.state == state)
        if team_id is not None:
            stmt = stmt.where(R.c.team_id == team_id)
        if reader is not None:
            key_id, own_team = reader
            stmt = stmt.where(sa.or_(R.c.key_id == key_id, R.c.team_id == own_team)
                              if own_team is not None else R.c.key_id == key_id)
        if since is not None:
            stmt = stmt.where(R.c.created_at >= since)
        if until is not None:
            stmt = stmt.where(R.c.created_at < until)
        if before is not None:
            at, rid = before
            stmt = stmt.where(sa.or_(R.c.created_at < at,
                                     sa.and_(R.c.created_at == at, R.c.id < rid)))
        if roots_only:
            stmt = stmt.where(R.c.parent_id.is_(None))
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_run(r) for r in rows]

    async def stop(self, run_id: str, error: str) -> Run | None:
        """A run not ended yet -> ``stopped`` with ``error`` and an error step, in one
        version-checked write (retried when the row moved meanwhile). None when it had
        ended already."""
        for _ in range(5):
            run = await self.get(run_id)
            if run.final:
                return None
            step = Step(seq=run.steps, kind="error", status="error", result=error,
                        created_at=time.time())
            run.steps += 1
            run.state = "stopped"
            run.error = error
            run.pending = []
            try:
                return await self.save(run, [step])
            except RunConflict:
                continue
        raise RunConflict(run_id)

    async def stuck(self, older_than: float, limit: int = 100) -> list[str]:
        """Runs still ``running`` whose row has not moved since ``older_than``."""
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(R.c.id).where(R.c.state == "running", R.c.updated_at < older_than)
                .limit(limit))).all()
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ MCP pins

    async def pin(self, source: str, tool: str, digest: str) -> str:
        """The pinned hash of ``source``/``tool``: pinned now when it had none."""
        async with self.store.transaction(write=True) as conn:
            row = (await conn.execute(sa.select(agent_tool_pins.c.hash).where(
                agent_tool_pins.c.source == source, agent_tool_pins.c.tool == tool))).first()
            if row is not None:
                return str(row[0])
            await conn.execute(agent_tool_pins.insert().values(
                source=source, tool=tool, hash=digest, pinned_at=time.time()))
            return digest


class DefinitionStore:
    """Agents defined over the admin API (``agent_defs``): name -> spec JSON."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def all(self) -> dict[str, dict[str, Any]]:
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(agent_defs))).mappings().all()
        return {r["name"]: orjson.loads(r["spec"]) for r in rows}

    async def put(self, name: str, spec: dict[str, Any], who: str | None) -> None:
        values = {"spec": orjson.dumps(spec).decode(), "updated_at": time.time(),
                  "updated_by": who}
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(agent_defs.update().where(agent_defs.c.name == name)
                                     .values(**values))
            if not res.rowcount:
                await conn.execute(agent_defs.insert().values(name=name, **values))

    async def delete(self, name: str) -> bool:
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(agent_defs.delete().where(agent_defs.c.name == name))
            return bool(res.rowcount)
