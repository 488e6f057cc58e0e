"""JSON read from brokers and BEIR corpus files goes through the same depth limit."""

from __future__ import annotations

import pytest

from lockgate.events.transports import _decode
from lockgate.rag.loaders import LoadError, _beir


def test_broker_payload_nested_too_deep_is_kept_as_text() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    assert _decode(deep) == {"raw": deep.decode()}
    assert _decode(b'{"id": "e1", "a": [[1]]}') == {"id": "e1", "a": [[1]]}


def test_beir_line_nested_too_deep_is_a_load_error() -> None:
    deep = b'{"_id": "d1", "text": "t", "x": ' + b"[" * 500 + b"]" * 500 + b"}"
    with pytest.raises(LoadError) as err:
        list(_beir(deep, "corpus.jsonl", ("public",), {}, 0.0))
    assert "corpus.jsonl:1" in str(err.value)
    ok = list(_beir(b'{"_id": "d2", "text": "hello"}', "c.jsonl", ("public",), {}, 0.0))
    assert ok[0].doc_id == "d2"
