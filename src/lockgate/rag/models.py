"""The RAG feature's only door to models: the gateway pipeline.

:class:`ModelPipeline` is the slice of :class:`lockgate.pipeline.Pipeline` this
package uses (tests pass a small fake with the same methods). :class:`Embedder`
turns texts into unit vectors through ``pipeline.embeddings`` in batches, so
keys, budgets, limits and audit apply to every embedding RAG asks for.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from lockgate.lazy import lazy_module
from lockgate.pipeline import Call, Completion, Principal, StreamChunk

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    F32 = npt.NDArray[np.float32]
else:
    np = lazy_module("numpy")

__all__ = ["Embedder", "ModelPipeline", "chat_call"]


class ModelPipeline(Protocol):
    async def embeddings(self, call: Call) -> Completion: ...

    async def chat(self, call: Call) -> Completion: ...

    async def chat_stream(self, call: Call) -> AsyncIterator[StreamChunk]:
        """Admit and open the stream (awaited), then iterate the chunks."""
        ...


def _vector(item: Any) -> F32:
    emb = item.get("embedding") if isinstance(item, dict) else None
    if isinstance(emb, str):
        return np.frombuffer(base64.b64decode(emb), dtype="<f4").astype(np.float32)
    if isinstance(emb, list):
        return np.asarray(emb, dtype=np.float32)
    raise ValueError("embeddings response item has no embedding")


class Embedder:
    """Unit vectors for texts via the pipeline, ``batch_size`` inputs per call."""

    def __init__(
        self,
        pipeline: ModelPipeline,
        model: str,
        principal: Principal | None,
        *,
        batch_size: int = 64,
        max_chars: int = 4000,
    ) -> None:
        self.pipeline = pipeline
        self.model = model
        self.principal = principal
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.tokens = 0

    async def embed(self, texts: Sequence[str], *, principal: Principal | None = None) -> F32:
        out: list[F32] = []
        who = principal or self.principal
        for start in range(0, len(texts), self.batch_size):
            batch = [t[: self.max_chars] or " " for t in texts[start : start + self.batch_size]]
            comp = await self.pipeline.embeddings(
                Call(
                    kind="embeddings",
                    model=self.model,
                    body={"model": self.model, "input": batch},
                    principal=who,
                    source="rag",
                )
            )
            data = comp.body.get("data")
            if not isinstance(data, list) or len(data) != len(batch):
                raise ValueError(
                    f"embeddings model {self.model!r} returned"
                    f" {len(data) if isinstance(data, list) else 'no'} vectors for {len(batch)}"
                )
            ordered = sorted(data, key=lambda d: int(d.get("index", 0)))
            vecs = np.vstack([_vector(d) for d in ordered])
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            out.append((vecs / np.maximum(norms, 1e-12)).astype(np.float32))
            self.tokens += comp.usage.prompt_tokens
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack(out)


def chat_call(
    model: str,
    messages: list[dict[str, Any]],
    principal: Principal | None,
    *,
    max_tokens: int = 512,
    stream: bool = False,
    end_user: str | None = None,
) -> Call:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return Call(
        kind="chat",
        model=model,
        body=body,
        principal=principal,
        stream=stream,
        source="rag",
        end_user=end_user,
    )
