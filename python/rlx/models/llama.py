"""Llama-family decoders (Llama, Qwen2, Mistral) from a Hugging Face ``config.json`` +
``model.safetensors``, with a KV cache.

One graph serves every phase. Its symbols are ``batch``, ``seq`` (new tokens per row),
``ctx`` (the cache's capacity) and ``rows`` (positions whose logits are returned). Each
layer's keys and values go into caches (``past.{i}.key`` / ``.value``,
``[batch, kv_heads, ctx, head_dim]``), which the session holds and every run updates in place
(``cache_write``). How far each row has got (its past length) is an int64 input ``pos``,
read at run time: rotary positions, the cache write and the causal attention all start
there, and attention reads only the valid prefix of the cache. So a decode step is the same
compiled variant whatever the past length. One session compiles one decode variant
(``seq = 1``) and a prefill variant per power-of-two prompt bucket.

Rows of different prompt lengths are right-padded. A padded position writes keys past its
row's end, and the row's next real token overwrites them before any query can see them.
Linear weights keep their stored ``[out, in]`` layout and are read transposed in place, so
every weight binds without a copy (tied embeddings: the head reads the embedding table).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

import rlx
from rlx import safetensors
from rlx.models._config import load_json
from rlx.models.sampling import pick_tokens

__all__ = ["LlamaConfig", "build_graph", "CausalLM", "Session"]

_TYPES = ("llama", "qwen2", "mistral")
# Integer fields -> least valid value (all must also stay below 2**31).
_INTS = {"vocab_size": 1, "hidden_size": 2, "intermediate_size": 1, "num_hidden_layers": 1,
         "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 2, "max_position_embeddings": 1}
MAX_BATCH = 256
MAX_CONTEXT = 1 << 17


def _bad(msg: str) -> rlx.ModelFormatError:
    return rlx.ModelFormatError(f"Llama config: {msg}")


@dataclass(frozen=True)
class LlamaConfig:
    """The fields of a Hugging Face Llama / Qwen2 / Mistral ``config.json`` that shape the
    forward pass (their Hugging Face names and defaults)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    model_type: str = "llama"
    max_position_embeddings: int = 4096

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LlamaConfig":
        if not isinstance(d, Mapping):
            raise _bad(f"must be a JSON object, got {type(d).__name__}")
        kind = d.get("model_type", "llama")
        if kind not in _TYPES:
            raise rlx.UnsupportedOpError(f"model_type {kind!r} is not a Llama-family decoder ({', '.join(_TYPES)})")
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if k not in d]
        if missing:
            raise _bad(f"lacks {missing}")
        heads = d["num_attention_heads"]
        v = dict(d)
        v.setdefault("num_key_value_heads", heads)
        if isinstance(d["hidden_size"], int) and isinstance(heads, int) and heads > 0 and "head_dim" not in d:
            if d["hidden_size"] % heads:
                raise _bad(f"hidden_size {d['hidden_size']} is not a multiple of {heads} heads")
            v["head_dim"] = d["hidden_size"] // heads
        for k, lo in _INTS.items():
            x = v.get(k, lo)
            if not (isinstance(x, int) and not isinstance(x, bool) and lo <= x < 2**31):
                raise _bad(f"{k} = {x!r}: must be an int in [{lo}, 2**31)")
        for k, lo in (("rms_norm_eps", 0.0), ("rope_theta", 1.0)):
            x = v.get(k, cls.__dataclass_fields__[k].default)
            if not (isinstance(x, (int, float)) and not isinstance(x, bool) and lo <= x < float("inf")):
                raise _bad(f"{k} = {x!r}: must be a finite number >= {lo}")
            v[k] = float(x)
        if v["rope_theta"] <= 1.0:
            raise _bad(f"rope_theta = {v['rope_theta']}: must be > 1")
        for k in ("tie_word_embeddings", "attention_bias"):
            if not isinstance(v.get(k, False), bool):
                raise _bad(f"{k} = {v[k]!r}: must be true or false")
        if v["head_dim"] % 2:
            raise _bad(f"head_dim {v['head_dim']} must be even (rotary embedding rotates halves)")
        if heads % v["num_key_value_heads"]:
            raise _bad(f"{v['num_key_value_heads']} kv heads do not divide {heads} attention heads")
        if v.get("rope_scaling"):
            raise rlx.UnsupportedOpError(f"rope_scaling {v['rope_scaling']!r} is not supported")
        names = {f.name for f in fields(cls)}
        return cls(**{k: x for k, x in v.items() if k in names})

    @classmethod
    def from_file(cls, path: str) -> "LlamaConfig":
        raw = load_json(path, "Llama config")
        try:
            return cls.from_dict(raw)
        except rlx.RlxError as e:
            raise type(e)(f"{path}: {e}") from None

    @property
    def biases(self) -> Dict[str, bool]:
        """Which projections carry a bias: Qwen2 has q/k/v biases, Llama's ``attention_bias``
        adds them to q/k/v/o."""
        qkv = self.model_type == "qwen2" or self.attention_bias
        return {"q_proj": qkv, "k_proj": qkv, "v_proj": qkv, "o_proj": self.attention_bias and self.model_type == "llama"}

    def param_shapes(self) -> Dict[str, tuple]:
        """Every weight the graph reads, by its Hugging Face name."""
        H, hd, ffn = self.hidden_size, self.head_dim, self.intermediate_size
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        out = {"model.embed_tokens.weight": (self.vocab_size, H), "model.norm.weight": (H,)}
        if not self.tie_word_embeddings:
            out["lm_head.weight"] = (self.vocab_size, H)
        proj = {"q_proj": (q, H), "k_proj": (kv, H), "v_proj": (kv, H), "o_proj": (H, q)}
        for i in range(self.num_hidden_layers):
            p = f"model.layers.{i}."
            out[p + "input_layernorm.weight"] = (H,)
            out[p + "post_attention_layernorm.weight"] = (H,)
            for name, shape in proj.items():
                out[p + f"self_attn.{name}.weight"] = shape
                if self.biases[name]:
                    out[p + f"self_attn.{name}.bias"] = (shape[0],)
            out[p + "mlp.gate_proj.weight"] = (ffn, H)
            out[p + "mlp.up_proj.weight"] = (ffn, H)
            out[p + "mlp.down_proj.weight"] = (H, ffn)
        return out


def cache_names(cfg: LlamaConfig) -> List[str]:
    return [f"past.{i}.{kv}" for i in range(cfg.num_hidden_layers) for kv in ("key", "value")]


def build_graph(cfg: LlamaConfig) -> rlx.Graph:
    """The decoder with KV caches. Inputs: ``input_ids`` int64 ``[batch, seq]``, ``pos`` int64
    ``[batch]`` (each row's past length), ``select`` int64 ``[rows]`` (flat indices into
    ``batch * seq`` of the positions to return). Output: ``logits`` ``[rows, vocab]``."""
    H, hd = cfg.hidden_size, cfg.head_dim
    heads, kvh = cfg.num_attention_heads, cfg.num_key_value_heads
    shapes = cfg.param_shapes()
    g = rlx.Graph(cfg.model_type, dims={"batch": (1, MAX_BATCH), "seq": (1, MAX_CONTEXT), "ctx": (1, MAX_CONTEXT),
                                         "rows": (1, MAX_BATCH * MAX_CONTEXT)})
    ids = g.input("input_ids", ("batch", "seq"), "int64")
    pos = g.input("pos", ("batch",), "int64")
    select = g.input("select", ("rows",), "int64")

    def p(name: str) -> rlx.Value:
        return g.param(name, shapes[name])

    def proj(x: rlx.Value, name: str) -> rlx.Value:
        bias = p(name + ".bias") if name + ".bias" in shapes else None
        return g.linear(x, p(name + ".weight"), bias, transpose_w=True)

    def heads_of(x: rlx.Value, n: int) -> rlx.Value:  # [b, s, n*hd] -> [b, n, s, hd]
        return g.transpose(g.reshape(x, ("batch", "seq", n, hd)), [0, 2, 1, 3])

    embed = p("model.embed_tokens.weight")
    h = g.gather(embed, ids, 0)
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        x = g.rms_norm(h, p(pre + "input_layernorm.weight"), cfg.rms_norm_eps)
        q = g.rotary(heads_of(proj(x, pre + "self_attn.q_proj"), heads), pos, cfg.rope_theta)
        k = g.rotary(heads_of(proj(x, pre + "self_attn.k_proj"), kvh), pos, cfg.rope_theta)
        v = heads_of(proj(x, pre + "self_attn.v_proj"), kvh)
        cache = ("batch", kvh, "ctx", hd)
        kc = g.cache_write(g.state(f"past.{i}.key", cache), k, pos)
        vc = g.cache_write(g.state(f"past.{i}.value", cache), v, pos)
        o = g.kv_attention(q, kc, vc, pos)
        o = g.reshape(g.transpose(o, [0, 2, 1, 3]), ("batch", "seq", heads * hd))
        h = g.add(h, proj(o, pre + "self_attn.o_proj"))
        x = g.rms_norm(h, p(pre + "post_attention_layernorm.weight"), cfg.rms_norm_eps)
        gate = g.silu(proj(x, pre + "mlp.gate_proj"))
        h = g.add(h, proj(g.mul(gate, proj(x, pre + "mlp.up_proj")), pre + "mlp.down_proj"))
    h = g.rms_norm(h, p("model.norm.weight"), cfg.rms_norm_eps)
    last = g.gather(g.reshape(h, ("batch*seq", H)), select, 0)
    head = embed if cfg.tie_word_embeddings else p("lm_head.weight")
    g.output("logits", g.linear(last, head, transpose_w=True))
    return g


def _pow2_bucket(n: int, lo: int = 16) -> int:
    return max(lo, 1 << (max(n, 1) - 1).bit_length())


class CausalLM:
    """A Llama-family decoder compiled by rlx. Weights are memory-mapped from
    ``model.safetensors`` and bound without a copy. ``precision="bf16"`` runs the linears on
    bf16 weights (half the bytes read per token) with f32 accumulation."""

    def __init__(self, model_dir: Union[str, "os.PathLike[str]"], *, capacity: int = 16,
                 aot_dir: Optional[Union[str, "os.PathLike[str]"]] = None, prepack: bool = True,
                 precision: str = "f32"):
        if not isinstance(model_dir, (str, os.PathLike)) or not os.path.isdir(model_dir):
            raise rlx.ModelFormatError(f"model dir {model_dir!r}: no such directory")
        self.model_dir = os.fspath(model_dir)
        self.config = LlamaConfig.from_file(os.path.join(self.model_dir, "config.json"))
        path = os.path.join(self.model_dir, "model.safetensors")
        if not os.path.isfile(path):
            raise rlx.ModelFormatError(f"model dir {self.model_dir!r} has no model.safetensors")
        self.weights = safetensors.load(path)
        self._check_weights()
        self.pipeline = rlx.ModelCompilePipeline(build_graph(self.config), capacity=capacity, prepack=prepack,
                                                 aot_dir=aot_dir, precision=precision)
        self.pipeline.build_template()
        self.pipeline.bind_params({n: self.weights[n] for n in self.config.param_shapes()})
        self._tokenizer: Any = None

    def _check_weights(self) -> None:
        for name, shape in self.config.param_shapes().items():
            if name not in self.weights:
                raise rlx.ModelFormatError(f"{self.model_dir}: model.safetensors has no tensor {name!r}")
            got = self.weights[name]
            if tuple(got.shape) != shape or got.dtype != np.float32:
                raise rlx.ModelFormatError(
                    f"{self.model_dir}: tensor {name!r} is {got.dtype}{list(got.shape)}, the config needs float32{list(shape)}")

    @property
    def stats(self) -> Dict[str, Any]:
        """The pipeline's statistics; ``variants_compiled`` counts specializations so far."""
        s = dict(self.pipeline.stats)
        s["variants_compiled"] = s["specializations"]
        return s

    def check_ids(self, ids: Any, ndim: int, what: str) -> np.ndarray:
        """Token ids as a C-contiguous int64 array of ``ndim`` dims, each in ``[0, vocab)``."""
        try:
            a = np.ascontiguousarray(ids, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as e:
            raise rlx.DTypeError(f"{what}: not integer token ids: {e}") from None
        if a.ndim != ndim or a.size == 0:
            raise rlx.ShapeError(f"{what}: expected a non-empty {ndim}-D array of token ids, got shape {a.shape}")
        bad = (a < 0) | (a >= self.config.vocab_size)
        if bad.any():
            raise rlx.BindingError(f"{what}: token id {int(a[bad][0])} is outside the vocabulary [0, {self.config.vocab_size})")
        return a

    def logits(self, input_ids: Any, attention_mask: Any = None) -> np.ndarray:
        """Logits of every position, ``[batch, seq, vocab]`` float32 (a full forward from an
        empty cache). ``attention_mask`` (1 = token, 0 = padding) may only pad on the right;
        padded positions get logits too, which mean nothing."""
        ids = self.check_ids(input_ids, 2, "input_ids")
        b, s = ids.shape
        if attention_mask is not None:
            m = np.asarray(attention_mask)
            if m.shape != ids.shape or not np.isin(m, (0, 1)).all():
                raise rlx.ShapeError(f"attention_mask must be 0/1 of shape {ids.shape}, got {m.dtype}{m.shape}")
            if (np.diff(m, axis=1) > 0).any():
                raise rlx.ShapeError("attention_mask pads on the left: CausalLM takes right padding only")
        sess = self.session(batch=b, max_context=s)
        out = sess.run(ids, np.arange(b * s, dtype=np.int64))
        return out.reshape(b, s, self.config.vocab_size)

    def session(self, batch: int = 1, max_context: int = 2048) -> "Session":
        """A KV cache of ``max_context`` positions for ``batch`` rows."""
        return Session(self, batch, max_context)

    def generate(self, input_ids: Any, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: Optional[int] = None, eos_token_id: Optional[int] = None,
                 callback: Optional[Callable[[int, int], None]] = None) -> Union[List[int], List[List[int]]]:
        """New tokens after each prompt: greedy, or sampled (``temperature``, then ``top_k``,
        then ``top_p``) from a generator seeded by ``seed``. ``input_ids`` is one prompt (a
        list of ints) or several (a list of lists, any lengths). A row stops after
        ``eos_token_id`` (kept, as Hugging Face does). ``callback(row, token)`` sees each
        token as it is made."""
        single = len(input_ids) > 0 and np.ndim(input_ids[0]) == 0
        prompts = [list(input_ids)] if single else [list(p) for p in input_ids]
        if not prompts or any(not p for p in prompts):
            raise rlx.ShapeError("generate: every prompt needs at least one token")
        if not (isinstance(max_new_tokens, int) and max_new_tokens >= 0):
            raise rlx.ShapeError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        lengths = [len(p) for p in prompts]
        padded = np.zeros((len(prompts), max(lengths)), np.int64)
        for r, p in enumerate(prompts):
            padded[r, : len(p)] = self.check_ids(p, 1, f"prompt {r}")
        # The context rounds up to a power of two, so similar requests share compiled variants.
        sess = self.session(batch=len(prompts), max_context=_pow2_bucket(max(lengths) + max_new_tokens, 64))
        rng = np.random.default_rng(seed)
        out: List[List[int]] = [[] for _ in prompts]
        done = np.zeros(len(prompts), bool)
        logits = sess.prefill(padded, lengths=lengths) if max_new_tokens else None
        for step in range(max_new_tokens):
            assert logits is not None
            toks = pick_tokens(logits, do_sample, temperature, top_k, top_p, rng)
            for r, t in enumerate(toks):
                if done[r]:
                    continue
                out[r].append(int(t))
                if callback is not None:
                    callback(r, int(t))
                done[r] = eos_token_id is not None and t == eos_token_id
            if done.all() or step + 1 == max_new_tokens:
                break
            logits = sess.decode(toks)
        return out[0] if single else out


class Session:
    """KV caches of ``batch`` rows and ``max_context`` positions, and each row's past length.
    ``prefill`` appends prompts (right-padded, with per-row ``lengths``) and returns each row's
    last logits; ``decode`` appends one token per row. Not for use from two threads at once."""

    def __init__(self, lm: CausalLM, batch: int, max_context: int):
        for name, v, hi in (("batch", batch, MAX_BATCH), ("max_context", max_context, MAX_CONTEXT)):
            if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= hi):
                raise rlx.ShapeError(f"session {name} must be an int in [1, {hi}], got {v!r}")
        self.lm, self.batch, self.max_context = lm, batch, max_context
        cfg = lm.config
        shape = (batch, cfg.num_key_value_heads, max_context, cfg.head_dim)
        self.caches = {n: np.zeros(shape, np.float32) for n in cache_names(cfg)}
        self.past = np.zeros(batch, np.int64)

    @property
    def kv_cache_bytes(self) -> int:
        return sum(c.nbytes for c in self.caches.values())

    def run(self, ids: np.ndarray, select: np.ndarray) -> np.ndarray:
        """One step: ``ids`` ``[batch, seq]`` go in at each row's past; returns the logits of
        the flat positions ``select``. Does not advance ``past``."""
        b, s = ids.shape
        if b != self.batch:
            raise rlx.ShapeError(f"this session holds {self.batch} rows, got {b}")
        free = self.max_context - int(self.past.max())
        if s > free:
            raise rlx.ShapeError(
                f"{s} new positions do not fit: a row is at {int(self.past.max())} of max_context {self.max_context}")
        exe = self.lm.pipeline.get_or_compile(batch=b, seq=s, ctx=self.max_context, rows=len(select))
        inputs = {"input_ids": ids, "pos": self.past, "select": select}
        return exe.run_stateful(inputs, self.caches)["logits"]

    def prefill(self, input_ids: Any, lengths: Optional[Sequence[int]] = None) -> np.ndarray:
        """Appends prompts ``[batch, n]`` (right-padded; ``lengths`` per row, default all
        ``n``); returns the logits at each row's last token, ``[batch, vocab]``."""
        ids = self.lm.check_ids(input_ids, 2, "input_ids")
        b, n = ids.shape
        lens = np.full(b, n, np.int64) if lengths is None else np.asarray(lengths, np.int64)
        if lens.shape != (b,) or (lens < 1).any() or (lens > n).any():
            raise rlx.ShapeError(f"lengths must give 1..{n} for each of {b} rows, got {lengths!r}")
        # Pad to a power-of-two bucket that still fits the cache (one variant per bucket).
        s = min(_pow2_bucket(n), max(n, self.max_context - int(self.past.max())))
        if s > n:
            ids = np.pad(ids, ((0, 0), (0, s - n)))
        logits = self.run(ids, np.arange(b, dtype=np.int64) * s + lens - 1)
        self.past += lens
        return logits

    def decode(self, next_ids: Any) -> np.ndarray:
        """Appends one token per row (``[batch]``); returns the next logits ``[batch, vocab]``."""
        ids = self.lm.check_ids(np.reshape(np.asarray(next_ids), -1), 1, "next_ids")
        logits = self.run(ids.reshape(-1, 1), np.arange(len(ids), dtype=np.int64))
        self.past += 1
        return logits
