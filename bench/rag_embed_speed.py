"""Offline MiniLM throughput: the NumPy forward pass vs ONNX Runtime int8 (and
sentence-transformers + torch, if present).

    python bench/rag_embed_speed.py [--docs 200]   # any Python with tokenizers, safetensors, numpy

Encodes the first N CISI abstracts (title + text, up to 256 tokens) with the
engines in alternation, 2 rounds, and prints texts/s, the ONNX/NumPy speed ratio and
the cosine between the engines' vectors. Both engines use one thread (what the
gateway gives an encoder on a shared 2-core machine). The CISI abstracts are read from
``/tmp/lockgate-rag-cisi/beir`` (made by bench/rag_cisi.py) or ``--beir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ holds modules (targets.py, ...) that would shadow names transformers imports
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "src"))

from lockgate.providers import embedded_onnx  # noqa: E402
from lockgate.providers.embedded import MiniLMEncoder, resolve_model_dir  # noqa: E402


def cisi_texts(n: int, beir: Path = Path("/tmp/lockgate-rag-cisi/beir")) -> list[str]:
    corpus = beir / "corpus.jsonl"
    if corpus.exists():
        rows = [json.loads(x) for x in corpus.read_text().splitlines()[:n]]
        return [f"{r['title']}\n{r['text']}" for r in rows]
    return [f"Information retrieval systems rank documents {i}. " * 12 for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--beir", type=Path, default=Path("/tmp/lockgate-rag-cisi/beir"))
    args = ap.parse_args()
    texts = cisi_texts(args.docs, args.beir)
    model_dir = resolve_model_dir("bundled:all-minilm-l6-v2")
    enc = MiniLMEncoder(model_dir)
    onnx_enc = None
    if embedded_onnx.available():
        onnx_enc = embedded_onnx.OnnxMiniLMEncoder(model_dir, enc.tokenizer, threads=1)
    try:
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]

        st = SentenceTransformer(str(model_dir), device="cpu")
    except ImportError as exc:
        print(json.dumps({"torch": f"not available ({exc})"}))
        st = None
    for r in range(2):
        t = time.perf_counter()
        a, _ = enc.encode(texts)
        np_s = time.perf_counter() - t
        line: dict[str, object] = {"round": r, "texts": len(texts),
                                   "numpy_texts_per_s": round(len(texts) / np_s, 1)}
        if onnx_enc is not None:
            t = time.perf_counter()
            c, _ = onnx_enc.encode(texts)
            ox_s = time.perf_counter() - t
            line["onnx_int8_texts_per_s"] = round(len(texts) / ox_s, 1)
            line["onnx_int8_speedup"] = round(np_s / ox_s, 2)
            line["mean_cosine_numpy_vs_onnx_int8"] = round(float((a * c).sum(1).mean()), 6)
            line["min_cosine_numpy_vs_onnx_int8"] = round(float((a * c).sum(1).min()), 6)
        if st is not None:
            t = time.perf_counter()
            b = st.encode(texts, batch_size=32, normalize_embeddings=True)
            line["torch_texts_per_s"] = round(len(texts) / (time.perf_counter() - t), 1)
            line["mean_cosine_numpy_vs_torch"] = round(float((a * b).sum(1).mean()), 6)
            line["min_cosine_numpy_vs_torch"] = round(float((a * b).sum(1).min()), 6)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
