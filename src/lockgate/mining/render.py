"""Rendering a :class:`~lockgate.mining.analysis.MiningResult`: Graphviz DOT, SVG, JSON.

SVG comes from the Graphviz ``dot`` program (Debian package ``graphviz``, installed by
``make services``), run as a subprocess with a timeout; without it :func:`to_svg` raises
:class:`RenderError` with the install hint. Node labels carry the execution count, edge
labels the count and median duration; the top bottleneck edges are drawn red and rework
edges dashed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from lockgate.mining.analysis import MiningResult

__all__ = ["RenderError", "human_duration", "to_dot", "to_json", "to_svg"]


class RenderError(RuntimeError):
    pass


def human_duration(seconds: float) -> str:
    s = abs(seconds)
    if s < 60:
        return f"{seconds:.0f}s" if s >= 1 or s == 0 else f"{seconds * 1000:.0f}ms"
    if s < 3600:
        return f"{seconds / 60:.1f}m"
    if s < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(result: MiningResult, *, max_edges: int = 200) -> str:
    names = {r["activity"]: f"a{i}" for i, r in enumerate(result.activities)}
    hot = {(b["source"], b["target"]) for b in result.bottlenecks.get("edges", [])[:2]
           if b["share_of_case_time"] > 0}
    max_count = max((e["count"] for e in result.edges), default=1)
    lines = ["digraph process {", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", '
             'fontname="Helvetica"];', '  edge [fontname="Helvetica", fontsize=10];',
             '  start [shape=circle, label="", width=0.25, fillcolor="#4caf50"];',
             '  end [shape=doublecircle, label="", width=0.2, fillcolor="#e53935"];']
    for r in result.activities:
        label = _q(f"{r['activity']}\n{r['count']}")
        lines.append(f"  {names[r['activity']]} [label={label}];")
    for act, n in result.start_activities.items():
        lines.append(f"  start -> {names[act]} [label={_q(str(n))}, style=dotted];")
    for act, n in result.end_activities.items():
        lines.append(f"  {names[act]} -> end [label={_q(str(n))}, style=dotted];")
    for e in result.edges[:max_edges]:
        width = 1.0 + 4.0 * e["count"] / max_count
        attrs = [f"label={_q(str(e['count']) + ' | ' + human_duration(e['median_s']))}",
                 f"penwidth={width:.2f}"]
        if (e["source"], e["target"]) in hot:
            attrs.append('color="#d32f2f"')
        if e["rework"]:
            attrs.append("style=dashed")
        lines.append(f"  {names[e['source']]} -> {names[e['target']]} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_svg(result: MiningResult, *, dot_path: str | None = None, timeout: float = 30.0) -> str:
    exe = dot_path or shutil.which("dot")
    if not exe:
        raise RenderError("Graphviz 'dot' is not installed (apt-get install graphviz, or "
                          "`make services`); use the JSON output instead")
    try:
        proc = subprocess.run([exe, "-Tsvg"], input=to_dot(result).encode(),
                              capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RenderError(f"Graphviz failed: {exc}") from None
    if proc.returncode != 0:
        raise RenderError(f"Graphviz failed: {proc.stderr.decode(errors='replace')[:300]}")
    return proc.stdout.decode()


def to_json(result: MiningResult, *, max_variants: int | None = 50,
            extra: dict[str, Any] | None = None) -> str:
    doc = result.to_dict(max_variants=max_variants)
    if extra:
        doc.update(extra)
    return json.dumps(doc, indent=2, sort_keys=False)
