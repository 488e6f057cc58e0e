"""Kill switch: models and teams switched off at run time, on every gateway at once.

The set of switched-off models and teams is one JSON document in the state
backend (``ks:switches``, no expiry in practice) so every gateway sharing Redis
sees the same switches; each gateway keeps a local copy for the hot path (a set
lookup, no round-trip). A change (:meth:`KillSwitch.set`) writes the document
and announces it on the ``controls`` channel; listeners reload it. When no
document exists yet, ``kill_switch:`` in the config gives the start values.

The policy stage asks :meth:`KillSwitch.blocked` for the call's model and team.
A blocked call is answered by ``model_policies.<model>.fallback_model`` (a
non-AI ``provider: rules`` deployment, typically) or refused with 503
``model_disabled`` / ``team_disabled``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any, Literal

import orjson

from lockgate.state.base import StateBackend, StateUnavailable
from lockgate.state.invalidation import Invalidations

__all__ = ["KillSwitch", "SwitchKind"]

SwitchKind = Literal["model", "team"]
STATE_KEY = "ks:switches"
CHANNEL = "controls"
_FOREVER = 10 * 365 * 86400.0


class KillSwitch:
    def __init__(
        self,
        state: StateBackend,
        *,
        models: Iterable[str] = (),
        teams: Iterable[str] = (),
        shared: bool = False,
    ) -> None:
        self.state = state
        self.models: frozenset[str] = frozenset(models)
        self.teams: frozenset[str] = frozenset(teams)
        self.shared = shared
        """True with a shared backend: listen for changes made by other gateways."""
        self.hits = 0
        self._inv: Invalidations | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        return bool(self.models or self.teams)

    def blocked(self, model: str, team_id: str | None, team_name: str | None) -> SwitchKind | None:
        """Which switch blocks this call (``model`` first), or None."""
        if model in self.models:
            return "model"
        if self.teams and ((team_id is not None and team_id in self.teams)
                           or (team_name is not None and team_name in self.teams)):
            return "team"
        return None

    def snapshot(self) -> dict[str, list[str]]:
        return {"models": sorted(self.models), "teams": sorted(self.teams)}

    # -- persistence ----------------------------------------------------------

    async def load(self) -> None:
        """Read the shared document (keep the current values if none or unreachable)."""
        try:
            raw = await self.state.cache_get(STATE_KEY)
        except StateUnavailable:
            return
        if raw is None:
            return
        try:
            doc: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if isinstance(doc, dict):
            self.models = frozenset(str(m) for m in doc.get("models") or ())
            self.teams = frozenset(str(t) for t in doc.get("teams") or ())

    async def set(self, kind: SwitchKind, name: str, off: bool) -> dict[str, list[str]]:
        """Switch ``name`` off (``off=True``) or back on, here and on every gateway."""
        await self.load()  # start from the latest shared values
        current = set(self.models if kind == "model" else self.teams)
        if off:
            current.add(name)
        else:
            current.discard(name)
        if kind == "model":
            self.models = frozenset(current)
        else:
            self.teams = frozenset(current)
        doc = self.snapshot()
        raw = orjson.dumps(doc)
        await self.state.cache_set(STATE_KEY, raw, _FOREVER)
        if self.shared and await self.state.cache_get(STATE_KEY) is None:
            # the backend swallows cache errors: read back to know the change is shared
            raise StateUnavailable(
                "The kill switch could not be stored in the shared state (Redis); it changed "
                "on this gateway only."
            )
        if self._inv is not None:
            with contextlib.suppress(StateUnavailable):
                await self._inv.announce("changed")
        return doc

    async def start(self) -> None:
        """Load the shared switches and (shared backend) listen for changes."""
        await self.load()
        if self.shared:
            self._inv = Invalidations(self.state, CHANNEL, on_message=lambda _m: self._reload(),
                                      on_reset=self._reload)
            await self._inv.start()
            await self.load()  # anything changed while subscribing

    def _reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.load())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def stop(self) -> None:
        if self._inv is not None:
            await self._inv.stop()
        for task in list(self._reloads):
            task.cancel()
