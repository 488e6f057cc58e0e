"""Route: a public model name -> the ordered deployments to try.

The first deployment is drawn by weight (A/B, canary); the others follow in
config order as fallbacks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lockgate.providers.base import Provider
from lockgate.settings import ModelDeployment


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
