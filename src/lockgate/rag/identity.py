"""Who a RAG query runs for: the calling key's team, plus a verified end user if any.

:func:`caller_for` turns the authenticated principal and the call's verified end
user (:class:`~lockgate.pipeline.call.EndUser`, e.g. from a signed
``x-lockgate-end-user`` header) into a :class:`~lockgate.rag.types.Caller`:
principals ``user:<id>``, ``group:<g>``, plus ``team:<team name>`` of the key (and
``public``). The master key without an end user is an operator (``all_access``, ACL
skipped); the master key *with* an end user acts as that end user only (no team).
Nothing the client sends unsigned (e.g. OpenAI's ``user`` field) changes the ACL.
"""

from __future__ import annotations

from lockgate.pipeline import EndUser, Principal
from lockgate.rag.types import Caller

__all__ = ["caller_for"]


def caller_for(principal: Principal, end_user: EndUser | None) -> Caller:
    """The ACL identity of a call (see the module docstring for the rules)."""
    if principal.is_master:
        if end_user is None:
            return Caller(all_access=True)
        return Caller(user_id=end_user.user_id, groups=end_user.groups)
    team = principal.team_name or principal.team_id
    if end_user is None:
        return Caller(team_id=team)
    return Caller(user_id=end_user.user_id, groups=end_user.groups, team_id=team)
