"""Structured JSON logs (structlog), configured once, with the request id bound per request.

:func:`configure_logging` sets up structlog *and* the standard library's root
logger to write one JSON object per line to stderr (or ``stream``)::

    {"event": "upstream failed", "level": "warning", "timestamp": "2026-11-22T05:01:02.123Z",
     "logger": "lockgate.pipeline", "request_id": "req_...", "model": "support", ...}

Every line carries the fields bound with :func:`request_context` (contextvars:
isolated per asyncio task, inherited by tasks created inside), plus
``trace_id``/``span_id`` when tracing is on. Modules that log through
``logging.getLogger(...)`` (the store, the shadow mirror) get the same JSON
and the same bound fields. ``format="console"`` renders the same events for
humans. It is configured once per process; later calls are no-ops unless
``force=True`` (:func:`reset_logging` undoes it, for tests).

Where it is used
----------------
* start-up (the server's lifespan, before the runtime starts)::

      from lockgate.observability.logging import configure_logging
      configure_logging(config.logging)        # Config.logging: LoggingSettings

* per request, where the request id is known (the HTTP middleware or the
  adapter that builds the ``Call``), around the handling::

      with request_context(request_id=call.request_id, model=call.model):
          ...

  or ``bind_request(request_id=...)`` at the start of the request's task
  (each ASGI request runs in its own task, so nothing leaks across requests).
* log with ``structlog.get_logger("lockgate.x").info("event", key=value)``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import IO, Any, Final

import orjson
import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, merge_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from lockgate.observability.tracing import current_trace_ids
from lockgate.settings import LoggingSettings

__all__ = [
    "bind_request",
    "configure_logging",
    "is_configured",
    "request_context",
    "reset_logging",
]

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_configured = False
_handler: logging.Handler | None = None


def _add_trace_ids(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    ids = current_trace_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def _serialise(obj: MutableMapping[str, Any], **_kw: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def _shared() -> list[Processor]:
    return [
        merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def is_configured() -> bool:
    return _configured


def configure_logging(
    settings: LoggingSettings | None = None,
    *,
    stream: IO[str] | None = None,
    force: bool = False,
) -> bool:
    """Configure structlog and stdlib logging once; False if it was already done."""
    global _configured, _handler
    if _configured and not force:
        return False
    if _configured:
        reset_logging()
    settings = settings or LoggingSettings()
    level = _LEVELS[settings.level]
    out = stream if stream is not None else sys.stderr
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_serialise)
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared = _shared()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        cache_logger_on_first_use=False,  # loggers made before configure still follow it
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    _handler = handler
    _configured = True
    return True


def reset_logging() -> None:
    """Undo :func:`configure_logging` (tests)."""
    global _configured, _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    structlog.reset_defaults()
    _configured = False


def bind_request(**fields: Any) -> None:
    """Bind fields (``request_id=...``) to every log line of the current task from now on."""
    bind_contextvars(**fields)


@contextmanager
def request_context(**fields: Any) -> Iterator[None]:
    """Bind fields (``request_id=...``) for the ``with`` block, then restore the previous ones."""
    with bound_contextvars(**fields):
        yield
