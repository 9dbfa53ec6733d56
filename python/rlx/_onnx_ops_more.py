"""More ONNX ops, each built from existing rlx graph ops with the constants computed at import:
Resize / Upsample (per resized axis: gathers and a weighted sum), DepthToSpace / SpaceToDepth
(reshape + transpose), CumSum (float: a matmul with a triangular constant; int: log2(n)
shifted adds, exact) and Einsum (transposes, sums and one batched matmul).

Resize follows the onnx reference implementation (which generates the ONNX backend tests): source
coordinates in float64, the spec's unrounded output length in align_corners; ONNX Runtime
departs from it in a few fractional-scale cases (see tests/test_onnx_more.py).

Resize's scales / sizes / roi, CumSum's axis and the spatial sizes that Resize and CumSum work
along must be known at import.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

import rlx
from rlx._onnx_import import Importer, Known
from rlx import _onnx_ops_shape as _shp
from rlx._onnx_registry import STATIC_OPERANDS, attrs, foldable, op
from rlx._onnx_sym import DimLike, dim_text

# Operands read at import (STATIC_OPERANDS lives in rlx._onnx_registry; the ONNX backend test
# adapter freezes graph inputs at these positions).
STATIC_OPERANDS.update({"Resize": {1, 2, 3}, "Upsample": {1}, "CumSum": {1}})


def _const(imp: Importer, arr: np.ndarray) -> Any:
    return imp.g.constant(np.ascontiguousarray(arr))


# -- Resize / Upsample -----------------------------------------------------------------------

_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                "asymmetric", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _x_original(mode: str, out_len: int, in_len: int, scale: float,
                roi: Optional[Tuple[float, float]]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Source coordinate of every output position along one axis (float64), and for
    tf_crop_and_resize the positions outside the input (filled with extrapolation_value)."""
    y = np.arange(out_len, dtype=np.float64)
    out_f = scale * in_len  # the spec's (unrounded) output length
    if mode == "align_corners":
        x = np.zeros(out_len) if out_f == 1 else y * (in_len - 1) / (out_f - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "pytorch_half_pixel":
        x = np.full(out_len, -0.5) if out_f == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / out_f)
        x = offset + (y + 0.5) / scale - 0.5
    else:  # tf_crop_and_resize
        assert roi is not None
        lo, hi = roi
        if out_f == 1:
            x = np.full(out_len, (hi - lo) * (in_len - 1) / 2)
        else:
            x = y * (hi - lo) * (in_len - 1) / (out_f - 1)
        x = x + lo * (in_len - 1)
        return x, (x < 0) | (x > in_len - 1)
    return x, None


def _nearest_coeffs(ratio: float, mode: str) -> List[float]:
    if ratio == 1.0:
        return [0.0, 1.0]
    if mode == "round_prefer_floor":
        return [float(ratio <= 0.5), float(ratio > 0.5)]
    if mode == "round_prefer_ceil":
        return [float(ratio < 0.5), float(ratio >= 0.5)]
    return [1.0, 0.0] if mode == "floor" else [0.0, 1.0]


def _cubic_coeffs(r: float, a: float) -> List[float]:
    s = 1 - r
    return [((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
            ((a + 2) * r - (a + 3)) * r * r + 1,
            ((a + 2) * s - (a + 3)) * s * s + 1,
            ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a]


def _antialias_coeffs(r: float, scale: float, mode: str, a: float) -> List[float]:
    """Linear / cubic weights widened by 1 / scale when downsampling (antialias=1)."""
    scale = min(scale, 1.0)
    if mode == "linear":
        start = int(np.floor(-1 / scale) + 1)
        c = np.clip(1 - np.abs((np.arange(start, 2 - start) - r) * scale), 0, 1)
    else:
        start = int(np.floor(-2 / scale) + 1)
        z = np.abs(scale * (np.arange(start, 2 - start) - r))
        c = np.where(z <= 1, (a + 2) * z**3 - (a + 3) * z**2 + 1,
                     np.where(z < 2, a * z**3 - 5 * a * z**2 + 8 * a * z - 4 * a, 0.0))
    return list(c / c.sum())


def _taps(x_ori: np.ndarray, in_len: int, mode: str, nearest_mode: str, cubic_a: float,
          exclude_outside: bool, aa_scale: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(indices [out, n], weights [out, n]) of the n input positions each output position
    reads along one axis, as the ONNX reference computes them: the n positions nearest x_ori
    (ties to the smaller), clamped into the input (edge padding)."""
    x_int = np.floor(x_ori)
    ratios = np.where(x_ori == x_int, 1.0, x_ori - x_int)
    if aa_scale is not None:
        coeffs = np.array([_antialias_coeffs(float(r), aa_scale, mode, cubic_a) for r in ratios])
    elif mode == "nearest":
        coeffs = np.array([_nearest_coeffs(float(r), nearest_mode) for r in ratios]).reshape(-1, 2)
    elif mode == "linear":
        coeffs = np.stack([1 - ratios, ratios], axis=-1).reshape(-1, 2)
    else:
        coeffs = np.array([_cubic_coeffs(float(r), cubic_a) for r in ratios]).reshape(-1, 4)
    n = coeffs.shape[1]
    pad = int(math.ceil(n / 2))
    xp = x_ori + pad
    p = np.floor(xp).astype(np.int64)
    frac = xp - p
    if n % 2 == 0:
        start = p + np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        start = p + np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    idx = start[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((idx < 0) | (idx >= in_len), 0.0, coeffs)
        total = coeffs.sum(axis=-1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, in_len - 1), coeffs


def _resize_axis(imp: Importer, x: Any, axis: int, rank: int, idx: np.ndarray, w: np.ndarray,
                 mode: str, extrap: Optional[Tuple[np.ndarray, float]]) -> Any:
    """``x`` resized along ``axis``: one gather per tap (a nearest mode has one tap), the taps
    summed with their weights."""
    out_len = idx.shape[0]
    wshape = [1] * rank
    wshape[axis] = out_len
    if mode == "nearest":
        pick = np.argmax(w, axis=1)
        taps = [(idx[np.arange(out_len), pick], None)]
    else:
        taps = [(idx[:, k], w[:, k]) for k in range(idx.shape[1]) if np.any(w[:, k] != 0)]
    acc = None
    for ix, wk in taps:
        t = imp.g.gather(x, _const(imp, ix.astype(np.int64)), axis)
        if wk is not None and not np.all(wk == 1):
            t = imp.g.mul(t, _const(imp, wk.astype(np.float32).reshape(wshape)))
        acc = t if acc is None else imp.g.add(acc, t)
    if acc is None:  # every weight zero (exclude_outside on a 1-element axis)
        acc = imp.g.mul(imp.g.gather(x, _const(imp, idx[:, 0].astype(np.int64)), axis),
                        _const(imp, np.zeros(wshape, np.float32)))
    if extrap is not None and extrap[0].any():
        mask, value = extrap
        acc = imp.g.where(_const(imp, mask.reshape(wshape)), _const(imp, np.array(value, np.dtype(acc.dtype))), acc)
    return acc


def _floats(imp: Importer, name: str, what: str) -> Optional[np.ndarray]:
    if not name:
        return None
    arr = np.asarray(imp.values(name, what), dtype=np.float64).reshape(-1)
    return arr if arr.size else None


@op("Resize", "Upsample")
def _resize(imp: Importer, node: Any) -> Any:
    at, t = attrs(node), node.op_type
    xv = imp.get(node.input[0])
    dims = imp.shape(xv)
    r = len(dims)
    ins = list(node.input) + [""] * 4
    mode = at.get("mode", "nearest")
    roi = sizes = None
    if t == "Upsample" or imp.opset < 11:
        # Upsample and Resize-10: scales only, asymmetric coordinates, nearest rounds down.
        scales = (np.asarray(at["scales"], np.float64) if "scales" in at and t == "Upsample" and imp.opset < 9
                  else _floats(imp, ins[1], f"{t} scales"))
        coord, nearest_mode = "asymmetric", "floor"
        if t == "Upsample" and mode == "bilinear":
            mode = "linear"
    else:
        roi = _floats(imp, ins[1], "Resize roi")
        scales = _floats(imp, ins[2], "Resize scales")
        sizes = imp.ints(ins[3], "Resize sizes") if ins[3] else None
        if sizes is not None and not sizes:
            sizes = None
        coord = at.get("coordinate_transformation_mode", "half_pixel")
        nearest_mode = at.get("nearest_mode", "round_prefer_floor")
    if mode not in ("nearest", "linear", "cubic"):
        raise rlx.UnsupportedOpError(f"{t} mode {mode!r} (rlx imports nearest, linear and cubic)")
    if coord not in _COORD_MODES:
        raise rlx.UnsupportedOpError(f"{t} coordinate_transformation_mode {coord!r}")
    if mode == "nearest" and nearest_mode not in _NEAREST_MODES:
        raise rlx.UnsupportedOpError(f"{t} nearest_mode {nearest_mode!r}")
    antialias = bool(at.get("antialias", 0)) and mode != "nearest"
    if at.get("antialias", 0) and mode == "nearest":
        raise rlx.UnsupportedOpError(f"{t} with antialias=1 in mode 'nearest'")
    axes = [_shp._axis(int(a), r, t) for a in at.get("axes", range(r))]
    if len(set(axes)) != len(axes):
        raise rlx.ShapeError(f"{t} axes {axes} repeat an axis")
    n = len(axes)
    if (scales is None) == (sizes is None):
        raise rlx.ModelFormatError(f"{t} needs exactly one of scales and sizes")
    given = scales if scales is not None else sizes
    if len(given) != n:
        raise rlx.ShapeError(f"{t} {'scales' if sizes is None else 'sizes'} has {len(given)} entries for {n} axes")
    in_lens: Dict[int, int] = {}
    for a in axes:
        d = dims[a]
        if scales is not None and scales[axes.index(a)] == 1 or sizes is not None and sizes[axes.index(a)] == d:
            continue  # not resized: may be symbolic
        if not isinstance(d, int):
            raise rlx.UnsupportedOpError(f"{t} along axis {a} of symbolic size {dim_text(d)}: resized axes must be static")
        in_lens[a] = d
    scale_of: Dict[int, float] = {}
    out_of: Dict[int, int] = {}
    if sizes is not None:
        if any(not isinstance(s, int) or s < 0 for s in sizes):
            raise rlx.ShapeError(f"{t} sizes {[str(s) for s in sizes]} must be static and non-negative")
        policy = at.get("keep_aspect_ratio_policy", "stretch")
        ratios = {a: (sizes[i] / in_lens[a] if a in in_lens else 1.0) for i, a in enumerate(axes)}
        if policy == "stretch":
            scale_of, out_of = ratios, {a: int(sizes[i]) for i, a in enumerate(axes)}
        elif policy in ("not_larger", "not_smaller"):
            if len(in_lens) != n:
                raise rlx.UnsupportedOpError(f"{t} keep_aspect_ratio_policy {policy!r} needs static sizes on every axis")
            s = min(ratios.values()) if policy == "not_larger" else max(ratios.values())
            scale_of = {a: s for a in axes}
            out_of = {a: int(s * in_lens[a] + 0.5) for a in axes}
            in_lens = {a: in_lens[a] for a in axes}
        else:
            raise rlx.ModelFormatError(f"{t} keep_aspect_ratio_policy {policy!r}")
    else:
        if any(not np.isfinite(s) or s <= 0 for s in scales):
            raise rlx.ShapeError(f"{t} scales {scales.tolist()} must be positive")
        for i, a in enumerate(axes):
            scale_of[a] = float(scales[i])
            out_of[a] = int(math.floor(scales[i] * in_lens[a])) if a in in_lens else dims[a]
    if roi is not None and coord == "tf_crop_and_resize" and roi.size != 2 * n:
        raise rlx.ShapeError(f"{t} roi has {roi.size} entries, expected {2 * n} (starts then ends)")
    if coord == "tf_crop_and_resize" and roi is None:
        raise rlx.ModelFormatError(f"{t} coordinate_transformation_mode 'tf_crop_and_resize' needs roi")
    if mode != "nearest" and imp.dtype(xv).kind != "f":
        raise rlx.UnsupportedOpError(f"{t} mode {mode!r} on {imp.dtype(xv)} (float32 only)")
    x = imp.rt(xv)
    cubic_a = float(at.get("cubic_coeff_a", -0.75))
    exclude = bool(at.get("exclude_outside", 0))
    extrap_value = float(at.get("extrapolation_value", 0.0))
    for i, a in enumerate(axes):
        if a not in in_lens:
            continue
        in_len, out_len, scale = in_lens[a], out_of[a], scale_of[a]
        axis_roi = (float(roi[i]), float(roi[n + i])) if coord == "tf_crop_and_resize" else None
        if out_len == in_len and math.isclose(scale, 1.0) and (axis_roi is None or axis_roi == (0.0, 1.0)):
            continue
        if out_len == 0 or in_len == 0:
            raise rlx.ShapeError(f"{t} to an empty axis {a} ({in_len} -> {out_len})")
        x_ori, outside = _x_original(coord, out_len, in_len, scale, axis_roi)
        idx, w = _taps(x_ori, in_len, mode, nearest_mode, cubic_a, exclude, scale if antialias else None)
        x = _resize_axis(imp, x, a, r, idx, w, mode, None if outside is None else (outside, extrap_value))
    return x


# -- DepthToSpace / SpaceToDepth -------------------------------------------------------------


def _static(imp: Importer, dims: Sequence[DimLike], what: str, which: Sequence[int]) -> None:
    if not all(isinstance(dims[i], int) for i in which):
        raise rlx.UnsupportedOpError(f"{what} needs static channels and spatial sizes, got {[str(d) for d in dims]}")


def _move(imp: Importer, x: Any, shape1: List[DimLike], perm: List[int], shape2: List[DimLike]) -> Any:
    if foldable(x):
        return Known(np.transpose(x.arr.reshape([int(d) for d in shape1]), perm).reshape([int(d) for d in shape2]), x.dtype)
    y = _shp._reshape(imp, x, shape1)
    y = imp.g.transpose(imp.rt(y), perm)
    return imp.g.reshape(y, tuple(dim_text(d) for d in shape2))


@op("DepthToSpace")
def _depth_to_space(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    if len(dims) != 4:
        raise rlx.ShapeError(f"DepthToSpace input of rank {len(dims)}, expected [N, C, H, W]")
    _static(imp, dims, "DepthToSpace", (1, 2, 3))
    b = int(at["blocksize"])
    n, c, h, w = dims
    if b < 1 or c % (b * b):
        raise rlx.ShapeError(f"DepthToSpace: channels {c} not divisible by blocksize^2 ({b}^2)")
    mode = at.get("mode", "DCR")
    c2 = c // (b * b)
    if mode == "DCR":
        return _move(imp, x, [n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2], [n, c2, h * b, w * b])
    if mode == "CRD":
        return _move(imp, x, [n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3], [n, c2, h * b, w * b])
    raise rlx.UnsupportedOpError(f"DepthToSpace mode {mode!r} (DCR or CRD)")


@op("SpaceToDepth")
def _space_to_depth(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    if len(dims) != 4:
        raise rlx.ShapeError(f"SpaceToDepth input of rank {len(dims)}, expected [N, C, H, W]")
    _static(imp, dims, "SpaceToDepth", (1, 2, 3))
    at = attrs(node)
    b = int(at["blocksize"])
    n, c, h, w = dims
    if b < 1 or h % b or w % b:
        raise rlx.ShapeError(f"SpaceToDepth: spatial sizes {h}x{w} not divisible by blocksize {b}")
    mode = at.get("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise rlx.UnsupportedOpError(f"SpaceToDepth mode {mode!r} (DCR or CRD)")
    perm = [0, 3, 5, 1, 2, 4] if mode == "DCR" else [0, 1, 3, 5, 2, 4]
    return _move(imp, x, [n, c, h // b, b, w // b, b], perm, [n, c * b * b, h // b, w // b])


# -- CumSum ----------------------------------------------------------------------------------


@op("CumSum")
def _cumsum(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    xv = imp.get(node.input[0])
    axis_arr = np.asarray(imp.values(node.input[1], "CumSum axis")).reshape(-1)
    if axis_arr.size != 1:
        raise rlx.ShapeError(f"CumSum axis must be a scalar, got {axis_arr.size} values")
    dims = imp.shape(xv)
    r = len(dims)
    axis = _shp._axis(int(axis_arr[0]), r, "CumSum")
    exclusive, reverse = bool(at.get("exclusive", 0)), bool(at.get("reverse", 0))
    if foldable(xv) and not xv.symbolic:
        a = np.flip(xv.arr, axis) if reverse else xv.arr
        c = np.cumsum(a, axis=axis, dtype=xv.dtype)
        if exclusive:
            c = c - a
        return Known(np.flip(c, axis) if reverse else c, xv.dtype)
    dt = imp.dtype(xv)
    if dt not in (np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.int64)):
        raise rlx.UnsupportedOpError(f"CumSum on {dt} (float32, int32, int64)")
    n = dims[axis]
    if not isinstance(n, int):
        raise rlx.UnsupportedOpError(f"CumSum along axis {axis} of symbolic size {dim_text(n)}: the axis must be static")
    if dt != np.float32:
        return _cumsum_int(imp, imp.rt(xv), dims, axis, n, exclusive, reverse)
    # out[..., j] = sum_i x[..., i] * T[i, j]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    keep = (i > j if exclusive else i >= j) if reverse else (i < j if exclusive else i <= j)
    tri = keep.astype(np.float32)
    x = imp.rt(xv)
    if r == 0:
        return x
    last = r - 1
    perm = list(range(r))
    if axis != last:
        perm[axis], perm[last] = last, axis
        x = imp.g.transpose(x, perm)
    if r == 1:
        y = imp.g.reshape(imp.g.matmul(imp.g.reshape(x, (1, n)), _const(imp, tri)), (n,))
    else:
        y = imp.g.matmul(x, _const(imp, tri))
    return imp.g.transpose(y, perm) if axis != last else y


def _cumsum_int(imp: Importer, x: Any, dims: List[DimLike], axis: int, n: int, exclusive: bool, reverse: bool) -> Any:
    """Integer CumSum, exact: log2(n) adds of the running sum shifted by 1, 2, 4, ... along
    the axis (zeros shifted in); reverse reads the axis backwards; exclusive subtracts x."""
    if n <= 1 and not exclusive:
        return x
    rev = _const(imp, np.arange(n - 1, -1, -1, dtype=np.int64))
    src = imp.g.gather(x, rev, axis) if reverse else x
    zero = imp.g.constant(np.zeros((), np.dtype(x.dtype)))
    y, s = src, 1
    while s < n:
        pad = imp.filled([s if i == axis else d for i, d in enumerate(dims)], zero)
        y = imp.g.add(y, imp.g.concat([pad, imp.g.slice(y, axis, "0", str(n - s))], axis))
        s *= 2
    if exclusive:
        y = imp.g.sub(y, src)
    return imp.g.gather(y, rev, axis) if reverse else y


# -- Einsum ----------------------------------------------------------------------------------


def _parse_einsum(eq: str, ranks: List[int]) -> Tuple[List[str], str]:
    eq = eq.replace(" ", "")
    if "->" in eq:
        lhs, out = eq.split("->")
    else:
        lhs, out = eq, None
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise rlx.ShapeError(f"Einsum {eq!r} names {len(terms)} operands, got {len(ranks)}")
    ell_rank = None
    letters = set(c for c in eq if c.isalpha())
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in letters]
    fixed = []
    for term, rk in zip(terms, ranks):
        if "..." in term:
            k = rk - (len(term) - 3)
            if ell_rank is not None and k != ell_rank:
                raise rlx.UnsupportedOpError(f"Einsum {eq!r}: ellipses of different ranks (broadcasting)")
            ell_rank = k
            term = term.replace("...", "".join(spare[:k]))
        if not re.fullmatch(r"[A-Za-z]*", term) or len(term) != rk:
            raise rlx.ShapeError(f"Einsum term {term!r} does not match an operand of rank {rk}")
        if len(set(term)) != len(term):
            raise rlx.UnsupportedOpError(f"Einsum {eq!r}: a repeated index in one operand (diagonals)")
        fixed.append(term)
    ell = "".join(spare[:ell_rank or 0])
    if out is None:
        counts: Dict[str, int] = {}
        for term in fixed:
            for c in term:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c in counts if counts[c] == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    if not re.fullmatch(r"[A-Za-z]*", out) or len(set(out)) != len(out):
        raise rlx.ShapeError(f"Einsum output {out!r} is not a list of distinct indices")
    if any(c not in "".join(fixed) for c in out):
        raise rlx.ShapeError(f"Einsum {eq!r}: an output index names no input axis")
    return fixed, out


def _sum_out(imp: Importer, x: Any, term: str, keep: str) -> Tuple[Any, str]:
    """``x`` summed over the indices of ``term`` that are not in ``keep``."""
    drop = [i for i, c in enumerate(term) if c not in keep]
    if not drop:
        return x, term
    return imp.g.reduce_sum(x, drop, keep_dim=False), "".join(c for c in term if c in keep)


def _permute(imp: Importer, x: Any, term: str, want: str) -> Any:
    perm = [term.index(c) for c in want]
    return x if perm == list(range(len(perm))) else imp.g.transpose(x, perm)


@op("Einsum")
def _einsum(imp: Importer, node: Any) -> Any:
    eq = attrs(node)["equation"]
    vals = [imp.get(i) for i in node.input]
    fixed, out = _parse_einsum(eq, [imp.rank(v) for v in vals])
    if len(vals) > 2:
        raise rlx.UnsupportedOpError(f"Einsum {eq!r} with {len(vals)} operands (1 or 2)")
    size: Dict[str, DimLike] = {}
    for term, v in zip(fixed, vals):
        for c, d in zip(term, imp.shape(v)):
            if c in size and size[c] != d:
                raise rlx.UnsupportedOpError(f"Einsum {eq!r}: index {c!r} has sizes {dim_text(size[c])} and {dim_text(d)} (no broadcasting)")
            size[c] = d
    if any(imp.dtype(v) != np.float32 for v in vals):
        raise rlx.UnsupportedOpError(f"Einsum {eq!r} on {', '.join(str(imp.dtype(v)) for v in vals)} (float32 only)")
    if len(vals) == 1:
        x, term = _sum_out(imp, imp.rt(vals[0]), fixed[0], out)
        return _permute(imp, x, term, out)
    (ta, tb), (a, b) = fixed, (imp.rt(vals[0]), imp.rt(vals[1]))
    # Indices in one operand only and not in the output are summed first.
    a, ta = _sum_out(imp, a, ta, out + tb)
    b, tb = _sum_out(imp, b, tb, out + ta)
    batch = [c for c in ta if c in tb and c in out]
    contract = [c for c in ta if c in tb and c not in out]
    fa = [c for c in ta if c not in tb]
    fb = [c for c in tb if c not in ta]
    if any(c not in out for c in fa + fb):
        raise rlx.GraphError(f"Einsum {eq!r}: internal index classification failed")
    a = _permute(imp, a, ta, "".join(batch + fa + contract))
    b = _permute(imp, b, tb, "".join(batch + contract + fb))
    bs, m, k, nn = ([size[c] for c in batch], _shp._prod([size[c] for c in fa]),
                    _shp._prod([size[c] for c in contract]), _shp._prod([size[c] for c in fb]))
    bsz = _shp._prod(bs)
    a = imp.g.reshape(a, (dim_text(bsz), dim_text(m), dim_text(k)))
    b = imp.g.reshape(b, (dim_text(bsz), dim_text(k), dim_text(nn)))
    y = imp.g.matmul(a, b)
    res = "".join(batch + fa + fb)
    y = imp.g.reshape(y, tuple(dim_text(size[c]) for c in res))
    return _permute(imp, y, res, out)
