"""Review queue bench: what a review policy costs a call, and listing a big queue.

    .venv/bin/python bench/review_bench.py [--calls 2000] [--items 100000] [--record]

1. Routing through a review policy that auto-approves (``confidence_below`` with a
   confident answer): p50/p95 of the same chat call with and without the task header,
   alternated in blocks of 100 against one gateway (uvicorn, 1 worker, SQLite store) and
   the stand-in upstream, in one run. The auto-approval row is written in the background.
2. Listing pending items on PostgreSQL with ``--items`` pending rows in the table:
   p50/p95 of ``GET /v1/reviews?limit=50`` (the first page, and a page deep in the
   cursor) over HTTP, admin key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.gateway.conftest import MASTER, ServerThread, gateway_config  # noqa: E402
from tests.support.postgres import fresh_database  # noqa: E402

from lockgate.testing.stub_upstream import run_stub_in_thread  # noqa: E402

POLICY = """
review:
  policies:
    invoice:
      when: {confidence_below: 0.5, predicates: ["$.amount > 10000"]}
      confidence: {source: field, field: confidence}
      mode: async
"""


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_overhead(calls: int) -> dict[str, float]:
    doc = json.dumps({"vendor": "ACME", "amount": 120, "confidence": 0.97})
    body = {"model": "fast", "messages": [{"role": "user", "content": "echo:" + doc}]}
    with run_stub_in_thread() as stub, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        server = ServerThread(
            gateway_config(stub.base_url, home, f"sqlite:///{home / 'lg.db'}", POLICY), home)
        url = server.start()
        try:
            times: dict[str, list[float]] = {"plain": [], "reviewed": []}
            with httpx.Client(base_url=url, timeout=10,
                              headers={"Authorization": f"Bearer {MASTER}"}) as c:
                for _ in range(200):  # warm-up
                    c.post("/v1/chat/completions", json=body)
                    c.post("/v1/chat/completions", json=body,
                           headers={"x-lockgate-task": "invoice"})
                for block in range(calls // 100):
                    for name in (("plain", "reviewed") if block % 2 else ("reviewed", "plain")):
                        hdr = {"x-lockgate-task": "invoice"} if name == "reviewed" else {}
                        for _ in range(100):
                            t = time.perf_counter()
                            r = c.post("/v1/chat/completions", json=body, headers=hdr)
                            times[name].append((time.perf_counter() - t) * 1000)
                            assert r.status_code == 200
                            if name == "reviewed":
                                assert r.headers["x-lockgate-review"] == "auto_approved"
        finally:
            server.stop()
    out = {f"{k}_p50_ms": statistics.median(v) for k, v in times.items()}
    out.update({f"{k}_p95_ms": pct(v, 0.95) for k, v in times.items()})
    out["added_p50_ms"] = out["reviewed_p50_ms"] - out["plain_p50_ms"]
    return out


async def _seed(url: str, n: int) -> None:
    import sqlalchemy as sa

    from lockgate.store import Store
    from lockgate.store.tables import review_items

    store = await Store.open(url)
    try:
        now = time.time()
        rows = []
        for i in range(n):
            rows.append({
                "id": f"rev_{uuid.uuid4().hex}", "task": f"task{i % 5}", "source": "http",
                "source_ref": None, "state": "pending", "created_at": now - n + i,
                "updated_at": now, "team": f"team{i % 3}", "request_id": None, "key_id": "k",
                "team_id": None, "model": "m", "deployment": None, "confidence": 0.4,
                "input": json.dumps({"text": f"invoice {i}"}), "output": '{"amount": 20000}',
                "details": '{"reasons": ["predicate $.amount > 10000"]}', "fingerprint": "x",
                "sla_due_at": now + 3600, "sla_breached": False, "escalate_to": None,
                "escalations": 0, "claimed_by": None, "claim_until": None, "decision": None,
                "decided_by": None, "decided_at": None, "resumed_at": None, "version": 1,
            })
            if len(rows) == 5000:
                async with store.transaction(write=True) as conn:
                    await conn.execute(review_items.insert(), rows)
                rows = []
        if rows:
            async with store.transaction(write=True) as conn:
                await conn.execute(review_items.insert(), rows)
        async with store.engine.begin() as conn:
            await conn.execute(sa.text("ANALYZE review_items"))
    finally:
        await store.close()


def bench_listing(items: int, rounds: int = 200) -> dict[str, float]:
    with run_stub_in_thread() as stub, tempfile.TemporaryDirectory() as tmp:
        gen = fresh_database("lg_revbench")
        url = next(gen)
        try:
            home = Path(tmp)
            server = ServerThread(gateway_config(stub.base_url, home, url, POLICY), home)
            base = server.start()
            try:
                asyncio.run(_seed(url, items))
                first: list[float] = []
                deep: list[float] = []
                with httpx.Client(base_url=base, timeout=30,
                                  headers={"Authorization": f"Bearer {MASTER}"}) as c:
                    page = c.get("/v1/reviews", params={"limit": 50}).json()
                    cursor = page["next_after"]
                    for _ in range(100):  # walk deeper for the deep-page cursor
                        cursor = c.get("/v1/reviews", params={"limit": 500, "after": cursor}
                                       ).json()["next_after"] or cursor
                    for _ in range(rounds):
                        t = time.perf_counter()
                        r = c.get("/v1/reviews", params={"limit": 50, "team": "team1"})
                        first.append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200 and len(r.json()["data"]) == 50
                        t = time.perf_counter()
                        r = c.get("/v1/reviews", params={"limit": 50, "after": cursor})
                        deep.append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200
            finally:
                server.stop()
        finally:
            gen.close()
    return {"items": items, "first_page_p50_ms": statistics.median(first),
            "first_page_p95_ms": pct(first, 0.95), "deep_page_p50_ms": statistics.median(deep),
            "deep_page_p95_ms": pct(deep, 0.95)}


def main() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    over = bench_overhead(args.calls)
    print(json.dumps(over, indent=2))
    listing = bench_listing(args.items)
    print(json.dumps(listing, indent=2))
    if args.record:
        import platform

        with (REPO / "bench" / "RESULTS.md").open("a") as f:
            f.write(
                f"\n## Review queue — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
                f"`.venv/bin/python bench/review_bench.py --calls {args.calls} --items "
                f"{args.items}` on {platform.node()} ({platform.machine()}, 2 cores, shared)\n\n"
                "| measure | value |\n|---|---|\n"
                + "".join(f"| {k} | {v:.3f} |\n" for k, v in over.items())
                + "".join(f"| listing {k} | {v:.3f} |\n" for k, v in listing.items())
            )


if __name__ == "__main__":
    main()
