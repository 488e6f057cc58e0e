"""The step loop: model turn -> tool calls -> model turn ..., every turn a pipeline call.

:class:`Stepper` advances one run until it ends or pauses. Per model turn it lists the
tools the run may use (agent ∩ key/team ∩ end user, writes left out in ``read_only``),
asks the model through the pipeline (OpenAI tool-calling wire format; keys, budgets,
guards and audit apply as to any call), records the turn, then handles each tool call
the model made, in order:

1. not offered to this run -> a tool error to the model, never an execution;
2. arguments not valid JSON or not matching the tool's schema -> a tool error;
3. the same call (name + arguments) ``loop_repeats`` times -> the run stops;
4. the tool's rate limit or open breaker -> a tool error;
5. a write in ``read_only`` -> denied (never executed); in ``approve_writes`` -> the run
   saves itself as ``awaiting_approval`` and a review item is submitted (the call runs
   only after a person approved it; a rejection returns the reviewer's reason);
   ``ask_human`` pauses the same way;
6. otherwise the tool runs (bounded by the run's time left); a failure goes to the model
   (``on_tool_failure: continue``) or stops the run (``stop``); outcomes feed the per-tool
   and per-agent breakers, which alert when they open.

Bounds checked before every model turn: ``max_steps`` turns, ``max_cost`` (the pipeline's
prices of the turns so far, sub-runs included), the run's active time (``timeout_s``;
time spent waiting for a person does not count), the agent's breaker.

Steps are written with the run row, once per turn and at every pause, so the overhead per
step is one small transaction (see bench/agents_bench.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from lockgate.agents.bounds import Breakers, LoopDetector, RateLimiter
from lockgate.agents.grants import Grants
from lockgate.agents.model import CHILD_PREFIX, Run, Step
from lockgate.agents.store import RunStore
from lockgate.agents.tools import (
    SubRunPaused,
    Tool,
    ToolContext,
    ToolFailed,
    ToolRefused,
    check_arguments,
    render_result,
)
from lockgate.errors import GatewayError
from lockgate.pipeline import Call, EndUser, Principal, Result
from lockgate.settings.agents import AgentSpec

if TYPE_CHECKING:
    from lockgate.agents.approvals import Approvals

__all__ = ["Catalog", "Event", "Stepper", "end_user_of", "principal_of"]

log = logging.getLogger("lockgate.agents")

Event = Callable[[dict[str, Any]], Awaitable[None]]
AlertFn = Callable[[str, str, str, dict[str, Any]], Coroutine[Any, Any, None]]
REPAIR_PREFIX = "[lockgate] "
CHECKPOINT_S = 0.5
"""Reads-only turns are written at most this often (and at every end, pause and write)."""


class Catalog:
    """Every tool this process knows, by name (built by the service from the sources)."""

    def __init__(self) -> None:
        self.tools: dict[str, Tool] = {}

    def add(self, tool: Tool) -> None:
        self.tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)


def principal_of(doc: dict[str, Any] | None) -> Principal:
    d = doc or {}
    allowed = d.get("allowed_models")
    return Principal(key_id=str(d.get("key_id") or "system"), team_id=d.get("team_id"),
                     team_name=d.get("team_name"),
                     allowed_models=None if allowed is None else frozenset(allowed),
                     is_master=bool(d.get("is_master")), key_name=d.get("key_name"))


def principal_doc(p: Principal) -> dict[str, Any]:
    return {"key_id": p.key_id, "team_id": p.team_id, "team_name": p.team_name,
            "allowed_models": None if p.allowed_models is None else sorted(p.allowed_models),
            "is_master": p.is_master, "key_name": p.key_name}


def end_user_of(doc: dict[str, Any] | None) -> EndUser | None:
    if not doc:
        return None
    return EndUser(user_id=str(doc["user_id"]), groups=tuple(doc.get("groups") or ()),
                   ts=int(doc.get("ts") or 0))


def end_user_doc(u: EndUser | None) -> dict[str, Any] | None:
    return None if u is None else {"user_id": u.user_id, "groups": list(u.groups), "ts": u.ts}


@dataclass
class Deps:
    """What the stepper needs from the service (one per process)."""

    chat: Callable[[Call], Awaitable[Result]]
    price: Callable[[Result], float]
    catalog: Catalog
    grants: Grants
    breakers: Breakers
    limiter: RateLimiter
    loops: LoopDetector
    store: RunStore
    alert: AlertFn
    approvals: Approvals | None = None
    child_outcome: Callable[[Run, str], Awaitable[Any]] | None = None
    """A started sub-run's result for its parent (raises SubRunPaused while it waits)."""


class _Pause(Exception):
    """The run saved itself as awaiting a decision."""


class _Stop(Exception):
    def __init__(self, state: str, error: str) -> None:
        super().__init__(error)
        self.state = state
        self.error = error


def _message(res: Result) -> dict[str, Any]:
    choices = res.body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ToolFailed("the model's answer has no choices")
    msg = choices[0].get("message")
    if not isinstance(msg, dict):
        raise ToolFailed("the model's answer has no message")
    return msg


def _clean_calls(raw: Any) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    if not isinstance(raw, list):
        return calls
    for i, tc in enumerate(raw):
        if not isinstance(tc, dict):
            continue
        fn: dict[str, Any] = tc["function"] if isinstance(tc.get("function"), dict) else {}
        calls.append({"id": str(tc.get("id") or f"call_{i}"), "type": "function",
                      "function": {"name": str(fn.get("name") or ""),
                                   "arguments": fn.get("arguments") if isinstance(
                                       fn.get("arguments"), str) else orjson.dumps(
                                       fn.get("arguments") or {}).decode()}})
    return calls


class Stepper:
    """Advances runs of one agent spec; stateless between calls (the run row holds it)."""

    def __init__(self, deps: Deps, name: str, spec: AgentSpec) -> None:
        self.deps = deps
        self.name = name
        self.spec = spec
        self._contract = (Draft202012Validator(spec.output_contract)
                          if spec.output_contract else None)

    # ------------------------------------------------------------------ tools

    def permitted(self, principal: Principal, end_user: EndUser | None) -> list[Tool]:
        """Tools this run may see and call (grants; no writes in ``read_only``)."""
        out: list[Tool] = []
        d = self.deps
        for name, tool in d.catalog.tools.items():
            if name == "delegate" and not self.spec.delegates:
                continue
            if tool.klass == "write" and self.spec.mode == "read_only":
                continue
            if d.grants.allowed(name, self.spec.tools, principal, end_user):
                out.append(tool)
        return out

    # ------------------------------------------------------------------ the loop

    async def advance(self, run: Run, on_event: Event | None = None) -> Run:
        """Step ``run`` until it ends or pauses; returns it as saved."""
        principal = principal_of(run.principal)
        end_user = end_user_of(run.acting_for)
        seen = self._seen(run)
        start = time.monotonic()
        base_active = run.active_s
        pending_steps: list[Step] = []

        def left() -> float:
            return self.spec.timeout_s - (base_active + time.monotonic() - start)

        async def emit(step: Step) -> None:
            pending_steps.append(step)
            if on_event is not None:
                await on_event({"type": "step", "run_id": run.id, "step": step.public()})

        def step(kind: str, status: str, **kw: Any) -> Step:
            s = Step(seq=run.steps, kind=kind, status=status, created_at=time.time(), **kw)
            run.steps += 1
            return s

        last_save = time.monotonic()

        async def save() -> None:
            nonlocal last_save
            run.active_s = base_active + time.monotonic() - start
            await self.deps.store.save(run, pending_steps)
            pending_steps.clear()
            last_save = time.monotonic()

        async def on_child(child_id: str) -> None:
            """A delegation started a sub-run: on record before it steps, so a takeover
            never starts it twice."""
            if run.pending:
                run.pending[0]["child"] = child_id
            await save()

        ctx = ToolContext(principal=principal, acting_for=end_user, run_id=run.id,
                          agent=self.name, depth=run.depth, request_id=run.request_id,
                          extra={"run": run, "on_child": on_child})
        try:
            while True:
                while run.pending:
                    wrote = await self._tool_call(run, run.pending[0], ctx, seen, left, step,
                                                  emit, save)
                    run.pending.pop(0)
                    if wrote:  # a change to the world is on record at once
                        await save()
                if left() <= 0:
                    raise _Stop("stopped", f"run timeout ({self.spec.timeout_s:g} s) reached")
                if run.turns >= self.spec.max_steps:
                    raise _Stop("stopped", f"max_steps ({self.spec.max_steps}) reached")
                if self.spec.max_cost is not None and run.cost >= self.spec.max_cost:
                    raise _Stop("stopped", f"max_cost ({self.spec.max_cost:g}) reached "
                                           f"(spent {run.cost:.6g})")
                if await self.deps.breakers.agent(self.name).is_open():
                    raise _Stop("stopped", f"agent '{self.name}' is paused by its error-rate "
                                           "breaker")
                done = await self._model_turn(run, principal, end_user, left, step, emit)
                if done or time.monotonic() - last_save >= CHECKPOINT_S:
                    await save()
                if done:
                    if on_event is not None:
                        await on_event({"type": "done", "run_id": run.id, "status": run.state})
                    return run
        except _Pause:
            if on_event is not None:
                await on_event({"type": "paused", "run_id": run.id, "status": run.state,
                                "review_id": run.review_id})
            return run
        except _Stop as stop:
            run.state = stop.state
            run.error = stop.error
            run.pending = []
            await emit(step("error", "error", result=stop.error))
            await save()
            if on_event is not None:
                await on_event({"type": "done", "run_id": run.id, "status": run.state,
                                "error": run.error})
            return run

    def _seen(self, run: Run) -> dict[str, int]:
        """Identical calls made so far (from the conversation, so it survives a pause)."""
        seen: dict[str, int] = {}
        for m in run.messages:
            if m.get("role") == "assistant":
                for tc in m.get("tool_calls") or ():
                    fn = tc.get("function") or {}
                    try:
                        args = orjson.loads(fn.get("arguments") or "{}")
                    except orjson.JSONDecodeError:
                        args = fn.get("arguments")
                    sig = LoopDetector.signature(str(fn.get("name")), args)
                    seen[sig] = seen.get(sig, 0) + 1
        # the calls of the pending turn are counted again when they run
        for tc in run.pending:
            fn = tc.get("function") or {}
            try:
                args = orjson.loads(fn.get("arguments") or "{}")
            except orjson.JSONDecodeError:
                args = fn.get("arguments")
            sig = LoopDetector.signature(str(fn.get("name")), args)
            seen[sig] = seen.get(sig, 1) - 1
        return seen

    async def _model_turn(self, run: Run, principal: Principal, end_user: EndUser | None,
                          left: Callable[[], float], step: Callable[..., Step],
                          emit: Callable[[Step], Awaitable[None]]) -> bool:
        """One model call; True when the run ended with it."""
        tools = self.permitted(principal, end_user)
        approval = self.spec.mode == "approve_writes"
        messages: list[dict[str, Any]] = []
        if self.spec.instructions:
            messages.append({"role": "system", "content": self.spec.instructions})
        messages.extend(run.messages)
        body: dict[str, Any] = {"model": self.spec.model, "messages": messages}
        if tools:
            body["tools"] = [t.openai(approval_fields=approval and t.klass == "write")
                             for t in tools]
            body["tool_choice"] = "auto"
        run.turns += 1
        call = Call(kind="chat", model=self.spec.model, body=body, principal=principal,
                    source="agent", acting_for=end_user,
                    request_id=f"{run.id}-t{run.turns}",
                    end_user=end_user.user_id if end_user else None)
        t0 = time.perf_counter()
        try:
            res = await asyncio.wait_for(self.deps.chat(call), max(left(), 0.001))
        except TimeoutError:
            raise _Stop("stopped", f"run timeout ({self.spec.timeout_s:g} s) reached "
                                   "during a model turn") from None
        except GatewayError as exc:
            await self._agent_outcome(False)
            raise _Stop("failed", f"model call failed: {exc.message} ({exc.status})") from None
        ms = (time.perf_counter() - t0) * 1000.0
        cost = self.deps.price(res)
        run.cost += cost
        try:
            msg = _message(res)
        except ToolFailed as exc:
            raise _Stop("failed", str(exc)) from None
        calls = _clean_calls(msg.get("tool_calls"))
        content = msg.get("content") if isinstance(msg.get("content"), str) else None
        assistant: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            assistant["tool_calls"] = calls
        run.messages.append(assistant)
        await emit(step("model", "ok", name=self.spec.model, result={
            "content": content, "tool_calls": [c["function"] for c in calls]},
            duration_ms=ms, cost=cost,
            detail={"request_id": call.request_id,
                    "usage": {"prompt_tokens": res.usage.prompt_tokens,
                              "completion_tokens": res.usage.completion_tokens},
                    "deployment": res.facts.deployment if res.facts else None}))
        if calls:
            run.pending = calls
            return False
        problem = self._check_output(content or "")
        if problem is not None:
            if self._repairs(run) >= 1:
                raise _Stop("failed", f"the final answer breaks the output contract: {problem}")
            run.messages.append({"role": "user", "content": (
                f"{REPAIR_PREFIX}Your final answer must be JSON matching this schema: "
                f"{orjson.dumps(self.spec.output_contract).decode()}. Problem: {problem}. "
                "Answer again with only the JSON.")})
            return False
        run.state = "succeeded"
        run.output = self._output(content or "")
        return True

    @staticmethod
    def _repairs(run: Run) -> int:
        return sum(1 for m in run.messages if m.get("role") == "user"
                   and str(m.get("content") or "").startswith(REPAIR_PREFIX))

    def _check_output(self, content: str) -> str | None:
        if self._contract is None:
            return None
        try:
            doc = orjson.loads(content)
        except orjson.JSONDecodeError:
            return "not valid JSON"
        try:
            errors = sorted(self._contract.iter_errors(doc),
                            key=lambda e: list(e.absolute_path))
        except (SchemaError, RecursionError, TypeError, ValueError) as exc:
            return f"the contract cannot check it: {exc}"[:300]
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
            return f"at {where}: {errors[0].message[:200]}"
        return None

    def _output(self, content: str) -> Any:
        if self._contract is None:
            return content
        return orjson.loads(content)

    async def _agent_outcome(self, ok: bool) -> None:
        b = self.deps.breakers.agent(self.name)
        if await b.record(ok):
            self._alert("agent_breaker", self.name,
                        f"agent {self.name} paused: error rate {b.failure_rate():.0%} over "
                        f"{b.settings.window_s:g} s", {"agent": self.name})

    async def _tool_outcome(self, tool: str, ok: bool) -> None:
        b = self.deps.breakers.tool(tool)
        if await b.record(ok):
            self._alert("agent_tool_breaker", tool,
                        f"tool {tool} disabled for {b.settings.pause_s:g} s: error rate "
                        f"{b.failure_rate():.0%}", {"tool": tool, "agent": self.name})
        await self._agent_outcome(ok)

    def _alert(self, kind: str, subject: str, message: str, details: dict[str, Any]) -> None:
        log.warning("%s", message)
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self.deps.alert(kind, subject, message, details))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    # ------------------------------------------------------------------ one tool call

    async def _tool_call(self, run: Run, tc: dict[str, Any], ctx: ToolContext,
                         seen: dict[str, int], left: Callable[[], float],
                         step: Callable[..., Step], emit: Callable[[Step], Awaitable[None]],
                         save: Callable[[], Awaitable[None]]) -> bool:
        """Handle one tool call; True when a write tool ran (or was tried)."""
        fn = tc.get("function") or {}
        name = str(fn.get("name") or "")
        call_id = str(tc.get("id") or "")
        raw = fn.get("arguments")
        decision = tc.get("decision")

        async def answer(status: str, result: Any, *, args: Any = None, ms: float = 0.0,
                         detail: dict[str, Any] | None = None) -> None:
            text = render_result(result)
            run.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            await emit(step("tool", status, name=name, arguments=args if args is not None
                            else raw, result=result, duration_ms=ms,
                            detail={"tool_call_id": call_id, **(detail or {})}))

        tool = self.deps.catalog.get(name)
        permitted = tool is not None and tool in self.permitted(ctx.principal, ctx.acting_for)
        if tool is None or not permitted:
            await answer("denied", f"error: the tool '{name[:80]}' is not available to this "
                                   "run; it was not called.")
            return False
        if tc.get("child"):  # a delegation whose sub-run exists (it paused, or a takeover)
            return await self._child_result(run, tc, name, answer, step, emit, save)
        try:
            args = check_arguments(tool, raw)
        except ToolRefused as exc:
            await answer("error", f"error: {exc}; the tool was not called.")
            return False
        if tc.get("started") is not None and tool.klass == "write":
            # the process that ran this write died during the call: its outcome is unknown.
            # It is never repeated blindly; the model (and an alert) says so.
            msg = (f"error: the outcome of {name} is unknown: the gateway running it stopped "
                   "during the call. It was not repeated; check the system before calling "
                   "it again.")
            await answer("unknown", msg, args=args, detail={"started_at": tc["started"]})
            self._alert("agent_write_unknown", f"{run.id}:{call_id}",
                        f"agent {self.name} run {run.id}: the outcome of {name} is unknown "
                        "(its gateway stopped during the call)",
                        {"agent": self.name, "run_id": run.id, "tool": name,
                         "arguments": args})
            return True
        if decision is None and self.deps.loops.looping(seen, name, args):
            raise _Stop("stopped", f"loop detected: {name} called "
                                   f"{self.deps.loops.repeats} times with the same arguments")
        if tool.pauses or (tool.klass == "write" and self.spec.mode == "approve_writes"):
            if decision is None:
                await self._pause(run, tc, tool, args, raw, step, emit, save)
                raise _Pause()
            state = decision.get("state")
            if state == "rejected":
                await answer("rejected", "error: a reviewer rejected this call: "
                             + str(decision.get("reason") or "(no reason given)"),
                             args=args, detail={"review_id": decision.get("review_id")})
                return False
            if tool.pauses:  # ask_human: the person's answer is the result
                await answer("ok", decision.get("answer"), args=args,
                             detail={"review_id": decision.get("review_id")})
                return False
            if state == "edited":
                try:
                    args = check_arguments(tool, decision.get("output"))
                except ToolRefused as exc:
                    await answer("error", f"error: the reviewer's edit is not usable: {exc}")
                    return False
        elif tool.klass == "write" and self.spec.mode == "read_only":
            await answer("denied", f"error: {name} writes and this agent is read-only; "
                                   "it was not called.")
            return False
        if await self.deps.breakers.tool(name).is_open():
            await answer("error", f"error: {name} is temporarily disabled (too many "
                                  "failures).", args=args)
            return False
        if not await self.deps.limiter.take(name, tool.rate_per_minute):
            await answer("error", f"error: {name} is rate limited "
                                  f"({tool.rate_per_minute}/minute); try later.", args=args)
            return False
        if tool.klass == "write":  # on record as started before the world changes
            tc["started"] = time.time()
            await save()
        t0 = time.perf_counter()
        try:
            result = await asyncio.wait_for(tool.call(args, ctx), max(left(), 0.001))
        except SubRunPaused as paused:
            await self._park(run, tc, name, paused.child_id, step, emit, save)
            raise _Pause() from None
        except TimeoutError:
            ms = (time.perf_counter() - t0) * 1000.0
            await self._tool_outcome(name, False)
            await answer("error", f"error: {name} did not answer in time.", args=args, ms=ms)
            raise _Stop("stopped", f"run timeout ({self.spec.timeout_s:g} s) reached "
                                   f"during {name}") from None
        except (ToolFailed, ToolRefused) as exc:
            ms = (time.perf_counter() - t0) * 1000.0
            await self._tool_outcome(name, False)
            await answer("error", f"error: {name} failed: {exc}", args=args, ms=ms)
            if self.spec.on_tool_failure == "stop":
                raise _Stop("failed", f"tool {name} failed: {exc}") from None
            return tool.klass == "write"
        except GatewayError as exc:
            ms = (time.perf_counter() - t0) * 1000.0
            await self._tool_outcome(name, False)
            await answer("error", f"error: {name} failed: {exc.message}", args=args, ms=ms)
            if self.spec.on_tool_failure == "stop":
                raise _Stop("failed", f"tool {name} failed: {exc.message}") from None
            return tool.klass == "write"
        except Exception as exc:
            ms = (time.perf_counter() - t0) * 1000.0
            log.exception("tool %s failed in run %s", name, run.id)
            await self._tool_outcome(name, False)
            await answer("error", f"error: {name} failed ({type(exc).__name__}).",
                         args=args, ms=ms)
            if self.spec.on_tool_failure == "stop":
                raise _Stop("failed", f"tool {name} failed: {type(exc).__name__}") from None
            return tool.klass == "write"
        ms = (time.perf_counter() - t0) * 1000.0
        await self._tool_outcome(name, True)
        detail: dict[str, Any] = {}
        if decision is not None:
            detail["review_id"] = decision.get("review_id")
            detail["approved_by"] = decision.get("decided_by")
        await answer("ok", result, args=args, ms=ms, detail=detail)
        return tool.klass == "write"

    async def _child_result(self, run: Run, tc: dict[str, Any], name: str,
                            answer: Callable[..., Awaitable[None]], step: Callable[..., Step],
                            emit: Callable[[Step], Awaitable[None]],
                            save: Callable[[], Awaitable[None]]) -> bool:
        child_id = str(tc["child"])
        try:
            if self.deps.child_outcome is None:
                raise ToolFailed("sub-runs cannot be read in this process")
            result = await self.deps.child_outcome(run, child_id)
        except SubRunPaused as paused:
            await self._park(run, tc, name, paused.child_id, step, emit, save)
            raise _Pause() from None
        except ToolFailed as exc:
            await answer("error", f"error: {name} failed: {exc}", detail={"child": child_id})
            if self.spec.on_tool_failure == "stop":
                raise _Stop("failed", f"tool {name} failed: {exc}") from None
            return False
        await answer("ok", result, detail={"child": child_id})
        return False

    async def _park(self, run: Run, tc: dict[str, Any], name: str, child_id: str,
                    step: Callable[..., Step], emit: Callable[[Step], Awaitable[None]],
                    save: Callable[[], Awaitable[None]]) -> None:
        """The sub-run waits for a person: this run waits for the sub-run, durably."""
        tc["child"] = child_id
        run.state = "awaiting_approval"
        run.review_id = CHILD_PREFIX + child_id
        await emit(step("delegate", "pending", name=name,
                        detail={"child": child_id, "tool_call_id": tc.get("id")}))
        await save()

    async def _pause(self, run: Run, tc: dict[str, Any], tool: Tool, args: dict[str, Any],
                     raw: Any, step: Callable[..., Step],
                     emit: Callable[[Step], Awaitable[None]],
                     save: Callable[[], Awaitable[None]]) -> None:
        approvals = self.deps.approvals
        if approvals is None:
            raise _Stop("failed", f"{tool.name} needs a person's decision and this process "
                                  "has no review queue")
        extra = {}
        if isinstance(raw, str):
            try:
                parsed = orjson.loads(raw)
                if isinstance(parsed, dict):
                    extra = {k: parsed.get(k) for k in ("_rationale", "_impact")}
            except orjson.JSONDecodeError:
                pass
        rationale = extra.get("_rationale") or next(
            (m.get("content") for m in reversed(run.messages)
             if m.get("role") == "assistant" and m.get("content")), None)
        review_id = approvals.review_id(run.id, run.steps)
        run.state = "awaiting_approval"
        run.review_id = review_id
        await emit(step("approval", "pending", name=tool.name, arguments=args,
                        detail={"review_id": review_id, "tool_call_id": tc.get("id")}))
        await save()  # the run is durable as paused before anyone can decide
        try:
            await approvals.submit(review_id, run, self.name, self.spec, tool, args,
                                   rationale=str(rationale)[:4000] if rationale else None,
                                   impact=extra.get("_impact"))
        except Exception as exc:
            log.exception("could not submit the review item of run %s", run.id)
            raise _Stop("failed", f"could not ask for approval: {exc}") from None


_BACKGROUND: set[asyncio.Task[Any]] = set()
