"""Test doubles for RAG: a tiny fake of the pipeline interface (embeddings, chat, chat_stream).

Embeddings are hashed bags of analysed terms (64 dims, unit length): deterministic,
instant, and similar texts get similar vectors, which is all the retrieval
plumbing needs. Chat answers with a scripted text. Every call is recorded, so
tests can check that RAG went through the pipeline with ``source="rag"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from lockgate.pipeline.call import Call, Principal
from lockgate.providers.base import Completion, StreamChunk, Usage
from lockgate.rag.analysis import analyze

DIM = 64
OPERATOR = Principal(key_id="test", team_id=None, is_master=True)


def fake_vector(text: str) -> list[float]:
    v = np.zeros(DIM, dtype=np.float32)
    for term in analyze(text):
        h = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")
        v[h % DIM] += 1.0 if (h >> 16) & 1 else -1.0
    n = float(np.linalg.norm(v))
    if n == 0:
        v[0] = 1.0
        n = 1.0
    return [float(x) for x in (v / n)]


class FakePipeline:
    def __init__(self, reply: str = "The answer is in the passages [1].") -> None:
        self.reply = reply
        self.calls: list[Call] = []
        self.prompts: list[str] = []

    async def embeddings(self, call: Call) -> Completion:
        self.calls.append(call)
        texts = call.body["input"]
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)}
                for i, t in enumerate(texts)]
        n = sum(len(t.split()) for t in texts)
        return Completion(body={"object": "list", "data": data,
                                "usage": {"prompt_tokens": n, "total_tokens": n}},
                          usage=Usage(prompt_tokens=n))

    async def chat(self, call: Call) -> Completion:
        self.calls.append(call)
        self.prompts.append(str(call.body["messages"][-1]["content"]))
        return Completion(body={"choices": [{"index": 0, "message": {
            "role": "assistant", "content": self.reply}, "finish_reason": "stop"}]},
            usage=Usage(prompt_tokens=10, completion_tokens=5))

    async def chat_stream(self, call: Call) -> AsyncIterator[StreamChunk]:
        self.calls.append(call)
        self.prompts.append(str(call.body["messages"][-1]["content"]))
        reply = self.reply

        async def gen() -> AsyncIterator[dict[str, Any]]:
            for i in range(0, len(reply), 3):
                yield {"choices": [{"index": 0, "delta": {"content": reply[i:i + 3]}}]}
            yield {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}

        return gen()
