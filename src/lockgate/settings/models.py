"""``models:``: the upstream deployments behind each public model name."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lockgate.settings.base import Strict, resolve_secret
from lockgate.settings.rules import RulesSpec

__all__ = ["CanarySpec", "ModelDeployment", "Pricing", "Timeouts"]


class Pricing(Strict):
    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        cost = prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        return cost / 1e6


class Timeouts(Strict):
    """Seconds. ``first_token`` and ``idle`` apply to streams and to the wait for headers."""

    connect: float = Field(5.0, gt=0)
    first_token: float = Field(60.0, gt=0)
    idle: float = Field(30.0, gt=0)
    total: float = Field(600.0, gt=0)


class CanarySpec(Strict):
    """``canary:`` of a deployment: it takes ``weight`` of its model's traffic and is rolled
    back automatically when it does worse than the model's stable (non-canary) deployments.

    Over the last ``window_seconds`` (stats shared by every gateway through Redis), once
    both sides have ``min_samples`` calls: rollback when the canary's error rate exceeds
    the stable one's by more than ``max_error_rate_margin`` (absolute: 0.05 is five
    percentage points), or its p95 latency exceeds the stable p95 by more than
    ``max_p95_margin_ms`` (when set).
    """

    max_error_rate_margin: float = Field(0.05, ge=0, le=1)
    max_p95_margin_ms: float | None = Field(None, ge=0)
    """None: latency is not compared."""
    window_seconds: float = Field(300.0, gt=0)
    min_samples: int = Field(20, ge=1)
    """Calls each side needs in the window before a verdict."""
    check_seconds: float = Field(5.0, gt=0)
    """How often each gateway shares its counts and evaluates the window."""


class ModelDeployment(Strict):
    """One upstream deployment behind a public model name.

    Several entries may share a ``name``: they are the deployments of one
    public model (weights, fallbacks).
    """

    name: str = Field(min_length=1)
    provider: Literal["openai", "anthropic", "llamacpp", "embedded", "rules"]
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    path: str | None = None
    mode: Literal["chat", "embeddings"] = "chat"
    engine: Literal["auto", "numpy", "onnx-int8"] = "auto"
    """``provider: embedded`` only: the NumPy float32 pass, or ONNX Runtime with int8
    weights built from the same shipped weights (~4x faster); ``auto`` = onnx-int8 when
    onnx and onnxruntime are installed, else numpy."""
    pricing: Pricing = Pricing()
    timeouts: Timeouts = Timeouts()
    max_retries: int = Field(1, ge=0, le=10)
    weight: float = Field(1.0, ge=0)
    id: str | None = None
    """Deployment id shown in ``x-lockgate-deployment``; defaults to ``name/provider:model``."""
    n_ctx: int = Field(2048, ge=256)
    n_threads: int | None = Field(None, ge=1)
    max_concurrency: int = Field(64, ge=1)
    rules: RulesSpec | None = None
    """``provider: rules`` only: the non-AI answer (fixed, template or http)."""
    canary: CanarySpec | None = None
    """Mark this deployment a canary of its model (weight = ``weight``), with automatic
    rollback (:class:`CanarySpec`). Give it its own ``id``."""

    @model_validator(mode="after")
    def _check_provider_fields(self) -> ModelDeployment:
        if self.provider == "rules" and self.rules is None:
            raise ValueError("provider 'rules' needs 'rules' (fixed, template or http)")
        if self.provider in ("openai", "anthropic") and not self.model:
            raise ValueError(f"provider '{self.provider}' needs 'model' (the upstream model id)")
        if self.provider == "openai" and not self.base_url:
            raise ValueError("provider 'openai' needs 'base_url' (any OpenAI-compatible server)")
        if self.provider in ("llamacpp", "embedded") and not self.path:
            raise ValueError("provider 'llamacpp' needs 'path' (bundled:... or a file path)")
        if self.api_key is not None and self.api_key.startswith("env:") and len(self.api_key) <= 4:
            raise ValueError("api_key 'env:' needs a variable name, e.g. env:OPENAI_API_KEY")
        return self

    @property
    def deployment_id(self) -> str:
        if self.id:
            return self.id
        return f"{self.name}/{self.provider}:{self.model or self.path or '-'}"

    def resolved_api_key(self) -> str | None:
        """The API key with ``env:NAME`` resolved; ConfigError if the variable is unset."""
        return resolve_secret(self.api_key, f"models[{self.name}].api_key")
