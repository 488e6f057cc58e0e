"""The ``lockgate`` command (typer + rich). Sub-commands live in sibling modules."""

from __future__ import annotations

from lockgate.cli.app import app, main

__all__ = ["app", "main"]
