"""Who may read what, in SQL: the ACL and caller filters as one WHERE fragment.

Every retriever (BM25 in SQL, the dense index's mask, the final re-check) reads
documents through :func:`readable_where`, so the ACL is applied inside the query,
before any top-k, never after it. :func:`acl_hash` fingerprints a document's
readers and attributes so ingest can tell an attribute-only change.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam
from sqlalchemy.sql.elements import BindParameter

__all__ = ["Filters", "acl_hash", "readable_where"]

Filters = dict[str, Any]
"""Caller filters on document metadata: ``{"key": value | [values]}``, plus ``doc_id``.

ANDed with the ACL, never instead of it. Values compare as text."""

_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def acl_hash(principals: Sequence[str], metadata: dict[str, Any], title: str) -> str:
    blob = orjson.dumps([sorted(set(principals)), metadata, title], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:32]


def readable_where(
    sqlite: bool,
    principals: Sequence[str] | None,
    filters: Filters | None,
    exclude_doc_ids: Sequence[str] | None,
    params: dict[str, Any],
) -> tuple[str, list[BindParameter[Any]]]:
    """WHERE fragments over ``d`` (rag_documents); ``principals=None`` means all access.

    Adds its values to ``params`` and returns the expanding bind parameters the
    statement needs (``text(sql).bindparams(*binds)``).
    """
    clauses: list[str] = []
    binds: list[BindParameter[Any]] = []
    if principals is not None:
        params["acl"] = sorted(set(principals))
        clauses.append(
            "EXISTS (SELECT 1 FROM rag_doc_principals ap"
            " WHERE ap.doc_pk = d.id AND ap.principal IN :acl)"
        )
        binds.append(bindparam("acl", expanding=True))
    for i, (key, value) in enumerate(sorted((filters or {}).items())):
        values = value if isinstance(value, list | tuple | set) else [value]
        name = f"f{i}"
        params[name] = [str(v) for v in values] or ["\x00"]
        binds.append(bindparam(name, expanding=True))
        if key == "doc_id":
            clauses.append(f"d.doc_id IN :{name}")
            continue
        if not _KEY.match(key):
            raise ValueError(f"bad filter key {key!r}")
        if sqlite:
            expr = f"CAST(json_extract(d.metadata, '$.\"{key}\"') AS TEXT)"
        else:
            expr = f"(CAST(d.metadata AS jsonb) ->> '{key}')"
        clauses.append(f"{expr} IN :{name}")
    if exclude_doc_ids:
        params["excl"] = list(exclude_doc_ids)
        clauses.append("d.doc_id NOT IN :excl")
        binds.append(bindparam("excl", expanding=True))
    return (" AND ".join(clauses) or "1=1"), binds
