"""Writes a BERT encoder as an ONNX graph in the form PyTorch exporters emit (shape
subgraphs for reshapes, Div by sqrt(d), erf GELU, LayerNormalization), from safetensors-style
weights. Used as the ONNX Runtime oracle for rlx's builder path and as input to rlx.onnx.load.
"""

from __future__ import annotations

from typing import Dict, List, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Writer:
    def __init__(self) -> None:
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def op(self, op_type: str, inputs: List[str], hint: str = "", **attrs: object) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"/{out}", **attrs))
        return out

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def dim_of(self, x: str, axis: int) -> str:
        """Exporter style: Shape -> Gather(axis) -> Unsqueeze, a 1-element int64 tensor."""
        shape = self.op("Shape", [x])
        d = self.op("Gather", [shape, self.const(np.array(axis, np.int64))], axis=0)
        return self.op("Unsqueeze", [d, self.const(np.array([0], np.int64))])


def bert_onnx(cfg: Mapping[str, int], weights: Mapping[str, np.ndarray], opset: int = 17) -> onnx.ModelProto:
    H, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    d, eps = H // heads, float(cfg.get("layer_norm_eps", 1e-12))
    w = _Writer()
    e = "embeddings."
    word = w.op("Gather", [w.init("word", weights[e + "word_embeddings.weight"]), "input_ids"], axis=0)
    seq = w.dim_of("input_ids", 1)
    pos = w.op("Slice", [w.init("pos", weights[e + "position_embeddings.weight"]), w.const(np.array([0], np.int64)), seq, w.const(np.array([0], np.int64))])
    tok = w.op("Gather", [w.init("tok", weights[e + "token_type_embeddings.weight"]), "token_type_ids"], axis=0)
    x = w.op("Add", [w.op("Add", [word, pos]), tok])
    x = w.op("LayerNormalization", [x, w.init("emb_ln_g", weights[e + "LayerNorm.weight"]), w.init("emb_ln_b", weights[e + "LayerNorm.bias"])], axis=-1, epsilon=eps)
    m = w.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    m = w.op("Mul", [w.op("Sub", [w.const(np.array(1.0, np.float32)), m]), w.const(np.array(-10000.0, np.float32))])
    bias = w.op("Unsqueeze", [m, w.const(np.array([1, 2], np.int64))])
    for i in range(cfg["num_hidden_layers"]):
        x = _layer(w, weights, f"encoder.layer.{i}.", x, bias, H, heads, d, eps)
    w.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="/out"))
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", H])
    graph = helper.make_graph(w.nodes, "bert", ints, [out], initializer=w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _layer(w: _Writer, weights: Mapping[str, np.ndarray], pre: str, x: str, bias: str, H: int, heads: int, d: int, eps: float) -> str:
    def lin(v: str, name: str) -> str:
        # torch.nn.Linear exports as MatMul with the transposed weight, then Add of the bias.
        wt = w.init(pre + name + ".weight_T", weights[pre + name + ".weight"].T)
        return w.op("Add", [w.op("MatMul", [v, wt]), w.init(pre + name + ".bias", weights[pre + name + ".bias"])])

    def split(v: str, perm: List[int]) -> str:
        shape = w.op("Concat", [w.dim_of(v, 0), w.dim_of(v, 1), w.const(np.array([heads], np.int64)), w.const(np.array([d], np.int64))], axis=0)
        return w.op("Transpose", [w.op("Reshape", [v, shape])], perm=perm)

    q = split(lin(x, "attention.self.query"), [0, 2, 1, 3])
    k = split(lin(x, "attention.self.key"), [0, 2, 3, 1])
    v = split(lin(x, "attention.self.value"), [0, 2, 1, 3])
    s = w.op("Div", [w.op("MatMul", [q, k]), w.const(np.array(np.sqrt(d), np.float32))])
    p = w.op("Softmax", [w.op("Add", [s, bias])], axis=-1)
    ctx = w.op("Transpose", [w.op("MatMul", [p, v])], perm=[0, 2, 1, 3])
    merged = w.op("Concat", [w.dim_of(x, 0), w.dim_of(x, 1), w.const(np.array([H], np.int64))], axis=0)
    ctx = w.op("Reshape", [ctx, merged])
    a = w.op("Add", [lin(ctx, "attention.output.dense"), x])
    ln = pre + "attention.output.LayerNorm."
    h1 = w.op("LayerNormalization", [a, w.init(ln + "weight", weights[ln + "weight"]), w.init(ln + "bias", weights[ln + "bias"])], axis=-1, epsilon=eps)
    f = lin(h1, "intermediate.dense")
    # Exporters spell GELU out with erf.
    erf = w.op("Erf", [w.op("Div", [f, w.const(np.array(np.sqrt(2.0), np.float32))])])
    f = w.op("Mul", [w.op("Mul", [f, w.op("Add", [erf, w.const(np.array(1.0, np.float32))])]), w.const(np.array(0.5, np.float32))])
    o = w.op("Add", [lin(f, "output.dense"), h1])
    ln = pre + "output.LayerNorm."
    return w.op("LayerNormalization", [o, w.init(ln + "weight", weights[ln + "weight"]), w.init(ln + "bias", weights[ln + "bias"])], axis=-1, epsilon=eps)


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' pooling, in numpy."""
    m = mask[..., None].astype(np.float32)
    mean = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
