"""The agent service: agents by name, their tools, runs started, resumed and shown.

One per process (built by the Runtime). Adapters call it: the virtual deployment
``agent/<name>`` (chat completions), ``/v1/agents``, ``lockgate agents``, ``lockgate mcp
serve``. It never calls a provider: each model turn is a pipeline call.

- :meth:`AgentService.start` checks the agent exists (404), the caller may use it (its
  team in ``allowed_teams``; the key's allowed models naming ``agent/<name>`` or
  ``agent/*`` are checked by the pipeline for chat, here for ``/v1/agents``), the agent is
  not paused by its breaker (503), and stores a new run;
- :meth:`advance` steps a run in the caller's task; :meth:`launch` in the background;
- a paused run is resumed by :class:`~lockgate.agents.approvals.Approvals` (the review
  service's resumer for ``source = "agent"``), then stepped on in the background here;
- ``delegate`` (the mesh): a child run of another agent, same caller, ``depth + 1``,
  bounded by the parent's ``max_depth`` and ``max_fanout``; its cost is added to the
  parent's; the tree is ``root_id``/``parent_id`` on the rows (:meth:`show`).

- a sub-run that waits for a person parks its parent (``review_id = "child:<id>"``); when
  the sub-run ends, :meth:`_wake_parent` resumes the parent once (compare-and-set);
- while a process steps runs it renews their leases (:meth:`_keep_leases`);
  :meth:`run_recovery` (every gateway's background loop) takes over runs whose lease ran
  out (their process died) and
  continues them from their stored steps, wakes parents whose sub-run ended unseen, and
  reloads API-defined agents, tool sources and grants.

A ``running`` run that no process takes over is marked ``failed`` ("lost") when it is next
read after its agent's timeout plus 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lockgate.agents.approvals import Approvals
from lockgate.agents.bounds import Breakers, LoopDetector, RateLimiter
from lockgate.agents.builtins import (
    ask_human_tool,
    delegate_tool,
    rag_tool,
    sql_tool,
    submit_job_tool,
)
from lockgate.agents.grants import Grants
from lockgate.agents.loop import (
    Catalog,
    Deps,
    Event,
    Stepper,
    end_user_doc,
    principal_doc,
)
from lockgate.agents.model import (
    CHILD_PREFIX,
    AgentConflict,
    AgentForbidden,
    AgentNotFound,
    AgentPaused,
    BadAgentInput,
    Run,
    RunNotFound,
    Step,
    new_run_id,
)
from lockgate.agents.openapi_tools import HttpTools
from lockgate.agents.sources import (
    GRANT_PARTS,
    KINDS,
    ApiSources,
    SourceBuilder,
    SourceStore,
    merge_grants,
    redact,
)
from lockgate.agents.store import DefinitionStore, RunConflict, RunStore
from lockgate.agents.tools import SubRunPaused, Tool, ToolContext, ToolFailed
from lockgate.errors import NotFound
from lockgate.pipeline import Call, EndUser, Principal, Result
from lockgate.settings import Pricing, resolve_secret
from lockgate.settings.agents import NAME_RE, AgentGrants, AgentSpec, AgentsSettings
from lockgate.state import MemoryState, StateBackend
from lockgate.store import Store

if TYPE_CHECKING:
    from lockgate.agents.mcp_client import McpTools
    from lockgate.jobs.submission import JobService
    from lockgate.rag import RagService
    from lockgate.review import ReviewService

__all__ = ["AGENT_PREFIX", "AgentService", "messages_of"]

log = logging.getLogger("lockgate.agents")
AGENT_PREFIX = "agent/"
MAX_INPUT_MESSAGES = 200
MAX_INPUT_CHARS = 200_000
DEFINITIONS_TTL_S = 2.0
STALE_GRACE_S = 30.0
REJECTED = "error: a reviewer rejected this call: "
Alert = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


def messages_of(value: Any) -> list[dict[str, Any]]:
    """A run's opening conversation from a string or OpenAI chat ``messages``."""
    if isinstance(value, str):
        if len(value) > MAX_INPUT_CHARS:
            raise BadAgentInput(f"'input' is at most {MAX_INPUT_CHARS} characters.",
                                param="input")
        if not value.strip():
            raise BadAgentInput("'input' must be non-empty text.", param="input")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadAgentInput("'input' must be text or a non-empty list of messages.",
                            param="input")
    if len(value) > MAX_INPUT_MESSAGES:
        raise BadAgentInput(f"at most {MAX_INPUT_MESSAGES} messages.", param="messages")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise BadAgentInput(f"messages[{i}] must be a system, user or assistant message.",
                                param="messages")
        c = m.get("content")
        if isinstance(c, list):
            c = " ".join(str(p.get("text", "")) for p in c
                         if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(c, str):
            raise BadAgentInput(f"messages[{i}].content must be text.", param="messages")
        out.append({"role": m["role"], "content": c})
    if out[-1]["role"] != "user" or not out[-1]["content"].strip():
        raise BadAgentInput("the last message must be a user message with text.",
                            param="messages")
    return out


class AgentService:
    def __init__(
        self,
        settings: AgentsSettings,
        *,
        chat: Callable[[Call], Awaitable[Result]],
        store: Store,
        pricing: dict[str, Pricing],
        review: ReviewService | None = None,
        alert: Alert | None = None,
        rag: RagService | None = None,
        jobs: Callable[[], JobService | None] | None = None,
        job_tasks: list[str] | None = None,
        models: set[str] | None = None,
        state: StateBackend | None = None,
    ) -> None:
        self.settings = settings
        self.defs = DefinitionStore(store)
        self._defined: dict[str, AgentSpec] = {}
        self._defined_at = float("-inf")
        self._models = models
        self.runs = RunStore(store, lease_s=settings.lease_s)
        self._store = store
        self._pricing = pricing
        self._alert = alert
        self.catalog = Catalog()
        self.grants = Grants(settings.grants)
        self.state: StateBackend = state if state is not None else MemoryState()
        self.breakers = Breakers(self.state, settings.breaker)
        self.approvals = (Approvals(review, self.runs, self._continue)
                          if review is not None else None)
        self.deps = Deps(chat=chat, price=self.price, catalog=self.catalog,
                         grants=self.grants, breakers=self.breakers,
                         limiter=RateLimiter(self.state),
                         loops=LoopDetector(settings.loop_repeats), store=self.runs,
                         alert=self._raise, approvals=self.approvals,
                         child_outcome=self._child_outcome)
        self._steppers: dict[str, Stepper] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._active: set[str] = set()
        """Runs this process is stepping now (their leases are kept alive)."""
        self._heartbeat: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(settings.max_parallel_runs)
        self._http: list[HttpTools] = []
        self.mcp: list[McpTools] = []
        self._mcp_ready = False
        self._mcp_lock = asyncio.Lock()
        self._build_tools(rag, jobs, job_tasks or [])
        self.source_store = SourceStore(store)
        self.api_sources = ApiSources(SourceBuilder(rag, self.runs, self._raise),
                                      self.catalog.add, self._remove_tool)
        self._sync_lock = asyncio.Lock()

    # ------------------------------------------------------------------ tools

    def _build_tools(self, rag: RagService | None,
                     jobs: Callable[[], JobService | None] | None, job_tasks: list[str]
                     ) -> None:
        t = self.settings.tools
        self.catalog.add(ask_human_tool())
        self.catalog.add(delegate_tool(self._delegate, []))
        if jobs is not None:
            self.catalog.add(submit_job_tool(jobs, job_tasks))
        if rag is not None:
            for name, rspec in t.rag.items():
                self.catalog.add(rag_tool(name, rspec, rag))
        for name, sspec in t.sql.items():
            from lockgate.store.engine import create_engine

            url = resolve_secret(sspec.url, f"agents.tools.sql.{name}.url") or sspec.url
            self.catalog.add(sql_tool(name, sspec, create_engine(url)))
        for name, ospec in t.openapi.items():
            http = HttpTools(name, ospec)
            self._http.append(http)
            for tool in http.tools():
                self.catalog.add(tool)
        if t.mcp:
            from lockgate.agents.mcp_client import McpTools

            for name, mspec in t.mcp.items():
                self.mcp.append(McpTools(name, mspec, self.runs, self._raise))

    async def ensure_tools(self) -> None:
        """Connect to the MCP servers once (first use, not at start-up) and add their tools."""
        if self._mcp_ready or not self.mcp:
            return
        async with self._mcp_lock:
            if self._mcp_ready:
                return
            for m in self.mcp:
                try:
                    for tool in await m.tools():
                        self.catalog.add(tool)
                except Exception as exc:
                    log.warning("MCP server %s: could not list its tools: %s", m.name, exc)
            self._mcp_ready = True

    def add_tool(self, tool: Tool) -> None:
        """Register a tool (tests, embedding applications)."""
        self.catalog.add(tool)

    def _remove_tool(self, name: str) -> None:
        self.catalog.tools.pop(name, None)

    # ------------------------------------------------------------------ admin: sources

    def _yaml_sources(self) -> dict[str, str]:
        t = self.settings.tools
        return {n: kind for kind in KINDS for n in getattr(t, kind)}

    async def _audit(self, action: str, who: str | None, target: str,
                     changes: dict[str, Any] | None = None) -> None:
        await self._store.record_admin_action(action, actor=who, target=target,
                                              changes=changes)

    async def sources_view(self) -> list[dict[str, Any]]:
        """Every tool source: ``lockgate.yaml``'s and the API's, secrets masked."""
        await self.refresh(force=True)
        out: list[dict[str, Any]] = []
        t = self.settings.tools
        for kind in KINDS:
            for name, spec in sorted(getattr(t, kind).items()):
                out.append({"id": name, "object": "agent.tool_source", "kind": kind,
                            "source": "config",
                            "spec": redact(kind, spec.model_dump(mode="json")),
                            "tools": sorted(n for n, tool in self.catalog.tools.items()
                                            if n.startswith(name + "__"))})
        for name, (kind, raw) in sorted((await self.source_store.sources()).items()):
            out.append({"id": name, "object": "agent.tool_source", "kind": kind,
                        "source": "api", "spec": redact(kind, raw),
                        "tools": self.api_sources.tools_of(name)})
        return out

    async def define_source(self, kind: str, name: str, raw: Any,
                            who: str | None) -> dict[str, Any]:
        """Create or replace a tool source over the admin API (validated; 400 / 409)."""
        builder = self.api_sources.builder
        spec = builder.validate(kind, raw)
        if not isinstance(name, str) or not NAME_RE.match(name) or "__" in name:
            raise BadAgentInput("Tool source names are 1-48 letters, digits, '_' or '-' "
                                "(no '__').", param="name")
        if name in self._yaml_sources():
            raise AgentConflict(f"The tool source '{name}' is defined in lockgate.yaml; "
                                "change it there.", param="name")
        doc = spec.model_dump(mode="json", exclude_unset=True)
        probe = builder.build(name, kind, spec, doc)  # the spec must be usable (400)
        await probe.aclose()
        await self.source_store.put_source(name, kind, doc, who)
        await self._audit("agent_tool_source.put", who, f"{kind}/{name}",
                          {"kind": kind, "spec": redact(kind, doc)})
        await self.refresh(force=True)
        return next(s for s in await self.sources_view() if s["id"] == name)

    async def undefine_source(self, kind: str, name: str, who: str | None) -> None:
        if name in self._yaml_sources():
            raise AgentConflict(f"The tool source '{name}' is defined in lockgate.yaml.",
                                param="name")
        stored = (await self.source_store.sources()).get(name)
        if stored is None or stored[0] != kind:
            raise NotFound(f"No {kind[:20]} tool source '{name[:100]}' defined over the API.",
                           param="name")
        await self.source_store.delete_source(name)
        await self._audit("agent_tool_source.delete", who, f"{kind}/{name}")
        await self.refresh(force=True)

    # ------------------------------------------------------------------ admin: grants

    async def grants_view(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for part in GRANT_PARTS:
            for subject, tools in sorted(getattr(self.settings.grants, part).items()):
                out.append({"part": part, "subject": subject, "tools": tools,
                            "source": "config", "object": "agent.grant"})
        for (part, subject), tools in sorted((await self.source_store.grants()).items()):
            out.append({"part": part, "subject": subject, "tools": tools, "source": "api",
                        "object": "agent.grant"})
        return out

    def _grant_subject(self, part: str, subject: str) -> None:
        if part not in GRANT_PARTS:
            raise BadAgentInput(f"Unknown grant part '{part[:40]}' (one of "
                                f"{', '.join(GRANT_PARTS)}).", param="part")
        if not subject or len(subject) > 200 or not subject.isprintable():
            raise BadAgentInput("A grant subject is 1-200 printable characters.",
                                param="subject")
        if part == "end_users" and not subject.startswith(("user:", "group:")):
            raise BadAgentInput("An end-user grant subject starts with 'user:' or 'group:'.",
                                param="subject")
        if subject in getattr(self.settings.grants, part):
            raise AgentConflict(f"The grant of {part} '{subject[:100]}' is defined in "
                                "lockgate.yaml; change it there.", param="subject")

    async def define_grant(self, part: str, subject: str, raw: Any,
                           who: str | None) -> dict[str, Any]:
        self._grant_subject(part, subject)
        tools = raw.get("tools") if isinstance(raw, dict) else None
        if not isinstance(tools, list) or len(tools) > 200 or not all(
                isinstance(t, str) for t in tools) or set(raw) - {"tools"}:
            raise BadAgentInput("The body must be {\"tools\": [tool name patterns]} "
                                "(at most 200).", param="tools")
        try:
            AgentGrants.model_validate({part: {subject: tools}})
        except ValueError as exc:
            msg = str(exc).splitlines()
            raise BadAgentInput(f"Invalid grant: {' '.join(msg[1:3]) or msg[0]}"[:400],
                                param="tools") from None
        await self.source_store.put_grant(part, subject, tools, who)
        await self._audit("agent_grant.put", who, f"{part}/{subject}", {"tools": tools})
        await self.refresh(force=True)
        return {"part": part, "subject": subject, "tools": tools, "source": "api",
                "object": "agent.grant"}

    async def undefine_grant(self, part: str, subject: str, who: str | None) -> None:
        self._grant_subject(part, subject)
        if not await self.source_store.delete_grant(part, subject):
            raise NotFound(f"No grant of {part} '{subject[:100]}' defined over the API.",
                           param="subject")
        await self._audit("agent_grant.delete", who, f"{part}/{subject}")
        await self.refresh(force=True)

    # ------------------------------------------------------------------ agents

    def specs(self) -> dict[str, AgentSpec]:
        """Every agent: ``lockgate.yaml``'s, and those defined over the admin API."""
        return {**self._defined, **self.settings.agents}

    def spec(self, name: str) -> AgentSpec:
        spec = self.specs().get(name)
        if spec is None:
            raise AgentNotFound(f"No agent '{name[:100]}'.", param="agent")
        return spec

    def stepper(self, name: str) -> Stepper:
        spec = self.spec(name)
        s = self._steppers.get(name)
        if s is None or s.spec is not spec:
            s = self._steppers[name] = Stepper(self.deps, name, spec)
        return s

    def names(self) -> list[str]:
        return sorted(self.specs())

    async def refresh(self, *, force: bool = False) -> None:
        """Reload the admin-defined agents (every ``DEFINITIONS_TTL_S`` at most), so every
        gateway sees a definition change within that time."""
        now = time.monotonic()
        if not force and now - self._defined_at < DEFINITIONS_TTL_S:
            return
        self._defined_at = now
        async with self._sync_lock:
            await self.api_sources.sync(await self.source_store.sources())
            self.grants.settings = merge_grants(self.settings.grants,
                                                await self.source_store.grants())
        loaded: dict[str, AgentSpec] = {}
        for name, raw in (await self.defs.all()).items():
            try:
                spec = AgentSpec.model_validate(raw)
            except ValueError as exc:
                log.warning("agent definition %s is not valid any more: %s", name, exc)
                continue
            old = self._defined.get(name)
            loaded[name] = old if old is not None and old == spec else spec
        self._defined = loaded

    async def define(self, name: str, raw: Any, who: str | None) -> AgentSpec:
        """Create or replace an agent over the admin API (not one of ``lockgate.yaml``'s)."""
        if not isinstance(name, str) or not NAME_RE.match(name) or "__" in name:
            raise BadAgentInput("Agent names are 1-48 letters, digits, '_' or '-' "
                                "(no '__').", param="name")
        if name in self.settings.agents:
            raise AgentConflict(f"The agent '{name}' is defined in lockgate.yaml; change it "
                                "there.", param="name")
        if not isinstance(raw, dict):
            raise BadAgentInput("The body must be an agent definition object.")
        try:
            spec = AgentSpec.model_validate(raw)
        except ValueError as exc:
            first = str(exc).splitlines()
            raise BadAgentInput(f"Invalid agent definition: {' '.join(first[:3])[:400]}"
                                ) from None
        if self._models is not None and spec.model not in self._models:
            raise BadAgentInput(f"Unknown model '{spec.model}'.", param="model")
        await self.refresh(force=True)
        known = self.specs()
        for d in spec.delegates:
            if d not in known and d != name:
                raise BadAgentInput(f"Unknown delegate agent '{d}'.", param="delegates")
        await self.defs.put(name, spec.model_dump(mode="json"), who)
        await self._audit("agent.put", who, name)
        await self.refresh(force=True)
        return spec

    async def undefine(self, name: str, who: str | None = None) -> None:
        if name in self.settings.agents:
            raise AgentConflict(f"The agent '{name}' is defined in lockgate.yaml.",
                                param="name")
        if not await self.defs.delete(name):
            raise AgentNotFound(f"No agent '{name[:100]}' defined over the API.",
                                param="name")
        await self._audit("agent.delete", who, name)
        await self.refresh(force=True)

    def may_use(self, name: str, principal: Principal) -> bool:
        spec = self.spec(name)
        if principal.is_master or not spec.allowed_teams:
            return True
        return any(t in spec.allowed_teams for t in (principal.team_name, principal.team_id)
                   if t)

    def visible(self, principal: Principal) -> list[str]:
        return [n for n in self.names() if self.may_use(n, principal)
                and principal.may_use(AGENT_PREFIX + n)]

    def price(self, res: Result) -> float:
        dep = res.facts.deployment if res.facts is not None else None
        pricing = self._pricing.get(dep or "")
        if pricing is None:
            return 0.0
        return pricing.cost(res.usage.prompt_tokens, res.usage.completion_tokens)

    async def _raise(self, kind: str, subject: str, message: str,
                     details: dict[str, Any]) -> None:
        if self._alert is not None:
            try:
                await self._alert(kind, subject, message, details)
            except Exception:
                log.exception("could not raise the %s alert for %s", kind, subject)

    # ------------------------------------------------------------------ runs

    async def start(
        self, name: str, input: Any, principal: Principal, *, end_user: EndUser | None = None,
        request_id: str | None = None, parent: Run | None = None, check_models: bool = False,
    ) -> Run:
        await self.refresh()
        spec = self.spec(name)
        if not self.may_use(name, principal) or (
                check_models and not principal.may_use(AGENT_PREFIX + name)):
            raise AgentForbidden(f"This key may not use the agent '{name}'.", param="agent")
        if await self.breakers.agent(name).is_open():
            raise AgentPaused(f"The agent '{name}' is paused after too many failures; "
                              "try again later.")
        messages = messages_of(input)
        await self.ensure_tools()
        rid = new_run_id()
        run = Run(
            id=rid, agent=name, state="running",
            root_id=parent.root_id if parent else rid,
            depth=parent.depth + 1 if parent else 0,
            parent_id=parent.id if parent else None,
            key_id=principal.key_id, team_id=principal.team_id,
            principal=principal_doc(principal), acting_for=end_user_doc(end_user),
            request_id=request_id, input=input, messages=messages,
        )
        assert spec is not None
        return await self.runs.create(run)

    async def advance(self, run: Run, on_event: Event | None = None) -> Run:
        await self.ensure_tools()
        self._active.add(run.id)
        self._keep_leases()
        try:
            done = await self.stepper(run.agent).advance(run, on_event)
        except RunConflict:
            # another process took the run over (this one stalled past its lease): it goes
            # on there; the caller sees the run as stored
            log.warning("agent run %s was taken over by another process", run.id)
            return await self.runs.get(run.id)
        finally:
            self._active.discard(run.id)
        if done.state == "awaiting_approval" and (done.review_id or "").startswith(
                CHILD_PREFIX):
            # parked on a sub-run that may have ended meanwhile (decided elsewhere)
            child = await self.runs.get((done.review_id or "")[len(CHILD_PREFIX):])
            if child.final:
                await self._wake_parent(child)
        return done

    def launch(self, run: Run, on_event: Event | None = None) -> asyncio.Task[Run]:
        async def go() -> Run:
            async with self._slots:
                try:
                    done = await self.advance(run, on_event)
                    if done.final and done.parent_id is not None:
                        await self._wake_parent(done)
                    return done
                except RunConflict:
                    log.warning("agent run %s was moved on by another process; this one "
                                "stops stepping it", run.id)
                    return run
                except Exception:
                    log.exception("agent run %s failed unexpectedly", run.id)
                    with contextlib.suppress(Exception):
                        current = await self.runs.get(run.id)
                        if not current.final:
                            current.state = "failed"
                            current.error = "internal error (logged)"
                            await self.runs.save(current)
                    return run

        task = asyncio.get_running_loop().create_task(go(), name=f"agent-run-{run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Keep a run task alive (and cancel it at shutdown) after its caller left."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _continue(self, run: Run) -> None:
        """After a decision: go on in the background, unless the run's key was revoked
        while it waited (then the run fails and the approved call does not run)."""
        p = run.principal or {}
        if not p.get("is_master") and p.get("key_id"):
            key = await self._store.get_key(str(p["key_id"]))
            if key is not None and key.revoked:
                run.state = "failed"
                run.error = "the key that started the run was revoked while it waited"
                run.pending = []
                await self.runs.save(run)
                return
        self.launch(run)

    def _keep_leases(self) -> None:
        """Renew this process's leases while it steps runs (every process that steps runs,
        also the CLI, which runs no recovery loop)."""
        if self._heartbeat is not None and not self._heartbeat.done():
            return

        async def beat() -> None:
            interval = max(0.1, self.settings.lease_s / 3.0)
            while self._active:
                await asyncio.sleep(interval)
                try:
                    await self.runs.heartbeat(sorted(self._active))
                except Exception as exc:
                    log.warning("could not renew agent run leases: %s", exc)

        self._heartbeat = asyncio.get_running_loop().create_task(beat(),
                                                                 name="agent-run-leases")

    async def _wake_parent(self, child: Run) -> None:
        """A sub-run ended: its parked parent resumes, once (compare-and-set)."""
        if child.parent_id is None or not child.final:
            return
        parent = await self.runs.take_paused(child.parent_id, CHILD_PREFIX + child.id)
        if parent is None:
            return  # not parked on it (running in-line, resumed already, or ended)
        parent.review_id = None
        await self.runs.save(parent)
        self.launch(parent)

    async def recover(self) -> int:
        """Take over runs whose process died (lease ran out) and continue them from their
        stored steps; wake parents whose sub-run ended while nobody was listening."""
        taken = 0
        for run_id in await self.runs.expired():
            if run_id in self._active:
                continue
            run = await self.runs.claim(run_id)
            if run is None:
                continue  # another process took it
            log.warning("agent run %s (%s) lost its process; continuing it here",
                        run.id, run.agent)
            taken += 1
            self.launch(run)
        for _, child_id in await self.runs.parked_on_children():
            await self._wake_parent(await self.runs.get(child_id))
        return taken

    async def run_recovery(self, stop: asyncio.Event) -> None:
        """Take over lost runs and reload API definitions (every lease_s / 3)."""
        interval = max(0.1, self.settings.lease_s / 3.0)
        while not stop.is_set():
            try:
                await self.recover()
                await self.refresh()  # API-defined agents, tool sources, grants
            except Exception:
                log.exception("agent run recovery failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait for the background runs of this process (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def may_read(self, run: Run, principal: Principal) -> bool:
        if principal.is_master:
            return True
        return run.key_id == principal.key_id or (
            run.team_id is not None and run.team_id == principal.team_id)

    async def get(self, run_id: str, principal: Principal, agent: str | None = None) -> Run:
        run = await self.runs.get(run_id)
        if not self.may_read(run, principal) or (agent is not None and run.agent != agent):
            raise RunNotFound(f"No agent run '{run_id}'.", param="run_id")
        return await self._reap(run)

    async def _reap(self, run: Run) -> Run:
        """A ``running`` run whose row has not moved for longer than its agent's timeout
        (plus a grace) has lost its process: it is marked ``failed`` so no poll waits on it
        forever. A live run writes its row at least once per model turn or tool call, each
        bounded by the timeout."""
        if run.state != "running":
            return run
        spec = self.specs().get(run.agent)
        limit = (spec.timeout_s if spec else 86400.0) + STALE_GRACE_S
        if time.time() - run.updated_at <= limit:
            return run
        if await self.runs.fail_stale(run, "lost: the process running it stopped"):
            return await self.runs.get(run.id)
        return await self.runs.get(run.id)

    async def show(self, run_id: str, principal: Principal,
                   agent: str | None = None) -> dict[str, Any]:
        """The run with its steps and its sub-runs (the tree below it, with costs)."""
        run = await self.get(run_id, principal, agent)
        tree = await self.runs.tree(run.root_id)
        by_parent: dict[str | None, list[Run]] = {}
        for r in tree:
            by_parent.setdefault(r.parent_id, []).append(r)

        def node(r: Run, depth: int = 0) -> dict[str, Any]:
            kids = [node(c, depth + 1) for c in by_parent.get(r.id, [])] if depth < 16 else []
            return {"id": r.id, "agent": r.agent, "status": r.state, "cost": round(r.cost, 8),
                    "input": r.input, "output": r.output, "error": r.error,
                    "children": kids}

        steps = await self.runs.steps(run.id)
        return run.public(steps, [node(c) for c in by_parent.get(run.id, [])])

    async def find(self, principal: Principal, agent: str | None = None,
                   limit: int = 50) -> list[Run]:
        if principal.is_master:
            return await self.runs.find(agent=agent, limit=limit)
        return await self.runs.find(agent=agent, key_id=principal.key_id,
                                    team_id=principal.team_id, limit=limit)

    async def steps(self, run_id: str) -> list[Step]:
        return await self.runs.steps(run_id)

    async def search(self, principal: Principal, *, agent: str | None = None,
                     state: str | None = None, team_id: str | None = None,
                     since: float | None = None, until: float | None = None,
                     before: tuple[float, str] | None = None, roots_only: bool = False,
                     limit: int = 50) -> list[Run]:
        """Runs this principal may read, newest first, filtered and paged (the console's
        list). A team key sees its own and its team's runs whatever ``team_id`` says."""
        if principal.is_master:
            return await self.runs.search(
                agents=[agent] if agent is not None else None, state=state, team_id=team_id,
                since=since, until=until, before=before, roots_only=roots_only, limit=limit)
        return await self.runs.search(
            agents=[agent] if agent is not None else None, state=state,
            reader=(principal.key_id, principal.team_id), since=since, until=until,
            before=before, roots_only=roots_only, limit=limit)

    def bounds(self, name: str) -> dict[str, Any] | None:
        """The agent's bounds (None when the agent is not defined any more)."""
        spec = self.specs().get(name)
        if spec is None:
            return None
        return {"max_steps": spec.max_steps, "max_cost": spec.max_cost,
                "timeout_s": spec.timeout_s, "max_depth": spec.max_depth,
                "max_fanout": spec.max_fanout, "mode": spec.mode, "model": spec.model,
                "delegates": list(spec.delegates)}

    async def cancel(self, run_id: str, principal: Principal, reason: str | None = None
                     ) -> list[str]:
        """Stop a run that has not ended, and its sub-runs (administrators only). Returns
        the ids stopped. A run this process is stepping is cancelled at once; one stepped
        by another process stops at its next write (its row moved: that write is refused),
        so at most the step in flight there still finishes. A pending approval of a
        stopped run is left in the review queue; deciding it resumes nothing."""
        if not principal.is_master:
            raise AgentForbidden("Only an administrator may cancel an agent run.",
                                 param="run_id")
        run = await self.get(run_id, principal)
        if run.final:
            raise AgentConflict(f"The run is {run.state} already.", param="run_id")
        for task in list(self._tasks):
            if task.get_name() == f"agent-run-{run.id}":
                task.cancel()
        error = f"cancelled by {principal.key_name or principal.key_id}" + (
            f": {reason}" if reason else "")
        below = {r.id: r for r in await self.runs.tree(run.root_id)}
        ids = [run.id]
        frontier = [run.id]
        while frontier:
            kids = [r.id for r in below.values() if r.parent_id in frontier]
            ids.extend(kids)
            frontier = kids
        stopped = []
        for rid in ids:
            if await self.runs.stop(rid, error) is not None:
                stopped.append(rid)
        return stopped

    # ------------------------------------------------------------------ the mesh

    async def _delegate(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        parent: Run = ctx.extra["run"]
        spec = self.spec(parent.agent)
        target = str(args["agent"])
        if target not in spec.delegates:
            raise ToolFailed(f"agent '{parent.agent}' may not delegate to '{target}' "
                             f"(it may: {', '.join(spec.delegates) or 'none'})")
        if parent.depth + 1 > spec.max_depth:
            raise ToolFailed(f"delegation depth {spec.max_depth} reached")
        if parent.delegations >= spec.max_fanout:
            raise ToolFailed(f"at most {spec.max_fanout} delegations per run")
        parent.delegations += 1
        child = await self.start(target, str(args["task"]), ctx.principal,
                                 end_user=ctx.acting_for, request_id=parent.request_id,
                                 parent=parent)
        on_child = ctx.extra.get("on_child")
        if on_child is not None:
            await on_child(child.id)
        child = await self.advance(child)
        if not child.final:
            raise SubRunPaused(child.id)  # the parent parks until the sub-run ends
        return await self._child_result(parent, child)

    async def _child_outcome(self, parent: Run, child_id: str) -> Any:
        """The result of a sub-run started earlier (resumed parent, or a takeover)."""
        child = await self.runs.get(child_id)
        if not child.final:
            raise SubRunPaused(child.id)
        return await self._child_result(parent, child)

    async def _child_result(self, parent: Run, child: Run) -> Any:
        parent.cost += child.cost
        rejected = [{"tool": s.name, "reason": str(s.result).removeprefix(REJECTED)}
                    for s in await self.runs.steps(child.id)
                    if s.kind == "tool" and s.status == "rejected"]
        if child.state == "succeeded":
            out: dict[str, Any] = {"agent": child.agent, "run_id": child.id,
                                   "answer": child.output}
            if rejected:
                out["rejected"] = rejected  # the reviewers' reasons flow up the tree
            return out
        why = f"sub-run {child.id} of {child.agent} {child.state}: {child.error}"
        if rejected:
            why += "; rejected by a reviewer: " + "; ".join(
                f"{r['tool']}: {r['reason']}" for r in rejected)
        raise ToolFailed(why)

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await self._heartbeat
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.api_sources.aclose()
        for http in self._http:
            await http.aclose()
        for m in self.mcp:
            with contextlib.suppress(Exception):
                await m.aclose()
