"""Loaders and chunking: formats, ACL from front matter/sidecars, bad files reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.rag.chunking import ChunkingOptions, chunk_document
from lockgate.rag.loaders import LoadError, load_file, parse_html


def _pdf_bytes(text: str) -> bytes:
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def test_formats_and_acl_sources(tmp_path: Path) -> None:
    md = tmp_path / "guide.md"
    md.write_text("---\ntitle: The Guide\nacl: [group:eng, user:ann]\nowner: ops\n---\n"
                  "# Intro\n\nHello.\n")
    (doc,) = load_file(md, tmp_path)
    assert (doc.doc_id, doc.title) == ("guide.md", "The Guide")
    assert doc.principals == ("group:eng", "user:ann") and doc.metadata == {"owner": "ops"}

    txt = tmp_path / "notes.txt"
    txt.write_text("plain notes")
    (tmp_path / "notes.txt.meta.json").write_text(json.dumps({"acl": ["team:t1"]}))
    (doc,) = load_file(txt, tmp_path, principals=("public",))
    assert doc.principals == ("team:t1",)

    title, text = parse_html("<html><head><title>T</title><style>x{}</style></head><body>"
                             "<h1>Top</h1><p>One <b>bold</b> para.</p><h2>Sub</h2><p>Two</p>"
                             "<script>evil()</script></body></html>")
    assert title == "T" and text == "# Top\n\nOne bold para.\n\n## Sub\n\nTwo"

    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(_pdf_bytes("Hello PDF world"))
    (doc,) = load_file(pdf, tmp_path)
    assert "Hello PDF world" in doc.text

    import docx

    d = docx.Document()
    d.add_heading("Policy", level=1)
    d.add_paragraph("Travel must be approved.")
    d.save(str(tmp_path / "p.docx"))
    (doc,) = load_file(tmp_path / "p.docx", tmp_path)
    assert doc.text == "# Policy\n\nTravel must be approved."

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "title": "A", "text": "x", "acl": ["user:z"]}\n'
                      '{"_id": "2", "text": "y"}\n')
    docs = load_file(corpus, tmp_path)
    assert [(d.doc_id, d.principals) for d in docs] == [("1", ("user:z",)), ("2", ("public",))]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "PDF"),
        ("broken.docx", b"PK\x03\x04 nope", "DOCX"),
        ("x.exe", b"MZ", "unknown file type"),
        ("big.txt", b"a" * 2048, "too large"),
        ("acl.md", b"---\nacl: [root]\n---\ntext", "bad ACL principal"),
    ],
)
def test_bad_files_raise_load_error(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(LoadError, match=reason):
        load_file(p, tmp_path, max_bytes=1024)


def test_chunks_follow_structure_and_spans() -> None:
    text = ("# A\n\npara one.\n\npara two.\n\n## B\n\n" + "Sentence here. " * 120 + "\n\n# C\n\n"
            "```\n# not a heading\n```\n")
    chunks = chunk_document("doc", text, ChunkingOptions(target_chars=300, max_chars=500))
    assert chunks[0].heading == "A" and chunks[0].text == "para one.\n\npara two."
    assert {c.heading for c in chunks} == {"A", "A > B", "C"}
    assert all(len(c.text) <= 500 for c in chunks)
    assert all(text[c.char_start:c.char_end] == c.text for c in chunks)
    assert chunks[-1].text.startswith("```")
    again = chunk_document("doc", text.replace("para two.", "para 2."),
                           ChunkingOptions(target_chars=300, max_chars=500))
    assert chunks[0].chunk_id != again[0].chunk_id
    assert [c.chunk_id for c in chunks[1:]] == [c.chunk_id for c in again[1:]]
