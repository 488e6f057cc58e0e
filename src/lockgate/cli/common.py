"""Shared CLI helpers: one-line errors, config loading, running async work."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from lockgate.errors import ConfigError
from lockgate.pipeline.call import Principal
from lockgate.settings import Config, load_config

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

ConfigOption = typer.Option(
    None, "--config", "-c", help="Path to lockgate.yaml (default: embedded defaults).",
    envvar="LOCKGATE_CONFIG",
)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def get_config(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc), 2)


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def wrapper() -> T:
        return await coro_fn()

    coro: Coroutine[Any, Any, T] = wrapper()
    return asyncio.run(coro)


def operator(name: str | None) -> Principal:
    """The CLI's operator (admin rights): ``--as NAME``, else ``cli:$USER``."""
    who = name or f"cli:{os.environ.get('USER', 'operator')}"
    return Principal(key_id=who, team_id=None, is_master=True, key_name=who)
