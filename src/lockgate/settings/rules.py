"""``rules:`` of a ``provider: rules`` deployment (the kill switch's non-AI answer).

The behaviour (rendering, the HTTP rule service) is :mod:`lockgate.providers.rules`.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from lockgate.settings.base import Strict

__all__ = ["RulesHttp", "RulesSpec"]


class RulesHttp(Strict):
    """An existing rule service that answers a POSTed OpenAI request with JSON."""

    url: str = Field(pattern=r"^https?://")
    response_field: str | None = None
    """Dotted path to the answer text in the service's JSON (``a.b.0.c``)."""
    timeout: float | None = Field(None, gt=0)
    """Total seconds for the call; default: the deployment's timeouts."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers; values may be ``env:NAME`` references."""


class RulesSpec(Strict):
    """``rules:`` of a ``provider: rules`` deployment: exactly one of fixed, template, http."""

    fixed: str | None = None
    template: str | None = None
    http: RulesHttp | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RulesSpec:
        given = [n for n in ("fixed", "template", "http") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "rules needs exactly one of 'fixed', 'template' or 'http'"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self
