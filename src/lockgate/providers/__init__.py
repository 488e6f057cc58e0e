"""Model providers: the only code that talks to model servers.

A provider never imports the pipeline. Use :func:`build_provider` to get one
for a configured deployment.
"""

from lockgate.providers.base import (
    Completion,
    Provider,
    ProviderError,
    StreamChunk,
    Usage,
)
from lockgate.providers.registry import build_provider

__all__ = ["Completion", "Provider", "ProviderError", "StreamChunk", "Usage", "build_provider"]
