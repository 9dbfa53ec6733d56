"""Ops of the ``ai.onnx.ml`` domain that are tensor math: Binarizer (a threshold compare) and
ArrayFeatureExtractor (a gather along the last axis), composed from rlx graph ops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import rlx
from rlx._onnx_helpers import dims_prod
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import dim_text

_DOMAIN = "ai.onnx.ml"


@op(f"{_DOMAIN}.Binarizer")
def _binarizer(imp: Importer, node: Any) -> Any:
    """1 where x > threshold, else 0, in x's type."""
    x = imp.rt(imp.get(node.input[0]))
    dt = np.dtype(x.dtype)
    if dt.kind not in "fi":
        raise rlx.DTypeError(f"Binarizer of {dt}: the input must be a float or integer tensor")
    threshold = float(attrs(node).get("threshold", 0.0))
    g = imp.g
    if dt.kind == "f":
        above = g.gt(x, g.constant(np.array(threshold, dt)))
    elif np.isnan(threshold):
        above = g.ne(x, x)  # nothing is above NaN
    else:
        # An integer is above the threshold when it is above its floor: compared exactly, the
        # floor clamped into the type's range (below it, every value is above).
        info = np.iinfo(dt)
        bound = int(min(max(np.floor(threshold), info.min - 1), info.max))
        above = g.ge(x, g.constant(np.array(info.min, dt))) if bound < info.min else g.gt(x, g.constant(np.array(bound, dt)))
    return g.where(above, g.constant(np.array(1, dt)), g.constant(np.array(0, dt)))


@op(f"{_DOMAIN}.ArrayFeatureExtractor")
def _array_feature_extractor(imp: Importer, node: Any) -> Any:
    """``x[..., indices.flat]``: the last axis gathered at every index; a 1-D ``x`` gives one
    row, as onnxruntime does. A negative index counts from the end."""
    x, idx = imp.get(node.input[0]), imp.get(node.input[1])
    if imp.dtype(idx).kind not in "iu":
        raise rlx.DTypeError(f"ArrayFeatureExtractor indices of {imp.dtype(idx)}: they must be int64")
    dims = imp.shape(x)
    if not dims:
        raise rlx.ShapeError("ArrayFeatureExtractor of a scalar: the input needs a last axis")
    g = imp.g
    n = dims_prod(imp.shape(idx))
    flat = g.reshape(imp.rt(idx), (dim_text(n),))
    if np.dtype(flat.dtype) != np.int64:
        flat = g.cast(flat, "int64")
    out = g.gather(imp.rt(x), flat, len(dims) - 1)
    if len(dims) == 1:
        out = g.reshape(out, (1, dim_text(n)))
    return out
