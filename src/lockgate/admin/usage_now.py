"""What each team and key is using right now: budget spend vs ceiling, rate-limit headroom.

The scopes are the ones the pipeline governs a call against
(:func:`lockgate.pipeline.scopes_for`: ``keys.<name or id>`` or the team's
``key_limits``/``key_budget`` for a key, ``teams.<name or id>`` for its team), read from the
governor's state backend -- process memory with one gateway, Redis (the counters every
gateway shares) when ``redis_url`` is set:

- budgets: :meth:`BudgetGuard.status` (spent and reserved in the current calendar window);
- rate limits: each GCRA counter is *peeked* by an admission of cost 0 straight on the
  backend (no governor statistics, no ticket). A cost-0 admission changes no counter: it
  may rewrite a counter's arrival time to ``max(tat, now)``, which GCRA reads the same.
  The answer is the units left now and the seconds until the counter is full again.

A backend that cannot answer gives the scope an ``error`` instead of numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lockgate.governance import Governor, Scope
from lockgate.governance.limits import plan_counters
from lockgate.pipeline import Call, Principal, scopes_for
from lockgate.settings import Config
from lockgate.state.base import RateCounter, StateUnavailable
from lockgate.store.records import ApiKey, Team

__all__ = ["BudgetLineUse", "RateUse", "ScopeUse", "UsageNow"]

_PEEK_ID = "lockgate-usage-peek"


@dataclass(frozen=True, slots=True)
class BudgetLineUse:
    window: str
    """``daily`` or ``monthly`` (calendar UTC)."""
    metric: str
    """``cost`` (currency) or ``tokens``."""
    limit: float
    spent: float
    reserved: float
    resets_at: str

    @property
    def left(self) -> float:
        return max(0.0, self.limit - self.spent - self.reserved)

    @property
    def share(self) -> float:
        """Spent + reserved as a share of the limit (0..1, capped)."""
        if self.limit <= 0:
            return 1.0
        return min(1.0, (self.spent + self.reserved) / self.limit)


@dataclass(frozen=True, slots=True)
class RateUse:
    unit: str
    """``rpm``, ``tpm``, ``rpd`` or ``tpd``."""
    metric: str
    """``requests`` or ``tokens``."""
    per: str
    """``minute`` or ``day`` (rolling)."""
    limit: int
    remaining: int
    full_in_s: float
    """Seconds until the counter is back to its full limit."""

    @property
    def used(self) -> int:
        return max(0, self.limit - self.remaining)

    @property
    def share(self) -> float:
        return 1.0 if self.limit <= 0 else min(1.0, self.used / self.limit)


@dataclass(slots=True)
class ScopeUse:
    kind: str
    """``team``, ``key`` or ``model``."""
    id: str
    label: str
    team: str | None = None
    """For a key: its team's name (or id)."""
    source: str = ""
    """Where the limits come from in ``lockgate.yaml`` (``teams.x``, ``keys.y``,
    ``teams.x.key_limits``)."""
    budgets: list[BudgetLineUse] = field(default_factory=list)
    rates: list[RateUse] = field(default_factory=list)
    error: str | None = None


def _probe(principal: Principal) -> Call:
    # the model name matches no ``model_policies`` entry: only key and team scopes come out
    return Call(kind="chat", model="\x00usage-now", body={}, principal=principal)


class UsageNow:
    def __init__(self, config: Config, governor: Governor | None) -> None:
        self.config = config
        self.governor = governor

    # ------------------------------------------------------------------ which scopes

    def key_scope(self, key: ApiKey) -> tuple[Scope, str] | None:
        p = Principal(key_id=key.id, team_id=key.team_id, team_name=key.team_name,
                      key_name=key.name or None)
        scope = next((s for s in scopes_for(self.config, _probe(p)) if s.kind == "key"), None)
        if scope is None:
            return None
        keys = self.config.keys
        if key.id in keys and not keys[key.id].is_empty():
            source = f"keys.{key.id}"
        elif key.name and key.name in keys and not keys[key.name].is_empty():
            source = f"keys.{key.name}"
        else:
            source = f"teams.{self._team_entry(key.team_id, key.team_name)}.key_limits/key_budget"
        return scope, source

    def team_scope(self, team: Team) -> tuple[Scope, str] | None:
        p = Principal(key_id="\x00none", team_id=team.id, team_name=team.name)
        scope = next((s for s in scopes_for(self.config, _probe(p)) if s.kind == "team"),
                     None)
        if scope is None:
            return None
        return scope, f"teams.{self._team_entry(team.id, team.name)}"

    def _team_entry(self, team_id: str | None, team_name: str | None) -> str:
        if team_id is not None and team_id in self.config.teams:
            return team_id
        return team_name or team_id or "?"

    # ------------------------------------------------------------------ reading

    async def teams(self, teams: Sequence[Team]) -> list[ScopeUse]:
        out = []
        for t in teams:
            found = self.team_scope(t)
            if found is not None:
                out.append(await self.read(found[0], t.name, source=found[1]))
        return out

    async def models(self) -> list[ScopeUse]:
        """``model_policies.<model>`` with limits or a budget (every caller of the model)."""
        out = []
        for name, pol in sorted(self.config.model_policies.items()):
            if pol.is_empty():
                continue
            p = Principal(key_id="\x00none", team_id=None)
            call = Call(kind="chat", model=name, body={}, principal=p)
            scope = next((s for s in scopes_for(self.config, call) if s.kind == "model"), None)
            if scope is not None:
                out.append(await self.read(scope, name, source=f"model_policies.{name}"))
        return out

    async def keys(self, keys: Sequence[ApiKey]) -> list[ScopeUse]:
        out = []
        for k in keys:
            if k.revoked:
                continue
            found = self.key_scope(k)
            if found is not None:
                label = f"{k.name} ({k.id})" if k.name else k.id
                out.append(await self.read(found[0], label, source=found[1],
                                           team=k.team_name or k.team_id))
        return out

    async def read(self, scope: Scope, label: str, *, source: str = "",
                   team: str | None = None) -> ScopeUse:
        use = ScopeUse(kind=scope.kind, id=scope.id, label=label, team=team, source=source)
        if self.governor is None:
            use.error = "no governor in this process"
            return use
        try:
            for b in await self.governor.budgets.status(scope):
                use.budgets.append(BudgetLineUse(
                    window=b.window, metric=b.metric, limit=b.limit, spent=b.spent,
                    reserved=b.reserved, resets_at=b.resets_at))
            use.rates = await self._rates(scope)
        except StateUnavailable as exc:
            use.error = f"the shared state is unavailable: {exc}"[:300]
        return use

    async def _rates(self, scope: Scope) -> list[RateUse]:
        planned = plan_counters([scope], 0)
        if not planned:
            return []
        assert self.governor is not None
        core = self.governor.core
        now = core.clock()
        peek = [RateCounter(p.counter.key, p.counter.limit, p.counter.period, 0)
                for p in planned]
        res = await core.state.admit(peek, [], now=now, reservation_id=_PEEK_ID,
                                     reservation_expires=now + 1.0)
        return [RateUse(unit=p.unit, metric=p.metric, per=p.per, limit=p.counter.limit,
                        remaining=s.remaining, full_in_s=round(s.reset, 3))
                for p, s in zip(planned, res.rates, strict=True)]

