"""Prompt-injection heuristics: score a chat request against known attack patterns.

This is a **heuristic** filter, not a defence: it catches common, well-known
phrasings (English only) and obvious smuggling tricks, and it will miss
paraphrases, other languages and novel attacks, and sometimes flag benign text
that discusses these attacks. Treat a hit as a signal (``flag``: record it and
send a header) and use ``block`` only where false positives are acceptable.

Rules (ids are stable; each has a weight, the score is the capped sum):

==========================  ======================================================
``ignore_previous``         "ignore/disregard/forget (all) previous instructions"
``system_prompt_exfil``     "reveal/print/repeat your system prompt", "words above"
``roleplay_jailbreak``      "pretend/act as ... without restrictions", developer mode
``dan_you_are_now``         "you are now DAN / unrestricted", "do anything now"
``hidden_characters``       zero-width, bidi-override or Unicode tag characters
``base64_instructions``     a base64 blob that decodes to text hitting another rule
``chat_template_tokens``    ``<|im_start|>``, ``[INST]``, ``<<SYS>>`` and the like
``tool_output_injection``   instructions addressed to the model inside a tool result
==========================  ======================================================
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lockgate.guards.errors import InjectionBlocked

__all__ = [
    "RULES",
    "Clause",
    "InjectionReport",
    "Rule",
    "check_injection",
    "scan_chat_request",
    "scan_passage",
    "scan_text",
]


@dataclass(frozen=True, slots=True)
class Clause:
    """A lower-case pattern, run only when one of ``needles`` occurs in the lower-cased text."""

    pattern: re.Pattern[str]
    needles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    weight: float
    clauses: tuple[Clause, ...]

    def hits(self, lowered: str) -> bool:
        if self.id == "hidden_characters" and lowered.isascii():
            return False  # every hidden character is outside ASCII
        for c in self.clauses:
            if c.needles and not any(n in lowered for n in c.needles):
                continue
            if c.pattern.search(lowered):
                return True
        return False


def _c(pattern: str, *needles: str) -> Clause:
    return Clause(re.compile(pattern), needles)


# Patterns are matched against the lower-cased text; most start with a literal
# word so the regex engine can jump to candidates, and needles skip them entirely
# for ordinary text.
RULES: tuple[Rule, ...] = (
    Rule(
        "ignore_previous",
        0.8,
        (
            _c(
                r"(?:ignore|disregard|forget|override|skip|bypass)\s+(?:(?:all|any|the|your|of)\s+)*"
                r"(?:previous|prior|above|earlier|preceding|former|original|system)\s+"
                r"(?:instructions?|prompts?|rules|directions|messages|context|guidelines)",
                "ignore",
                "disregard",
                "forget",
                "override",
                "skip",
                "bypass",
            ),
        ),
    ),
    Rule(
        "system_prompt_exfil",
        0.7,
        (
            _c(
                r"(?:reveal|show|print|repeat|output|display|leak|dump|tell\s+me|what\s+(?:is|are|was))"
                r"\s+(?:me\s+)?(?:your|the)\s+(?:(?:full|exact|entire)\s+)?(?:system|initial|hidden|"
                r"original|secret)\s+(?:prompt|instructions?|message)",
                "system",
                "initial",
                "hidden",
                "original",
                "secret",
            ),
            _c(r"repeat\s+(?:the\s+|all\s+)?(?:words|text)\s+above\b", "above"),
        ),
    ),
    Rule(
        "roleplay_jailbreak",
        0.5,
        (
            _c(
                r"(?:pretend|act|behave|roleplay|role-play|imagine)\s+(?:to\s+be|as|like|that"
                r"|you\s+are|you're)\s+[^.\n]{0,80}\b(?:no|without|free\s+of|ignor\w*)\s+"
                r"(?:any\s+)?(?:restrictions|filters?|rules|limits|guidelines|censorship|ethics)",
                "restriction",
                "filter",
                "rules",
                "limits",
                "guideline",
                "censorship",
                "ethics",
            ),
            _c(
                r"developer\s+mode\b|jailbr(?:eak|oken)\b|(?:unfiltered|uncensored)\s+"
                r"(?:ai|assistant|mode|model|response)",
                "developer",
                "jailbr",
                "unfiltered",
                "uncensored",
            ),
        ),
    ),
    Rule(
        "dan_you_are_now",
        0.7,
        (
            _c(
                r"you\s+are\s+now\s+(?:dan\b|an?\s+(?:unrestricted|unfiltered|uncensored|evil|"
                r"jailbroken)|free\s+from)",
                "dan",
                "unrestricted",
                "unfiltered",
                "uncensored",
                "evil",
                "jailbroken",
                "free",
            ),
            _c(r"do\s+anything\s+now\b|\bdan\s+mode\b", "anything", "dan"),
        ),
    ),
    Rule(
        "hidden_characters",
        0.4,
        (_c("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]"),),
    ),
    Rule(
        "chat_template_tokens",
        0.6,
        (
            _c(
                r"<\|(?:im_start|im_end|system|endoftext|start_header_id|eot_id)\|>"
                r"|\[/?inst\]|<</?sys>>",
                "<|",
                "inst]",
                "sys>>",
            ),
        ),
    ),
)

_TOOL_RULE = Rule(
    "tool_output_injection",
    0.6,
    (
        _c(r"(?:ignore|disregard)\b[^.\n]{0,40}\binstructions\b", "ignore", "disregard"),
        _c(
            r"(?:assistant|ai|model|llm|chatgpt)\s*[,:]\s*(?:you\s+must|now|please)\b",
            "must",
            "now",
            "please",
        ),
        _c(r"new\s+instructions?\s*:", "instruction"),
        _c(
            r"(?:important|system)\s*(?:note|message|override)?\s*:\s*(?:you|the\s+assistant)\s+"
            r"(?:must|should|will)\b",
            "important",
            "system",
        ),
        _c(r"</?(?:tool_output|tool_result|function_results?|system)>", "</", "<t", "<f", "<s"),
    ),
)

_BASE64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
_BASE64_WORDS = re.compile(r"\b(?:instructions?|system\s+prompt|ignore|jailbreak)\b")
_MAX_BASE64_BLOBS = 8


@dataclass(frozen=True, slots=True)
class InjectionReport:
    score: float
    rules: tuple[str, ...]

    @property
    def hit(self) -> bool:
        return bool(self.rules)

    def header_value(self) -> str:
        """For ``x-lockgate-injection``: ``score;rule1,rule2``."""
        return f"{self.score:.2f};{','.join(self.rules)}"


_WEIGHTS = {r.id: r.weight for r in (*RULES, _TOOL_RULE)}
_WEIGHTS["base64_instructions"] = 0.7


def _rule_hits(lowered: str, into: set[str]) -> None:
    for rule in RULES:
        if rule.id not in into and rule.hits(lowered):
            into.add(rule.id)


def scan_text(text: str, *, tool_output: bool = False) -> set[str]:
    """Rule ids that ``text`` hits. ``tool_output`` adds the tool-result rule."""
    hits: set[str] = set()
    lowered = text.lower()
    _rule_hits(lowered, hits)
    if tool_output and _TOOL_RULE.hits(lowered):
        hits.add(_TOOL_RULE.id)
    if len(text) >= 24:
        for n, m in enumerate(_BASE64.finditer(text)):
            if n >= _MAX_BASE64_BLOBS:
                break
            blob = m.group()
            try:
                decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
            except (binascii.Error, ValueError):
                continue
            plain = decoded.decode("utf-8", errors="ignore").lower()
            inner: set[str] = set()
            _rule_hits(plain, inner)
            if inner or _BASE64_WORDS.search(plain):
                hits.add("base64_instructions")
                break
    return hits


def _texts(message: dict[str, Any]) -> Iterable[str]:
    content = message.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def scan_chat_request(
    body: dict[str, Any], roles: Sequence[str] = ("user", "tool", "function")
) -> InjectionReport:
    """Score the messages whose role is in ``roles`` (default: user input and tool results)."""
    hits: set[str] = set()
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            if not isinstance(msg, dict) or msg.get("role") not in roles:
                continue
            is_tool = msg.get("role") in ("tool", "function")
            for text in _texts(msg):
                hits |= scan_text(text, tool_output=is_tool)
    ordered = tuple(sorted(hits))
    score = min(1.0, sum(_WEIGHTS[r] for r in ordered))
    return InjectionReport(round(score, 2), ordered)


def scan_passage(text: str) -> InjectionReport:
    """Score one retrieved passage (RAG context): text the caller did not write but the
    model will read, so it is scanned like a tool result."""
    ordered = tuple(sorted(scan_text(text, tool_output=True)))
    score = min(1.0, sum(_WEIGHTS[r] for r in ordered))
    return InjectionReport(round(score, 2), ordered)


def check_injection(
    body: dict[str, Any],
    *,
    action: str,
    threshold: float,
    roles: Sequence[str] = ("user", "tool", "function"),
) -> InjectionReport | None:
    """Apply a policy: ``off`` -> None; ``flag`` -> report; ``block`` -> raise at/over threshold."""
    if action == "off":
        return None
    report = scan_chat_request(body, roles)
    if action == "block" and report.hit and report.score >= threshold:
        raise InjectionBlocked(report.rules, report.score)
    return report
