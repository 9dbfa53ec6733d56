"""ONNX ops that sample an image bilinearly at run-time positions: DeformConv and RoiAlign,
composed from rlx graph ops as the onnx reference computes them (GridSample's approach: the
neighbouring pixels read by one gather of the flattened image, weighted).

- DeformConv (2-d): every kernel tap of every output position samples the input at its grid
  position plus the learned offset (per offset group), bilinearly with zero padding (each of
  the four neighbours outside the image counts 0, as GridSample with ``align_corners``),
  times the optional mask; the sampled columns ``[N, C * kh * kw, oh, ow]`` then meet the
  weight in a grouped 1x1 convolution (with the bias).
- RoiAlign: each region's ``output_height x output_width`` bins average (or take the max of)
  a ``sampling_ratio``-square grid of bilinear samples, with the reference's clamping at the
  borders (a sample beyond one pixel outside the image counts 0; in max mode the max runs over
  each neighbour's weighted value). With ``sampling_ratio`` 0 the grid size depends on each
  region's size: the regions must then be known at import and give one grid size.

Shapes must be static. Flat pixel indices are computed in float32 (exact below 2**24 pixels).
"""

from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np

import rlx
from rlx._onnx_helpers import int_list, static_dims
from rlx._onnx_import import Importer, Known
from rlx._onnx_registry import attrs, op


def _c(g: Any, v: float) -> Any:
    return g.constant(np.array(v, np.float32))


def _check_pixels(n: int) -> None:
    if n >= 2**24:
        raise rlx.UnsupportedOpError(f"an image of {n} pixels: rlx computes flat pixel indices in float32 "
                                     "(exact below 2**24)")


# -- DeformConv ------------------------------------------------------------------------------


def _corners(g: Any, y: Any, x: Any, h: int, w: int) -> List[Tuple[Any, Any]]:
    """(flat pixel index in float32, weight) of the four neighbours of (y, x); a neighbour
    outside the image gets weight 0 (and an in-range index)."""
    y0, x0 = g.unary("floor", y), g.unary("floor", x)
    ly, lx = g.sub(y, y0), g.sub(x, x0)
    one, zero = _c(g, 1.0), _c(g, 0.0)
    out = []
    for dy, wy in ((0.0, g.sub(one, ly)), (1.0, ly)):
        yy = g.add(y0, _c(g, dy)) if dy else y0
        in_y = g.where(g.ge(yy, zero), g.le(yy, _c(g, h - 1.0)), g.ge(yy, zero))
        for dx, wx in ((0.0, g.sub(one, lx)), (1.0, lx)):
            xx = g.add(x0, _c(g, dx)) if dx else x0
            in_x = g.where(g.ge(xx, zero), g.le(xx, _c(g, w - 1.0)), g.ge(xx, zero))
            ok = g.where(in_y, in_x, in_y)
            yc = g.min(g.max(yy, zero), _c(g, h - 1.0))
            xc = g.min(g.max(xx, zero), _c(g, w - 1.0))
            out.append((g.add(g.mul(yc, _c(g, float(w))), xc), g.where(ok, g.mul(wy, wx), zero)))
    return out


@op("DeformConv")
def _deform_conv(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    names = list(node.input) + [""] * (5 - len(node.input))
    xv, wv, ov = (imp.get(n) for n in names[:3])
    bv = imp.get(names[3]) if names[3] else None
    mv = imp.get(names[4]) if names[4] else None
    xs, ws, os_ = (static_dims(imp, v, "DeformConv") for v in (xv, wv, ov))
    if len(xs) != 4:
        raise rlx.UnsupportedOpError(f"DeformConv over {len(xs) - 2} spatial axes: rlx imports the 2-d one")
    for v, what in ((xv, "X"), (wv, "W"), (ov, "offset")):
        if imp.dtype(v) != np.float32:
            raise rlx.DTypeError(f"DeformConv {what} of dtype {imp.dtype(v)} (float types)")
    n, c, h, w = xs
    oc = ws[0]
    kernel = [int(k) for k in at.get("kernel_shape", ws[2:])]
    group, og = int(at.get("group", 1)), int(at.get("offset_group", 1))
    strides, dil = int_list(at, "strides", 2, 1), int_list(at, "dilations", 2, 1)
    pads = [int(p) for p in at.get("pads", [0] * 4)]
    kh, kw = kernel
    k = kh * kw
    if len(ws) != 4 or list(ws[2:]) != kernel or group < 1 or og < 1 or c != ws[1] * group or oc % group or c % og:
        raise rlx.ShapeError(f"DeformConv X {xs}, W {ws}, kernel_shape {kernel}, group {group}, offset_group {og}: "
                             "W is [OC, C / group, kh, kw], OC and C multiples of group, C of offset_group")
    if len(pads) != 4 or len(os_) != 4 or os_[0] != n or os_[1] != og * k * 2:
        raise rlx.ShapeError(f"DeformConv offset {os_} (pads {pads}): expected [N, offset_group * kh * kw * 2, oh, ow]")
    oh, ow = os_[2:]
    want = [(s + pads[i] + pads[i + 2] - ((kk - 1) * d + 1)) // st + 1
            for i, (s, kk, d, st) in enumerate(zip((h, w), kernel, dil, strides))]
    if [oh, ow] != want:
        raise rlx.ShapeError(f"DeformConv offset's output size {[oh, ow]}: the window gives {want}")
    _check_pixels(n * h * w)
    g = imp.g
    p = oh * ow
    # The tap grid (no offset): [K, P] rows and columns.
    ki, kj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    ii, jj = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    base_y = (-pads[0] + strides[0] * ii.reshape(1, p) + dil[0] * ki.reshape(k, 1)).astype(np.float32)
    base_x = (-pads[1] + strides[1] * jj.reshape(1, p) + dil[1] * kj.reshape(k, 1)).astype(np.float32)
    off = g.reshape(imp.rt(ov), (n, og, k, 2, p))
    y = g.add(g.reshape(g.slice(off, 3, 0, 1), (n, og, k, p)), g.constant(base_y.reshape(1, 1, k, p)))
    x = g.add(g.reshape(g.slice(off, 3, 1, 2), (n, og, k, p)), g.constant(base_x.reshape(1, 1, k, p)))
    cpg = c // og
    # Pixels of (sample, offset group) rows: [N * og * H * W, C / og].
    pixels = g.reshape(g.transpose(g.reshape(imp.rt(xv), (n, og, cpg, h, w)), [0, 1, 3, 4, 2]), (n * og * h * w, cpg))
    base = g.constant((np.arange(n * og, dtype=np.float32) * (h * w)).reshape(n, og, 1, 1))
    rows = n * og * k * p
    acc = None
    for flat, weight in _corners(g, y, x, h, w):
        idx = g.cast(g.reshape(g.add(flat, base), (rows,)), "int64")
        val = g.mul(g.gather(pixels, idx, 0), g.reshape(weight, (rows, 1)))
        acc = val if acc is None else g.add(acc, val)
    if mv is not None:
        ms = static_dims(imp, mv, "DeformConv")
        if ms != [n, og * k, oh, ow]:
            raise rlx.ShapeError(f"DeformConv mask {ms}: expected {[n, og * k, oh, ow]}")
        acc = g.mul(acc, g.reshape(imp.rt(mv), (rows, 1)))
    cols = g.transpose(g.reshape(acc, (n, og, k, p, cpg)), [0, 1, 4, 2, 3])  # [N, og, C / og, K, P]
    cols = g.reshape(cols, (n, c * k, oh, ow))
    wcol = g.reshape(imp.rt(wv), (oc, (c // group) * k, 1, 1))
    b = None
    if bv is not None:
        if static_dims(imp, bv, "DeformConv") != [oc]:
            raise rlx.ShapeError(f"DeformConv B of shape {imp.shape(bv)}: expected [{oc}]")
        b = imp.rt(bv)
    return g.conv(cols, wcol, b, strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], groups=group)


# -- RoiAlign --------------------------------------------------------------------------------


def _axis_samples(g: Any, start: Any, size: Any, bins: int, grid: int, n: int) -> Tuple[Any, Any, Any, Any, Any]:
    """Per region, the ``bins * grid`` sample coordinates along one axis of ``n`` pixels:
    (low index, high index, low weight, high weight, in range), each [R, bins * grid]."""
    step = np.array([[b + (s + 0.5) / grid for b in range(bins) for s in range(grid)]], np.float32)
    v = g.add(start, g.mul(g.div(size, _c(g, float(bins))), g.constant(step)))
    zero = _c(g, 0.0)
    ok = g.where(g.ge(v, _c(g, -1.0)), g.le(v, _c(g, float(n))), g.ge(v, _c(g, -1.0)))
    v = g.max(v, zero)
    lo = g.unary("floor", v)
    over = g.ge(lo, _c(g, n - 1.0))
    lo = g.where(over, _c(g, n - 1.0), lo)
    hi = g.where(over, _c(g, n - 1.0), g.add(lo, _c(g, 1.0)))
    v = g.where(over, lo, v)
    lw = g.sub(v, lo)
    return lo, hi, g.sub(_c(g, 1.0), lw), lw, ok


@op("RoiAlign")
def _roi_align(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    xv, rv, bv = (imp.get(nm) for nm in node.input[:3])
    xs = static_dims(imp, xv, "RoiAlign")
    rs = static_dims(imp, rv, "RoiAlign rois")
    if len(xs) != 4 or len(rs) != 2 or rs[1] != 4 or static_dims(imp, bv, "RoiAlign batch_indices") != [rs[0]]:
        raise rlx.ShapeError(f"RoiAlign X {xs}, rois {rs}, batch_indices {imp.shape(bv)}: expected [N, C, H, W], "
                             "[R, 4] and [R]")
    if imp.dtype(xv) != np.float32 or imp.dtype(rv) != np.float32:
        raise rlx.DTypeError(f"RoiAlign X of {imp.dtype(xv)}, rois of {imp.dtype(rv)} (float types)")
    n, c, h, w = xs
    r = rs[0]
    mode = at.get("mode", "avg")
    if mode not in ("avg", "max"):
        raise rlx.ModelFormatError(f"RoiAlign mode {mode!r} (avg, max)")
    ctm = at.get("coordinate_transformation_mode", "half_pixel" if imp.opset >= 16 else "output_half_pixel")
    if ctm not in ("half_pixel", "output_half_pixel"):
        raise rlx.ModelFormatError(f"RoiAlign coordinate_transformation_mode {ctm!r} (half_pixel, output_half_pixel)")
    half = ctm == "half_pixel"
    ph, pw = int(at.get("output_height", 1)), int(at.get("output_width", 1))
    ratio, scale = int(at.get("sampling_ratio", 0)), float(at.get("spatial_scale", 1.0))
    if ph < 1 or pw < 1 or ratio < 0:
        raise rlx.ShapeError(f"RoiAlign output {ph}x{pw}, sampling_ratio {ratio}: positive sizes, a ratio >= 0")
    off = 0.5 if half else 0.0
    if ratio > 0:
        gh = gw = ratio
    else:
        if not isinstance(rv, Known):
            raise rlx.UnsupportedOpError(
                "RoiAlign sampling_ratio 0 samples a grid whose size depends on each region's size: the rois "
                "are computed at run time (a data-dependent shape); give sampling_ratio > 0 or rois known at import")
        ra = np.asarray(rv.arr, np.float32) * np.float32(scale) - np.float32(off)
        hh, ww = ra[:, 3] - ra[:, 1], ra[:, 2] - ra[:, 0]
        if not half:
            hh, ww = np.maximum(hh, 1.0), np.maximum(ww, 1.0)
        sizes = {(int(np.ceil(a / ph)), int(np.ceil(b / pw))) for a, b in zip(hh, ww)}
        if len(sizes) != 1:
            raise rlx.UnsupportedOpError(f"RoiAlign sampling_ratio 0: the regions give grids of {sorted(sizes)} samples; "
                                         "rlx samples one grid size for all")
        gh, gw = sizes.pop()
        if gh < 1 or gw < 1:
            raise rlx.UnsupportedOpError(f"RoiAlign sampling_ratio 0: an empty {gh}x{gw} sample grid")
    _check_pixels(n * h * w)
    g = imp.g
    rois = imp.rt(rv)

    def col(i: int) -> Any:
        v = g.mul(g.slice(rois, 1, i, i + 1), _c(g, scale))
        return g.sub(v, _c(g, off)) if off else v

    x1, y1, x2, y2 = col(0), col(1), col(2), col(3)
    rh, rw = g.sub(y2, y1), g.sub(x2, x1)
    if not half:
        rh, rw = g.max(rh, _c(g, 1.0)), g.max(rw, _c(g, 1.0))
    ylo, yhi, ylw, yhw, yok = _axis_samples(g, y1, rh, ph, gh, h)
    xlo, xhi, xlw, xhw, xok = _axis_samples(g, x1, rw, pw, gw, w)
    a, b = ph * gh, pw * gw

    def ycol(v: Any) -> Any:
        return g.reshape(v, (r, a, 1))

    def xrow(v: Any) -> Any:
        return g.reshape(v, (r, 1, b))

    ok = g.where(ycol(yok), xrow(xok), ycol(yok))
    zero = _c(g, 0.0)
    bidx = imp.rt(bv)
    if np.dtype(bidx.dtype) != np.float32:
        bidx = g.cast(bidx, "float32")
    base = g.reshape(g.mul(bidx, _c(g, float(h * w))), (r, 1, 1))
    pixels = g.reshape(g.transpose(imp.rt(xv), [0, 2, 3, 1]), (n * h * w, c))
    rows = r * a * b
    acc = None
    taps = [(ylo, ylw, xlo, xlw), (ylo, ylw, xhi, xhw), (yhi, yhw, xlo, xlw), (yhi, yhw, xhi, xhw)]
    for yy, wy, xx, wx in taps:
        flat = g.add(g.add(g.mul(ycol(yy), _c(g, float(w))), xrow(xx)), base)
        idx = g.cast(g.reshape(flat, (rows,)), "int64")
        wt = g.where(ok, g.mul(ycol(wy), xrow(wx)), zero)
        val = g.mul(g.gather(pixels, idx, 0), g.reshape(wt, (rows, 1)))
        acc = val if acc is None else (g.add(acc, val) if mode == "avg" else g.max(acc, val))
    v = g.reshape(acc, (r, ph, gh, pw, gw, c))
    if mode == "avg":
        v = g.div(g.reduce_sum(v, [2, 4], keep_dim=False), _c(g, float(max(gh * gw, 1))))
    else:
        v = g.reduce_max(v, [2, 4], keep_dim=False)
    return g.transpose(v, [0, 3, 1, 2])
