"""Which tools a run may use: agent ∩ key/team ∩ end user, default deny.

- the agent's own ``tools`` patterns;
- the calling key: its grant (``agents.grants.keys`` by key name or id) *and* its team's
  (``agents.grants.teams`` by team name or id) where both exist, else whichever exists; a
  key with neither gets no tools. The master key (an operator) passes this part;
- a verified end user (:class:`~lockgate.pipeline.EndUser`): the union of the grants of
  ``user:<id>`` and each ``group:<g>``; none matching: no tools. Without an end user this
  part does not narrow.

The same check runs when tools are listed to the model and again when a call is executed.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from lockgate.pipeline import EndUser, Principal
from lockgate.settings.agents import AgentGrants

__all__ = ["Grants", "matches"]


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


class Grants:
    def __init__(self, settings: AgentGrants) -> None:
        self.settings = settings

    def _caller_patterns(self, principal: Principal) -> list[list[str]] | None:
        """Pattern lists that must each match (None: operator, no narrowing)."""
        if principal.is_master:
            return None
        s = self.settings
        parts: list[list[str]] = []
        for name in (principal.key_name, principal.key_id):
            if name and name in s.keys:
                parts.append(s.keys[name])
                break
        for name in (principal.team_name, principal.team_id):
            if name and name in s.teams:
                parts.append(s.teams[name])
                break
        if not parts:
            return [[]]  # default deny
        return parts

    def _user_patterns(self, end_user: EndUser | None) -> list[str] | None:
        if end_user is None:
            return None
        s = self.settings.end_users
        out = list(s.get(f"user:{end_user.user_id}", ()))
        for g in end_user.groups:
            out.extend(s.get(f"group:{g}", ()))
        return out

    def allowed(self, tool: str, agent_patterns: Iterable[str], principal: Principal,
                end_user: EndUser | None) -> bool:
        if not matches(tool, agent_patterns):
            return False
        caller = self._caller_patterns(principal)
        if caller is not None and not all(matches(tool, p) for p in caller):
            return False
        user = self._user_patterns(end_user)
        return user is None or matches(tool, user)

    def filter(self, tools: Iterable[str], agent_patterns: list[str], principal: Principal,
               end_user: EndUser | None) -> list[str]:
        return [t for t in tools if self.allowed(t, agent_patterns, principal, end_user)]
