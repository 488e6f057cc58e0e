"""Route: a public model name -> the ordered deployments to try.

The first deployment is drawn by weight (A/B, canary); the others follow in
config order as fallbacks. Model families served by a feature (``rag/<collection>``)
are virtual deployments registered by prefix (:mod:`lockgate.pipeline.virtual`).
A pinned call (``Call.deployment_pin``) gets exactly one deployment: :meth:`Router.pinned`.
Deployments taken out of service (rolled-back canaries, :mod:`lockgate.pipeline.canary`)
are in no plan until put back (:meth:`Router.disable`); pinned calls still reach them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from lockgate.pipeline.virtual import VirtualDeployment
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
        self._rng = rng or random.Random()
        self._virtual: dict[str, VirtualDeployment] = {}
        self._disabled: frozenset[str] = frozenset()
        self.replace_targets(targets)

    def replace_targets(self, targets: dict[str, list[Target]]) -> None:
        """Swap the deployments (same models; e.g. providers wrapped for observation)."""
        self._targets = targets
        self._by_id: dict[str, Target] = {}
        for group in targets.values():
            for t in group:
                self._by_id.setdefault(t.id, t)
        self._active = self._without(self._disabled)

    def _without(self, ids: frozenset[str]) -> dict[str, list[Target]]:
        if not ids:
            return self._targets
        out: dict[str, list[Target]] = {}
        for model, group in self._targets.items():
            kept = [t for t in group if t.id not in ids]
            out[model] = kept or group  # never leave a model with nothing
        return out

    def disable(self, ids: Iterable[str]) -> None:
        """Leave these deployment ids out of every plan (replaces the previous set)."""
        new = frozenset(ids)
        if new != self._disabled:
            self._disabled = new
            self._active = self._without(new)

    @property
    def disabled(self) -> frozenset[str]:
        return self._disabled

    def add_virtual(self, family: VirtualDeployment) -> None:
        """Route every model starting with ``family.prefix`` to ``family``."""
        if any(m.startswith(family.prefix) for m in self._targets):
            raise ValueError(f"configured models already use the prefix {family.prefix!r}")
        self._virtual[family.prefix] = family

    def virtual(self, model: str) -> VirtualDeployment | None:
        """The virtual deployment serving ``model``, if any (configured models first)."""
        if not self._virtual or model in self._targets:
            return None
        prefix, sep, _ = model.partition("/")
        return self._virtual.get(prefix + sep) if sep else None

    @property
    def virtual_families(self) -> list[VirtualDeployment]:
        return list(self._virtual.values())

    def configured(self, model: str) -> bool:
        """Is ``model`` a configured public model (O(1))?"""
        return model in self._targets

    def models(self) -> list[str]:
        """The configured public models (virtual families are listed by the pipeline)."""
        return list(self._targets)

    def plan(self, model: str) -> list[Target]:
        """Deployments to try, in order. Empty if the model is unknown."""
        targets = self._active.get(model)
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
