"""The one strict base model of every config section, and ``env:NAME`` secret references.

Every model of ``lockgate.yaml`` derives from :class:`Strict`: unknown keys are an error
(a typo is never silently ignored) and a loaded config is immutable.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict

from lockgate.errors import ConfigError

__all__ = ["Strict", "resolve_secret"]


class Strict(BaseModel):
    """Base of all config models: ``extra="forbid"``, ``frozen=True``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def resolve_secret(value: str | None, field: str) -> str | None:
    """``env:NAME`` -> the variable's value (ConfigError naming ``field`` if unset); any
    other value as is."""
    if value is None or not value.startswith("env:"):
        return value
    var = value[4:]
    resolved = os.environ.get(var)
    if resolved is None:
        raise ConfigError(f"{field}: environment variable {var} is not set")
    return resolved
