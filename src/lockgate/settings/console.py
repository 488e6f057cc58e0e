"""``console:`` section of lockgate.yaml (``Config.console``): the web console and the widget.

::

    console:
      enabled: true                  # /console and the widget routes
      session_ttl_seconds: 28800     # sign-in lifetime (cookie Max-Age and server-side expiry)
      secure_cookies: auto           # auto: Secure when the request came over https
      rollup_interval: 5             # seconds between folds of new audit rows into rollups
      widget:
        allowed_origins: ["https://intranet.example.com"]   # CORS + token origins; none: off
        default_ttl_seconds: 600
        max_ttl_seconds: 3600
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lockgate.settings.base import Strict

__all__ = ["ConsoleSettings", "WidgetSettings"]


class WidgetSettings(Strict):
    allowed_origins: list[str] = Field(default_factory=list)
    """Origins (``scheme://host[:port]``) that may embed the assistant panel."""
    default_ttl_seconds: float = Field(600.0, gt=0)
    max_ttl_seconds: float = Field(3600.0, gt=0)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out = []
        for origin in value:
            o = origin.rstrip("/")
            if not o.startswith(("http://", "https://")) or "/" in o.split("://", 1)[1]:
                raise ValueError(f"'{origin}' is not an origin like https://host[:port]")
            out.append(o)
        return out


class ConsoleSettings(Strict):
    enabled: bool = True
    session_ttl_seconds: float = Field(8 * 3600.0, gt=0)
    secure_cookies: Literal["auto", "always", "never"] = "auto"
    rollup_interval: float = Field(5.0, gt=0)
    widget: WidgetSettings = WidgetSettings()
