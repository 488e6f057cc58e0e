"""``facades:`` of lockgate.yaml: reverse proxies in front of legacy HTTP services.

Example::

    facades:
      - name: crm
        port: 8081                       # one listener per facade (host default 127.0.0.1)
        upstream: http://127.0.0.1:9000  # the legacy service (an optional path prefix is kept)
        shadow: false                    # true: compute every rule, inject nothing, log the diff
        rules:
          - name: ticket-summary         # enrich: fails open within budget_ms
            match: {methods: [GET], path: "/tickets/{id}", content_type: application/json,
                    json: {status: open}}
            task: summarize              # a task of jobs.tasks or a built-in
            input: description           # dot path in the body fed to the task ("" = all)
            select: summary              # output field placed (default: the whole output)
            to: {response_field: ai.summary}
            budget_ms: 400
          - name: urgency
            match: {methods: [POST], path: /tickets}
            task: ticket_label
            select: label
            to: {request_field: ai_label}        # set before the request reaches the service
          - name: no-pii-out                     # protective: fails closed
            action: redact
            match: {methods: [GET], path: "/customers/**"}
          - name: no-secrets-in
            action: block
            match: {methods: [POST, PUT], path: "/notes/**"}
            detector: pii                        # or task + block_labels

Only data and validation live here; :mod:`lockgate.facade` builds the proxy.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lockgate.settings.base import Strict

__all__ = ["FacadeMatch", "FacadeRule", "FacadeSettings", "FacadeTarget"]

_PATH_RE = re.compile(r"^/[^\s?#]*$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_DOT_PATH_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class FacadeMatch(Strict):
    methods: list[str] = Field(default_factory=lambda: ["GET"], min_length=1)
    path: str = Field(min_length=1)
    """``/a/b`` exact; ``*`` or ``{name}`` one segment; a final ``/**`` any rest (or none)."""
    content_type: str | None = None
    """Media type the inspected body must have (e.g. ``application/json``; no parameters)."""
    json_: dict[str, Any] = Field(default_factory=dict, alias="json")
    """(``json:`` in YAML) Dot path -> value: each must equal the JSON body's value there."""

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        out = [m.upper() for m in v]
        for m in out:
            if m not in METHODS:
                raise ValueError(f"unknown method '{m}' (one of {', '.join(METHODS)})")
        return out

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not _PATH_RE.match(v):
            raise ValueError("path must start with '/' and hold no spaces, '?' or '#'")
        return v

    @field_validator("json_")
    @classmethod
    def _json_paths(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if not _DOT_PATH_RE.match(key):
                raise ValueError(f"json: '{key}' is not a dot path (a.b.c)")
        return v


class FacadeTarget(Strict):
    """Where a rule's result goes (exactly one)."""

    response_field: str | None = None
    """Dot path set in the JSON response (fails open when the response is not JSON)."""
    response_header: str | None = None
    request_field: str | None = None
    """Dot path set in the JSON request body before it reaches the service."""
    event: str | None = None
    """An events URL (``nats://``, ``redis://``, ``amqp://``): the result is published there,
    computed after the response was sent."""
    job: bool = False
    """Submit the task as a job (``lockgate worker`` runs it); the response is not held."""

    @model_validator(mode="after")
    def _one(self) -> FacadeTarget:
        set_ = [n for n in ("response_field", "response_header", "request_field", "event")
                if getattr(self, n)]
        if self.job:
            set_.append("job")
        if len(set_) != 1:
            raise ValueError("'to' needs exactly one of response_field, response_header, "
                             "request_field, event, job")
        for n in ("response_field", "request_field"):
            value = getattr(self, n)
            if value is not None and not _DOT_PATH_RE.match(value):
                raise ValueError(f"{n}: '{value}' is not a dot path (a.b.c)")
        if self.response_header is not None and not _HEADER_RE.match(self.response_header):
            raise ValueError(f"response_header: '{self.response_header}' is not a header name")
        return self

    @property
    def side(self) -> Literal["request", "response"]:
        """Which body the rule reads by default: the request for ``request_field``."""
        return "request" if self.request_field else "response"


class FacadeRule(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    match: FacadeMatch
    action: Literal["enrich", "redact", "block"] = "enrich"
    """``enrich`` fails open; ``redact`` (PII in the response, or the request with
    ``side: request``) and ``block`` fail closed."""
    task: str | None = None
    """The task run through the pipeline (``jobs.tasks`` or a built-in)."""
    input: str = ""
    """Dot path of the inspected body fed to the task; empty: the whole body."""
    select: str | None = None
    """Output field placed at the destination; unset: the whole output object."""
    to: FacadeTarget | None = None
    side: Literal["request", "response"] | None = None
    """Which body is inspected; default: ``request`` for ``request_field`` and ``block``,
    else ``response``."""
    budget_ms: float = Field(500.0, gt=0, le=600_000)
    """Enrichment: wait at most this long for the task, then pass the answer unchanged."""
    shadow: bool | None = None
    """Overrides the facade's ``shadow``."""
    detector: Literal["pii"] | None = None
    """``block``: block when the PII detectors find anything (no model)."""
    block_labels: list[str] = Field(default_factory=list)
    """``block`` with a task: block when ``output.<select or label>`` is one of these."""
    entities: list[str] | None = None
    """``redact`` / ``detector: pii``: which PII entities (default: all built-in)."""

    @model_validator(mode="after")
    def _check(self) -> FacadeRule:
        if not _DOT_PATH_RE.match(self.input) and self.input != "":
            raise ValueError(f"rule '{self.name}': input '{self.input}' is not a dot path")
        if self.action == "enrich":
            if not self.task or self.to is None:
                raise ValueError(f"rule '{self.name}' (enrich) needs 'task' and 'to'")
            if self.to.request_field and self.side == "response":
                raise ValueError(f"rule '{self.name}': request_field needs side 'request'")
        elif self.action == "block":
            if (self.detector is None) == (self.task is None):
                raise ValueError(f"rule '{self.name}' (block) needs exactly one of "
                                 "'detector' or 'task'")
            if self.task and not self.block_labels:
                raise ValueError(f"rule '{self.name}' (block with a task) needs 'block_labels'")
        elif self.task is not None or self.to is not None:
            raise ValueError(f"rule '{self.name}' (redact) takes no 'task' or 'to': it uses "
                             "the PII detectors")
        return self

    @property
    def inspected_side(self) -> Literal["request", "response"]:
        if self.side is not None:
            return self.side
        if self.action == "block":
            return "request"
        if self.to is not None:
            return self.to.side
        return "response"


class FacadeSettings(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    upstream: str = Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    """``http(s)://host:port[/prefix]`` of the legacy service."""
    shadow: bool = False
    preserve_host: bool = False
    """Send the client's ``Host`` upstream (default: the upstream's, like nginx)."""
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(300.0, gt=0)
    """Longest silence from the upstream while reading its answer."""
    idle_timeout: float | None = Field(None, gt=0)
    """An upgraded (WebSocket) connection silent both ways this long is closed; default:
    ``read_timeout``."""
    max_tunnels: int = Field(1000, ge=1)
    """Upgraded connections open at once, per process; more get 503."""
    log_calls: bool = True
    """Log every answered request (a tuple on the request path; one ``facade_calls`` row
    per second of traffic) for process mining (``lockgate mine --source facade``)."""
    case_header: str = "X-Correlation-Id"
    """The request header whose value is a call's case id in mining (else client + path)."""
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Bodies a rule inspects are buffered up to this size; larger ones are not inspected
    (enrich: fail open; block/redact: 413/502, fail closed)."""
    rules: list[FacadeRule] = Field(default_factory=list)

    @field_validator("case_header")
    @classmethod
    def _case_header(cls, v: str) -> str:
        if not _HEADER_RE.match(v):
            raise ValueError(f"case_header: '{v}' is not a header name")
        return v

    @model_validator(mode="after")
    def _unique(self) -> FacadeSettings:
        names = [r.name for r in self.rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"facade '{self.name}': duplicate rule names {sorted(dup)}")
        return self
