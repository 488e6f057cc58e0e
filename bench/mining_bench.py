"""Process mining at scale: 1,000,000 events stored in PostgreSQL, loaded and mined.

    .venv/bin/python bench/mining_bench.py [--events 1000000] [--sqlite] [--record]

A synthetic order-to-cash-like process (seeded, so every run mines the same log): cases of
5-20 events from 12 activities with a rework loop (``check`` -> ``fix`` -> ``check``), an
optional approval and exponential waiting times, ~100,000 cases for 1M events. It is stored
once through :meth:`MiningStore.save` (COPY on PostgreSQL), then timed, in one run:

1. ``load``: the ordered SELECT and dictionary encoding into an EventLog;
2. ``mine``: DFG, variants, step statistics, bottlenecks, rework and conformance against a
   declared reference path (every variant aligned);
3. ``json``: rendering the result document;

4. ``records``: lockgate's own records at the same scale -- ``events/2`` audit rows of
   model calls and ``events/4`` review items (queued + decided: 2 events each) written into
   ``usage_records``/``review_items`` by SQL ``generate_series``, then read through the
   ``calls`` and ``reviews`` sources, encoded and mined (what ``lockgate mine --source calls
   --source reviews`` does);

and, side by side on the same in-memory log, a plain-Python directly-follows count (a dict
over consecutive event pairs, what a straightforward implementation does) against the numpy
DFG, as a ratio. Target: load + mine + json <= 30 s for 1,000,000 events on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.postgres import fresh_database  # noqa: E402

from lockgate.mining import EventLog, MiningService, MiningStore, mine, to_json  # noqa: E402
from lockgate.store import Store  # noqa: E402

ACTS = ["receive order", "check credit", "approve", "check stock", "fix order", "pick",
        "pack", "ship", "invoice", "remind", "receive payment", "close"]
REFERENCE = [["receive order", "check credit", "check stock", "pick", "pack", "ship",
              "invoice", "receive payment", "close"]]


def synth(n_events: int, seed: int = 7) -> EventLog:
    rng = np.random.default_rng(seed)
    cases: list[int] = []
    acts: list[int] = []
    ts: list[float] = []
    a = {name: i for i, name in enumerate(ACTS)}
    c = 0
    t0 = 1.7e9
    while len(acts) < n_events:
        t = t0 + float(rng.uniform(0, 86400 * 180))
        trace = ["receive order", "check credit"]
        if rng.random() < 0.3:
            trace.append("approve")
        trace.append("check stock")
        while rng.random() < 0.25:
            trace += ["fix order", "check stock"]
        trace += ["pick", "pack", "ship", "invoice"]
        while rng.random() < 0.2:
            trace.append("remind")
        trace += ["receive payment", "close"]
        for name in trace:
            t += float(rng.exponential(3600 * (8 if name == "receive payment" else 1)))
            cases.append(c)
            acts.append(a[name])
            ts.append(t)
        c += 1
    n = n_events
    return EventLog(np.asarray(cases[:n], dtype=np.int64), np.asarray(acts[:n], dtype=np.int64),
                    np.asarray(ts[:n]), case_names=[f"order-{i:07d}" for i in range(c)],
                    activities=ACTS)


def plain_dfg(log: EventLog) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    case, act = log.case.tolist(), log.act.tolist()
    for i in range(1, len(case)):
        if case[i] == case[i - 1]:
            k = (act[i - 1], act[i])
            out[k] = out.get(k, 0) + 1
    return out


async def run_backend(url: str, log: EventLog) -> dict[str, float]:
    store = await Store.open(url)
    try:
        ms = MiningStore(store.engine)
        t = time.perf_counter()
        await ms.save("bench", log, source="bench", replace=True)
        save_s = time.perf_counter() - t
        t = time.perf_counter()
        loaded = await ms.load("bench")
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        result = mine(loaded, reference=REFERENCE)
        mine_s = time.perf_counter() - t
        t = time.perf_counter()
        doc = to_json(result)
        json_s = time.perf_counter() - t
        assert result.overview["events"] == len(log)
        rec = await run_records(store, len(log)) if store.backend == "postgresql" else {}
        return {**rec,"events": len(log), "cases": result.overview["cases"],
                "variants": result.overview["variants"], "save_s": save_s, "load_s": load_s,
                "mine_s": mine_s, "json_s": json_s, "total_s": load_s + mine_s + json_s,
                "json_kb": len(doc) / 1024,
                "fitting_share": result.conformance.fitting_share if result.conformance
                else 0.0, **{f"mine_{k}_ms": v for k, v in result.timings_ms.items()}}
    finally:
        await store.close()


async def run_records(store: Store, n_events: int) -> dict[str, float]:
    import sqlalchemy as sa

    calls, reviews = n_events // 2, n_events // 4
    t0 = time.time() - 30 * 86400
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(
            "INSERT INTO usage_records (request_id, created_at, key_id, team_id, model, kind,"
            " source, status, prompt_tokens, completion_tokens, cost, latency_ms, overhead_ms,"
            " stream, cached) SELECT 'req-' || g, to_timestamp(:t0 + g * 2), 'key-' || (g % 50),"
            " 'team', 'fast', 'chat', CASE WHEN g % 3 = 0 THEN 'jobs' ELSE 'http' END,"
            " CASE WHEN g % 41 = 0 THEN 502 ELSE 200 END, 10, 5, 0, 100, 1, false, g % 7 = 0"
            " FROM generate_series(1, :n) g"), {"t0": t0, "n": calls})
        await conn.execute(sa.text(
            "INSERT INTO review_items (id, task, source, state, created_at, updated_at,"
            " request_id, decided_at, decided_by, sla_due_at, sla_breached, escalations,"
            " version) SELECT 'rev-' || g, 'invoice', 'http',"
            " CASE WHEN g % 5 = 0 THEN 'rejected' ELSE 'approved' END, :t0 + g * 4 + 1,"
            " :t0 + g * 4 + 1, 'req-' || (g * 2), :t0 + g * 4 + 60 + (g % 600), 'ann',"
            " :t0 + g * 4 + 3600, false, 0, 1 FROM generate_series(1, :n) g"),
            {"t0": t0, "n": reviews})
    svc = MiningService(store.engine, None)
    t = time.perf_counter()
    ev, label = await svc.event_log(sources=["calls", "reviews"])
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    an = await svc.analyze(ev, label, reference=[["call http/chat", "review queued",
                                                  "review approved"]])
    mine_s = time.perf_counter() - t
    return {"records_events": float(len(ev)), "records_read_s": read_s,
            "records_mine_s": mine_s, "records_total_s": read_s + mine_s,
            "records_cases": float(an.result.overview["cases"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--sqlite", action="store_true", help="also run on SQLite")
    ap.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = ap.parse_args()
    t = time.perf_counter()
    log = synth(args.events)
    print(f"generated {len(log)} events, {log.n_cases} cases in "
          f"{time.perf_counter() - t:.1f}s", flush=True)
    rows: dict[str, dict[str, float]] = {}
    for url in fresh_database("lg_mining_bench"):
        rows["postgresql"] = asyncio.run(run_backend(url, log))
    if args.sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            rows["sqlite"] = asyncio.run(run_backend(f"sqlite:///{tmp}/m.db", log))
    t = time.perf_counter()
    plain = plain_dfg(log)
    plain_s = time.perf_counter() - t
    t = time.perf_counter()
    vec = mine(log)
    vec_s = time.perf_counter() - t
    assert sum(plain.values()) == sum(e["count"] for e in vec.edges)
    ratio = {"plain_python_dfg_s": plain_s, "numpy_full_mine_s": vec_s,
             "full_mine_over_plain_dfg": vec_s / plain_s}
    print(json.dumps({"backends": rows, "same_log_in_memory": ratio}, indent=2))
    if args.record:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"\n## Process mining — {when}\n",
                 f"`.venv/bin/python bench/mining_bench.py --events {args.events}"
                 f"{' --sqlite' if args.sqlite else ''}` on {platform.node()} "
                 f"({platform.machine()}, shared 2 cores)\n",
                 "| backend | events | cases | variants | load s | mine s | json s | "
                 "load+mine+json s | budget 30 s used |", "|---|---:|---:|---:|---:|---:|---:|"
                 "---:|---:|"]
        for name, r in rows.items():
            lines.append(f"| {name} | {r['events']:.0f} | {r['cases']:.0f} | "
                         f"{r['variants']:.0f} | {r['load_s']:.2f} | {r['mine_s']:.2f} | "
                         f"{r['json_s']:.2f} | {r['total_s']:.2f} | "
                         f"{100 * r['total_s'] / 30:.0f}% |")
            if "records_events" in r:
                lines.append(f"| {name}, lockgate records (calls + reviews) | "
                             f"{r['records_events']:.0f} | {r['records_cases']:.0f} | - | "
                             f"{r['records_read_s']:.2f} | {r['records_mine_s']:.2f} | - | "
                             f"{r['records_total_s']:.2f} | "
                             f"{100 * r['records_total_s'] / 30:.0f}% |")
        lines.append(f"\nSame log in memory, one run: plain-Python DFG count only "
                     f"{plain_s:.2f} s; the whole numpy mining (DFG, steps, variants, "
                     f"rework, bottlenecks) {vec_s:.2f} s "
                     f"(ratio {vec_s / plain_s:.2f}).\n")
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
