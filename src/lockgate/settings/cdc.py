"""``cdc:`` of lockgate.yaml: change-data-capture consumers run by ``lockgate worker`` (and
``lockgate cdc run`` without ``--capture``).

Example::

    cdc:
      - capture: tickets                      # installed with `lockgate cdc install`
        dsn: env:CRM_DATABASE_URL             # postgresql://... or mysql://...
        task: summarize
        select: summary
        write_column: summary                 # or side_table: ticket_ai, or event: nats://...
        concurrency: 8
        lease: 60
        max_attempts: 5
        poll: 1.0
        on_delete: remove                     # a captured DELETE: remove | mark | task
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lockgate.settings.base import Strict

__all__ = ["CdcConsumerSettings"]

_IDENT = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


class CdcConsumerSettings(Strict):
    capture: str = Field(pattern=_IDENT)
    dsn: str = Field(min_length=1)
    """The user's database (``env:NAME`` allowed)."""
    task: str = Field(min_length=1)
    select: str | None = None
    write_column: str | None = Field(None, pattern=_IDENT)
    side_table: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}"
                                                 r"(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
    event: str | None = None
    concurrency: int = Field(8, ge=1, le=256)
    lease: float = Field(60.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=100)
    poll: float = Field(1.0, gt=0)
    backoff: float = Field(1.0, gt=0)
    on_delete: Literal["remove", "mark", "task"] = "remove"
    """What a captured DELETE does: ``remove`` the row's side-table results, ``mark`` it with
    a tombstone row, or run the ``task`` on the deleted row's old values (side table or
    event). Events say ``"event": "deleted"``; a write-back column went with the row."""

    @model_validator(mode="after")
    def _one_destination(self) -> CdcConsumerSettings:
        if sum(x is not None for x in (self.write_column, self.side_table, self.event)) != 1:
            raise ValueError(f"cdc[{self.capture}]: give exactly one of write_column, "
                             "side_table, event")
        return self
