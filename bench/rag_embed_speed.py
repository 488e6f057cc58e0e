"""Offline MiniLM throughput: the NumPy forward pass vs sentence-transformers + torch (if present).

    python bench/rag_embed_speed.py [--docs 200]   # any Python with tokenizers, safetensors, numpy

Encodes the first N CISI abstracts (title + text, up to 256 tokens) with both
engines in alternation, 2 rounds, and prints texts/s and the mean cosine
between the two engines' vectors.
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

from lockgate.providers.embedded import MiniLMEncoder, resolve_model_dir  # noqa: E402


def cisi_texts(n: int) -> list[str]:
    corpus = Path("/tmp/lockgate-rag-cisi/beir/corpus.jsonl")
    if corpus.exists():
        rows = [json.loads(x) for x in corpus.read_text().splitlines()[:n]]
        return [f"{r['title']}\n{r['text']}" for r in rows]
    return [f"Information retrieval systems rank documents {i}. " * 12 for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200)
    args = ap.parse_args()
    texts = cisi_texts(args.docs)
    model_dir = resolve_model_dir("bundled:all-minilm-l6-v2")
    enc = MiniLMEncoder(model_dir)
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
        line = {"round": r, "texts": len(texts), "numpy_texts_per_s": round(len(texts) / np_s, 1)}
        if st is not None:
            t = time.perf_counter()
            b = st.encode(texts, batch_size=32, normalize_embeddings=True)
            line["torch_texts_per_s"] = round(len(texts) / (time.perf_counter() - t), 1)
            line["mean_cosine_numpy_vs_torch"] = round(float((a * b).sum(1).mean()), 6)
            line["min_cosine_numpy_vs_torch"] = round(float((a * b).sum(1).min()), 6)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
