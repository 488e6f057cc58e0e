"""The one path every model call takes. See :class:`Pipeline`."""

from lockgate.pipeline.call import Call, Principal, UsageRecord
from lockgate.pipeline.pipeline import Controls, Pipeline

__all__ = ["Call", "Controls", "Pipeline", "Principal", "UsageRecord"]
