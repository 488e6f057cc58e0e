"""A small simulated asset twin: three pumps whose readings evolve over time.

Each pump has a set-point (percent of rated speed), a temperature and a vibration level.
Readings are a deterministic function of the time since start and of the set-point
history: the temperature moves towards ``ambient + gain * setpoint (+ fault heat)``
with a time constant, so lowering a set-point cools a pump over the following seconds.
Pump ``p2`` has a worn bearing: extra heat and high vibration that scale with speed.

HTTP (aiohttp), described by ``openapi.json`` beside this file:

    GET  /pumps                      every pump's live readings
    GET  /pumps/{pump_id}            one pump
    PUT  /pumps/{pump_id}/setpoint   {"value": 0..100} -- changes the pump (a write)
    GET  /openapi.json               the OpenAPI 3 document
    GET  /_history                   every set-point change (for tests and demos)

Run it: ``python examples/plant_twin/twin.py --port 8710`` (``--time-scale 60`` makes a
simulated minute pass each second).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

HERE = Path(__file__).resolve().parent
AMBIENT = 25.0
TAU_S = 120.0
"""Thermal time constant (simulated seconds)."""


@dataclass
class Pump:
    id: str
    name: str
    setpoint: float
    gain: float = 0.8
    fault_heat: float = 0.0
    fault_vibration: float = 0.0
    since: float = 0.0
    """Simulated time of the last set-point change."""
    start_temp: float = 0.0
    """Temperature at ``since``."""

    def target(self) -> float:
        return AMBIENT + self.gain * self.setpoint + self.fault_heat * self.setpoint / 100

    def temperature(self, now: float) -> float:
        k = math.exp(-(now - self.since) / TAU_S)
        return self.target() + (self.start_temp - self.target()) * k

    def vibration(self) -> float:
        return round(1.2 + 0.02 * self.setpoint + self.fault_vibration * self.setpoint / 100, 2)


@dataclass
class Twin:
    time_scale: float = 1.0
    started: float = field(default_factory=time.monotonic)
    pumps: dict[str, Pump] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    auth_seen: list[str] = field(default_factory=list)
    """The Authorization header of each request (demos and tests check the tool auth)."""

    def __post_init__(self) -> None:
        if not self.pumps:
            for p in (Pump("p1", "Feed pump 1", 70.0),
                      Pump("p2", "Feed pump 2", 85.0, fault_heat=15.0, fault_vibration=6.0),
                      Pump("p3", "Cooling pump", 55.0)):
                p.start_temp = p.target()  # in steady state at start
                self.pumps[p.id] = p

    def now(self) -> float:
        return (time.monotonic() - self.started) * self.time_scale

    def reading(self, p: Pump) -> dict[str, Any]:
        now = self.now()
        return {"id": p.id, "name": p.name, "setpoint": p.setpoint,
                "temperature_c": round(p.temperature(now), 2),
                "vibration_mm_s": p.vibration(), "status": "running",
                "alarm": p.temperature(now) > 85.0 or p.vibration() > 7.0}

    def set_point(self, pump_id: str, value: float) -> dict[str, Any]:
        p = self.pumps[pump_id]
        now = self.now()
        p.start_temp = p.temperature(now)
        p.since = now
        old, p.setpoint = p.setpoint, value
        self.history.append({"pump": pump_id, "from": old, "to": value, "at": round(now, 3)})
        return self.reading(p)


def app(twin: Twin) -> web.Application:
    async def pumps(request: web.Request) -> web.Response:
        return web.json_response([twin.reading(p) for p in twin.pumps.values()])

    async def pump(request: web.Request) -> web.Response:
        p = twin.pumps.get(request.match_info["pump_id"])
        if p is None:
            return web.json_response({"error": "no such pump"}, status=404)
        return web.json_response(twin.reading(p))

    async def setpoint(request: web.Request) -> web.Response:
        pid = request.match_info["pump_id"]
        if pid not in twin.pumps:
            return web.json_response({"error": "no such pump"}, status=404)
        try:
            body = await request.json()
            value = float(body["value"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "body must be {\"value\": number}"}, status=400)
        if not 0 <= value <= 100:
            return web.json_response({"error": "value must be 0..100"}, status=422)
        return web.json_response(twin.set_point(pid, value))

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=(HERE / "openapi.json").read_text(),
                            content_type="application/json")

    async def history(request: web.Request) -> web.Response:
        return web.json_response(twin.history)

    @web.middleware
    async def record_auth(request: web.Request, handler: Any) -> web.StreamResponse:
        twin.auth_seen.append(request.headers.get("Authorization", ""))
        del twin.auth_seen[:-100]
        return await handler(request)  # type: ignore[no-any-return]

    a = web.Application(middlewares=[record_auth])
    a.router.add_get("/pumps", pumps)
    a.router.add_get("/pumps/{pump_id}", pump)
    a.router.add_put("/pumps/{pump_id}/setpoint", setpoint)
    a.router.add_get("/openapi.json", openapi)
    a.router.add_get("/_history", history)
    return a


@contextlib.contextmanager
def run_twin_in_thread(twin: Twin | None = None, host: str = "127.0.0.1",
                       port: int = 0) -> Iterator[tuple[str, Twin]]:
    """Serve a twin on a background thread; yields (base URL, twin)."""
    import asyncio

    twin = twin or Twin()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        runner = web.AppRunner(app(twin), access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, host, port)
        loop.run_until_complete(site.start())
        box["port"] = runner.addresses[0][1]
        box["runner"] = runner
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://{host}:{box['port']}", twin
    finally:
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        thread.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8710)
    ap.add_argument("--time-scale", type=float, default=1.0)
    args = ap.parse_args()
    print(json.dumps({"twin": f"http://{args.host}:{args.port}"}))
    web.run_app(app(Twin(time_scale=args.time_scale)), host=args.host, port=args.port,
                print=None)


if __name__ == "__main__":
    main()
