"""``mining:`` section of lockgate.yaml: process mining over lockgate's records and imported logs.

Example::

    mining:
      summary_model: local-chat        # chat model for the AI summary; unset = rule-based
      sources: [calls, reviews, jobs]  # what `lockgate mine` reads by default
      references:                      # declared reference paths, by name
        reviewed_call: [["call gateway/chat", "review queued", "review approved"]]
      max_events: 5000000
"""

from __future__ import annotations

from pydantic import Field, field_validator

from lockgate.settings.base import Strict

__all__ = ["MiningSettings"]


class MiningSettings(Strict):
    summary_model: str | None = None
    sources: list[str] = Field(default_factory=lambda: ["calls", "reviews", "jobs"])
    references: dict[str, list[list[str]]] = Field(default_factory=dict)
    """name -> allowed activity sequences (a case fits if it equals one of them)."""
    max_events: int = Field(5_000_000, ge=1)
    dot_path: str | None = None
    """Graphviz ``dot`` executable (default: found on PATH)."""

    @field_validator("references")
    @classmethod
    def _non_empty(cls, value: dict[str, list[list[str]]]) -> dict[str, list[list[str]]]:
        for name, paths in value.items():
            if not paths or any(not p for p in paths):
                raise ValueError(f"references.{name}: give at least one non-empty path")
        return value
