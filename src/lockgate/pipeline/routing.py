"""Route: a public model name -> the ordered deployments to try.

The first deployment is drawn by weight (A/B, canary); the others follow in
config order as fallbacks. A pinned call (``Call.deployment_pin``) gets exactly
one deployment: :meth:`Router.pinned`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lockgate.config import ModelDeployment
from lockgate.providers.base import Provider


@dataclass(frozen=True, slots=True)
class Target:
    deployment: ModelDeployment
    provider: Provider

    @property
    def id(self) -> str:
        return self.deployment.deployment_id


class Router:
    def __init__(self, targets: dict[str, list[Target]], rng: random.Random | None = None) -> None:
        self._targets = targets
        self._rng = rng or random.Random()
        self._by_id: dict[str, Target] = {}
        for group in targets.values():
            for t in group:
                self._by_id.setdefault(t.id, t)

    def models(self) -> list[str]:
        return list(self._targets)

    def mode_of(self, model: str) -> str | None:
        targets = self._targets.get(model)
        return targets[0].deployment.mode if targets else None

    def plan(self, model: str) -> list[Target]:
        """Deployments to try, in order. Empty if the model is unknown."""
        targets = self._targets.get(model)
        if not targets:
            return []
        if len(targets) == 1:
            return targets
        weights = [t.deployment.weight for t in targets]
        if sum(weights) <= 0:
            return targets
        first = self._rng.choices(range(len(targets)), weights=weights)[0]
        return [targets[first], *targets[:first], *targets[first + 1 :]]

    def pinned(self, deployment_id: str) -> list[Target]:
        """The one deployment with this id (the first configured), no fallback; [] if none."""
        target = self._by_id.get(deployment_id)
        return [target] if target is not None else []
