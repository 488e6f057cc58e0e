"""Knowledge-graph RAG vs plain retrieval on multi-hop questions, in one run.

    .venv/bin/python bench/kg_rag_bench.py [--corpus cisi|registry|both] [--questions 150]
                                           [--people 300] [--record]

Two question sets, both answered in one run against the same code:

**cisi** (the default; a public corpus): the CISI test collection (1,460 bibliographic
records of information-science papers with their real titles, authors and abstracts; in
``../shared/data/cisi``, the same files ``bench/rag_cisi.py`` uses). Each record is ingested
as a document the way a library catalogue would hold it: the title line, one byline
sentence per author ("<Initials Surname> wrote <title>.": CISI's "Surname, I.N." rewritten
as "IN Surname" because a period after an initial ends a sentence for the extractor), then
the abstract as published. Questions are bridge questions built from CISI's author field:
for a record A by an author who wrote other records in the collection, "Which other works
are by the author of <title of A>?". The answer set is the author's (and co-authors')
other records; the bridge entity (the author) is named in neither the question nor the
answer pages, and the answers share no required wording with the question. Only authors
come from the metadata: entities and relations are extracted by the offline rule
extractor from the whole text, so the abstracts' free text adds real extraction noise
(many unrelated entities and facts). A fifth of the records (seeded) are readable only by
``group:board``; questions whose A or all of whose answers are hidden are asked but not
scored, and every question counts leaks.

**registry** (generated; an upper bound): the corpus is generated here (seeded, nothing
downloaded; no licence to inherit): a registry of invented people, companies and cities
written as short documents, in the style of the bridge questions of HotpotQA (Yang et al.,
2018) but with invented names so the model cannot know the answers:

* a person's page: "<Person> works for <Company> as a <role>. <Person> was born in <City>.";
* a company's page: "<Company> is headquartered in <City>. <Company> was founded by
  <Person>." plus a line of shared boilerplate;
* a city's page: "<City> is a city in <Country>.".

Questions need two documents (the bridge entity is named in neither the question nor the
answer's page): "In which city is the employer of <Person> headquartered?" (person page ->
company page), "Who founded the company that employs <Person>?" (person -> company), "In
which country is the headquarters of <Company>?" (company -> city). A fifth of the company
pages are readable only by ``group:board``; the questions are asked as a caller without it,
and every question about a hidden company is counted for leaks (facts or passages from a
document the caller may not read: must be 0).

Same collection, same questions, one run: ``bm25`` and ``hybrid`` (bundled all-MiniLM-L6-v2
through the pipeline, convex fusion) each without and with graph expansion (rule extractor,
2 hops). Reported: both supporting pages in the top k (support@k), the second-hop page in
the top k (hop2@k), MRR of the second-hop page, and p50 latency per query.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lockgate.cli.rag_commands import OPERATOR_PRINCIPAL  # noqa: E402
from lockgate.rag import Caller, SourceDocument  # noqa: E402
from lockgate.runtime import Runtime  # noqa: E402
from lockgate.settings import parse_config  # noqa: E402

SYL = ["var", "mol", "quin", "dra", "sel", "tor", "bex", "lun", "fay", "gor", "hal", "ix",
       "jen", "kor", "lem", "nav", "oth", "pel", "rud", "sav", "tev", "ulm", "wis", "yar"]
ROLES = ["welder", "driver", "analyst", "chemist", "clerk", "designer", "pilot", "nurse"]
KINDS = ["Robotics", "Foods", "Logistics", "Textiles", "Pharma", "Systems", "Mining", "Media"]
COUNTRIES = ["Eldoria", "Marovia", "Tessaly", "Quorland", "Brevnia", "Ostrevia"]


def word(rng: random.Random, n: int = 2) -> str:
    return "".join(rng.choice(SYL) for _ in range(n)).capitalize()


CISI_DIR = REPO.parent / "shared" / "data" / "cisi"


@dataclass
class Question:
    text: str
    first: str
    seconds: frozenset[str]
    answer: str
    hidden: bool


def _cisi_records(path: Path) -> dict[str, dict[str, str]]:
    """CISI.ALL as ``{id: {"T": title, "A": authors (one per line), "W": abstract}}``."""
    records: dict[str, dict[str, str]] = {}
    cur: dict[str, str] = {}
    field: str | None = None
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith(".I "):
            cur = records.setdefault(line[3:].strip(), {})
            field = None
        elif len(line) >= 2 and line[0] == "." and line[1] in "TAWXB" and not line[2:].strip():
            field = line[1]
        elif field is not None:
            cur[field] = (cur.get(field, "") + "\n" + line).strip("\n")
    return records


def _byline_name(author: str) -> str:
    """"Comaromi, J.P." -> "JP Comaromi"; "Wall, Eugene" -> "Eugene Wall"."""
    last, _, first = author.partition(",")
    first = re.sub(r"\.\s*", "", first.strip()) if re.fullmatch(r"([A-Z]\.\s*)+", first.strip()) \
        else first.strip().replace(".", "")
    return " ".join(f"{first} {last.strip()}".split())


def build_cisi(n_questions: int, data: Path = CISI_DIR, seed: int = 11
               ) -> tuple[list[SourceDocument], list[Question]]:
    rng = random.Random(seed)
    records = _cisi_records(data / "CISI.ALL")
    docs: list[SourceDocument] = []
    authors_of: dict[str, list[str]] = {}
    works: dict[str, set[str]] = defaultdict(set)
    titles: dict[str, str] = {}
    hidden: set[str] = set()
    for rid, rec in records.items():
        did = f"cisi/{rid}"
        title = " ".join(rec.get("T", "").split()).rstrip(";:,. ")
        names = [_byline_name(a) for a in rec.get("A", "").splitlines() if a.strip()]
        byline = " ".join(f"{n} wrote {title}." for n in names)
        abstract = " ".join(rec.get("W", "").split())
        private = rng.random() < 0.2
        if private:
            hidden.add(did)
        docs.append(SourceDocument(did, f"{title}.\n{byline}\n{abstract}", title=title,
                                   principals=("group:board",) if private else ("public",)))
        titles[did] = title
        authors_of[did] = names
        for n in names:
            works[n].add(did)
    candidates = []
    for did, names in authors_of.items():
        others = frozenset(d for n in names for d in works[n] if d != did)
        if others:
            candidates.append((did, others))
    rng.shuffle(candidates)
    qs = [Question(f"Which other works are by the author of {titles[did]}?", did, others,
                   ", ".join(authors_of[did]),
                   did in hidden or not (others - hidden))
          for did, others in candidates[:n_questions]]
    return docs, qs


def build_registry(n_people: int, n_questions: int, seed: int = 11
                   ) -> tuple[list[SourceDocument], list[Question]]:
    rng = random.Random(seed)
    used: set[str] = set()

    def unique(make: object) -> str:
        while True:
            name = make()  # type: ignore[operator]
            if name not in used:
                used.add(name)
                return str(name)

    cities = [unique(lambda: word(rng, 3)) for _ in range(40)]
    country = {c: rng.choice(COUNTRIES) for c in cities}
    people = [unique(lambda: f"{word(rng)} {word(rng, 3)}") for _ in range(n_people)]
    companies = [unique(lambda: f"{word(rng)} {rng.choice(KINDS)}")
                 for _ in range(max(20, n_people // 5))]
    hq = {c: rng.choice(cities) for c in companies}
    founder = {c: rng.choice(people) for c in companies}
    employer = {p: rng.choice(companies) for p in people}
    hidden = set(rng.sample(companies, len(companies) // 5))
    docs: list[SourceDocument] = []
    for p in people:
        docs.append(SourceDocument(
            f"person/{p}", f"{p} works for {employer[p]} as a {rng.choice(ROLES)}. {p} was "
            f"born in {rng.choice(cities)}. Colleagues say the work is demanding.",
            title=p))
    for c in companies:
        docs.append(SourceDocument(
            f"company/{c}", f"{c} is headquartered in {hq[c]}. {c} was founded by "
            f"{founder[c]}. The company reports to its board every quarter and employs "
            f"staff in several cities.", title=c,
            principals=("group:board",) if c in hidden else ("public",)))
    for city in cities:
        docs.append(SourceDocument(f"city/{city}", f"{city} is a city in {country[city]}. "
                                   "It has a harbour and a railway station.", title=city))
    qs: list[Question] = []
    while len(qs) < n_questions:
        kind = len(qs) % 3
        if kind == 0:
            p = rng.choice(people)
            c = employer[p]
            qs.append(Question(f"In which city is the employer of {p} headquartered?",
                               f"person/{p}", frozenset([f"company/{c}"]), hq[c], c in hidden))
        elif kind == 1:
            p = rng.choice(people)
            c = employer[p]
            qs.append(Question(f"Who founded the company that employs {p}?", f"person/{p}",
                               frozenset([f"company/{c}"]), founder[c], c in hidden))
        else:
            c = rng.choice(companies)
            qs.append(Question(f"In which country is the headquarters of {c}?",
                               f"company/{c}", frozenset([f"city/{hq[c]}"]), country[hq[c]],
                               c in hidden))
    return docs, qs


CONFIG = """
master_key: bench-master-key-0123456789
home: {home}
database_url: sqlite:///{home}/lg.db
models:
  - name: embed
    provider: embedded
    path: bundled:all-minilm-l6-v2
    mode: embeddings
knowledge_graph: {{enabled: true, hops: 2}}
"""


async def run(corpus: str, docs: list[SourceDocument], qs: list[Question], k: int
              ) -> dict[str, dict[str, float]]:
    hidden_docs = {d.doc_id for d in docs if d.principals == ("group:board",)}
    caller = Caller(user_id="analyst")
    with tempfile.TemporaryDirectory() as tmp:
        rt = await Runtime.start(parse_config(CONFIG.format(home=tmp)), jobs=False)
        try:
            t = time.perf_counter()
            rep = await rt.rag.ingest_documents(corpus, docs, principal=OPERATOR_PRINCIPAL)
            ingest_s = time.perf_counter() - t
            assert not rep.failed, rep.failed[:3]
            assert rt.rag.graph is not None
            stats = await rt.rag.graph.store.stats((await rt.rag.collection(corpus)).id)
            print(f"{corpus}: ingested {len(docs)} docs in {ingest_s:.1f}s; graph {stats}",
                  flush=True)
            rows: dict[str, dict[str, float]] = {}
            for mode in ("bm25", "hybrid"):
                for graph in (False, True):
                    both = hop2 = rr = leaks = 0.0
                    lat: list[float] = []
                    for q in qs:
                        t = time.perf_counter()
                        res = await rt.rag.retrieve(corpus, q.text, caller, mode=mode,
                                                    k=k, graph=graph,
                                                    principal=OPERATOR_PRINCIPAL)
                        lat.append((time.perf_counter() - t) * 1000)
                        ids = [h.doc_id for h in res.hits]
                        seen = set(ids) | {f.doc_id for f in res.facts}
                        leaks += len(seen & hidden_docs)
                        if q.hidden:
                            continue  # the caller may not read the pages it needs
                        wanted = q.seconds - hidden_docs
                        ranks = [i for i, d in enumerate(ids) if d in wanted]
                        hop2 += bool(ranks)
                        both += q.first in ids and bool(ranks)
                        if ranks:
                            rr += 1.0 / (ranks[0] + 1)
                    n = sum(1 for q in qs if not q.hidden)
                    rows[f"{mode}{' + graph' if graph else ''}"] = {
                        "questions": n, f"support@{k}": both / n, f"hop2@{k}": hop2 / n,
                        "mrr_hop2": rr / n, "p50_ms": statistics.median(lat),
                        "leaks": leaks}
            rows["_meta"] = {"docs": len(docs), "ingest_s": ingest_s, **stats}
            return rows
        finally:
            await rt.aclose()


DESCRIBE = {
    "cisi": "CISI (public test collection: 1,460 real records; bridge questions through the "
            "author field, documented in the script's docstring)",
    "registry": "generated registry corpus (template text the rule extractor parses "
                "completely: an upper bound)",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", choices=("cisi", "registry", "both"), default="both")
    ap.add_argument("--data", type=Path, default=CISI_DIR, help="folder holding CISI.ALL")
    ap.add_argument("--people", type=int, default=300)
    ap.add_argument("--questions", type=int, default=150)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    k = args.k
    corpora = ("cisi", "registry") if args.corpus == "both" else (args.corpus,)
    sections: list[str] = []
    for corpus in corpora:
        if corpus == "cisi":
            docs, qs = build_cisi(args.questions, args.data)
        else:
            docs, qs = build_registry(args.people, args.questions)
        rows = asyncio.run(run(corpus, docs, qs, k))
        meta = rows.pop("_meta")
        lines = [f"| {corpus}: retrieval | questions scored | support@{k} | hop2@{k} | "
                 "MRR hop2 | p50 ms | leaks |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in rows.items():
            lines.append(f"| {name} | {r['questions']:.0f} | {r[f'support@{k}']:.3f} | "
                         f"{r[f'hop2@{k}']:.3f} | {r['mrr_hop2']:.3f} | {r['p50_ms']:.1f} | "
                         f"{r['leaks']:.0f} |")
        table = "\n".join(lines)
        print(table)
        print(meta)
        sections.append(
            f"{DESCRIBE[corpus]}: {meta['docs']:.0f} documents, {len(qs)} questions asked; "
            f"graph {meta['entities']:.0f} entities, {meta['relations']:.0f} relations; "
            f"ingest incl. MiniLM embeddings and extraction {meta['ingest_s']:.1f} s.\n\n"
            f"{table}\n")
    if args.record:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write(f"\n## Knowledge-graph RAG — {when}\n\n`.venv/bin/python "
                    f"bench/kg_rag_bench.py --corpus {args.corpus} --questions "
                    f"{args.questions} --k {k}` on {platform.node()} "
                    f"({platform.machine()}, shared 2 cores). Questions whose pages the "
                    f"caller may not read are asked but not scored; leaks counts hidden "
                    f"documents among passages and facts over all questions.\n\n"
                    + "\n".join(sections))


if __name__ == "__main__":
    main()
