"""Dramatiq actors for the jobs yardstick (``bench/jobs_yardstick.py``); not part of lockgate.

Environment: ``LG_YARD_NS`` (Redis namespace), ``LG_YARD_BROKER`` (``redis``, the default,
or ``rabbitmq``: the RabbitMQ server on 127.0.0.1:5672), ``LG_YARD_MODE`` (``queue``: no-op,
``e2e``: one chat completion POST to the stand-in upstream at ``LG_YARD_UPSTREAM``).
Each run of a job INCRs a counter and SADDs the job number, so the bench can count lost
and duplicated runs.
"""

from __future__ import annotations

import http.client
import os
import threading

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

NS = os.environ.get("LG_YARD_NS", "lgyard")
MODE = os.environ.get("LG_YARD_MODE", "queue")
UPSTREAM = os.environ.get("LG_YARD_UPSTREAM", "127.0.0.1:9100")

BROKER = os.environ.get("LG_YARD_BROKER", "redis")
broker: dramatiq.Broker
if BROKER == "rabbitmq":
    broker = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:5672/%2F")  # type: ignore[no-untyped-call]
else:
    broker = RedisBroker(url="redis://127.0.0.1:6379/0", namespace=NS)  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)
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


@dramatiq.actor(queue_name=NS, max_retries=3)
def bench_job(i: int) -> None:
    if MODE == "e2e":
        _call_upstream()
    pipe = _r.pipeline()
    pipe.incr(f"{NS}:runs")
    pipe.sadd(f"{NS}:done", i)
    pipe.execute()
