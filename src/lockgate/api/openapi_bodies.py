"""Request bodies in the OpenAPI document (``/openapi.json``).

The routes read their bodies themselves (size limit, depth limit, precise 400s), so FastAPI
cannot see them; :func:`declare_request_bodies` adds them to the generated document, so
clients and API fuzzers (schemathesis) know what each route takes. The schemas describe
the fields lockgate reads; other fields pass through (``additionalProperties``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from lockgate.formats.anthropic_request import MESSAGES_REQUEST_SCHEMA

__all__ = ["REQUEST_BODIES", "declare_request_bodies"]

Schema = dict[str, Any]

_STR: Schema = {"type": "string"}
_OBJ: Schema = {"type": "object"}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = (),
            extra: bool = True) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": extra}


_MESSAGE = _object({
    "role": {"type": "string",
             "enum": ["system", "developer", "user", "assistant", "tool", "function"]},
    "content": {"anyOf": [_STR, {"type": "array", "items": _OBJ}, {"type": "null"}]},
    "name": _STR, "tool_call_id": _STR, "tool_calls": {"type": "array", "items": _OBJ},
}, ("role",))

CHAT: Schema = _object({
    "model": _STR,
    "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    "n": {"type": "integer", "minimum": 1, "maximum": 128},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "stop": {"anyOf": [_STR, {"type": "array", "items": _STR}]},
    "stream": {"type": "boolean"}, "stream_options": _OBJ, "user": _STR,
    "tools": {"type": "array", "items": _OBJ},
    "tool_choice": {"anyOf": [_STR, _OBJ]}, "response_format": _OBJ,
    "parallel_tool_calls": {"type": "boolean"},
}, ("model", "messages"))

EMBEDDINGS: Schema = _object({
    "model": _STR,
    "input": {"anyOf": [_STR, {"type": "array", "items": _STR, "minItems": 1},
                        {"type": "array", "items": {"type": "integer"}, "minItems": 1}]},
    "dimensions": {"type": "integer", "minimum": 1}, "encoding_format": _STR, "user": _STR,
}, ("model", "input"))

JOB: Schema = _object({
    "task": _STR, "input": {}, "idempotency_key": {"type": "string", "maxLength": 512},
    "partition_key": {"type": "string", "maxLength": 512},
    "priority": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    "webhook_url": {"type": "string", "maxLength": 2048},
}, ("task", "input"), extra=False)

BATCH: Schema = _object({
    "input_file_id": _STR, "endpoint": _STR, "completion_window": _STR,
    "metadata": {"type": "object", "additionalProperties": _STR},
}, ("input_file_id", "endpoint"))

FILE_UPLOAD: Schema = {"type": "object", "required": ["file", "purpose"], "properties": {
    "file": {"type": "string", "format": "binary"}, "purpose": {"type": "string",
                                                               "enum": ["batch"]}}}

RAG_DOCUMENTS: Schema = _object({
    "documents": {"type": "array", "minItems": 1, "items": _object({
        "id": _STR, "text": _STR, "title": _STR, "metadata": _OBJ,
        "acl": {"type": "array", "items": _STR},
        "format": {"type": "string", "enum": ["text", "markdown", "html"]},
    }, ("id", "text"))},
    "acl": {"type": "array", "items": _STR}, "sync": {"type": "boolean"},
    "embed_model": {"type": ["string", "null"]},
}, ("documents",))

RAG_QUERY: Schema = _object({
    "question": _STR, "k": {"type": "integer", "minimum": 1, "maximum": 50},
    "mode": _STR, "filters": _OBJ, "model": _STR, "stream": {"type": "boolean"},
}, ("question",))

TEAM: Schema = _object({"name": {"type": "string", "minLength": 1, "maxLength": 200},
                        "business_unit": {"type": ["string", "null"]}}, ("name",), extra=False)
KEY: Schema = _object({"team": {"type": "string", "minLength": 1}, "name": _STR,
                       "models": {"type": ["array", "null"], "items": _STR}},
                      ("team",), extra=False)
KILL: Schema = _object({"model": {"type": ["string", "null"]},
                        "team": {"type": ["string", "null"]}, "off": {"type": "boolean"}},
                       extra=False)

DECIDE: Schema = _object({
    "action": {"type": "string", "enum": ["approve", "edit", "reject", "escalate"]},
    "output": {}, "reason": {"type": ["string", "null"], "maxLength": 2000},
    "team": {"type": ["string", "null"]},
}, ("action",), extra=False)
CLAIM_NEXT: Schema = _object({"task": {"type": ["string", "null"]}}, extra=False)
FEEDBACK: Schema = _object({
    "request_id": _STR, "review_id": _STR, "job_id": _STR,
    "thumbs": {"type": "string", "enum": ["up", "down"]}, "score": {"type": "number"},
    "comment": _STR, "corrected_output": {}, "outcome": _STR, "task": _STR,
    "prompt_version": _STR, "contract_version": _STR, "input": {}, "output": {},
    "refused": {"type": "boolean"},
})
CANARY: Schema = _object({"deployment": _STR}, ("deployment",))
ACK: Schema = _object({"by": _STR, "resolve": {"type": "boolean"}})
AGENT_RUN: Schema = _object({
    "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
    "wait": {"type": "boolean"},
}, ("input",), extra=False)
TOOL_SOURCE: Schema = _object({
    "spec": _STR, "base_url": _STR, "auth": _OBJ, "classes": _OBJ,
    "include": {"type": "array", "items": _STR}, "collection": _STR, "k": {"type": "integer"},
    "url": _STR, "row_cap": {"type": "integer"}, "transport": {"type": "string",
                                                                "enum": ["stdio", "http"]},
    "command": {"type": "array", "items": _STR}, "env": _OBJ, "headers": _OBJ, "pins": _OBJ,
    "timeout_s": {"type": "number"}, "rate_per_minute": {"type": "integer"},
    "pool": {"type": "boolean"}, "description": _STR,
})
"""A tool source as under ``agents.tools.<kind>.<name>`` (the kind decides the fields)."""

AGENT_GRANT: Schema = _object({"tools": {"type": "array", "items": _STR}}, ("tools",),
                              extra=False)

AGENT_DEF: Schema = _object({
    "model": _STR, "instructions": _STR, "tools": {"type": "array", "items": _STR},
    "mode": {"type": "string", "enum": ["read_only", "approve_writes", "autonomous"]},
    "max_steps": {"type": "integer"}, "max_cost": {"type": ["number", "null"]},
    "timeout_s": {"type": "number"}, "allowed_teams": {"type": "array", "items": _STR},
    "reviewers": {"type": "array", "items": _STR}, "review_sla_s": {"type": "number"},
    "output_contract": {"type": ["object", "null"]},
    "delegates": {"type": "array", "items": _STR}, "max_depth": {"type": "integer"},
    "max_fanout": {"type": "integer"},
    "on_tool_failure": {"type": "string", "enum": ["continue", "stop"]},
    "description": _STR,
}, ("model",), extra=False)

_MESSAGES = {k: v for k, v in MESSAGES_REQUEST_SCHEMA.items() if k != "$defs"}

MINING_ANALYZE: Schema = _object({
    "log": {"anyOf": [_STR, {"type": "null"}]},
    "sources": {"type": "array", "items": _STR},
    "since": _STR, "until": _STR,
    "reference": {"type": "array", "items": {"type": "array", "items": _STR}},
    "reference_name": _STR, "svg": {"type": "boolean"}, "summary": {"type": "boolean"},
    "model": _STR, "max_variants": {"type": "integer", "minimum": 1, "maximum": 10000},
}, extra=False)
MINING_LOG: Schema = {"type": "string", "description": "CSV (header row) or XES document"}

REQUEST_BODIES: dict[tuple[str, str], tuple[str, Schema]] = {
    ("/v1/chat/completions", "post"): ("application/json", CHAT),
    ("/v1/embeddings", "post"): ("application/json", EMBEDDINGS),
    ("/v1/messages", "post"): ("application/json", _MESSAGES),
    ("/v1/jobs", "post"): ("application/json", JOB),
    ("/v1/files", "post"): ("multipart/form-data", FILE_UPLOAD),
    ("/v1/batches", "post"): ("application/json", BATCH),
    ("/v1/rag/{collection}/documents", "post"): ("application/json", RAG_DOCUMENTS),
    ("/v1/rag/{collection}/query", "post"): ("application/json", RAG_QUERY),
    ("/admin/teams", "post"): ("application/json", TEAM),
    ("/admin/keys", "post"): ("application/json", KEY),
    ("/admin/controls/kill", "post"): ("application/json", KILL),
    ("/admin/controls/canary", "post"): ("application/json", CANARY),
    ("/v1/reviews/{item_id}/decide", "post"): ("application/json", DECIDE),
    ("/v1/reviews/claim", "post"): ("application/json", CLAIM_NEXT),
    ("/v1/feedback", "post"): ("application/json", FEEDBACK),
    ("/v1/alerts/{alert_id}/ack", "post"): ("application/json", ACK),
    ("/v1/mining/analyze", "post"): ("application/json", MINING_ANALYZE),
    ("/v1/mining/logs/{name}", "put"): ("text/csv", MINING_LOG),
    ("/v1/agents/{name}/runs", "post"): ("application/json", AGENT_RUN),
    ("/admin/agents/{name}", "put"): ("application/json", AGENT_DEF),
    ("/admin/agents/tools/{kind}/{name}", "put"): ("application/json", TOOL_SOURCE),
    ("/admin/agents/grants/{part}/{subject}", "put"): ("application/json", AGENT_GRANT),
}


def declare_request_bodies(app: FastAPI) -> None:
    """Make ``app.openapi()`` include :data:`REQUEST_BODIES` (and the Messages API's
    component schemas)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        for (path, method), (media, schema) in REQUEST_BODIES.items():
            op = doc.get("paths", {}).get(path, {}).get(method)
            if op is not None:
                op["requestBody"] = {"required": True,
                                     "content": {media: {"schema": schema}}}
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.update(MESSAGES_REQUEST_SCHEMA.get("$defs", {}))
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
