"""check_chat_body runs only the checks of the fields a body has, and its message checks skip
what a plain ``{role, content}`` message cannot fail: the same answer (no error, or the same
first error) as running every check in order, for any body."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from lockgate.errors import BadRequest
from lockgate.pipeline import validate as v


def every_check_in_order(body: dict[str, Any]) -> None:
    """The checks as they ran before: all of them, in this order, present or not."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array.",
                         param="messages", code="invalid_value")
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if not isinstance(role, str) or role not in v._ROLES:
            raise BadRequest(
                f"messages[{i}] must be an object with a valid 'role' "
                f"(one of {', '.join(sorted(v._ROLES))}).",
                param=f"messages[{i}].role", code="invalid_value")
        where = f"messages[{i}]"
        v._check_content(where, m.get("content"))
        v._check_tool_calls(where, m.get("tool_calls"))
        for name in ("name", "tool_call_id"):
            if not isinstance(m.get(name, ""), str | None):
                raise v._bad(f"{where}.{name}", "must be a string.", "invalid_type")
    v._positive_int(body, "max_tokens")
    v._positive_int(body, "max_completion_tokens")
    v._positive_int(body, "n", 128)
    v._check_stream(body)
    v._number(body, "temperature", 0, 2)
    v._number(body, "top_p", 0, 1)
    v._number(body, "presence_penalty", -2, 2)
    v._number(body, "frequency_penalty", -2, 2)
    v._check_stop(body)
    v._optional(body, "user", str, "a string")
    v._optional(body, "stream_options", dict, "an object")
    v._optional(body, "response_format", dict, "an object")
    v._optional(body, "parallel_tool_calls", bool, "a boolean")
    v._check_tools(body)


def outcome(check: Any, body: dict[str, Any]) -> tuple[str, ...] | None:
    try:
        check(body)
    except BadRequest as exc:
        return (str(exc), str(exc.param), str(exc.code))
    return None


scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(-3, 3),
                    st.text(max_size=3))
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.sampled_from(["function", "type", "url", "x"]), scalars,
                                   max_size=2))
message = st.one_of(
    st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "name", "tool_call_id"]),
                    st.one_of(st.sampled_from(["user", "assistant", "tool", "robot"]), values),
                    max_size=4),
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]),
                           "content": st.one_of(st.text(max_size=5), values)},
                          optional={"name": values, "tool_calls": values,
                                    "tool_call_id": values}),
    values)
FIELDS = ["model", "max_tokens", "max_completion_tokens", "n", "stream", "temperature", "top_p",
          "presence_penalty", "frequency_penalty", "stop", "user", "stream_options",
          "response_format", "parallel_tool_calls", "tools", "tool_choice", "seed"]
bodies = st.builds(
    lambda fields, messages: {**fields, **({} if messages is None else {"messages": messages})},
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=5),
    st.one_of(st.none(), st.lists(message, max_size=3), values))


@settings(max_examples=1500, deadline=None)
@given(bodies)
@example({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
@example({"messages": [{"role": "user", "content": "hi"}], "temperature": 5})
@example({"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_p": 2,
          "max_tokens": 0})
@example({"model": "m", "messages": [{"role": "user", "name": 3}]})
@example({"model": "m", "messages": [{"role": "user", "content": "x", "name": 3}]})
@example({"model": "m", "messages": [{"role": "user", "content": None, "tool_calls": 1}]})
def test_same_answer_as_every_check_in_order(body: dict[str, Any]) -> None:
    assert outcome(v.check_chat_body, body) == outcome(every_check_in_order, body)
