"""A gateway's start-up imports: heavy libraries the chat path never needs stay unloaded
(issue 12, RSS per worker), and the lazy stand-in behaves like the module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lockgate.lazy import lazy_module

SRC = Path(__file__).resolve().parents[2] / "src"
NOT_AT_START = ("numpy", "alembic", "mako", "faiss", "onnxruntime", "mcp", "playwright",
                "aiohttp")


def test_starting_a_gateway_leaves_heavy_libraries_unloaded() -> None:
    code = (
        "import sys, lockgate.server, lockgate.cli.app, lockgate.runtime\n"
        f"print(','.join(m for m in {NOT_AT_START!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC)}, timeout=120, check=True)
    assert out.stdout.strip() == ""


def test_lazy_module_loads_on_first_use() -> None:
    code = (
        "import sys\n"
        "from lockgate.lazy import lazy_module\n"
        "js = lazy_module('json')\n"
        "sys.modules.pop('json', None)\n"
        "before = 'json' in sys.modules\n"
        "print(before, js.dumps([1]), 'json' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC)}, timeout=60, check=True)
    assert out.stdout.split() == ["False", "[1]", "True"]


def test_lazy_module_is_the_module_after_first_use() -> None:
    m = lazy_module("fractions")
    assert m.Fraction(1, 2) + m.Fraction(1, 2) == 1
    assert "Fraction" in vars(m)  # copied in: later reads are plain lookups
    assert not hasattr(m, "__no_such_dunder__")
