"""``lockgate facade``: serve the configured facades alone (no gateway API)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import typer

from lockgate.cli.common import ConfigOption, console, fail, get_config
from lockgate.errors import ConfigError
from lockgate.interpreter import settle_after_startup
from lockgate.jobs.tasks import TaskError
from lockgate.settings import Config
from lockgate.store import StoreError

__all__ = ["check_facades", "facade"]


async def check_facades(cfg: Config) -> None:
    """Build (not bind) every facade on a runtime: unknown tasks fail here, in one line."""
    from lockgate.facade import Facades
    from lockgate.runtime import Runtime

    runtime = await Runtime.start(cfg, warm_up=False, jobs=False)
    try:
        facades = Facades.build(cfg.facades, runtime)
        await facades.aclose()
    finally:
        await runtime.aclose()


async def _serve(cfg: Config, ready: asyncio.Event | None = None) -> None:
    from lockgate.facade import Facades
    from lockgate.runtime import Runtime

    runtime = await Runtime.start(cfg, monitor=False)
    try:
        facades = await Facades.start(runtime)
        try:
            for line in facades.addresses():
                console.print(f"facade {line}", highlight=False)
            settle_after_startup()  # as the gateway does: gc.freeze(), GIL interval
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            await facades.aclose()
    finally:
        await runtime.aclose()


def facade(
    config: Path | None = ConfigOption,
    name: list[str] = typer.Option(None, "--name", "-n", help="Only these facades."),
) -> None:
    """Serve the facades of the config (reverse proxies with AI rules) without the gateway."""
    cfg = get_config(config)
    facades = cfg.facades
    if name:
        unknown = sorted(set(name) - {f.name for f in facades})
        if unknown:
            fail(f"unknown facade(s): {', '.join(unknown)} "
                 f"(configured: {', '.join(f.name for f in facades) or 'none'})", 2)
        facades = [f for f in facades if f.name in name]
        cfg = cfg.model_copy(update={"facades": facades})
    if not facades:
        fail("no facades configured (add 'facades:' to lockgate.yaml)", 2)
    try:
        import uvloop

        uvloop.run(_serve(cfg))
    except (ConfigError, StoreError, TaskError, ValueError) as exc:
        fail(f"cannot start: {exc}")
    except OSError as exc:
        fail(f"cannot listen: {exc}")
    except KeyboardInterrupt:
        pass
