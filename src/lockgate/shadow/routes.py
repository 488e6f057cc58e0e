"""Routes: which model is mirrored to which candidate deployment, how often, how patiently.

``shadow.routes`` in lockgate.yaml (:class:`~lockgate.observability.settings.ShadowConfig`)
names a public model, a candidate (a deployment id as in ``x-lockgate-deployment``,
or a public model name: its first deployment), a percent and a timeout;
:func:`resolve_routes` checks them against the configured deployments once, at start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lockgate.settings import ModelDeployment, ShadowSettings

__all__ = ["ShadowRoute", "resolve_routes", "settings_of"]


@dataclass(frozen=True, slots=True)
class ShadowRoute:
    """A resolved route: the candidate deployment's id and how to price its usage."""

    model: str
    candidate_id: str
    price: Callable[[int, int], float]
    percent: float
    timeout: float = 60.0
    """Seconds for one candidate call, retries included (on top of its own timeouts)."""


def settings_of(value: Any) -> ShadowSettings | None:
    """``config.shadow`` as settings (a mapping or a bare route list is accepted too)."""
    if value is None or isinstance(value, ShadowSettings):
        return value
    if isinstance(value, Mapping):
        return ShadowSettings.model_validate(value)
    if isinstance(value, list):
        return ShadowSettings.model_validate({"routes": value})
    raise TypeError(f"shadow: expected settings, got {type(value).__name__}")


def resolve_routes(deployments: Sequence[ModelDeployment], settings: ShadowSettings
                   ) -> list[ShadowRoute]:
    """One route per configured entry; ValueError for an unknown model or candidate."""
    names = {d.name for d in deployments}
    routes: list[ShadowRoute] = []
    for cfg in settings.routes:
        if cfg.model not in names:
            raise ValueError(f"shadow: unknown model '{cfg.model}'")
        dep = next((d for d in deployments if d.deployment_id == cfg.candidate), None)
        if dep is None:
            dep = next((d for d in deployments if d.name == cfg.candidate), None)
        if dep is None:
            raise ValueError(
                f"shadow: candidate '{cfg.candidate}' is neither a deployment id nor a model"
            )
        if dep.mode != "chat":
            raise ValueError(f"shadow: candidate '{cfg.candidate}' is not a chat deployment")
        routes.append(ShadowRoute(model=cfg.model, candidate_id=dep.deployment_id,
                                  price=dep.pricing.cost, percent=cfg.percent,
                                  timeout=cfg.timeout))
    return routes
