"""ONNX Attention (opsets 23-25) as rlx graph ops.

The plain cases (no mask, no softcap, no qk_matmul_output, no window, and a causal mask that
rlx's bottom-right one matches) become one fused ``attention``. The rest is composed: scores =
(Q @ K^T) * scale, optional softcap, plus an additive bias (the mask, the causal and window
frontiers and the ``nonpad_kv_seqlen`` padding, each 0 where a key is allowed and -inf where
not), softmax, a zero row where the bias allows no key, then @ V. Frontiers with a fixed offset
are numpy constants made at import; those that depend on ``nonpad_kv_seqlen`` are compares
at run time. Grouped-query heads are handled by reshapes (query heads of one kv head share
its matmul), never by copying K and V.

Semantics follow the ONNX spec and its reference (onnx/reference/ops/op_attention.py): the
fully-masked-row guard is decided on the bias, as there.

``ai.onnx.preview.FlexAttention`` is the same composition without masks: scores = (Q @ K^T) *
scale, then its ``score_mod`` subgraph (imported with the scores as its input, so a causal or
relative-position modifier folds its index arithmetic at import), softmax, its ``prob_mod``
subgraph, @ V; grouped-query heads by the same reshapes. As the reference does for float16,
the scores, softmax and @ V run in float32.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional

import numpy as np

import rlx
from rlx._onnx_helpers import run_graph
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import DimLike, dim_text

_NEG_INF = np.float32(-np.inf)


def _heads_4d(imp: Importer, x: Any, heads: Optional[int], what: str) -> Any:
    """A 3-D ``[batch, seq, heads * size]`` input as ``[batch, heads, seq, size]``."""
    b, s, hidden = imp.shape(x)
    if heads is None or heads <= 0:
        raise rlx.ModelFormatError(f"Attention with 3-D inputs needs q_num_heads and kv_num_heads > 0, got {heads}")
    if not isinstance(hidden, int):
        raise rlx.UnsupportedOpError(f"Attention {what} hidden size {dim_text(hidden)} is symbolic (must be static for 3-D inputs)")
    if hidden % heads:
        raise rlx.ShapeError(f"Attention {what} hidden size {hidden} is not divisible by {heads} heads")
    y = imp.g.reshape(imp.rt(x), (dim_text(b), dim_text(s), heads, hidden // heads))
    return imp.g.transpose(y, [0, 2, 1, 3])


def _check_shapes(imp: Importer, q: Any, k: Any, v: Any) -> None:
    (b, hq, _, d), (bk, hk, sk, dk), (bv, hv, sv, _) = imp.shape(q), imp.shape(k), imp.shape(v)
    shown = f"Q {[str(x) for x in imp.shape(q)]}, K {[str(x) for x in imp.shape(k)]}, V {[str(x) for x in imp.shape(v)]}"
    if not (b == bk == bv and hk == hv and sk == sv and d == dk):
        raise rlx.ShapeError(f"Attention needs Q [b, h, sq, d], K [b, kv_h, skv, d], V [b, kv_h, skv, dv]; got {shown}")
    if hq != hk and not (isinstance(hq, int) and isinstance(hk, int)):
        raise rlx.UnsupportedOpError(f"Attention with symbolic head counts {dim_text(hq)} and {dim_text(hk)}")
    if hq != hk and (hk == 0 or hq % hk):
        raise rlx.ShapeError(f"Attention: {hk} kv heads do not divide {hq} query heads ({shown})")


def _static(d: DimLike, what: str) -> int:
    if not isinstance(d, int):
        raise rlx.UnsupportedOpError(f"Attention {what} of symbolic size {dim_text(d)}: it must be static here")
    return d


class _Bias:
    """The additive bias as a sum: a numpy part made at import and run-time terms."""

    def __init__(self, imp: Importer) -> None:
        self.imp = imp
        self.const: Optional[np.ndarray] = None
        self.terms: List[Any] = []

    def add_const(self, allowed: np.ndarray) -> None:
        part = np.where(allowed, np.float32(0), _NEG_INF).astype(np.float32)
        self.const = part if self.const is None else self.const + part

    def add_allowed(self, allowed: Any) -> None:
        g = self.imp.g
        self.terms.append(g.where(allowed, g.constant(np.zeros((), np.float32)), g.constant(np.array(_NEG_INF))))

    def value(self) -> Any:
        """The bias as one rlx value, or None when nothing masks."""
        parts = list(self.terms)
        if self.const is not None:
            parts.insert(0, self.imp.g.constant(np.ascontiguousarray(self.const)))
        acc = None
        for p in parts:
            acc = p if acc is None else self.imp.g.add(acc, p)
        return acc


def _mask_term(imp: Importer, bias: _Bias, mask: Any, skv: DimLike) -> None:
    """The attn_mask input as a bias term, padded with masked keys up to ``skv``."""
    g, dt = imp.g, imp.dtype(mask)
    if dt not in (np.dtype(np.bool_), np.dtype(np.float32)):
        raise rlx.DTypeError(f"Attention attn_mask of dtype {dt} (bool or float32)")
    dims = imp.shape(mask)
    if not dims:
        raise rlx.ShapeError("Attention attn_mask is a scalar; it needs at least the key axis")
    m = imp.rt(mask)
    if dt == np.bool_:
        m = g.where(m, g.constant(np.zeros((), np.float32)), g.constant(np.array(_NEG_INF)))
    if dims[-1] != skv:
        have, want = _static(dims[-1], "attn_mask key axis"), _static(skv, "key sequence")
        if have > want:
            raise rlx.ShapeError(f"Attention attn_mask has {have} keys, more than the {want} of K")
        pad = imp.filled(dims[:-1] + [want - have], g.constant(np.array(_NEG_INF)))
        m = g.concat([m, pad], len(dims) - 1)
    bias.terms.append(m)


def _frontiers(imp: Importer, bias: _Bias, at: dict, sq: DimLike, skv: DimLike,
               past: DimLike, nonpad: Any) -> None:
    """The causal and sliding-window frontiers and the nonpad_kv_seqlen padding. A query at
    index i has absolute position i + offset (offset = past length, or nonpad - sq per batch,
    or 0); it sees key j iff j <= i + offset (causal) and i + offset - left <= j <=
    i + offset + right (window, -1 = unbounded)."""
    causal = bool(at.get("is_causal", 0))
    left, right = int(at.get("left_window_size", -1)), int(at.get("right_window_size", -1))
    if left < -1 or right < -1:
        raise rlx.ModelFormatError(f"Attention window sizes must be -1 or non-negative, got {left} and {right}")
    windowed = left >= 0 or right >= 0
    if not (causal or windowed or nonpad is not None):
        return
    nq, nk = _static(sq, "query sequence"), _static(skv, "key sequence")
    imp.reserve([nq, nk], 8, "the attention frontier")
    i, j = np.arange(nq)[:, None], np.arange(nk)[None, :]
    if nonpad is None:
        p = i + _static(past, "past sequence")  # absolute query positions
        allowed = np.ones((nq, nk), bool)
        if causal:
            allowed &= j <= p
        if left >= 0:
            allowed &= p - j <= left
        if right >= 0:
            allowed &= j - p <= right
        bias.add_const(allowed)
        return
    # Per batch: with n = nonpad[b] the position is i + n - sq, so each rule compares n with
    # a constant t = j - i + sq: causal n >= t, left n <= t + left, right n >= t - right.
    g, dt = imp.g, imp.dtype(nonpad)
    if dt.kind != "i":
        raise rlx.DTypeError(f"Attention nonpad_kv_seqlen of dtype {dt} (int64)")
    if imp.rank(nonpad) != 1:
        raise rlx.ShapeError(f"Attention nonpad_kv_seqlen must be [batch], got {[str(d) for d in imp.shape(nonpad)]}")
    n = g.reshape(imp.rt(nonpad), (dim_text(imp.shape(nonpad)[0]), 1, 1, 1))
    t = j - i + nq

    def const(a: np.ndarray) -> Any:
        return g.constant(np.ascontiguousarray(a.astype(dt)))

    bias.add_allowed(g.lt(const(np.arange(nk)), n))  # padding: j < n
    if causal:
        bias.add_allowed(g.ge(n, const(t)))
    if left >= 0:
        bias.add_allowed(g.le(n, const(t + left)))
    if right >= 0:
        bias.add_allowed(g.ge(n, const(t - right)))


def _guard(imp: Importer, bias: _Bias, bias_val: Any, p: Any) -> Any:
    """``p`` with zero rows where the bias allows no key (softmax gives NaN there)."""
    g = imp.g
    zero = g.constant(np.zeros((), np.float32))
    if not bias.terms and bias.const is not None:
        dead = np.isneginf(bias.const.max(axis=-1, keepdims=True))
        return g.where(g.constant(np.ascontiguousarray(dead)), zero, p) if dead.any() else p
    rows = g.eq(g.reduce_max(bias_val, [-1], keep_dim=True), g.constant(np.array(_NEG_INF)))
    return g.where(rows, zero, p)


def _composed(imp: Importer, q: Any, k: Any, v: Any, bias: _Bias, scale: float, softcap: float,
              mode: int) -> tuple:
    """(Y [b, hq, sq, dv], the qk_matmul_output of ``mode``). The query heads that share a kv
    head are stacked along the query axis, so each kv head takes part in one matmul."""
    g = imp.g
    (b, hq, sq, d), (_, hk, skv, _), dv = imp.shape(q), imp.shape(k), imp.shape(v)[3]
    grouped = hq != hk
    bt, hkt, sqt, skt = dim_text(b), dim_text(hk), dim_text(sq), dim_text(skv)
    qg = g.reshape(q, (bt, hkt, dim_text((hq // hk) * sq), dim_text(d))) if grouped else q
    s = g.matmul(qg, g.transpose(k, [0, 1, 3, 2]))
    if grouped:
        s = g.reshape(s, (bt, dim_text(hq), sqt, skt))
    s = raw = g.mul(s, g.constant(np.array(scale, np.float32)))
    if softcap > 0:
        c = g.constant(np.array(softcap, np.float32))
        s = g.mul(g.tanh(g.div(s, c)), c)
    capped = s
    bias_val = bias.value()
    if bias_val is not None:
        s = g.add(s, bias_val)
    p = g.softmax(s, -1)
    if bias_val is not None:
        p = _guard(imp, bias, bias_val, p)
    qk = (raw, capped, s, p)[mode]
    pg = g.reshape(p, (bt, hkt, dim_text((hq // hk) * sq), skt)) if grouped else p
    y = g.matmul(pg, v)
    if grouped:
        y = g.reshape(y, (bt, dim_text(hq), sqt, dim_text(dv)))
    return y, qk


def _check_precision(imp: Importer, at: dict) -> None:
    prec = at.get("softmax_precision")
    if prec is None or prec == 1:
        return
    if prec == 11:
        # Double is asked for more accuracy than float32 gives; the result is rounded to float32.
        imp.notes.append("Attention softmax_precision DOUBLE: the softmax runs in float32")
        return
    raise rlx.UnsupportedOpError(f"Attention softmax_precision {prec}: rlx computes the softmax in float32 only")


def _operands(imp: Importer, node: Any) -> List[Any]:
    """Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen (None when absent)."""
    names = list(node.input) + [""] * (7 - len(node.input))
    vals = [imp.get(n) if n else None for n in names[:7]]
    if any(x is None for x in vals[:3]):
        raise rlx.ModelFormatError("Attention needs Q, K and V")
    for x, what in zip(vals[:3] + vals[4:6], ("Q", "K", "V", "past_key", "past_value")):
        if x is not None and imp.dtype(x) != np.float32:
            raise rlx.UnsupportedOpError(f"Attention {what} of dtype {imp.dtype(x)} (rlx computes attention in float32)")
    if (vals[4] is None) != (vals[5] is None):
        raise rlx.ModelFormatError("Attention past_key and past_value must be given together")
    if vals[6] is not None and vals[4] is not None:
        raise rlx.ModelFormatError("Attention nonpad_kv_seqlen cannot be combined with past_key / past_value")
    return vals


@op("Attention")
def _attention(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    q, k, v, mask, past_k, past_v, nonpad = _operands(imp, node)
    rank = imp.rank(q)
    if not imp.rank(k) == imp.rank(v) == rank or rank not in (3, 4):
        raise rlx.ShapeError(f"Attention needs Q, K, V all of rank 3 or all of rank 4, got ranks {rank}, {imp.rank(k)}, {imp.rank(v)}")
    if rank == 3:
        hq, hk = at.get("q_num_heads"), at.get("kv_num_heads")
        q, k, v = _heads_4d(imp, q, hq, "Q"), _heads_4d(imp, k, hk, "K"), _heads_4d(imp, v, hk, "V")
    else:
        q, k, v = imp.rt(q), imp.rt(k), imp.rt(v)
        for key, ax, x in (("q_num_heads", 1, q), ("kv_num_heads", 1, k)):
            if key in at and imp.shape(x)[ax] != at[key]:
                raise rlx.ShapeError(f"Attention {key}={at[key]} does not match the 4-D input's {dim_text(imp.shape(x)[ax])} heads")
    sq, new_kv = imp.shape(q)[2], imp.shape(k)[2]
    past: DimLike = 0
    if past_k is not None:
        if imp.rank(past_k) != 4 or imp.rank(past_v) != 4:
            raise rlx.ShapeError("Attention past_key and past_value must be [batch, kv_heads, past_seq, size]")
        past = imp.shape(past_k)[2]
        k, v = imp.g.concat([imp.rt(past_k), k], 2), imp.g.concat([imp.rt(past_v), v], 2)
    _check_shapes(imp, q, k, v)
    d = imp.shape(q)[3]
    scale = at.get("scale")
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(_static(d, "head size"))
    _check_precision(imp, at)
    mode = int(at.get("qk_matmul_output_mode", 0))
    if mode not in (0, 1, 2, 3):
        raise rlx.ModelFormatError(f"Attention qk_matmul_output_mode {mode} (0 to 3)")
    outs = list(node.output) + [""] * (4 - len(node.output))
    softcap = float(at.get("softcap", 0.0))
    causal = bool(at.get("is_causal", 0))
    plain = (mask is None and nonpad is None and softcap <= 0 and not outs[3]
             and at.get("left_window_size", -1) == -1 and at.get("right_window_size", -1) == -1
             and (not causal or new_kv == sq))  # rlx's causal frontier is bottom-right
    if plain:
        y, qk = imp.g.attention(q, k, v, None, scale, causal), None
    else:
        bias = _Bias(imp)
        skv = imp.shape(k)[2]
        if mask is not None:
            _mask_term(imp, bias, mask, skv)
        _frontiers(imp, bias, at, sq, skv, past, nonpad)
        y, qk = _composed(imp, q, k, v, bias, scale, softcap, mode)
    if rank == 3:
        b, h, _, dv = imp.shape(y)
        y = imp.g.reshape(imp.g.transpose(y, [0, 2, 1, 3]), (dim_text(b), dim_text(sq), dim_text(h * dv)))
    return [y, k, v, qk]


# -- ai.onnx.preview.FlexAttention -----------------------------------------------------------


def _graph_attr(node: Any, name: str) -> Optional[Any]:
    for a in node.attribute:
        if a.name == name and a.HasField("g"):
            return a.g
    return None


def _modifier(imp: Importer, node: Any, name: str, x: Any) -> Any:
    """``x`` through the node's ``name`` subgraph (one input, one output of the same shape)."""
    graph = _graph_attr(node, name)
    if graph is None:
        return x
    outs = run_graph(imp, graph, [x], name)
    if len(outs) != 1:
        raise rlx.ModelFormatError(f"FlexAttention {name} gives {len(outs)} outputs, expected 1")
    y = imp.rt(outs[0])
    if [dim_text(d) for d in imp.shape(y)] != [dim_text(d) for d in imp.shape(x)] or np.dtype(y.dtype) != np.float32:
        raise rlx.ShapeError(
            f"FlexAttention {name} gives {[dim_text(d) for d in imp.shape(y)]} ({y.dtype}) for "
            f"{[dim_text(d) for d in imp.shape(x)]} (float32): a modifier keeps the shape and type")
    return y


@op("ai.onnx.preview.FlexAttention")
def _flex_attention(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    prec = at.get("softmax_precision")
    if prec is not None and prec not in (1, 10, 11, 16):
        raise rlx.UnsupportedOpError(f"FlexAttention softmax_precision {prec}: a float type is expected")
    if prec == 11:
        imp.notes.append("FlexAttention softmax_precision DOUBLE: the softmax runs in float32")
    q, k, v = (imp.rt(imp.get(n)) for n in node.input[:3])
    for x, what in ((q, "Q"), (k, "K"), (v, "V")):
        if imp.rank(x) != 4:
            raise rlx.ShapeError(f"FlexAttention {what} of rank {imp.rank(x)}: Q, K and V are rank 4")
        if np.dtype(x.dtype) != np.float32:
            raise rlx.UnsupportedOpError(f"FlexAttention {what} of dtype {x.dtype} (rlx computes attention in float32)")
    (b, hq, sq, d), (_, hk, skv, dk), (_, hv, sv, dv) = imp.shape(q), imp.shape(k), imp.shape(v)
    if dim_text(d) != dim_text(dk) or dim_text(hk) != dim_text(hv) or dim_text(skv) != dim_text(sv):
        shown = ", ".join(f"{w} {[dim_text(x) for x in imp.shape(t)]}" for w, t in (("Q", q), ("K", k), ("V", v)))
        raise rlx.ShapeError(f"FlexAttention {shown}: K shares Q's head size and V's heads and length")
    hq_, hk_ = _static(hq, "q_num_heads"), _static(hk, "kv_num_heads")
    if hk_ < 1 or hq_ % hk_:
        raise rlx.ShapeError(f"FlexAttention q_num_heads {hq_} is not a multiple of kv_num_heads {hk_}")
    scale = at.get("scale")
    if scale is None:
        scale = 1.0 / math.sqrt(_static(d, "head_size"))
    g = imp.g
    grouped = hq_ != hk_
    bt, hkt, sqt, skt = dim_text(b), dim_text(hk), dim_text(sq), dim_text(skv)
    gq = dim_text((hq_ // hk_) * sq)
    qg = g.reshape(q, (bt, hkt, gq, dim_text(d))) if grouped else q
    s = g.matmul(qg, g.transpose(k, [0, 1, 3, 2]))
    if grouped:
        s = g.reshape(s, (bt, dim_text(hq), sqt, skt))
    s = g.mul(s, g.constant(np.array(scale, np.float32)))
    s = _modifier(imp, node, "score_mod", s)
    p = _modifier(imp, node, "prob_mod", g.softmax(s, -1))
    pg = g.reshape(p, (bt, hkt, gq, skt)) if grouped else p
    y = g.matmul(pg, v)
    if grouped:
        y = g.reshape(y, (bt, dim_text(hq), sqt, dim_text(dv)))
    return y
