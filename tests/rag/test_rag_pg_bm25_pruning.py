"""PostgreSQL BM25 with MaxScore pruning returns exactly the exhaustive top-k.

Random small corpora with Zipf-skewed term frequencies (some with one chunk length, as
the scale bench, some with lengths from 2 to 60 terms), random ACLs and callers, random
queries (repeated terms included) and k in {1, 5, 10, 50}: the pruned search
(:func:`lockgate.rag.pg_lexical.search`, pruning tried whatever the postings count)
must return the same list as the exhaustive query: same chunks, same order, the same
scores to the bit. The runs must really prune (first try and after a smaller
non-essential set), cut frequent terms below their peak, and fall back when the proof
fails (every term frequent; a caller who may read fewer than k chunks).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from lockgate.rag import bm25, pg_lexical
from lockgate.rag.analysis import query_term_list
from lockgate.rag.service import RagService
from lockgate.rag.types import SourceDocument
from tests.rag.conftest import rag_service_at
from tests.rag.rag_support import OPERATOR

pytestmark = pytest.mark.postgres

VOCAB = 400
PRINCIPALS = ["public", "group:a", "group:b", "group:c", "user:x", "user:y"]


@pytest.fixture
async def pg_service(pg_url: str) -> AsyncIterator[RagService]:
    async with rag_service_at(pg_url) as svc:
        yield svc


def _zipf(rng: random.Random, s: float) -> list[float]:
    return [1.0 / (i + 1) ** s for i in range(VOCAB)]


async def _corpus(svc: RagService, name: str, rng: random.Random, fixed_length: bool,
                  n_docs: int) -> None:
    weights = _zipf(rng, rng.choice([0.9, 1.1, 1.3]))
    docs = []
    for i in range(n_docs):
        n = 30 if fixed_length else rng.randint(2, 60)
        words = rng.choices(range(VOCAB), weights=weights, k=n)
        acl = tuple(rng.sample(PRINCIPALS, rng.choice([1, 1, 2])))
        docs.append(SourceDocument(doc_id=f"{name}-{i}", title="",
                                   text=" ".join(f"w{w}" for w in words), principals=acl))
    await svc.store.create_collection(name, None)
    rep = await svc.ingest_documents(name, docs, principal=OPERATOR)
    assert rep.chunks_written == n_docs


async def _both(svc: RagService, name: str, terms: list[str], principals: list[str] | None,
                k: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]],
                             pg_lexical.Outcome]:
    coll = await svc.store.get_collection(name)
    assert coll is not None
    version = await svc.store.version(coll.id)
    lex = svc.store.lexical
    got = {}
    for pruning in (True, False):
        lex.pg_pruning = pruning
        got[pruning] = await svc.store.lexical_search(
            coll.id, terms, principals=principals, filters=None, exclude_doc_ids=None,
            k=k, version=version)
        if pruning:
            assert lex.last_outcome is not None
            outcome = lex.last_outcome
    lex.pg_pruning = True
    return got[True], got[False], outcome


def _query(rng: random.Random) -> list[str]:
    # mostly frequent words (low ranks), sometimes a rare one, sometimes repeated
    picks = [f"w{min(int(rng.expovariate(1 / 25)), VOCAB - 1)}"
             for _ in range(rng.randint(1, 5))]
    if rng.random() < 0.3:
        picks.append(rng.choice(picks))
    return query_term_list(" ".join(picks))


async def test_pruned_search_is_the_exhaustive_search(pg_service: RagService) -> None:
    svc = pg_service
    svc.store.lexical.prune_min_postings = 0  # try pruning on every query, small or not
    rng = random.Random(20261206)
    paths: Counter[str] = Counter()
    tiered = 0
    for c in range(6):
        name = f"z{c}"
        await _corpus(svc, name, rng, fixed_length=c % 2 == 0, n_docs=rng.choice([150, 400]))
        for _ in range(45):
            terms = _query(rng)
            if not terms:
                continue
            principals: list[str] | None = (
                None if rng.random() < 0.2 else rng.sample(PRINCIPALS, rng.randint(1, 3)))
            k = rng.choice([1, 5, 10, 50])
            # ranked windows narrower than the readable top k: the window widening runs too
            svc.store.lexical.pg_first_window = rng.choice([1, 7, 4096])
            pruned, full, outcome = await _both(svc, name, terms, principals, k)
            assert pruned == full, (name, terms, principals, k, outcome)
            assert len(full) <= k
            paths[outcome.path] += 1
            tiered += any(outcome.caps.values())
    # the pruning really ran, both ways, and so did the fallback
    assert paths["pruned"] >= 50, paths
    assert paths["widened"] >= 1, paths
    assert paths["exhaustive"] >= 20, paths
    assert tiered >= 10, tiered


async def test_a_failed_proof_widens(pg_service: RagService) -> None:
    """The first guess leaves out three terms (ceilings, in score units: cc 0.55, aa 0.70,
    ee 1.62; dd 2.02 stays). The candidates (dd's chunks, most of them of length 6) have
    their k-th score at 1.26 < 2.86: the proof fails. That 1.26 is a lower bound of the
    k-th score and leaves cc and aa out (1.25): the second try proves it."""
    svc = pg_service
    svc.store.lexical.prune_min_postings = 0
    docs = [SourceDocument(doc_id=f"a{i}", title="",
                           text="aa " + " ".join(f"fa{i}x{j}" for j in range(39)))
            for i in range(3)]
    docs += [SourceDocument(doc_id="d", title="", text="dd yd0")]
    docs += [SourceDocument(doc_id=f"d{i}", title="",
                            text="dd " + " ".join(f"fd{i}x{j}" for j in range(5)))
             for i in range(29)]
    docs += [SourceDocument(doc_id=f"e{i}", title="", text=f"ee ye{i}") for i in range(40)]
    docs += [SourceDocument(doc_id=f"c{i}", title="", text=f"cc yc{i}") for i in range(77)]
    docs += [SourceDocument(doc_id=f"z{i}", title="", text=f"zz{i} uu{i}") for i in range(50)]
    await svc.ingest_documents("w", docs, principal=OPERATOR)
    for k in (1, 2, 5, 25):
        pruned, full, outcome = await _both(svc, "w", ["aa", "cc", "dd", "ee"], None, k)
        assert pruned == full
        assert len(full) == k
        assert outcome.path == "widened", outcome
        assert outcome.rounds == 2 and set(outcome.caps) == {"cc", "aa"}, outcome


async def test_fallbacks_when_the_proof_fails(pg_service: RagService) -> None:
    svc = pg_service
    svc.store.lexical.prune_min_postings = 0
    rng = random.Random(7)
    await _corpus(svc, "f", rng, fixed_length=True, n_docs=300)
    coll = await svc.store.get_collection("f")
    assert coll is not None
    # every term frequent: the most frequent words, whose ceilings are all alike
    frequent = ["w0", "w1", "w2", "w3"]
    for k in (10, 50):
        pruned, full, outcome = await _both(svc, "f", frequent, None, k)
        assert pruned == full
        assert len(full) == k
    # a term no chunk holds (the largest weight of all, no postings)
    for terms in (["nosuchterm", "w0", "w1", "w7"], ["nosuchterm"]):
        pruned, full, outcome = await _both(svc, "f", terms, None, 10)
        assert pruned == full
        assert len(full) == (10 if len(terms) > 1 else 0)
    # a caller who may read fewer than k chunks: the proof needs k readable candidates
    few = ["user:nobody-else"]
    docs = [SourceDocument(doc_id=f"few-{i}", title="", text="w0 w5 w9 w20", principals=few)
            for i in range(3)]
    await svc.ingest_documents("f", docs, principal=OPERATOR)
    for terms in (["w5", "w20", "w0"], ["w9", "w0", "w0", "w1"]):
        pruned, full, outcome = await _both(svc, "f", terms, few, 10)
        assert pruned == full
        assert len(full) == 3
        assert outcome.path == "exhaustive"
        assert outcome.rounds == 2  # a pruned try, then the exhaustive query


async def test_scores_are_the_formula_summed_exactly(pg_service: RagService) -> None:
    """The integer sum's rounding stays far below the tests' 1e-9 (and the ties it makes
    are real ties: equal parts give equal scores whatever order the rows come in)."""
    svc = pg_service
    docs = [SourceDocument(doc_id=f"d{i}", title="", text=t) for i, t in enumerate(
        ["alpha beta gamma", "gamma beta alpha", "beta alpha gamma delta", "alpha",
         "delta delta epsilon", "epsilon beta"])]
    await svc.ingest_documents("e", docs, principal=OPERATOR)
    coll = await svc.store.get_collection("e")
    assert coll is not None
    version = await svc.store.version(coll.id)
    terms = query_term_list("alpha beta gamma")
    got = await svc.store.lexical_search(coll.id, terms, principals=None, filters=None,
                                         exclude_doc_ids=None, k=10, version=version)
    # chunks 1 and 2 hold the same terms once each at the same length: the same score
    assert got[0][1] == got[1][1] and got[0][0] < got[1][0]
    n_docs, avgdl = 6, sum(len(d.text.split()) for d in docs) / 6
    dfs = {"alpha": 4, "beta": 4, "gamma": 3}
    w = bm25.query_weights(terms, n_docs, dfs)
    dl = 3
    want = sum(w[t] * 2.2 / (1 + 1.2 * (0.25 + 0.75 * dl / avgdl)) for t in w)
    assert got[0][1] == pytest.approx(want, rel=1e-12)


async def test_a_tie_with_the_bound_is_not_pruned(pg_service: RagService) -> None:
    """Two terms of equal df in chunks of one length: every chunk scores the same, so the
    k-th score equals the other term's ceiling and a chunk holding only that term ties
    it (and wins on its lower pk). Pruning that term would lose those chunks: the proof
    needs the k-th score strictly above the bound, and the answer is the exhaustive one."""
    svc = pg_service
    svc.store.lexical.prune_min_postings = 0
    docs = [SourceDocument(doc_id=f"a{i}", title="", text=f"aa f{i} g{i}") for i in range(20)]
    docs += [SourceDocument(doc_id=f"b{i}", title="", text=f"bb f{i} g{i}") for i in range(20)]
    docs += [SourceDocument(doc_id=f"c{i}", title="", text=f"cc h{i} j{i}") for i in range(20)]
    await svc.ingest_documents("t", docs, principal=OPERATOR)
    for k in (1, 5, 19):
        pruned, full, _ = await _both(svc, "t", query_term_list("aa bb"), None, k)
        assert pruned == full
        assert len({s for _, s in full}) == 1  # one score: ties all the way
        pks = [pk for pk, _ in full]
        assert pks == sorted(pks)
        # the a-documents came first: their chunks have the lowest pks
        assert len(full) == k
