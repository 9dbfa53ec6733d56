"""ONNX Resize and Upsample: per resized axis, gathers of the input positions each output
position reads and a weighted sum of them (nearest, linear and cubic modes, antialias).

Resize follows the onnx reference implementation (which generates the ONNX backend tests): source
coordinates in float64, the spec's unrounded output length in align_corners; ONNX Runtime
departs from it in a few fractional-scale cases (see tests/test_onnx_more.py).

Resize's scales / sizes / roi and the sizes of the axes it resizes must be known at import.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import rlx
from rlx._onnx_helpers import norm_axis
from rlx._onnx_import import Importer
from rlx._onnx_registry import STATIC_OPERANDS, attrs, op
from rlx._onnx_sym import dim_text

# Operands read at import (STATIC_OPERANDS lives in rlx._onnx_registry; the ONNX backend test
# adapter freezes graph inputs at these positions).
STATIC_OPERANDS.update({"Resize": {1, 2, 3}, "Upsample": {1}})


def _const(imp: Importer, arr: np.ndarray) -> Any:
    return imp.g.constant(np.ascontiguousarray(arr))


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
    axes = [norm_axis(int(a), r, t) for a in at.get("axes", range(r))]
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
