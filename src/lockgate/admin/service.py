"""Teams and keys: create, list, revoke, each change written to the audit chain.

Callers pass the acting :class:`~lockgate.pipeline.Principal`; changes need the master key
(403 ``admin_only`` otherwise). Reads are scoped: the master key sees every team and key, a
team key its own team's. Errors are :class:`~lockgate.errors.GatewayError` with the codes the
admin API has always answered with (``already_exists``, ``team_not_found``,
``model_not_found``, ``key_not_found``).

``via`` (e.g. ``"console"``) is recorded in the audit row's changes, so ``GET /admin/audit``
tells which adapter made the change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from lockgate.errors import BadRequest, Forbidden, GatewayError, NotFound
from lockgate.pipeline import Principal
from lockgate.store import AlreadyExists, NotFoundError, Store
from lockgate.store.records import ApiKey, Team

__all__ = ["AdminService"]


class AdminService:
    def __init__(self, store: Store, *, grantable: Callable[[str], bool],
                 revoke: Callable[[str], Awaitable[bool]]) -> None:
        """``grantable(model)``: may a key be limited to this model name; ``revoke(key_id)``:
        revoke in the store and tell every gateway (:meth:`Runtime.revoke_key`)."""
        self.store = store
        self._grantable = grantable
        self._revoke = revoke

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def require_admin(who: Principal) -> None:
        if not who.is_master:
            raise Forbidden("This needs the master key (an administrator).", code="admin_only")

    async def audit(self, who: Principal, action: str, *, target: str | None = None,
                    team_id: str | None = None, changes: dict[str, Any] | None = None,
                    via: str | None = None) -> None:
        """Append an admin action to the audit chain (a store failure fails the request)."""
        doc = dict(changes or {})
        if via is not None:
            doc["via"] = via
        await self.store.record_admin_action(action, actor=who.key_id, target=target,
                                             team_id=team_id, changes=doc)

    # ------------------------------------------------------------------ teams

    async def teams(self, who: Principal) -> list[Team]:
        found = await self.store.list_teams()
        if who.is_master:
            return found
        return [t for t in found if t.id == who.team_id]

    async def create_team(self, who: Principal, name: str, business_unit: str | None = None,
                          *, via: str | None = None) -> Team:
        self.require_admin(who)
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise BadRequest("A team name is 1-200 characters.", param="name",
                             code="invalid_value")
        try:
            team = await self.store.create_team(name, business_unit=business_unit)
        except AlreadyExists as exc:
            raise GatewayError(str(exc), status=409, type="invalid_request_error",
                               code="already_exists") from None
        await self.audit(who, "team.create", target=team.id, team_id=team.id,
                         changes={"name": team.name, "business_unit": team.business_unit},
                         via=via)
        return team

    # ------------------------------------------------------------------ keys

    async def keys(self, who: Principal, team: str | None = None) -> list[ApiKey]:
        """Keys, oldest first: one team's (id or name) or all; a team key sees only its
        own team's whatever it asks for."""
        if not who.is_master:
            team = who.team_id
        try:
            return await self.store.list_keys(team)
        except NotFoundError as exc:
            raise NotFound(str(exc), param="team", code="team_not_found") from None

    async def create_key(self, who: Principal, team: str, *, name: str = "",
                         models: Sequence[str] | None = None,
                         via: str | None = None) -> tuple[str, ApiKey]:
        """A new key (plaintext returned once, stored as a hash)."""
        self.require_admin(who)
        wanted = list(models) if models is not None else None
        unknown = [m for m in wanted or [] if not self._grantable(m)]
        if unknown:
            raise BadRequest(f"Unknown model(s): {', '.join(unknown)}", param="models",
                             code="model_not_found")
        try:
            plaintext, key = await self.store.create_key(team, name=name,
                                                         allowed_models=wanted)
        except NotFoundError as exc:
            raise NotFound(str(exc), param="team", code="team_not_found") from None
        await self.audit(who, "key.create", target=key.id, team_id=key.team_id,
                         changes={"name": key.name, "key_prefix": key.key_prefix,
                                  "allowed_models": list(key.allowed_models)
                                  if key.allowed_models is not None else None}, via=via)
        return plaintext, key

    async def revoke_key(self, who: Principal, key_id: str, *,
                         via: str | None = None) -> ApiKey | None:
        """Revoke now and tell every gateway (returns once they have been told)."""
        self.require_admin(who)
        if not isinstance(key_id, str) or len(key_id) > 100 or not await self._revoke(key_id):
            raise NotFound(f"No active key with id '{str(key_id)[:100]}'.",
                           code="key_not_found")
        key = await self.store.get_key(key_id)
        await self.audit(who, "key.revoke", target=key_id,
                         team_id=key.team_id if key is not None else None,
                         changes={"revoked": True}, via=via)
        return key
