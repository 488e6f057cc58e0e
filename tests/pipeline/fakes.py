"""Small in-process fakes for the pipeline stage tests: providers, a sink, key lookup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lockgate.metrics import Metrics
from lockgate.pipeline import Call, Completion, Controls, Pipeline, Principal, StreamChunk
from lockgate.pipeline.auth import Authenticator
from lockgate.pipeline.call import UsageRecord
from lockgate.pipeline.routing import Router, Target
from lockgate.providers.base import ProviderError, Usage
from lockgate.settings import ModelDeployment


def deployment(name: str, model: str = "m", *, weight: float = 1.0, max_retries: int = 0,
               mode: str = "chat", dep_id: str | None = None) -> ModelDeployment:
    return ModelDeployment(name=name, provider="openai", base_url="http://x/v1", model=model,
                           weight=weight, max_retries=max_retries, mode=mode,  # type: ignore[arg-type]
                           id=dep_id, pricing={"input_per_mtok": 1.0, "output_per_mtok": 2.0})  # type: ignore[arg-type]


def answer(text: str, prompt: int = 3, completion: int = 2) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


class FakeProvider:
    """Answers with ``text``; first raises the queued ``errors`` (one per call)."""

    def __init__(self, text: str = "ok", errors: Sequence[ProviderError] = ()) -> None:
        self.text = text
        self.errors = list(errors)
        self.bodies: list[dict[str, Any]] = []

    @property
    def calls(self) -> int:
        return len(self.bodies)

    async def chat(self, body: dict[str, Any]) -> Completion:
        self.bodies.append(body)
        if self.errors:
            raise self.errors.pop(0)
        return Completion(answer(self.text), Usage(3, 2))

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        self.bodies.append(body)
        if self.errors:
            raise self.errors.pop(0)
        for part in self.text.split():
            await asyncio.sleep(0)
            yield {"object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"content": part}}]}

    async def embeddings(self, body: dict[str, Any]) -> Completion:
        self.bodies.append(body)
        return Completion({"object": "list", "data": [{"embedding": [0.0]}]}, Usage(1, 0))

    async def aclose(self) -> None:
        return None


@dataclass
class ListSink:
    records: list[UsageRecord] = field(default_factory=list)

    def submit(self, record: UsageRecord) -> None:
        self.records.append(record)


@dataclass
class KeyRow:
    id: str
    team_id: str
    team_name: str | None = None
    allowed_models: tuple[str, ...] | None = None
    revoked_at: object | None = None


class Keys:
    """Plaintext key -> row."""

    def __init__(self, rows: dict[str, KeyRow]) -> None:
        self.rows = rows

    async def find_key(self, plaintext: str) -> KeyRow | None:
        return self.rows.get(plaintext)


def target(dep: ModelDeployment, provider: FakeProvider | None = None) -> Target:
    return Target(dep, provider or FakeProvider())  # type: ignore[arg-type]


def build_pipeline(targets: dict[str, list[Target]], keys: dict[str, KeyRow] | None = None,
                   controls: Controls | None = None) -> tuple[Pipeline, ListSink, Metrics]:
    sink = ListSink()
    metrics = Metrics()
    auth = Authenticator(Keys(keys or {}), master_key_hash=None, cache_ttl=60)
    pipe = Pipeline(auth=auth, router=Router(targets), sink=sink, metrics=metrics,
                    controls=controls)
    return pipe, sink, metrics


def chat_call(model: str, text: str = "hi", principal: Principal | None = None,
              api_key: str | None = None, **kw: Any) -> Call:
    """A chat call; without a principal or an api_key it is made as key ``k``, team ``t``."""
    if principal is None and api_key is None:
        principal = Principal(key_id="k", team_id="t")
    return Call(kind="chat", model=model,
                body={"model": model, "messages": [{"role": "user", "content": text}]},
                principal=principal, api_key=api_key, **kw)


def metric(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0
