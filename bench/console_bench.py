"""Console and widget benchmark (issue 15): one command, everything side by side in one run.

1. Overview page with N audit rows (default 1,000,000) on PostgreSQL: rows are inserted with
   ``generate_series`` (spread over 30 days, 20 teams, 6 models, ~3 % errors), folded into the
   rollups once (timed), then a real gateway serves ``GET /console?window=W`` to a signed-in
   admin; p50/p95 per window over ``--requests`` page views. Beside it, the same totals computed
   straight from ``usage_records`` (what the page would cost without rollups), as a ratio.
   Target: page p95 <= 200 ms.
2. Widget time to first token versus the API directly, same gateway, same upstream, same model,
   alternated request by request: ``POST /v1/chat/completions`` (stream, team key) against
   ``POST /v1/widget/chat`` (widget token + Origin). Target: widget adds <= 5 ms at p50.

    python bench/console_bench.py                 # 1,000,000 rows
    python bench/console_bench.py --rows 100000 --requests 50 --ttft 100   # quicker

Needs PostgreSQL on 127.0.0.1:5432 (trust) and writes nothing outside a temporary database.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.gateway.conftest import MASTER, ServerThread  # noqa: E402

from lockgate.store import Store  # noqa: E402
from lockgate.store.console import ConsoleData  # noqa: E402
from lockgate.testing.stub_upstream import run_stub_in_thread  # noqa: E402

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
ORIGIN = "http://127.0.0.1:9"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def fill(db_url: str, rows: int) -> float:
    """Insert ``rows`` audit rows over the last 30 days; returns seconds taken."""
    t0 = time.perf_counter()
    with psycopg.connect(db_url.replace("postgresql://", "postgresql://", 1),
                         autocommit=True) as conn:
        conn.execute(f"""
            INSERT INTO usage_records (request_id, created_at, key_id, team_id, model,
                deployment, kind, source, status, error_class, prompt_tokens,
                completion_tokens, cost, latency_ms, overhead_ms, stream, cached)
            SELECT 'bench_' || g, now() - (g % 2592000) * interval '1 second',
                   'key_' || (g % 60), 'team_' || (g % 20),
                   (ARRAY['fast','other','big','small','embed','rag/kb'])[1 + g % 6],
                   'dep_' || (g % 6), 'chat', 'http',
                   CASE WHEN g % 33 = 0 THEN 502 ELSE 200 END,
                   CASE WHEN g % 33 = 0 THEN 'upstream_error' ELSE NULL END,
                   10 + g % 500, 5 + g % 300, (g % 1000) / 100000.0,
                   5 + (g % 997) * 1.7, 0.4, g % 2 = 0, false
            FROM generate_series(1, {rows}) AS g""")
        conn.execute("ANALYZE usage_records")
    return time.perf_counter() - t0


async def migrate(db_url: str) -> None:
    store = await Store.open(db_url)
    await store.close()


async def fold(db_url: str) -> tuple[float, int]:
    store = await Store.open(db_url)
    try:
        data = ConsoleData(store.engine)
        t0 = time.perf_counter()
        n = await data.rollups.refresh()
        return time.perf_counter() - t0, n
    finally:
        await store.close()


RAW_SQL = """SELECT team_id, model, count(*), sum(cost),
  sum(CASE WHEN status >= 400 OR error_class IS NOT NULL THEN 1 ELSE 0 END)
FROM usage_records WHERE created_at >= now() - interval '{w}' AND kind NOT IN ('admin','review')
GROUP BY team_id, model"""
PG_INTERVAL = {"1h": "1 hour", "24h": "24 hours", "7d": "7 days", "30d": "30 days"}


def raw_query_ms(db_url: str, window: str, repeat: int) -> list[float]:
    out = []
    with psycopg.connect(db_url) as conn:
        for _ in range(repeat):
            t0 = time.perf_counter()
            conn.execute(RAW_SQL.format(w=PG_INTERVAL[window])).fetchall()
            out.append((time.perf_counter() - t0) * 1000)
    return out


def sign_in(url: str) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=60)
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/console/login").text)
    assert token
    r = c.post("/console/login", data={"key": MASTER, "csrf": token.group(1)})
    assert r.status_code == 303, r.text
    return c


def ttft(c: httpx.Client, path: str, headers: dict[str, str], body: dict[str, object],
         marker: bytes) -> float:
    t0 = time.perf_counter()
    first = None
    with c.stream("POST", path, headers=headers, json=body) as r:
        assert r.status_code == 200, r.read()
        for chunk in r.iter_raw():
            if first is None and marker in chunk:
                first = time.perf_counter()
    assert first is not None, "no token arrived"
    return (first - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=100, help="page views per window")
    ap.add_argument("--ttft", type=int, default=300, help="streamed calls per path")
    args = ap.parse_args()
    name = f"lg_console_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    try:
        asyncio.run(migrate(db_url))
        fill_s = fill(db_url, args.rows)
        fold_s, folded = asyncio.run(fold(db_url))
        say(f"rows: {args.rows:,} inserted in {fill_s:.1f} s; first fold into rollups "
            f"{folded:,} rows in {fold_s:.1f} s")
        with run_stub_in_thread() as stub, tempfile.TemporaryDirectory() as home:
            cfg = f"""
master_key: {MASTER}
home: {home}
database_url: {db_url}
audit: {{flush_interval_ms: 50}}
models:
  - {{name: fast, provider: openai, base_url: "{stub.base_url}/v1", model: stub-fast}}
console:
  widget: {{allowed_origins: ["{ORIGIN}"]}}
"""
            server = ServerThread(cfg, Path(home))
            url = server.start()
            try:
                c = sign_in(url)
                say("")
                say("| window | page p50 ms | page p95 ms | raw SQL p50 ms (no rollups) | "
                    "raw / page p50 |")
                say("|---|---|---|---|---|")
                for window in ("1h", "24h", "7d", "30d"):
                    for _ in range(3):
                        c.get("/console", params={"window": window})  # warm
                    times = []
                    for _ in range(args.requests):
                        t0 = time.perf_counter()
                        r = c.get("/console", params={"window": window})
                        times.append((time.perf_counter() - t0) * 1000)
                        assert r.status_code == 200
                    raw = raw_query_ms(db_url, window, max(3, args.requests // 20))
                    p50, p95, r50 = pct(times, .5), pct(times, .95), statistics.median(raw)
                    say(f"| {window} | {p50:.1f} | {p95:.1f} | {r50:.1f} | {r50 / p50:.1f}x |")
                c.close()
                with httpx.Client(base_url=url, timeout=60) as admin_c:
                    h = {"Authorization": f"Bearer {MASTER}"}
                    admin_c.post("/admin/teams", json={"name": "bench"}, headers=h)
                    key = admin_c.post("/admin/keys", json={"team": "bench"},
                                       headers=h).json()["key"]
                    tok = admin_c.post("/v1/widget/tokens",
                                       headers={"Authorization": f"Bearer {key}"},
                                       json={"origin": ORIGIN, "model": "fast", "user": "b",
                                             "ttl_seconds": 3600}).json()["token"]
                    api_t, widget_t = [], []
                    msgs = [{"role": "user", "content": "hello there"}]
                    for i in range(args.ttft + 20):
                        a = ttft(admin_c, "/v1/chat/completions",
                                 {"Authorization": f"Bearer {key}"},
                                 {"model": "fast", "messages": msgs, "stream": True},
                                 b'"content"')
                        w = ttft(admin_c, "/v1/widget/chat",
                                 {"Authorization": f"Bearer {tok}", "Origin": ORIGIN},
                                 {"messages": msgs}, b'"delta"')
                        if i >= 20:  # warm-up
                            api_t.append(a)
                            widget_t.append(w)
                say("")
                say("| path | TTFT p50 ms | TTFT p95 ms |")
                say("|---|---|---|")
                say(f"| API /v1/chat/completions (stream) | {pct(api_t, .5):.2f} | "
                    f"{pct(api_t, .95):.2f} |")
                say(f"| widget /v1/widget/chat | {pct(widget_t, .5):.2f} | "
                    f"{pct(widget_t, .95):.2f} |")
                diffs = [w - a for a, w in zip(api_t, widget_t, strict=True)]
                say(f"| widget - API (paired) | {statistics.median(diffs):+.2f} | "
                    f"{pct(diffs, .95):+.2f} |")
            finally:
                server.stop()
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    say("")
    say(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}")


if __name__ == "__main__":
    main()
