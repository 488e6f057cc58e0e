"""A summary of a mining result that proposes where automation or review would help,
citing the numbers it used.

The result is first reduced to numbered facts (``F1``...: one sentence each, with its
numbers). With a chat model configured, the facts go to the model through the pipeline
(``source="mining"``, so keys, budgets, guards and audit apply) with the instruction to
cite a fact id after every claim; citations of facts that do not exist are removed and
``cited`` lists the facts the text really cites. Without a model, a rule-based summary
is written from the same facts (``model`` is None: it says so, it is not AI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from lockgate.mining.analysis import MiningResult
from lockgate.mining.render import human_duration
from lockgate.pipeline import Call, Completion, Principal

__all__ = ["Fact", "MiningSummary", "SummaryPipeline", "build_facts", "summarize"]

_CITE = re.compile(r"\[(F\d+)\]")


class SummaryPipeline(Protocol):
    async def chat(self, call: Call) -> Completion: ...


@dataclass(frozen=True, slots=True)
class Fact:
    id: str
    kind: str
    text: str
    numbers: dict[str, float]


@dataclass(slots=True)
class MiningSummary:
    text: str
    model: str | None
    facts: list[Fact]
    cited: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        cited = set(self.cited)
        return {"text": self.text, "model": self.model, "cited": self.cited,
                "facts": [{"id": f.id, "kind": f.kind, "text": f.text, "numbers": f.numbers,
                           "cited": f.id in cited} for f in self.facts]}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def build_facts(result: MiningResult, *, top: int = 3) -> list[Fact]:
    facts: list[Fact] = []

    def add(kind: str, text: str, **numbers: float) -> None:
        facts.append(Fact(f"F{len(facts) + 1}", kind, text, numbers))

    ov = result.overview
    tp = ov["throughput"]
    add("overview", f"{ov['cases']} cases, {ov['events']} events, {ov['activities']} "
        f"activities and {ov['variants']} variants; median case throughput time "
        f"{human_duration(tp['median_s'])} (p90 {human_duration(tp['p90_s'])}).",
        cases=ov["cases"], events=ov["events"], variants=ov["variants"],
        median_throughput_s=tp["median_s"], p90_throughput_s=tp["p90_s"])
    for b in result.bottlenecks.get("steps", [])[:top]:
        add("bottleneck_step", f"Time before step '{b['activity']}' is "
            f"{_pct(b['share_of_case_time'])} of all case time (median "
            f"{human_duration(b['median_s'])} over {b['count']} executions).",
            share_of_case_time=b["share_of_case_time"], median_s=b["median_s"],
            count=b["count"])
    for b in result.bottlenecks.get("edges", [])[:top]:
        add("bottleneck_edge", f"Hand-over '{b['source']}' -> '{b['target']}' takes "
            f"{_pct(b['share_of_case_time'])} of all case time (median "
            f"{human_duration(b['median_s'])}, {b['count']} times).",
            share_of_case_time=b["share_of_case_time"], median_s=b["median_s"],
            count=b["count"])
    for r in result.rework[:top]:
        add("rework", f"'{r['activity']}' is repeated in {r['cases']} cases "
            f"({_pct(r['share_of_cases'])}), {r['extra_executions']} extra executions.",
            cases=r["cases"], share_of_cases=r["share_of_cases"],
            extra_executions=r["extra_executions"])
    for v in result.variants[:top]:
        add("variant", f"Variant #{v['rank']} ({' -> '.join(v['activities'][:8])}"
            f"{' ...' if len(v['activities']) > 8 else ''}) covers {v['count']} cases "
            f"({_pct(v['share'])}), mean throughput {human_duration(v['mean_throughput_s'])}.",
            count=v["count"], share=v["share"], mean_throughput_s=v["mean_throughput_s"])
    conf = result.conformance
    if conf is not None and conf.cases:
        add("conformance", f"{_pct(conf.fitting_share)} of cases follow the reference path "
            f"exactly; mean fitness {conf.mean_fitness:.3f}.",
            fitting_share=conf.fitting_share, mean_fitness=conf.mean_fitness)
        for d in conf.deviations[:top]:
            verb = "skip" if d["kind"] == "skipped" else "add"
            add("deviation", f"{d['cases']} cases {verb} '{d['activity']}' relative to the "
                "reference path.", cases=d["cases"], occurrences=d["occurrences"])
    return facts


def _rule_summary(facts: list[Fact]) -> str:
    lines: list[str] = []
    by_kind: dict[str, list[Fact]] = {}
    for f in facts:
        by_kind.setdefault(f.kind, []).append(f)
    if by_kind.get("overview"):
        lines.append(f"Overview: {by_kind['overview'][0].text} [{by_kind['overview'][0].id}]")
    for f in by_kind.get("bottleneck_step", [])[:2]:
        if f.numbers["share_of_case_time"] >= 0.2:
            lines.append(f"Automation candidate: the wait before this step dominates case "
                         f"time ({_pct(f.numbers['share_of_case_time'])}) [{f.id}].")
    for f in by_kind.get("rework", [])[:2]:
        if f.numbers["share_of_cases"] >= 0.1:
            lines.append(f"Review candidate: rework in {_pct(f.numbers['share_of_cases'])} of "
                         f"cases; a check before the repeated step could catch it [{f.id}].")
    for f in by_kind.get("conformance", []):
        if f.numbers["fitting_share"] < 0.8:
            lines.append(f"Only {_pct(f.numbers['fitting_share'])} of cases follow the "
                         f"reference path; review the deviating variants [{f.id}].")
    if len(lines) == 1:
        lines.append("No step takes 20% or more of case time and no rework reaches 10% of "
                     "cases: no automation or review candidate stands out.")
    return "\n".join(lines)


def _message_text(body: dict[str, Any]) -> str:
    choices = body.get("choices") or []
    if not choices:
        return ""
    content = (choices[0].get("message") or {}).get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


SYSTEM = ("You are a process analyst. From the numbered facts about a business process, "
          "propose where automation or a human review step would help most. Use only the "
          "facts given; after every sentence that uses a number, cite the fact id in square "
          "brackets, e.g. [F2]. At most 6 sentences.")


async def summarize(result: MiningResult, *, pipeline: SummaryPipeline | None,
                    model: str | None, principal: Principal | None,
                    max_tokens: int = 400) -> MiningSummary:
    facts = build_facts(result)
    known = {f.id for f in facts}
    if pipeline is None or not model:
        text = _rule_summary(facts)
    else:
        listing = "\n".join(f"[{f.id}] {f.text}" for f in facts)
        call = Call(kind="chat", model=model, principal=principal, source="mining", body={
            "model": model, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": f"Facts:\n{listing}"}]})
        comp = await pipeline.chat(call)
        raw = _message_text(comp.body)
        text = _CITE.sub(lambda m: m.group(0) if m.group(1) in known else "", raw).strip()
    cited = list(dict.fromkeys(m.group(1) for m in _CITE.finditer(text)))
    return MiningSummary(text=text, model=model if pipeline is not None and model else None,
                         facts=facts, cited=cited)
