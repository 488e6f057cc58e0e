"""SQL text for CDC DDL: identifier checks and ``--where`` rewriting (pure functions).

Identifiers are plain ``[A-Za-z_][A-Za-z0-9_]*`` (optionally ``schema.table``): nothing
else reaches DDL. A ``--where`` condition is tokenised (quoted strings and quoted
identifiers kept whole); bare words naming a column of the table become ``NEW.<column>``
so the condition works inside a trigger; ``;`` and SQL comments are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

__all__ = ["OPS", "CdcSqlError", "check_ident", "check_table", "parse_ops", "rewrite_where"]

OPS = ("INSERT", "UPDATE", "DELETE")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|[A-Za-z_][A-Za-z0-9_$]*|.""",
                    re.S)


class CdcSqlError(ValueError):
    """Bad capture input (identifier, condition): a one-line message."""


def check_ident(name: str, what: str) -> str:
    if not _IDENT.match(name):
        raise CdcSqlError(f"{what} '{name}' is not a plain identifier (letters, digits, _)")
    return name


def check_table(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 2:
        raise CdcSqlError(f"table '{name}': use 'table' or 'schema.table'")
    for p in parts:
        check_ident(p, "table")
    return name


def parse_ops(ops: str | Iterable[str] | None) -> tuple[str, ...]:
    """``insert,update,delete`` (any case, any order) -> ``("INSERT", "UPDATE", "DELETE")``
    in that canonical order; None -> insert and update (the default)."""
    if ops is None:
        return ("INSERT", "UPDATE")
    items = ops.split(",") if isinstance(ops, str) else list(ops)
    wanted = {o.strip().upper() for o in items if o.strip()}
    bad = sorted(wanted - set(OPS))
    if bad:
        raise CdcSqlError(f"unknown operation '{bad[0].lower()}' (ops: insert, update, delete)")
    if not wanted:
        raise CdcSqlError("--ops needs at least one of insert, update, delete")
    return tuple(o for o in OPS if o in wanted)


def rewrite_where(expr: str, columns: Iterable[str], new: Callable[[str], str]) -> str:
    """``status = 'open'`` -> ``NEW."status" = 'open'`` (``new`` renders a column)."""
    cols = {c.lower(): c for c in columns}
    out: list[str] = []
    if "--" in _strip_strings(expr) or "/*" in _strip_strings(expr):
        raise CdcSqlError("--where may not contain SQL comments")
    prev_dot = False
    for m in _TOKEN.finditer(expr):
        tok = m.group()
        if tok == ";":
            raise CdcSqlError("--where may not contain ';'")
        if not prev_dot and tok.lower() in cols:
            out.append(new(cols[tok.lower()]))
        else:
            out.append(tok)
        if not tok.isspace():
            prev_dot = tok == "."
    text = "".join(out).strip()
    if not text:
        raise CdcSqlError("--where is empty")
    return text


def _strip_strings(expr: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", expr)
