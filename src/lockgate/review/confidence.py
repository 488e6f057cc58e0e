"""A call's confidence, by source (see ``settings.review.ConfidenceSource``).

- :func:`from_logprobs`: ``exp(mean logprob)`` over the answer's tokens, from OpenAI's
  ``choices[0].logprobs.content[].logprob``: the geometric mean of the token
  probabilities, in (0, 1]. None when the provider returned no logprobs.
- :func:`from_field`: a number in [0, 1] the answer's JSON carries (declared in the
  task's output contract). None when absent or out of range.
- :func:`agreement`: the share of answers equal to the most common one (1.0 when all
  agree); with ``compare_field`` only that field of JSON answers is compared.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["agreement", "from_field", "from_logprobs"]


def from_logprobs(body: Any) -> float | None:
    try:
        content = body["choices"][0]["logprobs"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(content, list) or not content:
        return None
    total = 0.0
    n = 0
    for tok in content:
        lp = tok.get("logprob") if isinstance(tok, dict) else None
        if isinstance(lp, int | float) and not isinstance(lp, bool) and math.isfinite(lp):
            total += min(0.0, float(lp))
            n += 1
    if n == 0:
        return None
    return math.exp(total / n)


def from_field(output: Any, field: str) -> float | None:
    if not isinstance(output, dict):
        return None
    raw = output.get(field)
    if isinstance(raw, int | float) and not isinstance(raw, bool) and 0.0 <= raw <= 1.0:
        return float(raw)
    return None


def _key(answer: Any, compare_field: str | None) -> bytes:
    if compare_field is not None and isinstance(answer, dict):
        answer = answer.get(compare_field)
    if isinstance(answer, str):
        answer = " ".join(answer.split()).lower()
    try:
        return orjson.dumps(answer, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return repr(answer).encode()


def agreement(answers: Sequence[Any], compare_field: str | None = None) -> float | None:
    if not answers:
        return None
    counts = Counter(_key(a, compare_field) for a in answers)
    return counts.most_common(1)[0][1] / len(answers)
