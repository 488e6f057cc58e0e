"""Text analysis for lexical (BM25) search: lower-case words, stop-words out, Snowball stems.

The same analyser feeds both storage backends, so SQLite FTS5 (which indexes
the analysed terms) and the PostgreSQL postings table score the same terms.
Measured on CISI, Snowball stemming + stop-words beats FTS5's own porter
tokenizer on raw text (the reference points in the issue: 0.38 vs 0.36 nDCG@10).
"""

from __future__ import annotations

import re
import threading
from collections import Counter

import Stemmer  # type: ignore[import-not-found]

__all__ = [
    "MAX_QUERY_TERMS",
    "MAX_TERM_REPEAT",
    "STOPWORDS",
    "analyze",
    "query_term_list",
    "query_terms",
    "term_counts",
]

MAX_QUERY_TERMS = 64
"""Distinct terms a query searches with at most."""

MAX_TERM_REPEAT = 4
"""How many times one term of a query counts at most in its BM25 weight.

BM25 weighs a query term by its count in the query (FTS5 sums a repeated phrase
once per occurrence): on CISI's long questions that is worth +0.066 nDCG@10 over
distinct terms (0.391 vs 0.325). The cap bounds the lexical work at
``MAX_QUERY_TERMS * MAX_TERM_REPEAT`` phrases; measured on CISI, nDCG@10 with the
cap at 4 / 8 / 16: 0.398 / 0.394 / 0.391 (bench/RESULTS.md)."""

_APOSTROPHES = "'\u2019"
_WORD = re.compile(r"[^\W_]+(?:[" + _APOSTROPHES + r"][^\W_]+)?", re.UNICODE)

_STOP_TEXT = """
    a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't
    doing don't down during each few for from further had hadn't has hasn't have haven't having
    he he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm
    i've if in into is isn't it it's its itself let's me more most mustn't my myself no nor not
    of off on once only or other ought our ours ourselves out over own same shan't she she'd
    she'll she's should shouldn't so some such than that that's the their theirs them themselves
    then there there's these they they'd they'll they're they've this those through to too under
    until up very was wasn't we we'd we'll we're we've were weren't what what's when when's
    where where's which while who who's whom why why's with won't would wouldn't you you'd
    you'll you're you've your yours yourself yourselves also may might must shall will would us
    upon within without
"""
STOPWORDS = frozenset(_STOP_TEXT.split())

_local = threading.local()


def _stemmer() -> Stemmer.Stemmer:
    st: Stemmer.Stemmer | None = getattr(_local, "stemmer", None)
    if st is None:
        st = Stemmer.Stemmer("english")
        _local.stemmer = st
    return st


def analyze(text: str) -> list[str]:
    """Index terms of ``text`` in order (stop-words removed, stemmed, no quotes)."""
    found = _WORD.findall(text.lower().replace("\u2019", "'"))
    words = [w.replace("'", "") for w in found if w not in STOPWORDS and len(w) < 64]
    return [s for s in _stemmer().stemWords(words) if s]


def term_counts(text: str) -> Counter[str]:
    return Counter(analyze(text))


def _kept(counts: Counter[str], max_terms: int) -> list[str]:
    if len(counts) <= max_terms:
        return list(counts)
    order = {t: i for i, t in enumerate(counts)}
    keep = sorted(counts, key=lambda t: (-counts[t], order[t]))[:max_terms]
    return sorted(keep, key=order.__getitem__)


def query_terms(text: str, max_terms: int = MAX_QUERY_TERMS) -> list[str]:
    """The distinct index terms of a query, at most ``max_terms``, in first-occurrence order.

    When there are more, the ones repeated most in the query are kept (ties: the earlier).
    """
    return _kept(Counter(analyze(text)), max_terms)  # insertion order = first occurrence


def query_term_list(text: str, max_terms: int = MAX_QUERY_TERMS,
                    max_repeat: int = MAX_TERM_REPEAT) -> list[str]:
    """What BM25 searches with: :func:`query_terms`, each repeated as often as it occurs
    in the query, at most ``max_repeat`` times (``a b a`` -> ``a a b``)."""
    counts = Counter(analyze(text))
    return [t for t in _kept(counts, max_terms) for _ in range(min(counts[t], max_repeat))]
