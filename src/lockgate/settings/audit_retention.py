"""``audit: retention:``: how long audit rows stay in the live table (lockgate.store.archive).

Example::

    audit:
      retention:
        max_age_days: 90          # rows older than this move to the archive
        max_rows: 1000000         # and the live table keeps at most this many
        archive_dir: audit-archive  # relative to home (or absolute)
        interval_seconds: 3600    # `lockgate serve` archives this often; 0 = CLI only

Unset (the default), nothing is archived; ``lockgate audit archive`` then needs
``--max-age-days`` or ``--max-rows``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, model_validator

from lockgate.settings.base import Strict

__all__ = ["DEFAULT_ARCHIVE_DIR", "AuditRetention"]

DEFAULT_ARCHIVE_DIR = "audit-archive"


class AuditRetention(Strict):
    max_age_days: float | None = Field(None, gt=0)
    max_rows: int | None = Field(None, ge=1)
    archive_dir: str = DEFAULT_ARCHIVE_DIR
    interval_seconds: float = Field(3600.0, ge=0)
    """How often a running gateway archives (one of them at a time); 0 turns it off."""
    file_rows: int = Field(100_000, ge=1)
    """Records per archive file at most."""

    @model_validator(mode="after")
    def _some_limit(self) -> AuditRetention:
        if self.max_age_days is None and self.max_rows is None:
            raise ValueError("audit.retention needs max_age_days, max_rows or both")
        return self

    @property
    def max_age(self) -> timedelta | None:
        return timedelta(days=self.max_age_days) if self.max_age_days is not None else None

    def directory(self, home: Path) -> Path:
        path = Path(self.archive_dir)
        return path if path.is_absolute() else home / path
