"""ONNX activations beyond the core unary ops: LeakyRelu, PRelu, Elu, Selu, Celu,
ThresholdedRelu, HardSigmoid, HardSwish, Softplus, Softsign, Mish and Shrink, each composed
from rlx graph ops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlx._onnx_import import Importer, Known
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import dim_text


def _c(imp: Importer, v: float) -> Any:
    return imp.g.constant(np.array(v, np.float32))


def _hard_sigmoid(imp: Importer, x: Any, alpha: float, beta: float) -> Any:
    y = imp.g.add(imp.g.mul(x, _c(imp, alpha)), _c(imp, beta))
    return imp.g.max(imp.g.min(y, _c(imp, 1.0)), _c(imp, 0.0))


def _softplus(imp: Importer, x: Any) -> Any:
    # relu(x) + log(1 + exp(-|x|)): no overflow for large x.
    tail = imp.g.log(imp.g.add(_c(imp, 1.0), imp.g.exp(imp.g.neg(imp.g.abs(x)))))
    return imp.g.add(imp.g.relu(x), tail)


def _expm1_neg(imp: Importer, x: Any, alpha: float) -> Any:
    """alpha * (exp(min(x, 0)) - 1): the negative branch of Elu / Selu / Celu."""
    e = imp.g.exp(imp.g.min(x, _c(imp, 0.0)))
    return imp.g.mul(imp.g.sub(e, _c(imp, 1.0)), _c(imp, alpha))


def _prelu_slope(imp: Importer, x: Any, slope: Any) -> Any:
    """Before opset 7 a [C] slope is per channel (axis 1), not numpy-broadcast on the last axis."""
    dims = imp.shape(x)
    if imp.opset < 7 and len(slope.shape) == 1 and len(dims) > 2 and slope.shape[0] == dims[1] != 1:
        return imp.g.reshape(slope, (dim_text(dims[1]),) + (1,) * (len(dims) - 2))
    return slope


def _in_unit_interval(v: Any) -> bool:
    """Whether ``v`` is float32 known at import with every value in (0, 1]."""
    return (isinstance(v, Known) and not v.symbolic and v.arr.dtype == np.float32 and v.arr.size > 0
            and bool(np.all((v.arr > 0) & (v.arr <= 1))))


def _max_of_slope(imp: Importer, x: Any, slope: Any) -> Any:
    """LeakyRelu / PRelu as ``max(x, slope * x)`` for slopes in (0, 1]: exactly x for x >= 0 and
    slope * x below (NaN, infinities and signed zeros as the select gives them; a slope of 0
    would turn inf into NaN). Two steps one elementwise program runs, channels-last between
    convolutions (a per-channel slope is a per-channel operand there)."""
    return imp.g.max(x, imp.g.mul(x, slope))


@op("LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "ThresholdedRelu")
def _piecewise(imp: Importer, node: Any) -> Any:
    """Activations that keep x on one side of a threshold and map the other side."""
    at, t = attrs(node), node.op_type
    x = x0 = imp.rt(imp.get(node.input[0]))
    zero = _c(imp, 0.0)
    if t == "ThresholdedRelu":
        return imp.g.where(imp.g.gt(x, _c(imp, float(at.get("alpha", 1.0)))), x, zero)
    if t == "Celu":
        alpha = float(at.get("alpha", 1.0))
        neg = _expm1_neg(imp, imp.g.div(x, _c(imp, alpha)), alpha)
        return imp.g.add(imp.g.relu(x), imp.g.min(neg, zero))
    f32 = np.dtype(imp.dtype(x)) == np.float32
    if t == "LeakyRelu":
        alpha = float(at.get("alpha", 0.01))
        if 0.0 < alpha <= 1.0 and f32:
            return _max_of_slope(imp, x, _c(imp, alpha))
        neg = imp.g.mul(x, _c(imp, alpha))
    elif t == "PRelu":
        slope = imp.get(node.input[1])
        if f32 and _in_unit_interval(slope):
            return _max_of_slope(imp, x, _prelu_slope(imp, x, imp.rt(slope)))
        neg = imp.g.mul(x, _prelu_slope(imp, x, imp.rt(slope)))
    elif t == "Elu":
        neg = _expm1_neg(imp, x, float(at.get("alpha", 1.0)))
    else:  # Selu
        gamma = float(at.get("gamma", 1.05070102214813232421875))
        neg = _expm1_neg(imp, x, float(at.get("alpha", 1.67326319217681884765625)) * gamma)
        x = imp.g.mul(x, _c(imp, gamma))
    return imp.g.where(imp.g.lt(x0, zero), neg, x)


@op("HardSigmoid", "HardSwish", "Softplus", "Softsign", "Mish", "Shrink")
def _activation(imp: Importer, node: Any) -> Any:
    """The other elementwise activations, composed of rlx's elementwise ops."""
    at, t = attrs(node), node.op_type
    x = imp.rt(imp.get(node.input[0]))
    if t == "HardSigmoid":
        return _hard_sigmoid(imp, x, float(at.get("alpha", 0.2)), float(at.get("beta", 0.5)))
    if t == "HardSwish":
        if np.dtype(imp.dtype(x)) == np.float32:
            # One op the convolutions and linears take as their epilogue (rlx's hard_swish).
            return imp.g.unary("hard_swish", x)
        return imp.g.mul(x, _hard_sigmoid(imp, x, 1.0 / 6.0, 0.5))
    if t == "Softplus":
        return _softplus(imp, x)
    if t == "Softsign":
        return imp.g.div(x, imp.g.add(_c(imp, 1.0), imp.g.abs(x)))
    if t == "Mish":
        return imp.g.mul(x, imp.g.tanh(_softplus(imp, x)))
    lambd, bias = float(at.get("lambd", 0.5)), float(at.get("bias", 0.0))
    low = imp.g.where(imp.g.lt(x, _c(imp, -lambd)), imp.g.add(x, _c(imp, bias)), _c(imp, 0.0))
    return imp.g.where(imp.g.gt(x, _c(imp, lambd)), imp.g.sub(x, _c(imp, bias)), low)
