"""Entity and relation extraction from a chunk of text.

Two extractors with one output shape (:class:`Extraction`):

* :class:`RuleExtractor` (offline, the default when no model is configured): entities are
  runs of capitalised words (``Marie Curie``, ``Acme Robotics``, ``University of Lyon``;
  connectors ``of``/``de``/``van``/``the``/``and``/``&`` inside a name), acronyms and
  words with inner capitals (``NATO``, ``OpenVault``); a single capitalised word that only
  starts a sentence and is a common word (``The``, ``In``...) is not an entity. A relation
  is two entities of one sentence with at most :data:`MAX_GAP` words between them; the
  words between, lower-cased and trimmed of leading/trailing filler, are the predicate
  (``works for``, ``is headquartered in``). Types are guessed from suffixes (``Inc`` ->
  org) and the preposition before the name (``in``/``at`` -> place), else ``entity``.
* :class:`ModelExtractor`: one chat call per chunk through the pipeline with a JSON-schema
  ``response_format`` (the contract :data:`EXTRACTION_SCHEMA`; with ``guards:`` configured
  the pipeline enforces it as an output contract with one repair attempt); the answer is
  validated against the schema here too, and every entity and both ends of every relation
  must occur in the chunk text (case-insensitive), so a model cannot add facts the passage
  does not hold.
  An answer that fails the contract (or a ``ContractViolation`` from the pipeline) falls
  back to the rule extractor for that chunk (counted in ``fallbacks``); other errors
  (budget, unknown model) propagate and the ingest reports the document.

Partial: the rule extractor is English-centric and misses pronoun references ("she").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from lockgate.guards.errors import ContractViolation
from lockgate.pipeline import Call, Completion, Principal

__all__ = [
    "EXTRACTION_SCHEMA",
    "Entity",
    "Extraction",
    "Extractor",
    "ModelExtractor",
    "Relation",
    "RuleExtractor",
    "normalize",
]

MAX_GAP = 8
MAX_ENTITIES = 200
_WORD = re.compile(r"[A-Za-z0-9][\w'\u2019\-]*|[.!?;:,()\"]")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])|\n{2,}")
_CONNECT = {"of", "de", "du", "van", "von", "der", "the", "&", "la", "le", "di"}
_COMMON = {
    "the", "a", "an", "in", "on", "at", "it", "its", "this", "that", "these", "those", "he",
    "she", "they", "we", "i", "you", "his", "her", "their", "our", "there", "here", "when",
    "where", "what", "which", "who", "whom", "why", "how", "after", "before", "during",
    "since", "from", "for", "by", "with", "as", "if", "but", "and", "or", "so", "also", "then",
    "every", "each", "all", "some", "many", "most", "one", "two", "three", "today", "yes",
    "no", "not", "later", "however", "meanwhile", "both", "while", "until", "to", "of",
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december", "monday", "tuesday", "wednesday", "thursday",
    "friday", "saturday", "sunday", "is", "was", "are", "were", "be",
}
_ORG_SUFFIX = {"inc", "corp", "corporation", "ltd", "llc", "gmbh", "sa", "ag", "plc",
               "company", "co", "group", "university", "institute", "bank", "labs",
               "foundation", "agency", "systems", "industries", "robotics", "holdings"}
_PLACE_PREP = {"in", "at", "near", "to", "from"}
_FILLER = {"the", "a", "an", "and", ",", "also", "then", "which", "who", "that"}


def normalize(name: str) -> str:
    """The key an entity is stored and linked under: lower case, single spaces, no
    possessive or surrounding punctuation."""
    text = name.replace("\u2019", "'").lower()
    text = re.sub(r"'s\b", "", text)
    text = re.sub(r"[^\w&\- ]+", " ", text)
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    type: str = "entity"

    @property
    def norm(self) -> str:
        return normalize(self.name)


@dataclass(frozen=True, slots=True)
class Relation:
    subject: str
    predicate: str
    object: str
    evidence: str


@dataclass(slots=True)
class Extraction:
    entities: list[Entity] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)


class Extractor(Protocol):
    async def extract(self, text: str) -> Extraction: ...

    def with_principal(self, principal: Principal | None) -> Extractor:
        """The same extractor making its model calls as ``principal`` (the ingesting key)."""
        ...


def _is_cap(tok: str) -> bool:
    return tok[:1].isupper() or (tok[:1].isdigit() and any(c.isupper() for c in tok))


def _sentence_entities(tokens: list[str], lower_words: set[str] = frozenset()  # type: ignore[assignment]
                       ) -> list[tuple[int, int, str]]:
    """(start, end, name) spans of entities in one sentence's tokens. A single capitalised
    word opening the sentence counts only when it is not a common word and the text never
    uses it in lower case (``Lyon is ...`` yes, ``Colleagues say ...`` only if no
    ``colleagues`` elsewhere)."""
    spans: list[tuple[int, int, str]] = []
    i = 0
    n = len(tokens)
    while i < n:
        tok = tokens[i]
        if not _is_cap(tok) or not tok[:1].isalnum():
            i += 1
            continue
        j = i + 1
        while j < n:
            if _is_cap(tokens[j]) and tokens[j][:1].isalnum():
                j += 1
            elif (tokens[j].lower() in _CONNECT and j + 1 < n and _is_cap(tokens[j + 1])
                  and tokens[j + 1].lower() not in _COMMON):
                j += 2
            else:
                break
        words = tokens[i:j]
        while words and words[0].lower() in _COMMON:
            words = words[1:]
            i += 1
        if words:
            single = len(words) == 1
            w = words[0]
            strong = (w.isupper() and len(w) > 1) or any(c.isupper() for c in w[1:])
            opener = i == 0 and not strong and w.lower() in lower_words
            if not (single and (w.lower() in _COMMON or opener)):
                name = " ".join(words)
                name = re.sub(r"'s$|\u2019s$", "", name)
                spans.append((i, i + len(words), name))
        i = max(j, i + 1)
    return spans


def _guess_type(tokens: list[str], start: int, name: str) -> str:
    words = name.lower().replace(".", "").split()
    if words[-1] in _ORG_SUFFIX or words[0] in _ORG_SUFFIX:
        return "org"
    if start > 0 and tokens[start - 1].lower() in _PLACE_PREP:
        return "place"
    return "entity"


class RuleExtractor:
    """Offline extraction (no model): capitalised names and the words between them."""

    async def extract(self, text: str) -> Extraction:
        return self.extract_sync(text)

    def with_principal(self, principal: Principal | None) -> RuleExtractor:
        return self

    def extract_sync(self, text: str) -> Extraction:
        out = Extraction()
        seen: dict[str, Entity] = {}
        rel_seen: set[tuple[str, str, str]] = set()
        lower_words = {t for t in _WORD.findall(text) if t.islower()}
        for sentence in _SENT.split(text):
            sentence = sentence.strip()
            if not sentence:
                continue
            tokens = _WORD.findall(sentence)
            spans = _sentence_entities(tokens, lower_words)
            for start, _, name in spans:
                key = normalize(name)
                if key and key not in seen and len(seen) < MAX_ENTITIES:
                    seen[key] = Entity(name, _guess_type(tokens, start, name))
            for a in range(len(spans)):
                for b in range(a + 1, len(spans)):
                    _, e0, n0 = spans[a]
                    s1, _, n1 = spans[b]
                    gap = tokens[e0:s1]
                    if not gap or len(gap) > MAX_GAP or any(t in ".!?;()" for t in gap):
                        continue
                    words = [t.lower() for t in gap]
                    while words and words[0] in _FILLER:
                        words = words[1:]
                    while words and words[-1] in _FILLER:
                        words = words[:-1]
                    if not words or all(w == "," for w in words):
                        continue
                    pred = " ".join(w for w in words if w != ",")[:80]
                    key3 = (normalize(n0), pred, normalize(n1))
                    if key3[0] == key3[2] or key3 in rel_seen:
                        continue
                    rel_seen.add(key3)
                    out.relations.append(Relation(n0, pred, n1, sentence[:500]))
        out.entities = list(seen.values())
        return out


EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["entities", "relations"],
    "properties": {
        "entities": {"type": "array", "maxItems": MAX_ENTITIES, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "type"],
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                           "type": {"type": "string", "maxLength": 40}}}},
        "relations": {"type": "array", "maxItems": 400, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["subject", "predicate", "object"],
            "properties": {"subject": {"type": "string", "minLength": 1, "maxLength": 200},
                           "predicate": {"type": "string", "minLength": 1, "maxLength": 80},
                           "object": {"type": "string", "minLength": 1, "maxLength": 200}}}},
    },
}

_PROMPT = ("Extract the named entities (people, organisations, places, products, other "
           "names) and the relations between them stated in the passage. Use names exactly "
           "as written in the passage; a predicate is a short verb phrase (e.g. 'works for'). "
           "Answer with JSON only.")


class ExtractionPipeline(Protocol):
    async def chat(self, call: Call) -> Completion: ...


def _message_text(body: dict[str, Any]) -> str:
    choices = body.get("choices") or []
    if not choices:
        return ""
    return str((choices[0].get("message") or {}).get("content") or "")


class ModelExtractor:
    """Extraction by a chat model through the pipeline, checked against the contract."""

    def __init__(self, pipeline: ExtractionPipeline, model: str,
                 principal: Principal | None = None) -> None:
        self.pipeline = pipeline
        self.model = model
        self.principal = principal
        self.rules = RuleExtractor()
        self.fallbacks = 0
        self.calls = 0

    def with_principal(self, principal: Principal | None) -> ModelExtractor:
        return ModelExtractor(self.pipeline, self.model, principal)

    async def extract(self, text: str) -> Extraction:
        import jsonschema

        call = Call(kind="chat", model=self.model, principal=self.principal, source="rag",
                    body={"model": self.model, "temperature": 0, "max_tokens": 1024,
                          "messages": [{"role": "system", "content": _PROMPT},
                                       {"role": "user", "content": text[:6000]}],
                          "response_format": {"type": "json_schema", "json_schema": {
                              "name": "graph_extraction", "strict": True,
                              "schema": EXTRACTION_SCHEMA}}})
        self.calls += 1
        try:
            comp = await self.pipeline.chat(call)
            doc = json.loads(_message_text(comp.body))
            jsonschema.validate(doc, EXTRACTION_SCHEMA)
        except (ValueError, jsonschema.ValidationError, ContractViolation):
            self.fallbacks += 1
            return self.rules.extract_sync(text)
        low = text.lower()
        out = Extraction()
        names: set[str] = set()
        for e in doc["entities"]:
            if e["name"].lower() in low:
                out.entities.append(Entity(e["name"], (e["type"] or "entity").lower()[:40]))
                names.add(normalize(e["name"]))
        for r in doc["relations"]:
            s, o = r["subject"], r["object"]
            if s.lower() in low and o.lower() in low and normalize(s) != normalize(o):
                for name in (s, o):
                    if normalize(name) not in names:
                        out.entities.append(Entity(name))
                        names.add(normalize(name))
                out.relations.append(Relation(s, r["predicate"].lower()[:80], o,
                                              _evidence(text, s, o)))
        return out


def _evidence(text: str, a: str, b: str) -> str:
    for sentence in _SENT.split(text):
        low = sentence.lower()
        if a.lower() in low and b.lower() in low:
            return sentence.strip()[:500]
    return text[:500]
