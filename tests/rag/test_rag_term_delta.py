""":class:`lockgate.rag.pg_term_stats.TermDelta` counts what a plain loop over the postings
counts (its fast path skips chunks whose terms all have tf 1 and sets lengths with C loops)."""

from __future__ import annotations

import random
from collections import Counter

from lockgate.rag.pg_term_stats import TermDelta


def _reference(chunks: list[Counter[str]]) -> tuple[Counter[str], Counter[str],
                                                     dict[str, int], dict[str, int]]:
    df: Counter[str] = Counter()
    multi: Counter[str] = Counter()
    max_tf: dict[str, int] = {}
    min_dl: dict[str, int] = {}
    for tc in chunks:
        n = sum(tc.values())
        for t, tf in tc.items():
            df[t] += 1
            multi[t] += tf > 1
            max_tf[t] = max(max_tf.get(t, 0), tf)
            min_dl[t] = min(min_dl.get(t, n), n)
    return df, +multi, max_tf, min_dl


def test_delta_matches_a_plain_count() -> None:
    rng = random.Random(5)
    for _ in range(50):
        chunks = [Counter(rng.choices("abcdefghijklmnop", k=rng.randint(1, 14)))
                  for _ in range(rng.randint(1, 60))]
        cut = rng.randint(0, len(chunks))
        d = TermDelta()
        d.add_chunks(chunks[:cut])  # two calls merge like one
        d.add_chunks(chunks[cut:])
        assert (d.df, +d.multi, d.max_tf, d.min_dl) == _reference(chunks)


def test_removals_subtract_and_empty_delta_is_false() -> None:
    d = TermDelta()
    assert not d
    d.add_chunks([Counter({"a": 2, "b": 1})])
    d.remove("a", 1, 1)
    assert d  # max_tf still widens a's bound
    assert d.df["a"] == 0 and d.multi["a"] == 0
    e = TermDelta()
    e.remove("z", 3, 1)
    assert e and e.df["z"] == -3
