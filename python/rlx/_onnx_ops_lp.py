"""ONNX Lp ops and statistics normalizations: LpNormalization (x over its L1 / L2 norm along
an axis), LpPool (|x|^p summed over each window by a depthwise Conv with a ones kernel, then the
p-th root), GroupNormalization (statistics per group of channels) and MeanVarianceNormalization.

LpPool sums |x|^p over the window as the spec's "Lp norm of the values" reads (padding adds
zeros); channels and spatial sizes must be static, as for Conv.
"""

from __future__ import annotations

from typing import Any, List

import numpy as np

import rlx
from rlx._onnx_helpers import dims_prod, norm_axis, pool_kernel, spatial_sizes, window_args
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import dim_text


def _f(imp: Importer, v: float) -> Any:
    return imp.g.constant(np.array(v, np.float32))


def _float_input(imp: Importer, node: Any) -> Any:
    x = imp.rt(imp.get(node.input[0]))
    if np.dtype(x.dtype) != np.float32:
        raise rlx.DTypeError(f"{node.op_type} on {x.dtype} (float32)")
    return x


def _abs_pow(imp: Importer, x: Any, p: float) -> Any:
    g = imp.g
    if p == 1:
        return g.abs(x)
    if p == 2:
        return g.mul(x, x)
    return g.pow(g.abs(x), _f(imp, p))


def _root(imp: Importer, s: Any, p: float) -> Any:
    g = imp.g
    if p == 1:
        return s
    if p == 2:
        return g.sqrt(s)
    return g.pow(s, _f(imp, 1.0 / p))


@op("LpNormalization")
def _lp_normalization(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x = _float_input(imp, node)
    axis = norm_axis(int(at.get("axis", -1)), len(x.shape), "LpNormalization")
    p = int(at.get("p", 2))
    if p not in (1, 2):
        raise rlx.ModelFormatError(f"LpNormalization p={p} (the spec allows 1 and 2)")
    g = imp.g
    norm = _root(imp, g.reduce_sum(_abs_pow(imp, x, p), [axis], keep_dim=True), p)
    # A zero norm gives 0, not 0 / 0 (the onnx reference).
    zero = _f(imp, 0.0)
    return g.where(g.eq(norm, zero), zero, g.div(x, norm))


@op("LpPool")
def _lp_pool(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    xv = imp.get(node.input[0])
    x = _float_input(imp, node)
    kernel = pool_kernel(node)
    strides, pads, dilations = window_args(imp, node, xv, kernel)
    n = len(kernel)
    sizes = spatial_sizes(imp, xv, n)
    p = float(at.get("p", 2))
    if not p > 0:
        raise rlx.ModelFormatError(f"LpPool p={p} must be positive")
    if at.get("ceil_mode", 0):
        # One more window where the last one would start inside the padded input: zeros add nothing.
        for i, (s, k, st, d) in enumerate(zip(sizes, kernel, strides, dilations)):
            span, total = (k - 1) * d + 1, s + pads[i] + pads[i + n]
            out = -(-(total - span) // st) + 1
            if (out - 1) * st >= s + pads[i]:
                out -= 1
            pads[i + n] += max((out - 1) * st + span - total, 0)
    c = int(imp.shape(xv)[1])
    ones = imp.g.constant(np.ones([c, 1] + kernel, np.float32))
    s = imp.g.conv(_abs_pow(imp, x, p), ones, None, strides=strides, pads=pads, dilations=dilations, groups=c)
    return _root(imp, s, p)


# -- GroupNormalization / MeanVarianceNormalization ----------------------------------------------


def _normalize(imp: Importer, x: Any, axes: List[int], eps: float, eps_on_std: bool) -> Any:
    g = imp.g
    d = g.sub(x, g.reduce_mean(x, axes, keep_dim=True))
    var = g.reduce_mean(g.mul(d, d), axes, keep_dim=True)
    if eps_on_std:
        return g.div(d, g.add(g.sqrt(var), _f(imp, eps)))
    return g.mul(d, g.rsqrt(g.add(var, _f(imp, eps))))


@op("GroupNormalization")
def _group_norm(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x = _float_input(imp, node)
    dims = imp.shape(x)
    if len(dims) < 2 or not isinstance(dims[1], int):
        raise rlx.ShapeError(f"GroupNormalization input {[dim_text(d) for d in dims]}: expected [N, C, ...] with static C")
    groups, c = int(at["num_groups"]), dims[1]
    if groups < 1 or c % groups:
        raise rlx.ShapeError(f"GroupNormalization num_groups {groups} does not divide the {c} channels")
    # Opset 18 scales and shifts per group, opset 21 per channel.
    per = groups if imp.opset < 21 else c
    g = imp.g
    scale, bias = (imp.rt(imp.get(n)) for n in node.input[1:3])
    for name, v in (("scale", scale), ("bias", bias)):
        if list(v.shape) != [per]:
            raise rlx.ShapeError(f"GroupNormalization {name} of shape {list(v.shape)}, expected [{per}]")
    rest = dims_prod(dims[2:])
    y = g.reshape(x, (dim_text(dims[0]), groups, dim_text((c // groups) * rest)))
    y = _normalize(imp, y, [2], float(at.get("epsilon", 1e-5)), False)
    if per == groups:
        y = g.add(g.mul(y, g.reshape(scale, (groups, 1))), g.reshape(bias, (groups, 1)))
        return g.reshape(y, tuple(dim_text(d) for d in dims))
    y = g.reshape(y, tuple(dim_text(d) for d in dims))
    bshape = (c,) + (1,) * (len(dims) - 2)
    return g.add(g.mul(y, g.reshape(scale, bshape)), g.reshape(bias, bshape))


@op("MeanVarianceNormalization")
def _mvn(imp: Importer, node: Any) -> Any:
    x = _float_input(imp, node)
    r = len(x.shape)
    axes = sorted({norm_axis(int(a), r, "MeanVarianceNormalization") for a in attrs(node).get("axes", [0, 2, 3])})
    # The spec's function body: (x - mean) / (sqrt(variance) + 1e-9).
    return _normalize(imp, x, axes, 1e-9, True)
