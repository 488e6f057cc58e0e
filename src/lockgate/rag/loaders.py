"""Read files into :class:`SourceDocument` records: Markdown, text, HTML, PDF, DOCX, BEIR corpus.

Headings come out as Markdown ``#`` lines whatever the format, so one chunker
reads structure everywhere. ACL and metadata per document come from, in order:
the ingest defaults (CLI ``--acl``/``--meta``), a sidecar ``<file>.meta.json``
(``{"acl": [...], "title": ..., "metadata": {...}}``), and Markdown front
matter (``acl:``, ``title:``; other keys become metadata). A BEIR
``corpus.jsonl`` gives one document per line (``_id``, ``title``, ``text``, and
optionally ``acl`` and ``metadata``).

Every failure is a :class:`LoadError` naming the file; the ingest loop reports
it and goes on.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import yaml

from lockgate.formats.json_limits import loads_checked
from lockgate.rag.types import PUBLIC, SourceDocument, normalize_principal

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUFFIXES",
    "LoadError",
    "iter_files",
    "load_file",
    "parse_html",
]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024

SUFFIXES: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".jsonl": "beir",
}


class LoadError(Exception):
    """A file that cannot be ingested (reported and skipped)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def iter_files(paths: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(file, root) pairs for files and directories (recursive, sorted, hidden files skipped)."""
    for p in paths:
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.startswith(".") or name.endswith(".meta.json"):
                        continue
                    yield Path(dirpath) / name, p
        else:
            yield p, p.parent


def _decode(data: bytes, path: str) -> str:
    if b"\x00" in data[:8192]:
        raise LoadError(path, "binary content in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class _HTMLText(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset(
        {"p", "div", "li", "tr", "br", "section", "article", "blockquote", "pre", "table", "ul",
         "ol", "dd", "dt", "header", "footer", "main", "nav", "aside", "form", "hr"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self._heading: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self._SKIP:
            self._skip += 1
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self._heading = int(tag[1])
            self.parts.append("\n\n" + "#" * self._heading + " ")
        elif tag in self._BLOCK:
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self._heading = None
            self.parts.append("\n\n")
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self._skip:
            return
        text = " ".join(data.split()) if self._heading else data
        if self._heading is None:
            text = " ".join(text.split()) + (" " if data[-1:].isspace() else "")
            if data[:1].isspace():
                text = " " + text
        self.parts.append(text)


def parse_html(html: str) -> tuple[str, str]:
    """(title, text with Markdown headings and blank-line paragraphs)."""
    p = _HTMLText()
    p.feed(html)
    p.close()
    raw = "".join(p.parts)
    paras = [" ".join(seg.split()) for seg in raw.split("\n\n")]
    text = "\n\n".join(s for s in paras if s)
    return " ".join(p.title.split()), text


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    if not text.startswith("---"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0:
        return {}, text
    try:
        meta = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError:
        return {}, text
    if not isinstance(meta, dict):
        return {}, text
    rest = text[end + 4 :]
    return meta, rest.lstrip("\r\n")


def _pdf(data: bytes, path: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(path, f"unreadable PDF ({exc.__class__.__name__}: {exc})") from exc
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise LoadError(path, "PDF has no extractable text")
    return text


def _docx(data: bytes, path: str) -> tuple[str, str]:
    import zipfile

    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise LoadError(path, f"unreadable DOCX ({exc.__class__.__name__}: {exc})") from exc
    parts: list[str] = []
    title = str(document.core_properties.title or "")
    for para in document.paragraphs:
        t = para.text.strip()
        if not t:
            continue
        style = (para.style.name if para.style is not None else "") or ""
        if style.startswith("Heading") and style[-1:].isdigit():
            parts.append("#" * min(6, int(style[-1])) + " " + t)
        elif style == "Title":
            title = title or t
            parts.append("# " + t)
        else:
            parts.append(t)
    return title, "\n\n".join(parts)


def _first_heading(text: str) -> str:
    for line in text.splitlines()[:50]:
        s = line.strip()
        if s.startswith("#"):
            return s.lstrip("#").strip()
    return ""


def _principals(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise LoadError(path, "acl must be a non-empty list of principals")
    try:
        return tuple(sorted({normalize_principal(str(v)) for v in value}))
    except ValueError as exc:
        raise LoadError(path, str(exc)) from exc


def _apply_meta(doc: SourceDocument, meta: dict[str, Any], path: str) -> None:
    meta = dict(meta)
    if "acl" in meta:
        doc.principals = _principals(meta.pop("acl"), path)
    if "title" in meta:
        doc.title = str(meta.pop("title"))
    if "id" in meta:
        doc.doc_id = str(meta.pop("id"))
    extra = meta.pop("metadata", {})
    if isinstance(extra, dict):
        meta.update(extra)
    doc.metadata.update({str(k): v for k, v in meta.items() if _json_safe(v)})


def _json_safe(v: Any) -> bool:
    try:
        orjson.dumps(v)
    except TypeError:
        return False
    return True


def load_file(
    path: Path,
    root: Path,
    *,
    principals: tuple[str, ...] = (PUBLIC,),
    metadata: dict[str, Any] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[SourceDocument]:
    """One file to its documents (several for a BEIR corpus). Raises LoadError."""
    name = str(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise LoadError(name, f"unknown file type {path.suffix or '(none)'!r}")
    try:
        st = path.stat()
        if st.st_size > max_bytes:
            raise LoadError(name, f"file too large ({st.st_size} bytes > {max_bytes})")
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(name, f"cannot read ({exc.strerror or exc})") from exc
    if fmt == "beir":
        return list(_beir(data, name, principals, metadata or {}, st.st_mtime))
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.name
    doc = SourceDocument(
        doc_id=rel,
        text="",
        source=str(path),
        principals=principals,
        metadata=dict(metadata or {}),
        fmt=fmt,
        source_mtime=st.st_mtime,
    )
    title = ""
    if fmt == "pdf":
        text = _pdf(data, name)
    elif fmt == "docx":
        title, text = _docx(data, name)
    elif fmt == "html":
        title, text = parse_html(_decode(data, name))
    else:
        text = _decode(data, name)
        if fmt == "markdown":
            fm, text = _front_matter(text)
            _apply_meta(doc, fm, name)
    sidecar = path.with_name(path.name + ".meta.json")
    if sidecar.exists():
        try:
            side = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LoadError(str(sidecar), f"bad sidecar ({exc})") from exc
        if not isinstance(side, dict):
            raise LoadError(str(sidecar), "sidecar must be a JSON object")
        _apply_meta(doc, side, str(sidecar))
    doc.text = text
    doc.title = doc.title or title or _first_heading(text) or path.stem
    if not text.strip():
        raise LoadError(name, "no text")
    return [doc]


def _beir(
    data: bytes,
    name: str,
    principals: tuple[str, ...],
    metadata: dict[str, Any],
    mtime: float,
) -> Iterator[SourceDocument]:
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = loads_checked(line)
        except ValueError as exc:  # not JSON, or nested past the depth limit
            raise LoadError(f"{name}:{lineno}", f"not JSON ({exc})") from exc
        if not isinstance(rec, dict) or "_id" not in rec or "text" not in rec:
            raise LoadError(f"{name}:{lineno}", "a BEIR corpus line needs _id and text")
        doc = SourceDocument(
            doc_id=str(rec["_id"]),
            text=str(rec.get("text") or ""),
            title=str(rec.get("title") or ""),
            source=name,
            principals=principals,
            metadata=dict(metadata),
            fmt="beir",
            source_mtime=mtime,
        )
        if "acl" in rec:
            doc.principals = _principals(rec["acl"], f"{name}:{lineno}")
        if isinstance(rec.get("metadata"), dict):
            doc.metadata.update(rec["metadata"])
        yield doc
