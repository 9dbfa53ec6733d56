"""ONNX ops that are a mask made at import or a compare with an arange: Trilu (a triangular
mask and a where), EyeLike (a constant), OneHot and Hardmax (indices compared with an arange
along the new / reduced axis), CenterCropPad (slices and zero blocks) and Compress (a gather
of the positions its condition selects).

The masked axes (Trilu's last two, EyeLike's, CenterCropPad's cropped or padded ones),
OneHot's depth and Compress's condition must be known at import.
"""

from __future__ import annotations

from typing import Any, List

import numpy as np

import rlx
from rlx._onnx_helpers import dims_prod, norm_axis, static_dims
from rlx._onnx_import import Importer, Known, declared_dtype, np_dtype
from rlx._onnx_registry import STATIC_OPERANDS, attrs, foldable, op
from rlx._onnx_sym import dim_text

STATIC_OPERANDS.update({"Trilu": {1}, "OneHot": {1}, "CenterCropPad": {1}, "Compress": {1}})


def _scalar(imp: Importer, name: str, what: str) -> Any:
    arr = np.asarray(imp.values(name, what)).reshape(-1)
    if arr.size != 1:
        raise rlx.ShapeError(f"{what} must hold one value, got {arr.size}")
    return arr[0]


def _along(n: int, axis: int, rank: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64).reshape([n if i == axis else 1 for i in range(rank)])


@op("Trilu")
def _trilu(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    if len(dims) < 2:
        raise rlx.ShapeError(f"Trilu input of rank {len(dims)}, expected at least 2")
    n, m = dims[-2:]
    if not (isinstance(n, int) and isinstance(m, int)):
        raise rlx.UnsupportedOpError(f"Trilu on a matrix of symbolic size {dim_text(n)} x {dim_text(m)}")
    k = int(_scalar(imp, node.input[1], "Trilu k")) if len(node.input) > 1 and node.input[1] else 0
    upper = bool(attrs(node).get("upper", 1))
    # Clamped so that a huge k still makes a small (all-true or all-false) mask.
    k = max(min(k, m + 1), -n - 1)
    diff = np.arange(m)[None, :] - np.arange(n)[:, None]
    keep = diff >= k if upper else diff <= k
    if foldable(x) and not x.symbolic:
        return Known(np.where(keep, x.arr, np.zeros((), x.dtype)), x.dtype)
    g = imp.g
    zero = g.constant(np.zeros((), imp.dtype(x)))
    return g.where(g.constant(keep), imp.rt(x), zero)


@op("EyeLike")
def _eye_like(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x = imp.get(node.input[0])
    dims = static_dims(imp, x, "EyeLike")
    if len(dims) != 2:
        raise rlx.ShapeError(f"EyeLike input of rank {len(dims)}, expected 2")
    dt = declared_dtype(at["dtype"], "EyeLike dtype") if "dtype" in at else imp.dtype(x)
    imp.reserve(dims, dt.itemsize, "the result")
    return Known(np.eye(dims[0], dims[1], int(at.get("k", 0)), dtype=dt), dt)


@op("OneHot")
def _one_hot(imp: Importer, node: Any) -> Any:
    iv, vv = imp.get(node.input[0]), imp.get(node.input[2])
    depth_v = _scalar(imp, node.input[1], "OneHot depth")
    depth = int(depth_v)  # the spec casts a non-integer depth to int64
    if depth < 1:
        raise rlx.ShapeError(f"OneHot depth {depth_v} must be positive")
    if imp.shape(vv) != [2]:
        raise rlx.ShapeError(f"OneHot values of shape {imp.shape(vv)}, expected [2] (off, on)")
    r = imp.rank(iv) + 1
    axis = norm_axis(int(attrs(node).get("axis", -1)), r, "OneHot")
    g = imp.g
    dt = imp.dtype(iv)
    if dt.kind not in "iuf":
        raise rlx.DTypeError(f"OneHot indices of dtype {dt}")
    idx = imp.rt(iv)
    idx = idx if dt == np.int64 else g.cast(idx, "int64")  # floats truncate, as the spec casts
    d = g.constant(np.array(depth, np.int64))
    idx = g.where(g.lt(idx, g.constant(np.zeros((), np.int64))), g.add(idx, d), idx)
    shape = [dim_text(s) for s in imp.shape(iv)]
    shape.insert(axis, 1)
    hot = g.eq(g.reshape(idx, tuple(shape)), g.constant(_along(depth, axis, r)))
    vals = imp.rt(vv)
    off, on = g.slice(vals, 0, 0, 1), g.slice(vals, 0, 1, 2)
    return g.where(hot, on, off)


@op("Hardmax")
def _hardmax(imp: Importer, node: Any) -> Any:
    x = imp.rt(imp.get(node.input[0]))
    dims = imp.shape(x)
    r = len(dims)
    old = imp.opset < 13
    axis = norm_axis(int(attrs(node).get("axis", 1 if old else -1)), r, "Hardmax")
    g = imp.g
    y, ax = x, axis
    if old and r > 2:
        # Before opset 13 the input is flattened to 2-D at `axis` first.
        y, ax = g.reshape(x, (dim_text(dims_prod(dims[:axis])), dim_text(dims_prod(dims[axis:])))), 1
    n = imp.shape(y)[ax]
    if not isinstance(n, int):
        raise rlx.UnsupportedOpError(f"Hardmax along an axis of symbolic size {dim_text(n)}")
    hot = g.eq(g.argmax(y, ax, True, False), g.constant(_along(n, ax, len(y.shape))))
    dt = np.dtype(x.dtype)
    out = g.where(hot, g.constant(np.ones((), dt)), g.constant(np.zeros((), dt)))
    return g.reshape(out, tuple(dim_text(d) for d in dims)) if out.shape != x.shape else out


@op("CenterCropPad")
def _center_crop_pad(imp: Importer, node: Any) -> Any:
    xv = imp.get(node.input[0])
    dims = imp.shape(xv)
    r = len(dims)
    target = [int(s) for s in np.asarray(imp.values(node.input[1], "CenterCropPad shape")).reshape(-1)]
    axes = [norm_axis(int(a), r, "CenterCropPad") for a in attrs(node).get("axes", range(r))]
    if len(target) != len(axes) or len(set(axes)) != len(axes):
        raise rlx.ShapeError(f"CenterCropPad shape {target} for axes {axes}: one size per distinct axis")
    if any(t < 0 for t in target):
        raise rlx.ShapeError(f"CenterCropPad shape {target} has a negative size")
    g, x = imp.g, imp.rt(xv)
    cur: List[Any] = list(dims)
    zero = g.constant(np.zeros((), imp.dtype(xv)))
    for a, t in zip(axes, target):
        d = cur[a]
        if d == t:
            continue
        if not isinstance(d, int):
            raise rlx.UnsupportedOpError(f"CenterCropPad on axis {a} of symbolic size {dim_text(d)}")
        if t < d:
            start = (d - t) // 2
            x = g.slice(x, a, start, start + t)
        else:
            before = (t - d) // 2
            pieces = [x]
            if before:
                pieces.insert(0, imp.filled([before if i == a else c for i, c in enumerate(cur)], zero))
            pieces.append(imp.filled([t - d - before if i == a else c for i, c in enumerate(cur)], zero))
            x = g.concat(pieces, a)
        cur[a] = t
    return x



@op("Compress")
def _compress(imp: Importer, node: Any) -> Any:
    """A gather of the positions whose condition is true, listed at import."""
    xv = imp.get(node.input[0])
    cond = np.asarray(imp.values(node.input[1], "Compress condition"))
    if cond.ndim != 1:
        raise rlx.ShapeError(f"Compress condition of shape {list(cond.shape)}, expected one dimension")
    at = attrs(node)
    g, x = imp.g, imp.rt(xv)
    if "axis" in at:
        axis = norm_axis(int(at["axis"]), imp.rank(xv), "Compress")
    else:
        x, axis = g.reshape(x, (dim_text(dims_prod(imp.shape(xv))),)), 0
    n = imp.shape(x)[axis]
    if not isinstance(n, int):
        raise rlx.UnsupportedOpError(f"Compress along an axis of symbolic size {dim_text(n)}")
    picked = np.flatnonzero(cond != 0)
    if picked.size and picked[-1] >= n:
        raise rlx.ShapeError(f"Compress condition selects position {picked[-1]} of an axis of size {n}")
    if not picked.size:
        raise rlx.UnsupportedOpError("Compress selects nothing: rlx has no empty tensors")
    return g.gather(x, g.constant(picked.astype(np.int64)), axis)
