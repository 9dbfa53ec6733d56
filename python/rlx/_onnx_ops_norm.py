"""ONNX RMSNormalization (opset 23): rlx's ``rms_norm`` over the axes from ``axis`` on.

The normalized axes are flattened into one for ``rms_norm``; a scale shaped like them rides
in it, any other (unidirectionally broadcast) scale multiplies the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import rlx
from rlx._onnx_helpers import dims_prod, norm_axis
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import dim_text


@op("RMSNormalization")
def _rms_normalization(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    xv, sv = imp.get(node.input[0]), imp.get(node.input[1])
    if imp.dtype(xv) != np.float32 or imp.dtype(sv) != np.float32:
        raise rlx.UnsupportedOpError(f"RMSNormalization on {imp.dtype(xv)} / {imp.dtype(sv)} (float32 only)")
    if int(at.get("stash_type", 1)) != 1:
        raise rlx.UnsupportedOpError(f"RMSNormalization stash_type {at['stash_type']}: rlx computes in float32 (stash_type 1)")
    dims, sdims = imp.shape(xv), imp.shape(sv)
    r = len(dims)
    if r == 0:
        raise rlx.ShapeError("RMSNormalization of a scalar: it needs at least one axis")
    axis = norm_axis(int(at.get("axis", -1)), r, "RMSNormalization")
    eps = float(at.get("epsilon", 1e-5))
    if len(sdims) > r or any(s != 1 and s != d for s, d in zip(sdims[::-1], dims[::-1])):
        raise rlx.ShapeError(f"RMSNormalization scale {[str(s) for s in sdims]} does not broadcast to X {[str(d) for d in dims]}")
    n = dims_prod(dims[axis:])
    x = imp.rt(xv)
    if axis != r - 1:
        x = imp.g.reshape(x, tuple(dim_text(d) for d in dims[:axis]) + (dim_text(n),))
    # The scale rides in rms_norm when it is exactly the normalized shape (maybe with leading 1s).
    inner = list(sdims)
    while len(inner) > r - axis and inner[0] == 1:
        inner.pop(0)
    if inner == dims[axis:]:
        gamma = imp.g.reshape(imp.rt(sv), (dim_text(n),)) if len(sdims) != 1 else imp.rt(sv)
        y = imp.g.rms_norm(x, gamma, eps)
        post = None
    else:
        if not isinstance(n, int):
            raise rlx.UnsupportedOpError(f"RMSNormalization over symbolic size {dim_text(n)} with a broadcast scale")
        y = imp.g.rms_norm(x, imp.g.constant(np.ones((n,), np.float32)), eps)
        post = imp.rt(sv)
    if axis != r - 1:
        y = imp.g.reshape(y, tuple(dim_text(d) for d in dims))
    return imp.g.mul(y, post) if post is not None else y
