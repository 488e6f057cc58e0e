"""The review service: policies, the queue, decisions, SLAs and what happens after.

One per process (built by the Runtime). Adapters (``/v1/reviews``, the CLI, the chat
route, the job worker) call it; it never calls a provider.

- :meth:`ReviewService.assess` applies a task's policy to a finished call and says
  whether a person must see it (with the reasons) or the policy auto-approves it.
- :meth:`submit` stores a pending item (audit-chained) and its ``review.created`` webhook
  row (the outbox: :mod:`lockgate.review.webhook_outbox`, sent by :meth:`run_sweeper`);
  :meth:`record_auto` records an auto-approval in a batched background write.
- :meth:`claim`/:meth:`claim_next`/:meth:`release`/:meth:`decide` are the reviewer's
  verbs; who may do what is :meth:`may_review` (admin, or a key of the item's team).
- After a decision, the resumer registered for the item's source (``jobs``) finishes the
  waiting work exactly once (the repository's ``resumed_at`` marks it); a decision made by
  a process that dies before resuming is finished by any process's :meth:`sweep`, which
  also marks SLA breaches (once across processes), escalates and alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from lockgate.errors import Forbidden
from lockgate.pipeline import Principal
from lockgate.review.model import (
    ACTIONS,
    ContractBroken,
    NewReview,
    ReviewInvalid,
    ReviewItem,
    ReviewNotFound,
)
from lockgate.review.predicates import evaluate
from lockgate.review.repository import ReviewRepository
from lockgate.review.webhook_outbox import ReviewWebhookOutbox
from lockgate.settings.review import ReviewPolicy, ReviewSettings
from lockgate.settings.review_predicates import Predicate, parse_predicate

__all__ = ["Assessment", "ReviewService"]

log = logging.getLogger("lockgate.review")

Hook = Callable[[ReviewItem], Awaitable[None]]
WEBHOOK_EVENTS = frozenset({"created", "escalated", "decided", "sla_breached"})
MAX_REASON = 2000
RESUME_LEASE_S = 60.0
"""How long one process may take to finish a decided item's work before another may."""


@dataclass(slots=True)
class Assessment:
    """What a policy says about one call."""

    review: bool
    reasons: list[str] = field(default_factory=list)
    confidence: float | None = None
    auto_approved: bool = False
    """True when a confidence threshold was checked and passed (recorded as automatic)."""


class ReviewService:
    def __init__(
        self,
        settings: ReviewSettings,
        repo: ReviewRepository,
        *,
        webhooks: ReviewWebhookOutbox | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.webhooks = webhooks
        """Delivers ``review.created`` / ``.escalated`` / ``.decided`` / ``.sla_breached``
        webhooks from the outbox rows the repository writes with each change."""
        if webhooks is not None:
            repo.webhook_events = WEBHOOK_EVENTS
        self._rng = rng or random.Random()
        self._predicates: dict[str, list[Predicate]] = {
            task: [parse_predicate(p) for p in pol.when.predicates]
            for task, pol in settings.policies.items()
        }
        self.resumers: dict[str, Hook] = {}
        """``source`` or ``source:task`` -> finishes the waiting work after a decision
        (``jobs``; ``events:<task>`` in an event consumer)."""
        self.on_decided: list[Hook] = []
        """Called after every decision (feedback rows)."""
        self.on_breach: list[Hook] = []
        """Called once per SLA breach (alerts)."""
        self._auto: list[NewReview] = []
        self._auto_task: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Event] = {}
        self._owner = f"resume:{uuid.uuid4().hex[:12]}"

    # ------------------------------------------------------------------ policy

    def policy_for(self, task: str | None) -> ReviewPolicy | None:
        if task is None:
            return None
        return self.settings.policies.get(task)

    def assess(
        self, task: str, policy: ReviewPolicy, *, output: Any, request: Any,
        confidence: float | None = None, contract_failed: bool = False,
        guard_flags: tuple[str, ...] = (),
    ) -> Assessment:
        when = policy.when
        reasons: list[str] = []
        if when.confidence_below is not None:
            if confidence is None:
                reasons.append(f"confidence unknown ({policy.confidence.source})")
            elif confidence < when.confidence_below:
                reasons.append(f"confidence {confidence:.3f} < {when.confidence_below}")
        for pred in self._predicates.get(task, ()):
            if evaluate(pred, output, request):
                reasons.append(f"predicate {pred.text}")
        if when.contract_failed and contract_failed:
            reasons.append("contract failed after repair")
        for flag in when.guard_flags:
            if flag in guard_flags:
                reasons.append(f"guard flag {flag}")
        if not reasons and when.sample > 0 and self._rng.random() < when.sample:
            reasons.append(f"random audit sample ({when.sample:g})")
        auto = not reasons and when.confidence_below is not None
        return Assessment(bool(reasons), reasons, confidence, auto)

    # ------------------------------------------------------------------ queue

    async def submit(self, new: NewReview) -> ReviewItem:
        item = await self.repo.insert(new)
        self._send_webhooks()
        return item

    def record_auto(self, new: NewReview) -> None:
        """Record an auto-approval off the hot path (batched every 200 ms)."""
        new.state = "auto_approved"
        self._auto.append(new)
        if self._auto_task is None or self._auto_task.done():
            self._auto_task = asyncio.get_running_loop().create_task(self._flush_auto())

    async def _flush_auto(self) -> None:
        await asyncio.sleep(0.2)
        while self._auto:
            batch, self._auto = self._auto[:500], self._auto[500:]
            try:
                await self.repo.insert_many_auto(batch)
            except Exception:
                log.exception("could not record %d auto-approved review rows", len(batch))

    async def flush(self) -> None:
        if self._auto_task is not None:
            with contextlib.suppress(Exception):
                await self._auto_task

    # ------------------------------------------------------------------ access

    @staticmethod
    def teams_of(principal: Principal) -> list[str] | None:
        """The reviewer teams a key acts for; None for an admin (every team)."""
        if principal.is_master:
            return None
        return [t for t in (principal.team_name, principal.team_id) if t]

    def may_review(self, principal: Principal, item: ReviewItem) -> bool:
        teams = self.teams_of(principal)
        if teams is None:
            return True
        # the policy's other reviewer teams share the item until it is escalated away
        others = item.reviewers if item.escalations == 0 else []
        return any(t in teams for t in (item.team, *others) if t is not None)

    def may_read(self, principal: Principal, item: ReviewItem) -> bool:
        return self.may_review(principal, item) or (
            item.key_id is not None and item.key_id == principal.key_id
        )

    def _require_reviewer(self, principal: Principal, item: ReviewItem) -> None:
        if not self.may_review(principal, item):
            raise Forbidden(
                f"This key may not review items of team '{item.team or 'admins'}'.",
                code="review_forbidden",
            )

    @staticmethod
    def actor(principal: Principal) -> str:
        return principal.key_id

    # ------------------------------------------------------------------ verbs

    async def get(self, item_id: str, principal: Principal) -> ReviewItem:
        item = await self.repo.get(item_id)
        if not self.may_read(principal, item):
            # the same answer as a missing id: do not confirm other teams' items exist
            raise ReviewNotFound(f"No review item '{item_id}'.", param="id")
        return item

    async def claim(self, item_id: str, principal: Principal) -> ReviewItem:
        item = await self.get(item_id, principal)
        self._require_reviewer(principal, item)
        return await self.repo.claim(item_id, self.actor(principal), self.settings.claim_ttl_s)

    async def claim_next(self, principal: Principal, task: str | None = None) -> ReviewItem | None:
        return await self.repo.claim_next(
            self.teams_of(principal), self.actor(principal), self.settings.claim_ttl_s, task=task
        )

    async def release(self, item_id: str, principal: Principal) -> ReviewItem:
        item = await self.get(item_id, principal)
        self._require_reviewer(principal, item)
        return await self.repo.release(item_id, self.actor(principal))

    async def decide(
        self, item_id: str, principal: Principal, action: str, *, output: Any = None,
        reason: str | None = None, team: str | None = None, has_output: bool = False,
    ) -> ReviewItem:
        if action not in ACTIONS:
            raise ReviewInvalid(
                f"'action' must be one of {', '.join(ACTIONS)}.", param="action"
            )
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
            raise ReviewInvalid(f"'reason' is a string of at most {MAX_REASON} characters.",
                                param="reason")
        item = await self.get(item_id, principal)
        self._require_reviewer(principal, item)
        who = self.actor(principal)
        if action == "escalate":
            target = team or item.escalate_to
            if not target:
                raise ReviewInvalid("'team' is required: this item has no escalate_to team.",
                                    param="team")
            if target == item.team:
                raise ReviewInvalid(f"The item is already with team '{target}'.", param="team")
            item = await self.repo.escalate(item_id, who, target, reason)
            self._send_webhooks()
            return item
        decision: dict[str, Any] = {"action": action, "automatic": False}
        if action == "reject":
            if not reason or not reason.strip():
                raise ReviewInvalid("A rejection needs a 'reason'.", param="reason")
            state = "rejected"
        elif action == "edit":
            if not has_output:
                raise ReviewInvalid("An edit needs the corrected 'output'.", param="output")
            self._check_contract(item, output)
            decision["output"] = output
            state = "edited"
        else:
            state = "approved"
        if reason:
            decision["reason"] = reason
        item = await self.repo.decide(item_id, who, state, decision)
        self._wake(item.id)
        self._send_webhooks()
        for hook in self.on_decided:
            try:
                await hook(item)
            except Exception:
                log.exception("review decided hook failed for %s", item.id)
        await self._resume(item)
        return item

    @staticmethod
    def _check_contract(item: ReviewItem, output: Any) -> None:
        schema = item.contract
        if not schema:
            return
        try:
            validator = Draft202012Validator(schema)
            errors = sorted(validator.iter_errors(output), key=lambda e: list(e.absolute_path))
        except (SchemaError, TypeError, ValueError, RecursionError) as exc:
            raise ContractBroken(f"The corrected output cannot be checked: {exc}") from None
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "(root)"
            raise ContractBroken(
                f"The corrected output breaks the contract at {where}: {first.message}",
                param="output",
            )

    # ------------------------------------------------------------------ waiting

    def _wake(self, item_id: str) -> None:
        ev = self._waiters.get(item_id)
        if ev is not None:
            ev.set()

    async def wait(self, item_id: str, timeout: float, *, poll: float = 0.25) -> ReviewItem:
        """The item once decided or when ``timeout`` passes (decisions made by any gateway
        are seen by polling the store; this process's own decisions wake it at once)."""
        deadline = time.monotonic() + timeout
        ev = self._waiters.setdefault(item_id, asyncio.Event())
        try:
            while True:
                item = await self.repo.get(item_id)
                left = deadline - time.monotonic()
                if item.decided or left <= 0:
                    return item
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), min(poll, left))
        finally:
            self._waiters.pop(item_id, None)

    # ------------------------------------------------------------------ after

    async def _resume(self, item: ReviewItem) -> None:
        resumer = self._resumer_for(item)
        if resumer is None or not item.decided or item.resumed_at is not None:
            return
        owner = f"{self._owner}:{uuid.uuid4().hex[:8]}"  # one lease per attempt
        if not await self.repo.lease_resume(item.id, owner, RESUME_LEASE_S):
            return  # finished already, or another task or process is finishing it
        try:
            await resumer(item)
        except Exception:
            await self.repo.drop_resume_lease(item.id, owner)
            log.exception("resuming %s (%s %s) failed; the sweeper retries", item.id,
                          item.source, item.source_ref)
            return
        await self.repo.mark_resumed(item.id)

    def _resumer_for(self, item: ReviewItem) -> Hook | None:
        """``resumers["<source>:<task>"]`` (an event consumer serves one task), else
        ``resumers["<source>"]``."""
        return self.resumers.get(f"{item.source}:{item.task}") or self.resumers.get(item.source)

    async def sweep(self, now: float | None = None) -> dict[str, int]:
        """SLA breaches (escalate + alert, once) and decided items whose work never resumed."""
        now = time.time() if now is None else now
        breached = 0
        for item_id in await self.repo.overdue(now):
            item = await self.repo.mark_breached(item_id, now)
            if item is None:
                continue
            breached += 1
            log.warning("review %s (task %s) breached its SLA; now with team %s", item.id,
                        item.task, item.team)
            self._send_webhooks()
            for hook in self.on_breach:
                try:
                    await hook(item)
                except Exception:
                    log.exception("review breach hook failed for %s", item.id)
        resumed = 0
        if self.resumers:
            sources = sorted({key.partition(":")[0] for key in self.resumers})
            for item in await self.repo.unresumed(sources):
                if self._resumer_for(item) is not None:
                    await self._resume(item)
                    resumed += 1
        return {"breached": breached, "resumed": resumed}

    async def run_sweeper(self, stop: asyncio.Event) -> None:
        """SLA sweeps until ``stop``; also delivers the webhook outbox (every instance)."""
        sender = None
        if self.webhooks is not None:
            sender = asyncio.create_task(self.webhooks.run(stop), name="lockgate-review-webhooks")
        try:
            while not stop.is_set():
                try:
                    await self.sweep()
                except Exception:
                    log.exception("review sweep failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.sweep_interval_s)
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender

    def _send_webhooks(self) -> None:
        """A change just wrote its webhook row (in its transaction): send it now, not at
        the next poll."""
        if self.webhooks is not None:
            self.webhooks.wake()

    async def aclose(self) -> None:
        await self.flush()
        if self.webhooks is not None:  # what is due now, best effort (the rest stays queued
            with contextlib.suppress(Exception):  # for the next instance that runs)
                await asyncio.wait_for(self.webhooks.run_once(), 5)
