"""Tiny Llama-family checkpoints and independent references for the decoder-LM tests.

- :func:`random_llama_dir` writes a random checkpoint the way Hugging Face stores one
  (``config.json`` + ``model.safetensors`` with ``model.layers.{i}...`` names, ``[out, in]``
  linear weights), for llama / qwen2 / mistral.
- :func:`numpy_llama_logits` and :func:`numpy_greedy`: the Hugging Face ``LlamaForCausalLM``
  forward in float64 numpy, reading the safetensors file with its own parser (nothing from rlx).
- :func:`write_onnx_decoder`: the same forward with a KV cache as an ONNX graph of standard
  opset-17 ops (the ``past_key_values.{i}.key`` / ``present.{i}.key`` convention of Optimum
  exports), as an ONNX Runtime oracle and as input to ``rlx.onnx.load``.

``python tests/llama_support.py`` checks ONNX Runtime against the numpy reference.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

# -- checkpoints -------------------------------------------------------------------------------


def write_safetensors(path: str, tensors: Dict[str, np.ndarray]) -> None:
    """The safetensors layout: u64 LE header length, JSON header, then the raw little-endian
    data of each tensor at its ``data_offsets`` (relative to the end of the header)."""
    header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)  # the format pads the header with spaces to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = memoryview(raw)[8 + n :]
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        assert spec["dtype"] == "F32", (name, spec["dtype"])
        a, b = spec["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(spec["shape"])
    return out


def random_llama_dir(
    tmp_path: PathLike,
    *,
    vocab: int = 128,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: Optional[int] = None,
    ffn: int = 64,
    head_dim: Optional[int] = None,
    tied: bool = False,
    qkv_bias: bool = False,
    model_type: str = "llama",
    rope_theta: float = 10000.0,
    eps: float = 1e-6,
    max_positions: int = 512,
    seed: int = 0,
) -> str:
    """Writes a random checkpoint into ``tmp_path`` (created if needed) and returns its path.

    ``kv_heads`` defaults to ``heads`` (MHA). ``head_dim`` is written to the config only when
    given (else it is ``hidden // heads``). Biases: qwen2 always has q/k/v biases (its config
    has no switch); for llama / mistral ``qkv_bias=True`` sets ``attention_bias``, which in
    Hugging Face's Llama also gives ``o_proj`` a bias, so one is written too.

    Scales: norm weights 1 +- 0.1, projections N(0, 1/fan_in) with o_proj and down_proj 1.5x
    that, embeddings N(0, 0.1^2). Small embeddings keep the residual stream from being mostly
    the current token's embedding, which with tied weights makes greedy decoding repeat that
    token forever; logits come out O(1) (std ~1 untied, ~0.5 tied).
    """
    kv_heads = heads if kv_heads is None else kv_heads
    hd = head_dim if head_dim is not None else hidden // heads
    if model_type == "qwen2":
        qkv_bias = True
    o_bias = qkv_bias and model_type != "qwen2"
    rng = np.random.default_rng(seed)

    def lin(out_f: int, in_f: int, gain: float = 1.0) -> np.ndarray:
        return rng.standard_normal((out_f, in_f)) * (gain / np.sqrt(in_f))

    def norm(n: int) -> np.ndarray:
        return 1.0 + 0.1 * rng.standard_normal(n)

    w: Dict[str, np.ndarray] = {"model.embed_tokens.weight": 0.1 * rng.standard_normal((vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(hidden)
        for name, out_f in (("q", heads * hd), ("k", kv_heads * hd), ("v", kv_heads * hd)):
            w[p + f"self_attn.{name}_proj.weight"] = lin(out_f, hidden)
            if qkv_bias:
                w[p + f"self_attn.{name}_proj.bias"] = 0.1 * rng.standard_normal(out_f)
        w[p + "self_attn.o_proj.weight"] = lin(hidden, heads * hd, 1.5)
        if o_bias:
            w[p + "self_attn.o_proj.bias"] = 0.1 * rng.standard_normal(hidden)
        w[p + "post_attention_layernorm.weight"] = norm(hidden)
        w[p + "mlp.gate_proj.weight"] = lin(ffn, hidden)
        w[p + "mlp.up_proj.weight"] = lin(ffn, hidden)
        w[p + "mlp.down_proj.weight"] = lin(hidden, ffn, 1.5)
    w["model.norm.weight"] = norm(hidden)
    if not tied:
        w["lm_head.weight"] = lin(vocab, hidden)

    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}[model_type]
    config: Dict[str, object] = {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": max_positions,
        "rms_norm_eps": eps,
        "rope_theta": rope_theta,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if head_dim is not None:
        config["head_dim"] = head_dim
    if model_type != "qwen2":
        config["attention_bias"] = qkv_bias
    if model_type == "mistral":
        config["sliding_window"] = None  # no window: attention is plain causal, as for llama

    d = os.fspath(tmp_path)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    write_safetensors(os.path.join(d, "model.safetensors"), w)
    return d


# -- the numpy reference -----------------------------------------------------------------------


class _Model:
    """Config fields (with Hugging Face's defaults) and the weights, as float64."""

    def __init__(self, model_dir: PathLike) -> None:
        d = os.fspath(model_dir)
        with open(os.path.join(d, "config.json"), encoding="utf-8") as f:
            c = json.load(f)
        self.vocab = c["vocab_size"]
        self.hidden = c["hidden_size"]
        self.layers = c["num_hidden_layers"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads") or self.heads
        self.hd = c.get("head_dim") or self.hidden // self.heads
        self.eps = float(c.get("rms_norm_eps", 1e-6))
        self.theta = float(c.get("rope_theta", 10000.0))
        self.max_positions = int(c.get("max_position_embeddings", 2048))
        self.w = {k: v.astype(np.float64) for k, v in read_safetensors(os.path.join(d, "model.safetensors")).items()}
        tied = c.get("tie_word_embeddings", False)
        self.lm_head = self.w["model.embed_tokens.weight"] if tied else self.w["lm_head.weight"]

    def linear(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y if b is None else y + b

    def rms_norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * self.w[name]

    def rope_tables(self, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """cos and sin of ``positions`` (any shape) -> shape + [hd], frequencies repeated twice
        (Hugging Face's ``cat((freqs, freqs), -1)`` layout)."""
        inv_freq = self.theta ** (-np.arange(0, self.hd, 2, dtype=np.float64) / self.hd)
        ang = np.asarray(positions, np.float64)[..., None] * inv_freq
        ang = np.concatenate([ang, ang], -1)
        return np.cos(ang), np.sin(ang)


def _rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], -1)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _forward(m: _Model, ids: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    b, s = ids.shape
    if ids.min() < 0 or ids.max() >= m.vocab:
        raise ValueError(f"token ids must be in [0, {m.vocab})")
    x = m.w["model.embed_tokens.weight"][ids]  # [b, s, H]
    cos, sin = m.rope_tables(np.arange(s))  # [s, hd], the same positions for every row
    allowed = np.tril(np.ones((s, s), bool))[None, None]  # [1, 1, q, k]
    if mask is not None:
        allowed = allowed & (np.asarray(mask) != 0)[:, None, None, :]
    rep = m.heads // m.kv_heads
    for i in range(m.layers):
        p = f"model.layers.{i}."
        h = m.rms_norm(x, p + "input_layernorm.weight")

        def heads(name: str, n: int) -> np.ndarray:
            return m.linear(h, p + f"self_attn.{name}_proj").reshape(b, s, n, m.hd).transpose(0, 2, 1, 3)

        q, k, v = heads("q", m.heads), heads("k", m.kv_heads), heads("v", m.kv_heads)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        # repeat_kv: query head j reads kv head j // rep.
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(m.hd)
        scores = np.where(allowed, scores, -np.inf)
        # A padded query row of a right-padded batch still sees its row's valid keys; a row
        # with no valid key at all (an all-zero mask) gets uniform weights instead of NaN.
        scores = np.where(np.isneginf(scores).all(-1, keepdims=True), 0.0, scores)
        ctx = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, s, m.heads * m.hd)
        x = x + m.linear(ctx, p + "self_attn.o_proj")
        h = m.rms_norm(x, p + "post_attention_layernorm.weight")
        g = m.linear(h, p + "mlp.gate_proj")
        act = g / (1.0 + np.exp(-g)) * m.linear(h, p + "mlp.up_proj")  # silu(gate) * up
        x = x + m.linear(act, p + "mlp.down_proj")
    x = m.rms_norm(x, "model.norm.weight")
    return x @ m.lm_head.T


def numpy_llama_logits(model_dir: PathLike, input_ids, attention_mask=None) -> np.ndarray:
    """Hugging Face Llama logits ``[b, s, vocab]`` (float32, computed in float64) for
    ``input_ids`` ``[b, s]``. ``attention_mask`` (1 = token, 0 = padding) masks padded keys;
    positions are 0..s-1 in every row, so right padding leaves the valid tokens' logits
    exactly those of the unpadded row."""
    ids = np.asarray(input_ids, np.int64)
    if ids.ndim == 1:
        ids = ids[None]
    return _forward(_Model(model_dir), ids, attention_mask).astype(np.float32)


def numpy_greedy(model_dir: PathLike, prompt_ids: Sequence[int], max_new_tokens: int, *, with_margin: bool = False):
    """Greedy continuation of one prompt (a list of ids): the ``max_new_tokens`` generated ids,
    each from a full forward over everything so far. With ``with_margin``, also the smallest
    top-1 minus top-2 logit gap seen (how far the choices are from a float32 tie)."""
    m = _Model(model_dir)
    seq = [int(t) for t in prompt_ids]
    out: List[int] = []
    margin = np.inf
    for _ in range(max_new_tokens):
        last = _forward(m, np.array([seq], np.int64), None)[0, -1]
        top2 = np.sort(last)[-2:]
        margin = min(margin, float(top2[1] - top2[0]))
        tok = int(np.argmax(last))
        out.append(tok)
        seq.append(tok)
    return (out, margin) if with_margin else out


# -- the ONNX decoder --------------------------------------------------------------------------

#: Every op type :func:`write_onnx_decoder` emits (GQA models only add Concat uses).
ONNX_DECODER_OPS = (
    "Add", "Concat", "Div", "Gather", "LessOrEqual", "MatMul", "Mul", "Neg", "Range", "ReduceMean",
    "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Sqrt", "Transpose", "Unsqueeze", "Where",
)


class _OnnxWriter:
    """Collects nodes and initializers; every value gets a fresh name."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def op(self, op_type: str, inputs: Sequence[str], hint: str = "", *, outputs: Optional[Sequence[str]] = None, **attrs) -> str:
        from onnx import helper

        self.n += 1
        outs = list(outputs) if outputs else [f"{hint or op_type.lower()}_{self.n}"]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=f"/{op_type}_{self.n}", **attrs))
        return outs[0]

    def init(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def const(self, value, dtype=np.int64, hint: str = "c") -> str:
        self.n += 1
        return self.init(f"{hint}_{self.n}", np.asarray(value, dtype))


def write_onnx_decoder(model_dir: PathLike, path: PathLike) -> str:
    """Writes the checkpoint in ``model_dir`` as an ONNX decoder with a KV cache and returns
    ``path``.

    Inputs: ``input_ids`` and ``position_ids`` int64 ``[batch, seq]``, and per layer
    ``past_key_values.{i}.key`` / ``.value`` float32 ``[batch, kv_heads, past, head_dim]``
    (``past`` may be 0). Outputs: ``logits`` ``[batch, seq, vocab]`` and ``present.{i}.key`` /
    ``.value`` ``[batch, kv_heads, past + seq, head_dim]`` (past and new keys concatenated on
    axis 2; keys are stored after rotary). Opset 17, the ops in :data:`ONNX_DECODER_OPS`.

    The past occupies positions 0..past-1 and the new tokens sit at ``position_ids``; query
    ``i`` sees past key ``j`` when ``j <= position_ids[i]`` and new key ``j`` when
    ``position_ids[j] <= position_ids[i]``. The mask is built as those two comparisons
    concatenated, rather than one comparison against ``Range(0, past + seq)``, because
    rlx.onnx.load folds a run-time ``Range`` only up to a single symbol.
    """
    import onnx
    from onnx import TensorProto, helper

    m = _Model(model_dir)
    H, hd, nh, nkv = m.hidden, m.hd, m.heads, m.kv_heads
    rep = nh // nkv
    w = _OnnxWriter()
    f32 = lambda v: np.asarray(v, np.float32)  # noqa: E731

    def linear(x: str, name: str) -> str:
        # [in, out] copies of the [out, in] weights: x @ W^T as one MatMul, then the bias.
        y = w.op("MatMul", [x, w.init(name + ".weight.T", f32(m.w[name + ".weight"].T))])
        if name + ".bias" in m.w:
            y = w.op("Add", [y, w.init(name + ".bias", f32(m.w[name + ".bias"]))])
        return y

    eps = w.const(m.eps, np.float32, "eps")

    def rms_norm(x: str, name: str) -> str:
        # (ReduceMean takes its axes as an attribute up to opset 17.)
        ms = w.op("ReduceMean", [w.op("Mul", [x, x])], axes=[-1], keepdims=1)
        y = w.op("Div", [x, w.op("Sqrt", [w.op("Add", [ms, eps])])])
        return w.op("Mul", [y, w.init(name, f32(m.w[name]))])

    # Rotary tables gathered by position: [b, 1, s, hd], broadcast over heads.
    cos_t, sin_t = m.rope_tables(np.arange(m.max_positions))
    axis1 = w.const([1], hint="axes")
    cos = w.op("Unsqueeze", [w.op("Gather", [w.init("rope.cos", f32(cos_t)), "position_ids"], axis=0), axis1])
    sin = w.op("Unsqueeze", [w.op("Gather", [w.init("rope.sin", f32(sin_t)), "position_ids"], axis=0), axis1])
    half_lo = [w.const([0]), w.const([hd // 2]), w.const([3])]
    half_hi = [w.const([hd // 2]), w.const([hd]), w.const([3])]

    def rope(x: str) -> str:
        x1 = w.op("Slice", [x, *half_lo])
        x2 = w.op("Slice", [x, *half_hi])
        rot = w.op("Concat", [w.op("Neg", [x2]), x1], axis=3)  # rotate_half
        return w.op("Add", [w.op("Mul", [x, cos]), w.op("Mul", [rot, sin])])

    # The attention mask [b, 1, s, past + s] (bool: True = may attend).
    q_pos = w.op("Unsqueeze", ["position_ids", w.const([1, 3])])  # [b, 1, s, 1]
    past_len = w.op("Gather", [w.op("Shape", ["past_key_values.0.key"]), w.const(2)], axis=0)  # scalar
    past_pos = w.op("Range", [w.const(0), past_len, w.const(1)])  # [past]
    past_pos = w.op("Unsqueeze", [past_pos, w.const([0, 1, 2])])  # [1, 1, 1, past]
    new_pos = w.op("Unsqueeze", ["position_ids", w.const([1, 2])])  # [b, 1, 1, s]
    mask = w.op("Concat", [w.op("LessOrEqual", [past_pos, q_pos]), w.op("LessOrEqual", [new_pos, q_pos])], axis=3)
    neg = w.const(np.finfo(np.float32).min, np.float32, "neg")
    scale = w.const(1.0 / np.sqrt(hd), np.float32, "scale")

    split_q, split_kv = w.const([0, 0, nh, hd]), w.const([0, 0, nkv, hd])
    merge = w.const([0, 0, nh * hd])
    if rep > 1:
        axis2, grouped = w.const([2], hint="axes"), w.const([0, nh, -1, hd])

    def heads(x: str, split: str) -> str:  # [b, s, n*hd] -> [b, n, s, hd]
        return w.op("Transpose", [w.op("Reshape", [x, split])], perm=[0, 2, 1, 3])

    def repeat_kv(x: str) -> str:  # [b, kvh, t, hd] -> [b, kvh*rep, t, hd], head j <- kv head j // rep
        if rep == 1:
            return x
        x5 = w.op("Unsqueeze", [x, axis2])  # [b, kvh, 1, t, hd]
        return w.op("Reshape", [w.op("Concat", [x5] * rep, axis=2), grouped])

    x = w.op("Gather", [w.init("model.embed_tokens.weight", f32(m.w["model.embed_tokens.weight"])), "input_ids"], axis=0)
    past_inputs, present_outputs = [], []
    for i in range(m.layers):
        p = f"model.layers.{i}."
        h = rms_norm(x, p + "input_layernorm.weight")
        q = rope(heads(linear(h, p + "self_attn.q_proj"), split_q))
        k = rope(heads(linear(h, p + "self_attn.k_proj"), split_kv))
        v = heads(linear(h, p + "self_attn.v_proj"), split_kv)
        names = [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outs = [f"present.{i}.key", f"present.{i}.value"]
        past_inputs += names
        present_outputs += outs
        k_all = w.op("Concat", [names[0], k], axis=2, outputs=[outs[0]])
        v_all = w.op("Concat", [names[1], v], axis=2, outputs=[outs[1]])
        scores = w.op("Mul", [w.op("MatMul", [q, w.op("Transpose", [repeat_kv(k_all)], perm=[0, 1, 3, 2])]), scale])
        probs = w.op("Softmax", [w.op("Where", [mask, scores, neg])], axis=-1)
        ctx = w.op("Reshape", [w.op("Transpose", [w.op("MatMul", [probs, repeat_kv(v_all)])], perm=[0, 2, 1, 3]), merge])
        x = w.op("Add", [x, linear(ctx, p + "self_attn.o_proj")])
        h = rms_norm(x, p + "post_attention_layernorm.weight")
        gate = linear(h, p + "mlp.gate_proj")
        act = w.op("Mul", [w.op("Mul", [gate, w.op("Sigmoid", [gate])]), linear(h, p + "mlp.up_proj")])
        x = w.op("Add", [x, linear(act, p + "mlp.down_proj")])
    x = rms_norm(x, "model.norm.weight")
    w.op("MatMul", [x, w.init("lm_head.weight.T", f32(m.lm_head.T))], outputs=["logits"])

    kv_shape = ["batch", nkv, "past", hd]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "position_ids")]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_shape) for n in past_inputs]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", m.vocab])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", nkv, "past + seq", hd]) for n in present_outputs]
    graph = helper.make_graph(w.nodes, "llama_decoder", inputs, outputs, initializer=w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="rlx-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.fspath(path))
    return os.fspath(path)


def empty_past(model_dir: PathLike, batch: int) -> Dict[str, np.ndarray]:
    """Zero-length ``past_key_values.*`` feeds for a first call of the ONNX decoder."""
    m = _Model(model_dir)
    z = np.zeros((batch, m.kv_heads, 0, m.hd), np.float32)
    return {f"past_key_values.{i}.{kind}": z for i in range(m.layers) for kind in ("key", "value")}


def presents_as_past(outputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``present.{i}.key`` outputs renamed as the next call's ``past_key_values.{i}.key``."""
    return {"past_key_values." + k[len("present."):]: v for k, v in outputs.items() if k.startswith("present.")}


def ort_decoder(path: PathLike):
    """An ONNX Runtime session over ``path`` and a ``run(feeds) -> {name: array}`` for it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(names, feeds)))


# -- self-check: ONNX Runtime against the numpy reference --------------------------------------


def _self_check(tmp: str) -> None:
    configs = {
        "mha": dict(heads=4, kv_heads=4),
        "gqa_tied": dict(heads=4, kv_heads=2, tied=True),
        "mqa": dict(heads=4, kv_heads=1, vocab=200),
        "qwen2": dict(model_type="qwen2", heads=4, kv_heads=2, tied=True),
        "llama_bias_theta": dict(qkv_bias=True, rope_theta=500000.0, eps=1e-5, hidden=48, heads=6, kv_heads=3),
        "head_dim": dict(hidden=32, heads=4, kv_heads=2, head_dim=16),
        "mistral": dict(model_type="mistral", hidden=64, heads=8, kv_heads=2, ffn=96),
    }
    rng = np.random.default_rng(0)
    for name, kw in configs.items():
        d = random_llama_dir(os.path.join(tmp, name), seed=len(name), **kw)
        m = _Model(d)
        b, n, extra = 2, 7, 3
        ids = rng.integers(0, m.vocab, size=(b, n + extra), dtype=np.int64)
        want = numpy_llama_logits(d, ids)
        run = ort_decoder(write_onnx_decoder(d, os.path.join(d, "decoder.onnx")))
        pos = np.broadcast_to(np.arange(n + extra, dtype=np.int64), (b, n + extra))
        out = run({"input_ids": ids[:, :n], "position_ids": np.ascontiguousarray(pos[:, :n]), **empty_past(d, b)})
        errs = [np.abs(out["logits"] - want[:, :n]).max()]
        assert out["present.0.key"].shape == (b, m.kv_heads, n, m.hd)
        for j in range(n, n + extra):  # one token at a time on the returned presents
            out = run({"input_ids": ids[:, j : j + 1], "position_ids": np.ascontiguousarray(pos[:, j : j + 1]), **presents_as_past(out)})
            errs.append(np.abs(out["logits"][:, 0] - want[:, j]).max())
        assert out["present.1.value"].shape == (b, m.kv_heads, n + extra, m.hd)
        # A right-padded row: its valid positions equal the unpadded row's.
        mask = np.ones_like(ids)
        mask[1, 5:] = 0
        padded = numpy_llama_logits(d, ids, mask)
        alone = numpy_llama_logits(d, ids[1:, :5])
        errs.append(np.abs(padded[1, :5] - alone[0]).max())
        greedy, margin = numpy_greedy(d, [3, 1, 4, 1, 5], 12, with_margin=True)
        print(f"{name:18s} max |ORT - numpy| {max(errs):.2e}  |logits| <= {np.abs(want).max():.2f}  "
              f"greedy {greedy} (margin {margin:.3f}, {len(set(greedy))} distinct)")
        assert max(errs) < 1e-4, (name, errs)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _self_check(tmp)
    print("ok")
