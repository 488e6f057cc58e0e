"""The incremental SSE decoder used by the HTTP providers."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from lockgate.providers.sse import SSEDecoder, encode_data, encode_event

STREAM = (
    b": keep-alive comment\n\n"
    b'event: message_start\r\ndata: {"a":1}\r\n\r\n'
    b"data: line one\ndata:line two\n\n"
    b"id: 7\nretry: 100\ndata: [DONE]\n\n"
)
EXPECTED = [("message_start", b'{"a":1}'), (None, b"line one\nline two"), (None, b"[DONE]")]


def test_whole_stream() -> None:
    d = SSEDecoder()
    assert d.feed(STREAM) == EXPECTED
    assert not d.pending


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    d = SSEDecoder()
    events = []
    for a, b in itertools.pairwise(points):
        events += d.feed(STREAM[a:b])
    assert events == EXPECTED


def test_unfinished_event_is_held() -> None:
    d = SSEDecoder()
    assert d.feed(b'data: {"x"') == []
    assert d.pending
    assert d.feed(b":1}\n") == []
    assert d.feed(b"\n") == [(None, b'{"x":1}')]


def test_encoders_round_trip() -> None:
    d = SSEDecoder()
    raw = encode_event("ping", b'{"type":"ping"}') + encode_data(b"[DONE]")
    assert d.feed(raw) == [("ping", b'{"type":"ping"}'), (None, b"[DONE]")]
