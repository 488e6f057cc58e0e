"""Upstream failures map to clear client errors; fallback; cut streams end in an error."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.gateway.conftest import Gateway


def client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=20)


MSG = [{"role": "user", "content": "x"}]


def test_upstream_429_is_429_with_retry_after(gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client(gateway, key).chat.completions.create(model="always-429", messages=MSG)  # type: ignore[arg-type]
    assert exc.value.response.headers["retry-after"] == "3"


def test_upstream_500_is_502_after_retries(gateway: Gateway, key: str, upstream: str) -> None:
    before = httpx.get(upstream + "/_stats").json()
    with pytest.raises(openai.APIStatusError) as exc:
        client(gateway, key).chat.completions.create(model="always-500", messages=MSG)  # type: ignore[arg-type]
    assert exc.value.status_code == 502
    after = httpx.get(upstream + "/_stats").json()
    # max_retries: 1 -> exactly two upstream attempts
    assert _count(after, "error-500") - _count(before, "error-500") == 2


def _count(stats: dict[str, object], model: str) -> int:
    per_model = stats.get("by_model") or {}
    assert isinstance(per_model, dict)
    return int(per_model.get(model, 0))


def test_stall_before_first_byte_is_504_within_timeout(gateway: Gateway, key: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        client(gateway, key).chat.completions.create(model="stalls", messages=MSG)  # type: ignore[arg-type]
    assert exc.value.status_code == 504
    assert time.monotonic() - t0 < 4.5  # the upstream stalls 5 s; first_token is 0.3 s


def test_stall_on_stream_is_504_before_first_byte(gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        client(gateway, key).chat.completions.create(model="stalls", messages=MSG, stream=True)  # type: ignore[arg-type]
    assert exc.value.status_code == 504


def test_connection_refused_is_502(gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        client(gateway, key).chat.completions.create(model="unreachable", messages=MSG)  # type: ignore[arg-type]
    assert exc.value.status_code == 502


def test_fallback_to_next_deployment(gateway: Gateway, key: str) -> None:
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model="falls-back", messages=MSG)  # type: ignore[arg-type]
    assert raw.headers["x-lockgate-deployment"] == "falls-back/openai:stub-backup"
    stream = client(gateway, key).chat.completions.with_raw_response.create(
        model="falls-back", messages=MSG, stream=True)  # type: ignore[arg-type]
    assert stream.headers["x-lockgate-deployment"] == "falls-back/openai:stub-backup"


def test_cut_stream_ends_in_error_not_clean_end(gateway: Gateway, key: str) -> None:
    got = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in client(gateway, key).chat.completions.create(
            model="cuts", messages=MSG, stream=True  # type: ignore[arg-type]
        ):
            got.append(chunk)
    assert got, "chunks before the cut are delivered"
    assert "cut" in str(exc.value.message).lower()
    raw = httpx.post(gateway.v1 + "/chat/completions",
                     json={"model": "cuts", "messages": MSG, "stream": True},
                     headers={"Authorization": f"Bearer {key}"}).text
    assert "[DONE]" not in raw and '"error"' in raw
