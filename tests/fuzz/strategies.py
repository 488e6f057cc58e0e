"""Hypothesis strategies for lockgate's request shapes: every known field, each either a
plausible value or any JSON value at all (wrong types, huge numbers, nesting)."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

SMALL_TEXT = st.text(max_size=12)
HEADER_TEXT = st.text(alphabet=string.printable.strip() + " ", min_size=1,
                      max_size=40).map(str.strip)

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SMALL_TEXT, inner, max_size=4),
    max_leaves=10,
)


def maybe(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the plausible value, sometimes anything."""
    return st.one_of(plausible, plausible, JSON)


def body(required: dict[str, st.SearchStrategy[Any]],
         optional: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object with the known fields (required ones sometimes missing) plus, now and
    then, unknown ones."""
    known = st.fixed_dictionaries({}, optional={**required, **optional})
    full = st.fixed_dictionaries(required, optional=optional)
    extra = st.dictionaries(SMALL_TEXT, JSON, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, st.one_of(full, full, known), extra)


NUMBER = st.one_of(st.integers(-5, 5), st.floats(-3, 3, allow_nan=False),
                   st.sampled_from([True, 2**63, -(2**63), 10**30]))
INT = st.one_of(st.integers(-3, 50), st.sampled_from([True, False, 0, 2**31, 2**63, 10**40]))
MODELS = st.sampled_from(["fast", "claude", "other", "embed", "rag/fuzzdocs", "rag/none",
                          "nope", "", "rag/"])

# ------------------------------------------------------------------ OpenAI chat

_TEXT_PART = st.fixed_dictionaries({"type": st.just("text"), "text": maybe(SMALL_TEXT)})
_IMAGE_PART = st.fixed_dictionaries({
    "type": st.just("image_url"),
    "image_url": maybe(st.fixed_dictionaries({"url": maybe(st.sampled_from(
        ["data:image/png;base64,AAAA", "https://example.com/a.png", "ftp://x", "data:x"]))})),
})
_FILE_PART = st.fixed_dictionaries({"type": st.just("file"), "file": maybe(
    st.fixed_dictionaries({"file_data": maybe(st.sampled_from(
        ["data:application/pdf;base64,AAAA", "data:text/plain;base64,AA"]))}))})
_PART = st.one_of(_TEXT_PART, _IMAGE_PART, _FILE_PART, SMALL_TEXT, JSON)
_CONTENT = st.one_of(st.text(max_size=40), st.lists(_PART, max_size=3), st.none(), JSON)
_TOOL_CALL = st.fixed_dictionaries({
    "id": maybe(SMALL_TEXT), "type": st.just("function"),
    "function": maybe(st.fixed_dictionaries({
        "name": maybe(SMALL_TEXT),
        "arguments": maybe(st.sampled_from(['{}', '{"a": 1}', "not json", "[1]", ""]))})),
})
_OA_MESSAGE = st.fixed_dictionaries(
    {"role": maybe(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))},
    optional={"content": _CONTENT, "tool_calls": maybe(st.lists(_TOOL_CALL, max_size=2)),
              "tool_call_id": maybe(SMALL_TEXT), "name": maybe(SMALL_TEXT)},
)
_OA_TOOL = st.fixed_dictionaries({"type": st.just("function"), "function": maybe(
    st.fixed_dictionaries({"name": maybe(SMALL_TEXT)}, optional={
        "description": maybe(SMALL_TEXT),
        "parameters": maybe(st.just({"type": "object", "properties": {}}))}))})

CHAT = body(
    {"model": maybe(MODELS), "messages": maybe(st.lists(_OA_MESSAGE, min_size=1, max_size=3))},
    {"max_tokens": INT, "max_completion_tokens": INT, "n": INT, "temperature": NUMBER,
     "top_p": NUMBER, "stop": maybe(st.one_of(SMALL_TEXT, st.lists(SMALL_TEXT, max_size=3))),
     "stream": maybe(st.booleans()), "stream_options": maybe(st.just({"include_usage": True})),
     "tools": maybe(st.lists(_OA_TOOL, max_size=2)),
     "tool_choice": maybe(st.sampled_from(["auto", "none", "required",
                                           {"type": "function", "function": {"name": "f"}}])),
     "response_format": maybe(st.sampled_from([{"type": "json_object"}, {
         "type": "json_schema", "json_schema": {"schema": {"type": "object"}}}])),
     "parallel_tool_calls": maybe(st.booleans()), "user": maybe(SMALL_TEXT),
     "seed": INT, "functions": JSON},
)

EMBEDDINGS = body(
    {"model": maybe(MODELS), "input": maybe(st.one_of(
        SMALL_TEXT, st.lists(SMALL_TEXT, min_size=1, max_size=3),
        st.lists(st.integers(0, 1000), max_size=4)))},
    {"dimensions": INT, "encoding_format": maybe(st.sampled_from(["float", "base64"])),
     "user": maybe(SMALL_TEXT)},
)

# ------------------------------------------------------------------ Anthropic messages

_SOURCE = st.one_of(
    st.fixed_dictionaries({"type": st.just("base64"), "media_type": maybe(st.just("image/png")),
                           "data": maybe(st.just("AAAA"))}),
    st.fixed_dictionaries({"type": st.just("url"), "url": maybe(st.just("https://e.com/a"))}),
    st.fixed_dictionaries({"type": st.just("text"), "data": maybe(SMALL_TEXT)}),
    JSON,
)
_LEAF_BLOCK = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": maybe(SMALL_TEXT)}),
    st.fixed_dictionaries({"type": maybe(st.sampled_from(["image", "document"])),
                           "source": maybe(_SOURCE)}),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": maybe(SMALL_TEXT),
                           "name": maybe(SMALL_TEXT), "input": maybe(st.just({"a": 1}))}),
    st.fixed_dictionaries({"type": maybe(st.sampled_from(["thinking", "search_result", "x"]))}),
    JSON,
)
_BLOCK = st.one_of(_LEAF_BLOCK, st.fixed_dictionaries(
    {"type": st.just("tool_result"), "tool_use_id": maybe(SMALL_TEXT)},
    optional={"content": maybe(st.one_of(SMALL_TEXT, st.lists(_LEAF_BLOCK, max_size=2))),
              "is_error": maybe(st.booleans())}))
_AN_MESSAGE = st.fixed_dictionaries({
    "role": maybe(st.sampled_from(["user", "assistant"])),
    "content": maybe(st.one_of(st.text(max_size=30), st.lists(_BLOCK, max_size=3))),
})
_AN_TOOL = st.fixed_dictionaries({"name": maybe(SMALL_TEXT)}, optional={
    "description": maybe(SMALL_TEXT), "type": maybe(SMALL_TEXT),
    "input_schema": maybe(st.just({"type": "object", "properties": {}}))})

MESSAGES = body(
    {"model": maybe(MODELS), "max_tokens": INT,
     "messages": maybe(st.lists(_AN_MESSAGE, min_size=1, max_size=3))},
    {"system": maybe(st.one_of(SMALL_TEXT, st.lists(
        st.fixed_dictionaries({"type": st.just("text"), "text": maybe(SMALL_TEXT)}),
        max_size=2))),
     "temperature": NUMBER, "top_p": NUMBER, "top_k": INT,
     "stop_sequences": maybe(st.lists(SMALL_TEXT, max_size=2)), "stream": maybe(st.booleans()),
     "metadata": maybe(st.fixed_dictionaries({}, optional={"user_id": maybe(SMALL_TEXT)})),
     "tools": maybe(st.lists(_AN_TOOL, max_size=2)),
     "tool_choice": maybe(st.fixed_dictionaries(
         {"type": maybe(st.sampled_from(["auto", "any", "tool", "none"]))},
         optional={"name": maybe(SMALL_TEXT),
                   "disable_parallel_tool_use": maybe(st.booleans())}))},
)

# ------------------------------------------------------------------ jobs, batches, RAG, admin

JOB = body(
    {"task": maybe(st.sampled_from(["echo", "nope", ""])), "input": JSON},
    {"priority": INT, "idempotency_key": maybe(SMALL_TEXT), "partition_key": maybe(SMALL_TEXT),
     "webhook_url": maybe(st.sampled_from(["https://example.com/hook", "http://127.0.0.1/x",
                                           "not a url", "file:///etc/passwd"]))},
)
BATCH = body(
    {"input_file_id": maybe(st.one_of(st.just("file-" + "0" * 32), SMALL_TEXT)),
     "endpoint": maybe(st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/x"]))},
    {"completion_window": maybe(st.just("24h")),
     "metadata": maybe(st.dictionaries(SMALL_TEXT, SMALL_TEXT, max_size=2))},
)
_DOCUMENT = st.fixed_dictionaries(
    {"id": maybe(SMALL_TEXT), "text": maybe(st.text(max_size=40))},
    optional={"title": maybe(SMALL_TEXT), "metadata": maybe(
        st.dictionaries(SMALL_TEXT, SMALL_TEXT, max_size=2)),
        "acl": maybe(st.lists(st.sampled_from(["public", "group:hr", "user:u1", "bad"]),
                              max_size=2)),
        "format": maybe(st.sampled_from(["text", "markdown", "html"]))})
RAG_DOCUMENTS = body(
    {"documents": maybe(st.lists(_DOCUMENT, max_size=3))},
    {"acl": maybe(st.lists(st.sampled_from(["public", "team:x"]), max_size=2)),
     "sync": maybe(st.booleans()), "embed_model": maybe(st.sampled_from([None, "embed", "x"]))},
)
RAG_QUERY = body(
    {"question": maybe(st.text(max_size=40))},
    {"k": INT, "mode": maybe(st.sampled_from(["hybrid", "lexical", "vector", "x"])),
     "filters": maybe(st.dictionaries(SMALL_TEXT, st.one_of(SMALL_TEXT, st.integers()),
                                      max_size=2)),
     "model": maybe(MODELS), "stream": maybe(st.booleans()), "query": JSON},
)
TEAM = body({"name": maybe(SMALL_TEXT)}, {"business_unit": maybe(SMALL_TEXT)})
KEY = body({"team": maybe(SMALL_TEXT)}, {"name": maybe(SMALL_TEXT),
                                        "models": maybe(st.lists(MODELS, max_size=2))})
KILL = body({}, {"model": maybe(st.sampled_from(["nope", "x"])), "team": maybe(SMALL_TEXT),
                 "off": maybe(st.booleans())})

PATH_SEGMENT = st.one_of(
    st.text(min_size=1, max_size=20),
    st.sampled_from(["job_" + "a" * 5000, "file-" + "a" * 5000, "batch_" + "a" * 5000,
                     "file-..", "batch_%2e%2e", "file-\x00", "job_\u2028", "file-abc"]),
)
QUERY_VALUE = st.one_of(SMALL_TEXT, st.sampled_from(
    ["²", "¹⁰", "10", "0", "-1", "99999999999999999999", "9999-12-31T23:59:59-23:59",
     "0001-01-01T00:00:00+23:59", "24h", "999999999999d", "7d", "9" * 5000 + "d",
     "2024-01-01", "business_unit", "business-unit"]))
