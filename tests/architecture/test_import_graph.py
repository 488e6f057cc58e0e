"""The house rule, checked on every CI run: imports point downwards and never form a circle.

Layers, lowest first (a module may import its own layer or lower ones, never higher)::

    errors, settings, lazy            leaves: configuration imports nothing of lockgate's
    state, store, metrics, observability, formats
    providers, governance, guards, alerts
    pipeline                          the one path every model call takes
    rag, jobs, events, shadow, feedback, review, mining, cdc, agents, admin
                                      features (models via the pipeline)
    runtime                           the one composition root
    api, cli, server, testing, facade adapters (and test helpers)

Features must not import ``providers`` (they use the pipeline's public surface). Imports
under ``if TYPE_CHECKING:`` do not count (they vanish at run time). The graph is read
with :mod:`ast` from ``src/lockgate`` (every import, module level or inside a function).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "src" / "lockgate"

LAYERS: list[set[str]] = [
    {"errors", "settings", "py", "lazy", "interpreter"},
    {"state", "store", "metrics", "metrics_tally", "observability", "formats"},
    {"providers", "governance", "guards", "alerts"},
    {"pipeline"},
    {"rag", "jobs", "events", "shadow", "feedback", "review", "mining", "cdc", "agents",
     "admin"},
    {"runtime"},
    {"api", "cli", "server", "serving", "serving_protocol", "testing", "__main__", "console",
     "facade", "mcp_server"},
]
FEATURES = LAYERS[4]


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODS = _modules()


def _resolve(name: str) -> str | None:
    while name:
        if name in MODS:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] or [base]
        for n in names:
            r = _resolve(n)
            if r and r != mod and not mod.startswith(r + ".") and r != "lockgate":
                out.add(r)
    return out


GRAPH = {m: _imports(m, p) for m, p in MODS.items()}


def _part(mod: str) -> str:
    return mod.split(".")[1] if "." in mod else "__init__"


def _layer(mod: str) -> int:
    part = _part(mod)
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"{mod}: package '{part}' has no layer; add it to LAYERS")


def test_every_package_has_a_layer() -> None:
    for mod in MODS:
        if mod != "lockgate":
            _layer(mod)


def test_imports_point_downwards() -> None:
    bad = []
    for mod, deps in GRAPH.items():
        if mod == "lockgate":
            continue
        for dep in deps:
            if _layer(dep) > _layer(mod):
                bad.append(f"{mod} -> {dep}")
            elif _part(mod) in FEATURES and _part(dep) == "providers":
                bad.append(f"{mod} -> {dep} (a feature names a provider)")
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_no_import_circles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for m in GRAPH:
        if m not in index:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


@pytest.mark.parametrize("package", sorted(FEATURES))
def test_features_reach_models_only_through_the_pipeline(package: str) -> None:
    """Seen from a feature, the pipeline is its ``lockgate.pipeline`` public surface or
    modules it documents for features (call types, the virtual-deployment protocol)."""
    allowed = {"lockgate.pipeline", "lockgate.pipeline.call", "lockgate.pipeline.virtual",
               "lockgate.pipeline.mirror"}
    bad = [f"{m} -> {d}" for m, deps in GRAPH.items() if _part(m) == package
           for d in deps if _part(d) == "pipeline" and d not in allowed]
    assert not bad, "\n".join(sorted(bad))
