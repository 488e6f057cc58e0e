"""``rag:``: the RAG front door (models, refusal thresholds, signed end-user identity)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lockgate.settings.base import Strict, resolve_secret

__all__ = ["RagCollectionSettings", "RagConfig", "RagDenseSettings"]


class RagCollectionSettings(Strict):
    """Per-collection RAG settings; ``threshold`` overrides a calibrated/default one."""

    threshold: float | None = Field(None, ge=0)
    """Refusal threshold on the confidence score (cosine or bm25_norm); None = stored/default."""
    threshold_kind: Literal["cosine", "bm25_norm"] | None = None
    """Apply ``threshold`` only when the query's confidence is this kind; None = any."""


class RagDenseSettings(Strict):
    """``rag.dense``: the dense index (exact below ``ann_min_rows``, an HNSW graph above)."""

    ann_min_rows: int = Field(50_000, ge=0)
    """Build the ANN graph once a collection has this many embedded chunks."""
    exact_below: int = Field(20_000, ge=0)
    """Search exactly when the caller may read at most this many chunks."""
    persist: bool = True
    """Save graphs under ``<home>/rag-index/`` and load them at start (else rebuild)."""


class RagConfig(Strict):
    """The RAG front door (lockgate.api.rag): models, refusal, signed end-user identity."""

    embed_model: str | None = None
    """Embeddings model (a configured name) for new collections; None = the first
    ``mode: embeddings`` deployment, or BM25 only when there is none."""
    generation_model: str | None = None
    """Chat model for answers; None = extractive answers (best passages, cited)."""
    mode: Literal["bm25", "dense", "hybrid"] = "hybrid"
    k: int = Field(5, ge=1, le=50)
    end_user_secret: str | None = None
    """HMAC key (``env:NAME``) for the ``x-lockgate-end-user`` header; None = header refused."""
    end_user_max_age: float = Field(300.0, gt=0)
    """Seconds a signed end-user header stays valid (clock skew allowed the same way)."""
    collections: dict[str, RagCollectionSettings] = Field(default_factory=dict)
    dense: RagDenseSettings = Field(default_factory=RagDenseSettings)

    @field_validator("end_user_secret")
    @classmethod
    def _secret_len(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("env:") and len(v) < 16:
            raise ValueError("end_user_secret must be env:NAME or at least 16 characters")
        return v

    def resolved_end_user_secret(self) -> str | None:
        return resolve_secret(self.end_user_secret, "rag.end_user_secret")
