"""Celery tasks for the jobs comparison in ``bench/jobs_bench.py``; not part of lockgate.

Environment as for ``jobs_dramatiq_actors``: ``LG_YARD_NS`` (queue name and Redis counter
namespace), ``LG_YARD_BROKER`` (``redis`` or ``rabbitmq``), ``LG_YARD_MODE`` (``queue``:
no-op, ``e2e``: one chat completion POST straight to the stand-in upstream at
``LG_YARD_UPSTREAM``). Late acknowledgement (``acks_late``) so a killed worker's tasks are
redelivered, as lockgate's are; no result backend (lockgate stores results, so this
flatters Celery). Each run INCRs a counter and SADDs the job number (lost/duplicated).
"""

from __future__ import annotations

import http.client
import os
import threading

import redis
from celery import Celery

NS = os.environ.get("LG_YARD_NS", "lgyard")
MODE = os.environ.get("LG_YARD_MODE", "queue")
UPSTREAM = os.environ.get("LG_YARD_UPSTREAM", "127.0.0.1:9100")
BROKER = os.environ.get("LG_YARD_BROKER", "redis")

app = Celery(
    "lgbench",
    broker=(
        "amqp://guest:guest@127.0.0.1:5672//"
        if BROKER == "rabbitmq"
        else "redis://127.0.0.1:6379/0"
    ),
)
app.conf.update(
    task_default_queue=NS,
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=4,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
_local = threading.local()
_BODY = b'{"model":"bench-model","messages":[{"role":"user","content":"job"}]}'


def _call_upstream() -> None:
    conn = getattr(_local, "conn", None)
    if conn is None:
        host, port = UPSTREAM.split(":")
        conn = _local.conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/v1/chat/completions", _BODY, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError(f"upstream {resp.status}")


@app.task(name="bench_job", max_retries=3)
def bench_job(i: int) -> None:
    if MODE == "e2e":
        _call_upstream()
    pipe = _r.pipeline()
    pipe.incr(f"{NS}:runs")
    pipe.sadd(f"{NS}:done", i)
    pipe.execute()
