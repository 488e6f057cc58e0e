"""Output contracts for the pipeline: which contract a call asks for, and the repair request.

A chat call (stream or not) has a contract when its body carries
``response_format: {type: json_schema, json_schema: {schema: ...}}`` (checked
against that schema) or ``metadata.contract: "<name>@<version>"`` (a contract
from ``guards.contracts``; unknown ids are a 400). The answer is validated; an
invalid answer gets exactly one automatic repair call (the conversation, the bad
answer, the errors and the schema, with ``response_format`` json_schema set to
the contract's schema), and if that is still invalid the call fails with 502
``output_contract_failed``. The contract is resolved before the cache and the
upstream (an unknown id is refused before any model call), and a cache hit is validated
too.

Streams (``Contract.stream``, default ``guards.contract_stream``): ``end`` validates the
answer assembled from the chunks when the stream ends (a violation ends the stream with
an SSE error event, no ``[DONE]``, no repair since the bytes are gone); ``buffer`` takes
the whole answer first (a non-stream upstream call), validates and repairs it like a
non-stream call, then streams the validated answer.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from lockgate.guards import Contract, ContractRegistry, build_repair_messages

__all__ = ["contract_for", "repair_body", "strip_gateway_metadata"]

_INLINE: dict[str, Contract] = {}
_INLINE_MAX = 256
_GATEWAY_META = ("contract", "task")


def contract_for(body: dict[str, Any], registry: ContractRegistry | None) -> Contract | None:
    """The contract ``body`` asks for, or None. Raises ContractNotFound (400) for an
    unknown ``metadata.contract``."""
    meta = body.get("metadata")
    if isinstance(meta, dict):
        cid = meta.get("contract")
        if isinstance(cid, str) and cid:
            return (registry or ContractRegistry()).get(cid)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict) and schema:
            raw = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
            digest = hashlib.sha256(raw).hexdigest()[:16]
            found = _INLINE.get(digest)
            if found is None:
                if len(_INLINE) >= _INLINE_MAX:
                    _INLINE.clear()
                found = _INLINE[digest] = Contract(f"response-format-{digest}@0", schema)
            return found
    return None


def strip_gateway_metadata(body: dict[str, Any]) -> dict[str, Any]:
    """The body without lockgate's own ``metadata`` keys (``contract``, ``task``)."""
    meta = body.get("metadata")
    if not isinstance(meta, dict) or not any(k in meta for k in _GATEWAY_META):
        return body
    rest = {k: v for k, v in meta.items() if k not in _GATEWAY_META}
    out = {k: v for k, v in body.items() if k != "metadata"}
    if rest:
        out["metadata"] = rest
    return out


def repair_body(
    body: dict[str, Any], contract: Contract, bad_output: str, errors: tuple[str, ...]
) -> dict[str, Any]:
    """The request for the one repair attempt."""
    messages = body.get("messages")
    msgs: list[dict[str, Any]] = list(messages) if isinstance(messages, list) else []
    out = dict(body)
    out["messages"] = build_repair_messages(msgs, bad_output, errors, contract)
    out["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": contract.name.replace(".", "_")[:64], "schema": contract.schema},
    }
    return out
