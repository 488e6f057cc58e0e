"""Build the provider object for one configured deployment.

:func:`build_provider` dispatches on ``deployment.provider``. Every backend
module is imported lazily, so a gateway that only talks to OpenAI-compatible
servers never imports llama.cpp, and a missing optional backend is reported
as a one-line :class:`~lockgate.errors.ConfigError` when the deployment is
built (not at import time).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockgate.errors import ConfigError

if TYPE_CHECKING:
    from lockgate.providers.base import Provider
    from lockgate.settings import ModelDeployment

__all__ = ["PROVIDER_CLASSES", "build_provider"]

PROVIDER_CLASSES: dict[str, tuple[str, str]] = {
    "openai": ("lockgate.providers.openai_compat", "OpenAICompatProvider"),
    "anthropic": ("lockgate.providers.anthropic", "AnthropicProvider"),
    "llamacpp": ("lockgate.providers.llamacpp", "LlamaCppProvider"),
    "embedded": ("lockgate.providers.embedded", "EmbeddedEmbeddingsProvider"),
    "rules": ("lockgate.providers.rules", "RulesProvider"),
}
"""provider name -> (module, class). Each class takes the deployment as its only argument."""

_MISSING_HINT = {
    "llama_cpp": "install the local extra: pip install 'lockgate[local]'",
}


_TAKES_HOME = frozenset({"llamacpp"})
"""Backends that keep files (e.g. an assembled model) under the lockgate home dir."""


def build_provider(deployment: ModelDeployment, *, home: Path | None = None) -> Provider:
    """Return a new provider for ``deployment``; ConfigError if its backend is unavailable."""
    try:
        module_name, class_name = PROVIDER_CLASSES[deployment.provider]
    except KeyError:
        raise ConfigError(
            f"models[{deployment.name}].provider: unknown provider '{deployment.provider}'"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        hint = _MISSING_HINT.get(missing.split(".")[0], "")
        what = (
            "is not available in this build"
            if missing == module_name
            else f"needs the missing module '{missing}'"
        )
        raise ConfigError(
            f"models[{deployment.name}].provider: provider '{deployment.provider}' {what}"
            + (f"; {hint}" if hint else "")
        ) from None
    cls: Any = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"models[{deployment.name}].provider: {module_name} has no {class_name}")
    if home is not None and deployment.provider in _TAKES_HOME:
        provider: Provider = cls(deployment, home=home)
    else:
        provider = cls(deployment)
    return provider
