"""Prompt and output text for the local llama.cpp model (pure, no llama import).

The bundled ``gemma-3-270m`` is a pretrained *base* model: it was never tuned
on Gemma's chat template, and given ``<start_of_turn>user ...`` it mostly
echoes the question or produces nothing useful. What it does continue well is
a plain transcript. :func:`build_prompt` therefore renders OpenAI messages as::

    The following is a conversation between a user and a helpful, knowledgeable assistant.

    Instructions for the assistant: <system and developer messages>

    User: What is the largest planet in the solar system?
    Assistant: The largest planet in the solar system is Jupiter.
    User: <message>
    Assistant: <message>
    ...
    Assistant:

and generation stops at the next turn marker (``\\nUser:``, ``\\nAssistant:``,
``\\nSystem:``) or a blank line. This layout was chosen by measuring (greedy,
8 prompts: facts, one-word answers, translation, support, arithmetic,
sentiment, poem, summary). The bare transcript and "System:" lines gave
answers such as "I am a French citizen." to "What is the capital of France?";
adding the header, the instructions line and the one fixed example exchange
gave on-topic answers to 7 of 8 ("The capital of France is Paris.", "You can
reset your password by going to the account settings page.", a correct
one-sentence summary). The example costs ~25 prompt tokens and is cached by
llama.cpp's prefix reuse.

Honest limits of this model (expect them, route real work elsewhere):

* Answers are one paragraph at most: a blank line ends the turn.
* It follows instructions weakly: translations often come back untranslated,
  classification labels are not reliable, poems turn into facts, facts can be
  wrong. It is a zero-setup default and a smoke-test model, not an assistant.
* Nothing stops a user message from containing ``\\nAssistant:`` lines and so
  writing the model's previous turns: a base-model transcript has no roles the
  model is trained to respect.
* No tools, no images, no JSON mode; those requests are refused as
  ``bad_request`` by :func:`parse_options`.

:class:`OutputFilter` turns the token text stream into what the client sees:
it strips leading whitespace, holds back text that may be the start of a stop
sequence, and holds trailing whitespace until more text arrives, so a stream
and a non-stream answer to the same request carry identical text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TEMPERATURE",
    "EXAMPLE_EXCHANGE",
    "HEADER",
    "TURN_STOPS",
    "OptionsError",
    "OutputFilter",
    "SamplingOptions",
    "build_prompt",
    "message_text",
    "parse_options",
]

HEADER = "The following is a conversation between a user and a helpful, knowledgeable assistant."
EXAMPLE_EXCHANGE = (
    "User: What is the largest planet in the solar system?\n"
    "Assistant: The largest planet in the solar system is Jupiter.\n"
)
TURN_STOPS: tuple[str, ...] = ("\nUser:", "\nAssistant:", "\nSystem:", "\n\n")
"""Always active: the model must not write the next turn itself."""

DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.7
"""Used when the request has no ``temperature``; OpenAI's 1.0 makes this model ramble."""
DEFAULT_TOP_P = 0.95
DEFAULT_REPEAT_PENALTY = 1.1
"""Not an OpenAI parameter; measured to curb the loops small base models fall into."""

_ROLE_LABEL = {"user": "User", "assistant": "Assistant", "tool": "Tool", "function": "Tool"}


class OptionsError(ValueError):
    """The request asks for something this provider cannot do (maps to bad_request)."""


def message_text(content: Any) -> str:
    """Text of an OpenAI message ``content`` (string, null, or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text") or ""))
            elif isinstance(part, Mapping) and part.get("type") == "refusal":
                texts.append(str(part.get("refusal") or ""))
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise OptionsError(f"the local model accepts text only, not '{kind}' content")
        return "\n".join(texts)
    raise OptionsError("message content must be a string or a list of content parts")


def _one_line_turns(text: str) -> str:
    """Collapse blank lines inside a turn: a blank line is the end-of-turn marker."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return "\n".join(line for line in lines if line)


def build_prompt(messages: Iterable[Mapping[str, Any]]) -> str:
    """Render OpenAI chat messages as the transcript the base model continues."""
    instructions: list[str] = []
    turns: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise OptionsError(f"messages[{i}] must be an object")
        role = msg.get("role")
        text = _one_line_turns(message_text(msg.get("content")))
        if role in ("system", "developer"):
            if text:
                instructions.append(text)
        elif role in _ROLE_LABEL:
            if role == "assistant" and msg.get("tool_calls"):
                raise OptionsError("the local model does not support tool calls")
            turns.append(f"{_ROLE_LABEL[role]}: {text}".rstrip())
        else:
            raise OptionsError(f"messages[{i}].role '{role}' is not supported")
    if not turns:
        raise OptionsError("messages must contain at least one user message")
    parts = [HEADER, "\n\n"]
    if instructions:
        parts.append("Instructions for the assistant: " + " ".join(instructions) + "\n\n")
    parts.append(EXAMPLE_EXCHANGE)
    parts.append("\n".join(turns))
    parts.append("\nAssistant:")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """What a chat request asks of the sampler, validated."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    stop: tuple[str, ...] = TURN_STOPS
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionsError(f"'{key}' must be a number")
    if not lo <= float(value) <= hi:
        raise OptionsError(f"'{key}' must be between {lo:g} and {hi:g}")
    return float(value)


def parse_options(body: Mapping[str, Any]) -> SamplingOptions:
    """Sampling options from an OpenAI chat request; OptionsError if unsupported."""
    if body.get("tools") or body.get("functions"):
        raise OptionsError("the local model does not support tools")
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") not in (None, "text"):
        raise OptionsError(f"the local model does not support response_format '{fmt.get('type')}'")
    n = body.get("n")
    if n is not None and n != 1:
        raise OptionsError("the local model returns one choice only (n must be 1)")
    if body.get("logprobs"):
        raise OptionsError("the local model does not return logprobs")

    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise OptionsError("'max_tokens' must be a positive integer")

    stop_value = body.get("stop")
    if stop_value is None:
        user_stops: list[str] = []
    elif isinstance(stop_value, str):
        user_stops = [stop_value]
    elif isinstance(stop_value, list) and all(isinstance(s, str) for s in stop_value):
        user_stops = list(stop_value)
    else:
        raise OptionsError("'stop' must be a string or a list of strings")
    if len(user_stops) > 4:
        raise OptionsError("'stop' takes at most 4 sequences")
    stops = tuple(dict.fromkeys([*TURN_STOPS, *(s for s in user_stops if s)]))

    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise OptionsError("'seed' must be an integer")

    return SamplingOptions(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0, DEFAULT_TEMPERATURE),
        top_p=_number(body, "top_p", 0.0, 1.0, DEFAULT_TOP_P),
        stop=stops,
        seed=None if seed is None else seed & 0xFFFFFFFF,
        frequency_penalty=_number(body, "frequency_penalty", -2.0, 2.0, 0.0),
        presence_penalty=_number(body, "presence_penalty", -2.0, 2.0, 0.0),
    )


class OutputFilter:
    """Incremental stop-sequence matching and whitespace trimming of model text.

    ``feed(text)`` returns the text that is safe to show now; :attr:`stopped`
    turns true when a stop sequence appeared (the sequence and everything after
    it are dropped). ``finish()`` returns nothing more than what was held back
    and is not whitespace at the end; call it once when generation ends.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self._started = False
        self.stopped = False

    def _holdback(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that starts some stop sequence."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best

    def _find_stop(self, buf: str, lead: int) -> int:
        """First stop position; whitespace-only stops do not count inside leading space."""
        found = [
            i
            for s in self._stops
            if (i := buf.find(s, 0 if s.strip() else lead)) >= 0
        ]
        return min(found, default=-1)

    def feed(self, text: str) -> str:
        if self.stopped or not text:
            return ""
        buf = self._pending + text
        lead = 0 if self._started else len(buf) - len(buf.lstrip())
        cut = self._find_stop(buf, lead)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return self._emit(buf[lead:cut].rstrip())
        end = max(lead, len(buf) - self._holdback(buf))
        ready = buf[lead:end].rstrip()
        self._pending = buf[lead + len(ready) :] if ready else buf
        return self._emit(ready)

    def _emit(self, text: str) -> str:
        if text:
            self._started = True
        return text

    def finish(self) -> str:
        """Flush held text at the end of generation (trailing whitespace dropped)."""
        if self.stopped:
            return ""
        rest = self._pending.rstrip() if self._started else self._pending.strip()
        self._pending = ""
        return self._emit(rest)
