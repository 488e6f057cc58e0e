"""Incremental redaction and restoration of streamed text (SSE deltas).

:class:`StreamTransformer` never buffers a whole answer: after each delta it
emits everything except the shortest tail that could still be the start of a
match (for PII: usually the last word; for placeholders: an unfinished
``<EMAIL_1``), bounded by the longest entity. ``flush()`` emits the rest at the
end. Output over any chunking equals the one-shot functions
(:func:`~.transform.redact_text`, :func:`~.transform.restore_text`).

:class:`ChatStreamGuard` applies one transformer per choice (content) and per
tool call (arguments) to OpenAI ``chat.completion.chunk`` dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from lockgate.guards.pii.scanner import CONTEXT_CHARS, Matcher, PiiScanner, step
from lockgate.guards.pii.transform import (
    Replacer,
    RestoreMatcher,
    Vault,
    label_replacer,
    placeholder_replacer,
    render,
    restore_replacer,
)

__all__ = [
    "ChainedStream",
    "ChatStreamGuard",
    "StreamTransformer",
    "TextStream",
    "stream_redactor",
    "stream_restorer",
]


class TextStream(Protocol):
    """Anything that turns streamed deltas into final text."""

    def feed(self, delta: str) -> str: ...

    def flush(self) -> str: ...


class StreamTransformer:
    """Feed text deltas in, get final text out; ``flush()`` at the end."""

    __slots__ = ("_buf", "_matcher", "_pos", "_replace", "findings")

    def __init__(self, matcher: Matcher, replace: Replacer) -> None:
        self._matcher = matcher
        self._replace = replace
        self._buf = ""
        self._pos = 0
        self.findings: list[str] = []
        """Entity types replaced so far (in order)."""

    @property
    def held(self) -> int:
        """Characters received but not yet emitted."""
        return len(self._buf) - self._pos

    def feed(self, delta: str) -> str:
        if not delta:
            return ""
        buf = self._buf + delta
        pos = self._pos
        findings, cut = step(self._matcher, buf, pos, final=False)
        if findings:
            out = render(buf, pos, cut, findings, self._replace)
            self.findings.extend(f.entity for f in findings)
        else:
            out = buf[pos:cut]
        keep = max(0, cut - CONTEXT_CHARS)
        self._buf = buf[keep:]
        self._pos = cut - keep
        return out

    def flush(self) -> str:
        buf, pos = self._buf, self._pos
        if len(buf) <= pos:
            return ""
        findings, cut = step(self._matcher, buf, pos, final=True)
        self.findings.extend(f.entity for f in findings)
        out = render(buf, pos, cut, findings, self._replace)
        self._buf = buf[-CONTEXT_CHARS:]
        self._pos = len(self._buf)
        return out


class ChainedStream:
    """``second`` applied to the output of ``first`` (e.g. redact model PII, then restore)."""

    __slots__ = ("first", "second")

    def __init__(self, first: TextStream, second: TextStream) -> None:
        self.first = first
        self.second = second

    def feed(self, delta: str) -> str:
        return self.second.feed(self.first.feed(delta))

    def flush(self) -> str:
        return self.second.feed(self.first.flush()) + self.second.flush()


def stream_redactor(scanner: PiiScanner, vault: Vault | None = None) -> StreamTransformer:
    """Redacts PII in streamed text: labels, or vault placeholders when a vault is given."""
    replace = label_replacer if vault is None else placeholder_replacer(vault)
    return StreamTransformer(scanner, replace)


def stream_restorer(vault: Vault) -> StreamTransformer:
    """Puts the vault's originals back into streamed text."""
    return StreamTransformer(RestoreMatcher(vault), restore_replacer(vault))


_Key = tuple[int, int]
"""(choice index, -1 for content or the tool-call index)."""


class ChatStreamGuard:
    """Applies a transformer per choice/tool call to OpenAI chunk dicts.

    ``process(chunk)`` rewrites ``delta.content`` and tool-call ``arguments``
    in place and returns the chunk; when a choice reports ``finish_reason``
    its held-back text is flushed into that chunk. ``close()`` returns extra
    chunks for text still held when the stream ended without a finish reason.
    """

    __slots__ = ("_last", "_make", "_open")

    def __init__(self, make: Callable[[], TextStream]) -> None:
        self._make = make
        self._open: dict[_Key, TextStream] = {}
        self._last: dict[str, Any] = {}

    def _get(self, key: _Key) -> TextStream:
        t = self._open.get(key)
        if t is None:
            t = self._open[key] = self._make()
        return t

    def process(self, chunk: dict[str, Any]) -> dict[str, Any]:
        choices = chunk.get("choices")
        if not choices:
            return chunk
        self._last = chunk
        for choice in choices:
            idx = int(choice.get("index") or 0)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    delta["content"] = self._get((idx, -1)).feed(content)
                for tc in delta.get("tool_calls") or ():
                    fn = tc.get("function") if isinstance(tc, dict) else None
                    if not isinstance(fn, dict):
                        continue
                    args = fn.get("arguments")
                    if isinstance(args, str) and args:
                        fn["arguments"] = self._get((idx, int(tc.get("index") or 0))).feed(args)
            if choice.get("finish_reason") is not None:
                self._flush_choice(idx, choice)
        return chunk

    def _flush_choice(self, idx: int, choice: dict[str, Any]) -> None:
        for key in sorted(k for k in self._open if k[0] == idx):
            rest = self._open.pop(key).flush()
            if not rest:
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = choice["delta"] = {}
            if key[1] == -1:
                delta["content"] = (delta.get("content") or "") + rest
            else:
                calls = delta.setdefault("tool_calls", [])
                calls.append({"index": key[1], "function": {"arguments": rest}})

    def close(self) -> list[dict[str, Any]]:
        """Chunks carrying any text still held (stream ended without finish_reason)."""
        out: list[dict[str, Any]] = []
        for idx in sorted({k[0] for k in self._open}):
            choice: dict[str, Any] = {"index": idx, "delta": {}, "finish_reason": None}
            self._flush_choice(idx, choice)
            if choice["delta"]:
                keys = ("id", "object", "created", "model")
                base = {k: self._last[k] for k in keys if k in self._last}
                out.append({**base, "choices": [choice]})
        return out
