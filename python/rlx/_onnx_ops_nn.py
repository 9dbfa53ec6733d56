"""ONNX neural-network ops: MatMul, Gemm, Softmax, LayerNormalization, reductions."""

from __future__ import annotations

from typing import Any

import numpy as np

import rlx
from rlx._onnx_helpers import dims_prod, norm_axis, reduce_args, reshape_to
from rlx._onnx_import import Importer, Known
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import dim_text


def _is_weight(v: Any) -> bool:
    return isinstance(v, Known) and v.init is not None and v.arr.ndim == 2 and v.dtype == np.float32


@op("MatMul")
def _matmul(imp: Importer, node: Any) -> Any:
    a, b = imp.get(node.input[0]), imp.get(node.input[1])
    if _is_weight(b) and imp.rank(a) >= 1:
        # A weight: x @ W is a linear, which the fusion passes give a bias and activation.
        return imp.g.linear(imp.rt(a), imp.rt(b))
    x, y = imp.rt(a), imp.rt(b)
    ra, rb = len(x.shape), len(y.shape)
    if ra == 1:
        x = imp.g.reshape(x, (1,) + tuple(x.shape))
    if rb == 1:
        y = imp.g.reshape(y, tuple(y.shape) + (1,))
    out = imp.g.matmul(x, y)
    if ra == 1 or rb == 1:
        dims = list(out.shape)
        if rb == 1:
            dims.pop(-1)
        if ra == 1:
            dims.pop(-2 if rb != 1 else -1)
        out = imp.g.reshape(out, tuple(dims))
    return out


@op("Gemm")
def _gemm(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    a = imp.rt(imp.get(node.input[0]))
    if at.get("transA", 0):
        a = imp.g.transpose(a, [1, 0])
    b = imp.get(node.input[1])
    c = imp.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if imp.rank(a) != 2 or imp.rank(b) != 2:
        raise rlx.ShapeError(f"Gemm takes rank-2 A and B, got shapes {a.shape} and {imp.shape(b)}")
    trans_b = bool(at.get("transB", 0))
    n = imp.shape(b)[0 if trans_b else 1]
    bias = None
    if c is not None and beta == 1.0 and alpha == 1.0 and imp.shape(c) == [n]:
        bias, c = imp.rt(c), None
    if _is_weight(b):
        if trans_b and imp.transpose_w:
            y = imp.g.linear(a, imp.rt(b), bias, transpose_w=True)
        elif trans_b:
            # The Python Graph has no transposed-weight linear: transpose at import (a copy).
            imp.notes.append(f"Gemm weight {b.init!r} transposed at import (a copy)")
            y = imp.g.linear(a, imp.param_from(b.init, np.ascontiguousarray(b.arr.T)), bias)
        else:
            y = imp.g.linear(a, imp.rt(b), bias)
    else:
        w = imp.rt(b)
        if trans_b:
            w = imp.g.transpose(w, [1, 0])
        y = imp.g.matmul(a, w)
        if bias is not None:
            y = imp.g.add(y, bias)
    if alpha != 1.0:
        y = imp.g.mul(y, imp.g.constant(np.array(alpha, np.float32)))
    if c is not None:
        cv = imp.rt(c)
        if beta != 1.0:
            cv = imp.g.mul(cv, imp.g.constant(np.array(beta, np.float32)))
        y = imp.g.add(y, cv)
    return y


def _softmax(imp: Importer, node: Any, log: bool) -> Any:
    x = imp.rt(imp.get(node.input[0]))
    dims = imp.shape(x)
    r = len(dims)
    default = -1 if imp.opset >= 13 else 1
    axis = norm_axis(attrs(node).get("axis", default), r, node.op_type)
    if imp.opset >= 13 or axis == r - 1:
        y = imp.g.softmax(x, axis)
    else:
        # Before opset 13 the input is flattened to 2-D at `axis` first.
        flat = imp.g.reshape(x, (dim_text(dims_prod(dims[:axis])), dim_text(dims_prod(dims[axis:]))))
        y = imp.g.reshape(imp.g.softmax(flat, -1), tuple(dim_text(d) for d in dims))
    return imp.g.log(y) if log else y


@op("Softmax")
def _softmax_op(imp: Importer, node: Any) -> Any:
    return _softmax(imp, node, False)


@op("LogSoftmax")
def _log_softmax(imp: Importer, node: Any) -> Any:
    return _softmax(imp, node, True)


@op("LayerNormalization")
def _layer_norm(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x = imp.rt(imp.get(node.input[0]))
    dims = imp.shape(x)
    axis = norm_axis(at.get("axis", -1), len(dims), "LayerNormalization")
    d = dims_prod(dims[axis:])
    if not isinstance(d, int):
        raise rlx.UnsupportedOpError(f"LayerNormalization over symbolic size {d}")
    scale = imp.get(node.input[1])
    bias = imp.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    gamma = reshape_to(imp, scale, [d])
    beta = reshape_to(imp, bias, [d]) if bias is not None else Known(np.zeros((d,), np.float32))
    eps = float(at.get("epsilon", 1e-5))
    xs = x if axis == len(dims) - 1 else imp.g.reshape(x, tuple(dim_text(v) for v in dims[:axis]) + (d,))
    y = imp.g.layer_norm(xs, imp.rt(gamma), imp.rt(beta), eps)
    y = y if axis == len(dims) - 1 else imp.g.reshape(y, tuple(dim_text(v) for v in dims))
    if len(node.output) == 1 or not any(node.output[1:]):
        return y
    # The optional Mean and InvStdDev outputs, shaped like x with the normalized axes kept as 1.
    kept = tuple(dim_text(v) for v in dims[:axis]) + (1,) * (len(dims) - axis)
    mean = imp.g.reduce_mean(xs, [-1], keep_dim=True)
    centered = imp.g.sub(xs, mean)
    var = imp.g.reduce_mean(imp.g.mul(centered, centered), [-1], keep_dim=True)
    inv = imp.g.rsqrt(imp.g.add(var, imp.g.constant(np.array(eps, np.float32))))
    return [y, imp.g.reshape(mean, kept), imp.g.reshape(inv, kept)]


_REDUCE = {"ReduceSum": "reduce_sum", "ReduceMean": "reduce_mean", "ReduceMax": "reduce_max", "ReduceMin": "min"}


@op(*_REDUCE)
def _reduce(imp: Importer, node: Any) -> Any:
    x, axes, keep, noop = reduce_args(imp, node)
    if noop:
        return x
    if np.dtype(x.dtype) == np.bool_ and node.op_type in ("ReduceMax", "ReduceMin"):
        # any / all over bools, through int32 (rlx reduces numbers only).
        # max(.., 0) makes an empty reduction any() = False, all() = True.
        xi = imp.g.cast(x, "int32")
        zero, one = imp.g.constant(np.zeros((), np.int32)), imp.g.constant(np.ones((), np.int32))
        if node.op_type == "ReduceMax":
            return imp.g.cast(imp.g.max(imp.g.reduce_max(xi, axes, keep_dim=keep), zero), "bool")
        none_false = imp.g.max(imp.g.reduce_max(imp.g.sub(one, xi), axes, keep_dim=keep), zero)
        return imp.g.cast(imp.g.sub(one, none_false), "bool")
    if node.op_type == "ReduceMin":
        # min(x) = -max(-x); rlx has no reduce_min.
        if np.dtype(x.dtype) != np.float32:
            raise rlx.UnsupportedOpError(f"ReduceMin on {x.dtype} (float32 only)")
        return imp.g.neg(imp.g.reduce_max(imp.g.neg(x), axes, keep_dim=keep))
    return imp.g.reduce(_REDUCE[node.op_type], x, axes, keep_dim=keep)


# Reductions composed of the ones above: (pre-map, reduction, post-map).
_COMPOSED = {
    "ReduceL1": ("abs", "reduce_sum", None),
    "ReduceL2": ("square", "reduce_sum", "sqrt"),
    "ReduceSumSquare": ("square", "reduce_sum", None),
    "ReduceLogSum": (None, "reduce_sum", "log"),
}


@op(*_COMPOSED, "ReduceLogSumExp")
def _composed_reduce(imp: Importer, node: Any) -> Any:
    x, axes, keep, noop = reduce_args(imp, node)
    if np.dtype(x.dtype) != np.float32:
        raise rlx.UnsupportedOpError(f"{node.op_type} on {x.dtype} (float32 only)")
    if noop:
        return x
    if node.op_type == "ReduceLogSumExp":
        # log(sum(exp(x - m))) + m with m the max: no overflow for large x.
        m = imp.g.reduce_max(x, axes, keep_dim=True)
        s = imp.g.reduce_sum(imp.g.exp(imp.g.sub(x, m)), axes, keep_dim=keep)
        m = m if keep else imp.g.reduce_max(x, axes, keep_dim=False)
        return imp.g.add(imp.g.log(s), m)
    pre, red, post = _COMPOSED[node.op_type]
    if pre == "square":
        x = imp.g.mul(x, x)
    elif pre:
        x = imp.g.unary(pre, x)
    y = imp.g.reduce(red, x, axes, keep_dim=keep)
    return imp.g.unary(post, y) if post else y


@op("IsNaN", "IsInf")
def _is_special(imp: Importer, node: Any) -> Any:
    x = imp.rt(imp.get(node.input[0]))
    if np.dtype(x.dtype) != np.float32:
        raise rlx.UnsupportedOpError(f"{node.op_type} on {x.dtype} (float32 only)")
    if node.op_type == "IsNaN":
        return imp.g.ne(x, x)
    at = attrs(node)
    pos, neg = int(at.get("detect_positive", 1)), int(at.get("detect_negative", 1))
    inf = imp.g.constant(np.array(np.inf, np.float32))
    if pos and neg:
        return imp.g.eq(imp.g.abs(x), inf)
    if pos:
        return imp.g.eq(x, inf)
    if neg:
        return imp.g.eq(x, imp.g.neg(inf))
    return imp.g.lt(x, imp.g.neg(inf))  # nothing to detect: all false


@op("ArgMax", "ArgMin")
def _arg_reduce(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x = imp.rt(imp.get(node.input[0]))
    axis, keep = int(at.get("axis", 0)), bool(at.get("keepdims", 1))
    last = bool(at.get("select_last_index", 0))
    fn = imp.g.argmax if node.op_type == "ArgMax" else imp.g.argmin
    return fn(x, axis, keep, last)
