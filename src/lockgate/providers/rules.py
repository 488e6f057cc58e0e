"""The ``rules`` provider: a non-AI answer for the kill switch ("rollback to non-AI behaviour").

A ``provider: rules`` deployment answers chat requests without any model, in
one of three ways given by its ``rules:`` mapping
(:class:`~lockgate.settings.rules.RulesSpec`)::

    - name: support-fallback
      provider: rules
      rules:
        fixed: "Our assistant is offline. A person will answer within one working day."
    - name: triage-fallback
      provider: rules
      rules:
        template: "Ticket {{ metadata.ticket | default('new') }}: we received '{{
                   last_user_message | truncate(60) }}'."
    - name: pricing-fallback
      provider: rules
      rules:
        http:
          url: http://rules.internal:8080/answer   # an existing rule service
          response_field: answer.text              # dotted path in its JSON answer
          timeout: 3                               # seconds, total (else the deployment's)
          headers: {Authorization: "env:RULES_TOKEN"}

- ``fixed``: the text as is.
- ``template``: a Jinja2 template rendered in an *immutable sandbox*
  (no attribute access to internals, no mutation of the context) with
  ``last_user_message``, ``messages`` (role + text of each), ``metadata`` (the
  request's ``metadata`` object), ``model`` and ``user``. Undefined names render
  empty. It is compiled when the provider is built (a syntax error is a
  ``ConfigError``); a render error is ``ProviderError('server_error')``.
- ``http``: POSTs the OpenAI request JSON to ``url`` through
  :class:`~lockgate.providers.upstream_http.UpstreamHTTP` (pooled keep-alive,
  created lazily; the deployment's timeouts, or ``timeout`` as the total) and
  maps the JSON answer's ``response_field`` to the completion text (without
  ``response_field``: the first string among ``text``, ``answer``, ``response``,
  ``content``, ``message``, or an OpenAI ``choices[0].message.content``). HTTP
  statuses, timeouts and connection errors become the usual ProviderError kinds
  (429 -> ``rate_limited`` with ``retry_after``, 5xx -> ``server_error``, ...);
  a non-JSON answer or a missing field -> ``bad_response``.

Answers are OpenAI ``chat.completion`` documents (and chunk streams: role,
content, ``finish_reason: stop``, then a usage chunk) with zero usage and
``system_fingerprint: "lockgate-rules"``. Embeddings are refused
(``bad_request``).

The spec is config (:mod:`lockgate.settings.rules`, ``ModelDeployment.rules``, checked
when lockgate.yaml is loaded); this module holds the behaviour. The registry maps
``rules`` to :class:`RulesProvider`, built as ``RulesProvider(deployment)``; it reads
``deployment.rules`` (a RulesSpec or a plain mapping). ``RulesProvider(deployment,
spec=...)`` overrides it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson
from jinja2 import ChainableUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import ValidationError

from lockgate.errors import ConfigError
from lockgate.providers.base import Completion, ProviderError, StreamChunk, Usage
from lockgate.settings import RulesHttp, RulesSpec, Timeouts, resolve_secret

if TYPE_CHECKING:
    from lockgate.providers.upstream_http import UpstreamHTTP

__all__ = ["FINGERPRINT", "RulesProvider"]

FINGERPRINT: Final = "lockgate-rules"
_STREAM_PIECE: Final = 64
_FALLBACK_FIELDS: Final = ("text", "answer", "response", "content", "message")


_ENV = ImmutableSandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return "" if content is None else str(content)


def _context(body: Mapping[str, Any]) -> dict[str, Any]:
    raw = body.get("messages")
    messages = [
        {"role": str(m.get("role", "")), "content": _text_of(m.get("content"))}
        for m in (raw if isinstance(raw, list) else [])
        if isinstance(m, dict)
    ]
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    metadata = body.get("metadata")
    return {
        "last_user_message": last_user,
        "messages": messages,
        "metadata": dict(metadata) if isinstance(metadata, dict) else {},
        "model": body.get("model"),
        "user": body.get("user"),
    }


def _pick(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _answer_text(doc: dict[str, Any], field: str | None) -> str:
    if field is not None:
        value = _pick(doc, field)
        if isinstance(value, str):
            return value
        raise ProviderError(
            "bad_response", f"rule service answer has no text at '{field}'"
        )
    for name in _FALLBACK_FIELDS:
        if isinstance(doc.get(name), str):
            return str(doc[name])
    value = _pick(doc, "choices.0.message.content")
    if isinstance(value, str):
        return value
    raise ProviderError(
        "bad_response",
        "rule service answer has none of text/answer/response/content/message; "
        "set rules.http.response_field",
    )


class RulesProvider:
    """A deployment that answers from rules instead of a model (see the module docstring)."""

    def __init__(self, deployment: Any, *, spec: RulesSpec | Mapping[str, Any] | None = None):
        self.deployment = deployment
        name = getattr(deployment, "name", "rules")
        self.deployment_id: str = str(getattr(deployment, "deployment_id", name))
        raw = spec if spec is not None else getattr(deployment, "rules", None)
        if raw is None:
            raise ConfigError(f"models[{name}].rules: provider 'rules' needs a 'rules' mapping")
        try:
            self.spec = raw if isinstance(raw, RulesSpec) else RulesSpec.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"models[{name}].rules{'.' + loc if loc else ''}: {first['msg']}"
            ) from None
        self._template = None
        if self.spec.template is not None:
            try:
                self._template = _ENV.from_string(self.spec.template)
            except TemplateError as exc:
                raise ConfigError(f"models[{name}].rules.template: {exc}") from None
        self._http: UpstreamHTTP | None = None
        if self.spec.http is not None:
            self._http = self._make_http(self.spec.http, name)

    def _make_http(self, spec: RulesHttp, name: str) -> UpstreamHTTP:
        from lockgate.providers.upstream_http import UpstreamHTTP

        base = getattr(self.deployment, "timeouts", None)
        timeouts = base if isinstance(base, Timeouts) else Timeouts()
        if spec.timeout is not None:
            timeouts = Timeouts(
                connect=min(timeouts.connect, spec.timeout),
                first_token=spec.timeout,
                idle=spec.timeout,
                total=spec.timeout,
            )
        headers = {
            k: resolve_secret(v, f"models[{name}].rules.http.headers.{k}") or ""
            for k, v in spec.headers.items()
        }
        return UpstreamHTTP(
            timeouts=timeouts,
            headers=headers,
            max_connections=int(getattr(self.deployment, "max_concurrency", 64)),
        )

    async def _text(self, body: dict[str, Any]) -> str:
        spec = self.spec
        if spec.fixed is not None:
            return spec.fixed
        if self._template is not None:
            try:
                return self._template.render(_context(body))
            except Exception as exc:  # sandbox violations, filters failing on odd input
                raise ProviderError(
                    "server_error", f"rules template failed: {type(exc).__name__}: {exc}"
                ) from None
        assert self._http is not None and spec.http is not None
        from yarl import URL

        payload = orjson.dumps({**body, "stream": False})
        _raw, doc = await self._http.post_json(URL(spec.http.url), payload)
        return _answer_text(doc, spec.http.response_field)

    def _model(self, body: Mapping[str, Any]) -> str:
        return str(body.get("model") or getattr(self.deployment, "name", "rules"))

    async def chat(self, body: dict[str, Any]) -> Completion:
        text = await self._text(body)
        doc = {
            "id": "chatcmpl-rules-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self._model(body),
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
        return Completion(body=doc, usage=Usage())

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        text = await self._text(body)  # errors surface before the first chunk
        base = {
            "id": "chatcmpl-rules-" + uuid.uuid4().hex[:24],
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._model(body),
            "system_fingerprint": FINGERPRINT,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> StreamChunk:
            return {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        yield chunk({"role": "assistant", "content": ""})
        for start in range(0, len(text), _STREAM_PIECE):
            yield chunk({"content": text[start : start + _STREAM_PIECE]})
        yield chunk({}, "stop")
        yield {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    async def embeddings(self, body: dict[str, Any]) -> Completion:
        raise ProviderError("bad_request", "a rules deployment does not serve embeddings")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
