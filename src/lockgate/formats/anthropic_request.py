"""The shape of an Anthropic Messages request, checked before it is translated.

:func:`check_messages_request` validates every field the translation
(:func:`lockgate.formats.anthropic.anthropic_request_to_openai`) reads: ``model``,
``max_tokens`` (an integer >= 1, not a boolean), ``messages`` (a non-empty list of
``{role: user|assistant, content: string | [block, ...]}``), content blocks (objects with a
string ``type``; ``text`` needs ``text``, ``image``/``document`` a ``source`` object of a
known shape, ``tool_use`` an ``id``, ``name`` and ``input`` object, ``tool_result`` a
``tool_use_id`` and string-or-blocks ``content``), ``system`` (a string or text blocks),
``tools`` (objects with a ``name``; ``input_schema`` an object), ``tool_choice``,
``metadata`` (an object; ``user_id`` a string), ``stop_sequences`` (strings),
``temperature``/``top_p`` (0..1), ``top_k`` and ``stream``. Unknown fields pass through, as
the Messages API grows. A bad request raises :class:`BadAnthropicRequest` naming the first
bad field like Anthropic does (``messages.0.content.1.text: Field required``).

:data:`MESSAGES_REQUEST_SCHEMA` is the JSON schema of the same model (for the OpenAPI
document).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

__all__ = ["BadAnthropicRequest", "MessagesRequest", "check_messages_request"]

_STRICT_NUMBER = Field(default=None, ge=0, le=1, strict=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Source(_Open):
    """An image/document source: ``base64`` (media_type, data), ``url`` or ``text``."""

    type: StrictStr
    media_type: StrictStr | None = None
    data: StrictStr | None = None
    url: StrictStr | None = None

    @model_validator(mode="after")
    def _complete(self) -> Source:
        if self.type == "base64" and (self.media_type is None or self.data is None):
            raise ValueError("a base64 source needs 'media_type' and 'data' strings")
        if self.type == "url" and self.url is None:
            raise ValueError("a url source needs a 'url' string")
        if self.type == "text" and self.data is None:
            raise ValueError("a text source needs a 'data' string")
        return self


class Block(_Open):
    """One content block; which fields are required depends on ``type``."""

    type: StrictStr
    text: StrictStr | None = None
    source: Source | None = None
    id: StrictStr | None = None
    name: StrictStr | None = None
    input: dict[str, Any] | None = None
    tool_use_id: StrictStr | None = None
    content: StrictStr | list[Block] | None = None
    is_error: StrictBool | None = None

    @model_validator(mode="after")
    def _required(self) -> Block:
        need: tuple[str, ...] = {
            "text": ("text",),
            "image": ("source",),
            "document": ("source",),
            "tool_use": ("id", "name", "input"),
            "tool_result": ("tool_use_id",),
        }.get(self.type, ())
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a '{self.type}' block needs {', '.join(map(repr, missing))}")
        return self


class TextBlock(_Open):
    type: Literal["text"]
    text: StrictStr


class Message(_Open):
    role: Literal["user", "assistant"]
    content: StrictStr | list[Block]


class Tool(_Open):
    name: StrictStr = Field(min_length=1)
    type: StrictStr | None = None
    description: StrictStr | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: StrictStr | None = None
    disable_parallel_tool_use: StrictBool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs a 'name'")
        return self


class Metadata(_Open):
    user_id: StrictStr | None = None


class MessagesRequest(_Open):
    """``POST /v1/messages``."""

    model: StrictStr = Field(min_length=1)
    max_tokens: StrictInt = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: StrictStr | list[TextBlock] | None = None
    temperature: float | None = _STRICT_NUMBER
    top_p: float | None = _STRICT_NUMBER
    top_k: StrictInt | None = Field(default=None, ge=0)
    stop_sequences: list[StrictStr] | None = None
    stream: StrictBool | None = None
    metadata: Metadata | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


class BadAnthropicRequest(ValueError):
    """The request does not have the Messages API's shape; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _path(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The field path of an error location without pydantic's union-member labels
    (``str``, ``list[Block]``, ``function-after[...]``), which are not field names."""
    return tuple(p for p in loc if isinstance(p, int) or (p != "str" and "[" not in p))


def check_messages_request(body: dict[str, Any]) -> None:
    """Raise :class:`BadAnthropicRequest` unless ``body`` has the Messages API's shape."""
    try:
        MessagesRequest.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = _path(errors[0]["loc"])
        # a union (string or blocks) reports every member: show the deepest, most precise one
        best = max((e for e in errors if _path(e["loc"])[: len(first)] == first),
                   key=lambda e: len(_path(e["loc"])))
        where = ".".join(str(p) for p in _path(best["loc"])) or "body"
        msg = str(best["msg"]).removeprefix("Value error, ")
        raise BadAnthropicRequest(f"{where}: {msg}", where) from None


MESSAGES_REQUEST_SCHEMA: dict[str, Any] = MessagesRequest.model_json_schema(
    ref_template="#/components/schemas/{model}")
