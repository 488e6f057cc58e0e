"""The one path every model call takes. See :class:`Pipeline`."""

from lockgate.pipeline.call import Call, Principal, UsageRecord
from lockgate.pipeline.pipeline import Pipeline

__all__ = ["Call", "Pipeline", "Principal", "UsageRecord"]
