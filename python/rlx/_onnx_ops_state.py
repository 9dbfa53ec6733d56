"""ONNX ops of incremental decoding that carry a cache or a state from call to call:
TensorScatter (a KV cache write), CausalConvWithState and LinearAttention, composed from rlx
graph ops.

- TensorScatter: every cache position ``p`` along ``axis`` reads update row ``j = p - w[b]``
  (modulo the cache length in circular mode) where ``0 <= j < sequence_length``, else keeps
  the past value: one gather of the flattened update at run-time positions, one where. In
  linear mode a write index outside ``[0, max_sequence_length - sequence_length]`` (the
  spec's requirement) is a run-time IndexError (a gather probes it), never dropped writes.
- CausalConvWithState: the past state (zeros without one) concatenated before the input along
  time, a depthwise Conv with no padding (over a symbolic length, the sum of the ``k`` shifted
  taps), an optional SiLU; the new state is the last ``k - 1`` steps of the concatenation.
- LinearAttention: the recurrence over the sequence, unrolled at import (the length must be
  static, at most ``MAX_STEPS``), in float32 as the reference accumulates. Query heads of one
  kv head read its state through a reshape (grouped-query attention), never a copy.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

import numpy as np

import rlx
from rlx._onnx_helpers import norm_axis, static_dims
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import DimLike, dim_text

#: The longest LinearAttention sequence unrolled at import (each step is ~10 graph ops).
MAX_STEPS = 1024


def _i64(imp: Importer, arr: Any) -> Any:
    return imp.g.constant(np.ascontiguousarray(np.asarray(arr, dtype=np.int64)))


def _f32(imp: Importer, v: float) -> Any:
    return imp.g.constant(np.array(v, np.float32))


def _along(n: int, axis: int, rank: int, scale: int = 1) -> np.ndarray:
    """arange(n) * scale, shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    return (np.arange(n, dtype=np.int64) * scale).reshape([n if i == axis else 1 for i in range(rank)])


def _text(dims: Sequence[DimLike]) -> tuple:
    return tuple(dim_text(d) for d in dims)


# -- TensorScatter ---------------------------------------------------------------------------


def _write_rows(imp: Importer, w: Any, b: int, m: int, s: int, circular: bool) -> Any:
    """``j[b, p]``: the update row cache position ``p`` of sample ``b`` reads (any value outside
    ``[0, s)``: none). Linear write indices outside ``[0, m - s]`` fail at run time."""
    g = imp.g
    w = g.reshape(w, (b, 1))
    j = g.sub(_i64(imp, np.arange(m, dtype=np.int64).reshape(1, m)), w)
    if circular:
        mm = _i64(imp, m)
        j = g.sub(j, g.mul(g.div(j, mm), mm))  # int64 division truncates: j keeps its sign
        return g.where(g.lt(j, _i64(imp, 0)), g.add(j, mm), j)
    # A probe: a gather of a 1-element vector at 0 where the index is valid, at 1 where not.
    ok = g.where(g.ge(w, _i64(imp, 0)), g.le(w, _i64(imp, m - s)), g.lt(w, w))
    bad = g.where(ok, _i64(imp, 0), _i64(imp, 1))
    return g.add(j, g.gather(_i64(imp, np.zeros(1, np.int64)), bad, 0))


@op("TensorScatter")
def _tensor_scatter(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    mode = at.get("mode", "linear")
    if mode not in ("linear", "circular"):
        raise rlx.ModelFormatError(f"TensorScatter mode {mode!r} is not 'linear' or 'circular'")
    past, upd = imp.get(node.input[0]), imp.get(node.input[1])
    dims = static_dims(imp, past, "TensorScatter past_cache")
    udims = static_dims(imp, upd, "TensorScatter update")
    r = len(dims)
    axis = norm_axis(int(at.get("axis", -2)), r, "TensorScatter")
    if axis == 0:
        raise rlx.ShapeError("TensorScatter axis 0 is the batch axis; the sequence axis must be another one")
    m, s = dims[axis], udims[axis] if len(udims) == r else -1
    if len(udims) != r or any(a != c for i, (a, c) in enumerate(zip(dims, udims)) if i != axis) or s > m:
        raise rlx.ShapeError(f"TensorScatter update of shape {udims} for a cache of shape {dims} along axis {axis}: "
                             f"the same shape but for at most {m} rows along the axis")
    if imp.dtype(past) != imp.dtype(upd):
        raise rlx.DTypeError(f"TensorScatter cache of {imp.dtype(past)} and update of {imp.dtype(upd)}")
    g = imp.g
    widx = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if widx is None or s == 0:
        # Every sample writes at 0 (linear or circular alike, as s <= m).
        if s == 0 or s == m:
            return imp.rt(upd) if s else imp.rt(past)
        return g.concat([imp.rt(upd), g.slice(imp.rt(past), axis, s, m)], axis)
    w = imp.get(widx)
    if imp.dtype(w).kind not in "iu" or static_dims(imp, w, "TensorScatter write_indices") != [dims[0]]:
        raise rlx.ShapeError(f"TensorScatter write_indices {widx!r} of {imp.dtype(w)} {imp.shape(w)}: "
                             f"int64 of shape [{dims[0]}] (one per batch sample)")
    w = imp.rt(w)
    if w.dtype != "int64":
        w = g.cast(w, "int64")
    j = _write_rows(imp, w, dims[0], m, s, mode == "circular")
    # j as [B, 1.., M, 1..]: batch on axis 0, cache positions on ``axis``.
    jb = g.reshape(j, tuple(dims[0] if i == 0 else m if i == axis else 1 for i in range(r)))
    valid = g.where(g.ge(jb, _i64(imp, 0)), g.lt(jb, _i64(imp, s)), g.lt(jb, jb))
    jc = g.min(g.max(jb, _i64(imp, 0)), _i64(imp, s - 1))
    # Flat positions in the update: its strides over every other axis, constants broadcast.
    strides = [math.prod(udims[i + 1:]) for i in range(r)]
    flat = g.mul(jc, _i64(imp, strides[axis]))
    for i in range(r):
        if i != axis and dims[i] > 1:
            flat = g.add(flat, _i64(imp, _along(dims[i], i, r, strides[i])))
    total = math.prod(udims)
    read = g.gather(g.reshape(imp.rt(upd), (total,)), flat, 0)
    return g.where(valid, read, imp.rt(past))


# -- CausalConvWithState ---------------------------------------------------------------------


def _depthwise(imp: Importer, padded: Any, w: Any, bias: Optional[Any], n: DimLike, c: int, k: int) -> Any:
    """The valid depthwise conv of ``padded`` ([B, C, n + k - 1]) with ``w`` ([C, 1, k]): one
    Conv over a static length; over a symbolic one (rlx's conv needs static spatial sizes) the
    sum of the ``k`` taps, each a shifted slice times its weight column."""
    g = imp.g
    if isinstance(n, int):
        return g.conv(padded, w, bias, strides=[1], pads=[0, 0], dilations=[1], groups=c)
    out = bias if bias is None else g.reshape(bias, (1, c, 1))
    for j in range(k):
        tap = g.mul(g.slice(padded, 2, j, dim_text(n + j)), g.reshape(g.slice(w, 2, j, j + 1), (1, c, 1)))
        out = tap if out is None else g.add(out, tap)
    return out


@op("CausalConvWithState")
def _causal_conv_with_state(imp: Importer, node: Any) -> List[Any]:
    act = attrs(node).get("activation", "none") or "none"
    if act not in ("none", "silu", "swish"):
        raise rlx.ModelFormatError(f"CausalConvWithState activation {act!r} is not 'none', 'silu' or 'swish'")
    x, w = imp.get(node.input[0]), imp.get(node.input[1])
    bias = imp.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    past = imp.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    xd, wd = imp.shape(x), static_dims(imp, w, "CausalConvWithState weight")
    if len(xd) != 3:
        raise rlx.ShapeError(f"CausalConvWithState input of shape {_text(xd)}: expected [batch, channels, length]")
    b, c, n = xd
    if not isinstance(c, int):
        raise rlx.UnsupportedOpError(f"CausalConvWithState with a symbolic channel count {dim_text(c)}")
    if len(wd) != 3 or wd[0] != c or wd[1] != 1 or wd[2] < 1:
        raise rlx.ShapeError(f"CausalConvWithState weight of shape {wd} for {c} channels: expected [{c}, 1, k] (depthwise)")
    k = wd[2]
    if bias is not None and imp.shape(bias) != [c]:
        raise rlx.ShapeError(f"CausalConvWithState bias of shape {_text(imp.shape(bias))}: expected [{c}]")
    g = imp.g
    xv = imp.rt(x)
    if past is not None and imp.shape(past) != [b, c, k - 1]:
        raise rlx.ShapeError(f"CausalConvWithState past_state of shape {_text(imp.shape(past))}: "
                             f"expected {list(_text([b, c, k - 1]))}")
    if k == 1:
        # No history: the state is empty, the conv a per-channel scale.
        padded = xv
    elif past is None:
        padded = g.concat([imp.filled([b, c, k - 1], g.constant(np.zeros((), np.dtype(xv.dtype)))), xv], 2)
    else:
        padded = g.concat([imp.rt(past), xv], 2)
    out = _depthwise(imp, padded, imp.rt(w), None if bias is None else imp.rt(bias), n, c, k)
    if act != "none":
        out = g.silu(out)
    total = dim_text(n + (k - 1))
    return [out, g.slice(padded, 2, dim_text(n), total)]


# -- LinearAttention -------------------------------------------------------------------------

_RULES = ("linear", "gated", "delta", "gated_delta")


def _unpack(imp: Importer, x: Any, heads: int, what: str) -> Any:
    """``[B, T, heads * d]`` as ``[B, heads, T, d]`` in float32."""
    b, t, hd = imp.shape(x)
    if not isinstance(hd, int) or hd % heads:
        raise rlx.ShapeError(f"LinearAttention {what} last dim {dim_text(hd)} is not a multiple of {heads} heads")
    v = imp.rt(x)
    if v.dtype != "float32":
        v = imp.g.cast(v, "float32")
    return imp.g.transpose(imp.g.reshape(v, _text([b, t, heads, hd // heads])), [0, 2, 1, 3])


def _optional(imp: Importer, node: Any, i: int) -> Optional[Any]:
    return imp.get(node.input[i]) if len(node.input) > i and node.input[i] else None


def _gates(imp: Importer, node: Any, rule: str, hk: int, dk: int) -> tuple:
    """(exp(decay) as [B, Hkv, d, T] with d 1 or dk, beta as [B, Hkv or 1, 1, T]), each None
    when the rule has none; an input the rule forbids or lacks is a ModelFormatError."""
    decay, beta = _optional(imp, node, 4), _optional(imp, node, 5)
    gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    for v, wanted, what in ((decay, gating, "decay"), (beta, delta, "beta")):
        if (v is not None) != wanted:
            raise rlx.ModelFormatError(f"LinearAttention update_rule {rule!r} {'needs' if wanted else 'forbids'} the {what} input")
    g = imp.g
    ed = bt = None
    if decay is not None:
        dd = imp.shape(decay)
        if len(dd) != 3 or dd[-1] not in (hk, hk * dk):
            raise rlx.ShapeError(f"LinearAttention decay of shape {_text(dd)}: the last dim must be {hk} or {hk * dk}")
        ed = g.exp(_unpack(imp, decay, hk, "decay"))  # [B, Hkv, T, 1 or dk]
        ed = g.transpose(ed, [0, 1, 3, 2])
    if beta is not None:
        bd = imp.shape(beta)
        if len(bd) != 3 or bd[-1] not in (hk, 1):
            raise rlx.ShapeError(f"LinearAttention beta of shape {_text(bd)}: the last dim must be {hk} or 1")
        bt = g.transpose(_unpack(imp, beta, int(bd[-1]), "beta"), [0, 1, 3, 2])  # [B, H or 1, 1, T]
    return ed, bt


@op("LinearAttention")
def _linear_attention(imp: Importer, node: Any) -> List[Any]:
    at = attrs(node)
    rule = at.get("update_rule", "gated_delta") or "gated_delta"
    if rule not in _RULES:
        raise rlx.ModelFormatError(f"LinearAttention update_rule {rule!r} is not one of {', '.join(map(repr, _RULES))}")
    hq, hk = int(at.get("q_num_heads", 0)), int(at.get("kv_num_heads", 0))
    if hq <= 0 or hk <= 0 or hq % hk:
        raise rlx.ModelFormatError(f"LinearAttention q_num_heads {hq} must be a positive multiple of kv_num_heads {hk}")
    q, key, val = (imp.get(n) for n in node.input[:3])
    for v, what in ((q, "query"), (key, "key"), (val, "value")):
        if imp.rank(v) != 3:
            raise rlx.ShapeError(f"LinearAttention {what} of shape {_text(imp.shape(v))}: expected [batch, seq, heads * size]")
    b, t, qh = imp.shape(q)
    if not isinstance(t, int):
        raise rlx.UnsupportedOpError(f"LinearAttention over a symbolic sequence length {dim_text(t)}: the recurrence "
                                     "is unrolled at import, so the length must be static")
    if t == 0:
        raise rlx.UnsupportedOpError("LinearAttention over an empty sequence: rlx has no empty tensors here")
    if t > MAX_STEPS:
        raise rlx.UnsupportedOpError(f"LinearAttention over {t} steps: rlx unrolls the recurrence at import, "
                                     f"up to {MAX_STEPS} steps")
    if [imp.shape(key)[:2], imp.shape(val)[:2]] != [[b, t], [b, t]]:
        raise rlx.ShapeError(f"LinearAttention query {_text(imp.shape(q))}, key {_text(imp.shape(key))} and value "
                             f"{_text(imp.shape(val))} differ in batch or sequence length")
    g = imp.g
    q4, k4, v4 = _unpack(imp, q, hq, "query"), _unpack(imp, key, hk, "key"), _unpack(imp, val, hk, "value")
    dk, dv, grp = int(q4.shape[3]), int(v4.shape[3]), hq // hk
    if int(k4.shape[3]) != dk:
        raise rlx.ShapeError(f"LinearAttention query head size {dk} and key head size {k4.shape[3]} differ")
    scale = float(at.get("scale", 0.0)) or 1.0 / math.sqrt(dk)
    ed, bt = _gates(imp, node, rule, hk, dk)
    past = _optional(imp, node, 3)
    if past is None:
        state = imp.filled([b, hk, dk, dv], _f32(imp, 0.0))
    else:
        if imp.shape(past) != [b, hk, dk, dv]:
            raise rlx.ShapeError(f"LinearAttention past_state of shape {_text(imp.shape(past))}: "
                                 f"expected {list(_text([b, hk, dk, dv]))}")
        state = imp.rt(past)
        if state.dtype != "float32":
            state = g.cast(state, "float32")
    # Query heads grouped by their kv head: [B, Hkv, T, G, dk] (head h = kv * G + g).
    qg = g.transpose(g.reshape(q4, _text([b, hk, grp, t, dk])), [0, 1, 3, 2, 4])
    kt = g.transpose(k4, [0, 1, 3, 2])  # [B, Hkv, dk, T]: column k_t
    outs = []
    for i in range(t):
        k_row, k_col, v_row = g.slice(k4, 2, i, i + 1), g.slice(kt, 3, i, i + 1), g.slice(v4, 2, i, i + 1)
        if ed is not None:
            state = g.mul(state, g.slice(ed, 3, i, i + 1))
        if bt is not None:
            # v_t <- beta_t * (v_t - S^T k_t)
            v_row = g.mul(g.slice(bt, 3, i, i + 1), g.sub(v_row, g.matmul(k_row, state)))
        state = g.add(state, g.mul(k_col, v_row))
        q_i = g.reshape(g.slice(qg, 2, i, i + 1), _text([b, hk, grp, dk]))
        outs.append(g.reshape(g.matmul(q_i, state), _text([b, 1, hq * dv])))  # [B, Hkv, G, dv]
    out = outs[0] if len(outs) == 1 else g.concat(outs, 1)
    out = g.mul(out, _f32(imp, scale))
    return [out, state]
