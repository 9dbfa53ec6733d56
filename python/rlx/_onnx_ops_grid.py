"""ONNX ops on sampling grids: AffineGrid (theta times a constant base grid) and GridSample
(run-time grids: gathers of the neighbouring pixels with weights computed from the grid).

AffineGrid's ``size`` must be known at import. GridSample needs static shapes; it samples
nearest, linear or cubic (Keys, a = -0.75) as separable taps, each tap's pixel found per axis
(zeros: out-of-range taps count 0; border: clamped; reflection: reflected at the borders) and
read by one gather of the flattened image, as the onnx reference computes it.
"""

from __future__ import annotations

import itertools
from typing import Any, List, Tuple

import numpy as np

import rlx
from rlx._onnx_helpers import static_dims
from rlx._onnx_import import Importer
from rlx._onnx_registry import STATIC_OPERANDS, attrs, op

STATIC_OPERANDS.update({"AffineGrid": {1}})

_CUBIC_A = -0.75


def _base_axis(n: int, align: bool) -> np.ndarray:
    """The normalized coordinates of ``n`` pixel centres (align_corners: of its corners)."""
    if align:
        return np.linspace(-1.0, 1.0, n) if n > 1 else np.full(1, -1.0)
    return (2 * np.arange(n) + 1) / n - 1


@op("AffineGrid")
def _affine_grid(imp: Importer, node: Any) -> Any:
    theta = imp.get(node.input[0])
    size = [int(s) for s in np.asarray(imp.values(node.input[1], "AffineGrid size")).reshape(-1)]
    ts = static_dims(imp, theta, "AffineGrid")
    d = len(size) - 2
    if d not in (2, 3) or ts != [size[0], d, d + 1] or min(size) < 1:
        raise rlx.ShapeError(f"AffineGrid theta of shape {ts} and size {size}: expected [N, {d}, {d + 1}] and "
                             "[N, C, H, W] or [N, C, D, H, W], all positive")
    spatial = size[2:]
    align = bool(attrs(node).get("align_corners", 0))
    # Columns x, y[, z], 1: x runs along the last spatial axis.
    axes = np.meshgrid(*[_base_axis(n, align) for n in spatial], indexing="ij")
    base = np.stack([a.reshape(-1) for a in reversed(axes)] + [np.ones(int(np.prod(spatial)))])
    imp.reserve(base.shape, 4, "the base grid")
    g = imp.g
    y = g.matmul(imp.rt(theta), g.constant(base.astype(np.float32)))  # [N, d, P]
    return g.reshape(g.transpose(y, [0, 2, 1]), tuple([size[0]] + spatial + [d]))


# -- GridSample ---------------------------------------------------------------------------------


class _Ops:
    """Float32 elementwise helpers over the importer's graph."""

    def __init__(self, imp: Importer) -> None:
        self.g = imp.g

    def c(self, v: float) -> Any:
        return self.g.constant(np.array(v, np.float32))

    def clamp(self, x: Any, lo: float, hi: float) -> Any:
        return self.g.min(self.g.max(x, self.c(lo)), self.c(hi))

    def trunc(self, x: Any) -> Any:
        g = self.g
        return g.where(g.lt(x, self.c(0.0)), g.unary("ceil", x), g.unary("floor", x))

    def reflect(self, x: Any, lo: float, hi: float) -> Any:
        """``x`` folded back into [lo, hi] by reflecting at the nearer border, repeatedly."""
        g = self.g
        span = hi - lo
        if span <= 0:
            return g.where(g.eq(x, x), self.c(lo), x)
        below, above = g.lt(x, self.c(lo)), g.gt(x, self.c(hi))
        dist = g.where(below, g.sub(self.c(lo), x), g.where(above, g.sub(x, self.c(hi)), self.c(0.0)))
        turns = g.unary("floor", g.div(dist, self.c(span)))
        r = g.sub(dist, g.mul(turns, self.c(span)))
        odd = g.eq(g.sub(turns, g.mul(g.unary("floor", g.mul(turns, self.c(0.5))), self.c(2.0))), self.c(1.0))
        near, far = g.where(below, self.c(lo), self.c(hi)), g.where(below, self.c(hi), self.c(lo))
        step = g.where(below, r, g.neg(r))  # towards the inside from the near border
        folded = g.where(odd, g.sub(far, step), g.add(near, step))
        return g.where(g.where(below, below, above), folded, x)


def _keys(o: _Ops, s: Any, near: bool) -> Any:
    """Keys' cubic kernel at distance ``s`` (in [0, 1] when ``near``, else in [1, 2])."""
    g, a = o.g, _CUBIC_A
    if near:
        return g.add(g.mul(g.mul(g.sub(g.mul(s, o.c(a + 2)), o.c(a + 3)), s), s), o.c(1.0))
    inner = g.add(g.mul(g.sub(g.mul(s, o.c(a)), o.c(5 * a)), s), o.c(8 * a))
    return g.sub(g.mul(inner, s), o.c(4 * a))


def _taps(o: _Ops, x: Any, mode: str) -> List[Tuple[Any, Any]]:
    """(pixel position, weight) of each tap of coordinate ``x`` (weight None: 1)."""
    g = o.g
    if mode == "nearest":
        return [(x, None)]
    x0 = g.unary("floor", x)
    t = g.sub(x, x0)
    if mode == "linear":
        return [(x0, g.sub(o.c(1.0), t)), (g.add(x0, o.c(1.0)), t)]
    one = o.c(1.0)
    return [(g.sub(x0, one), _keys(o, g.add(t, one), False)), (x0, _keys(o, t, True)),
            (g.add(x0, one), _keys(o, g.sub(one, t), True)), (g.add(x0, o.c(2.0)), _keys(o, g.sub(o.c(2.0), t), False))]


def _pixel(o: _Ops, i: Any, n: int, lo: float, hi: float, padding: str) -> Tuple[Any, Any]:
    """(the in-range index of pixel position ``i`` on an axis of ``n``, whether it counts)."""
    g = o.g
    if padding == "zeros":
        inside = g.ge(i, o.c(0.0))
        ok = g.where(inside, g.le(i, o.c(n - 1.0)), inside)
        return o.clamp(i, 0.0, n - 1.0), ok
    if padding == "reflection":
        i = o.trunc(o.reflect(i, lo, hi))
    return o.clamp(i, 0.0, n - 1.0), None


def _grid_args(imp: Importer, node: Any) -> Tuple[str, str, bool]:
    at = attrs(node)
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(at.get("mode", "linear"), at.get("mode", "linear"))
    padding = at.get("padding_mode", "zeros")
    if mode not in ("nearest", "linear", "cubic"):
        raise rlx.UnsupportedOpError(f"GridSample mode {mode!r} (nearest, linear / bilinear, cubic / bicubic)")
    if padding not in ("zeros", "border", "reflection"):
        raise rlx.UnsupportedOpError(f"GridSample padding_mode {padding!r} (zeros, border, reflection)")
    return mode, padding, bool(at.get("align_corners", 0))


@op("GridSample")
def _grid_sample(imp: Importer, node: Any) -> Any:
    mode, padding, align = _grid_args(imp, node)
    xv, gv = imp.get(node.input[0]), imp.get(node.input[1])
    xs, gs = static_dims(imp, xv, "GridSample"), static_dims(imp, gv, "GridSample")
    d = len(xs) - 2
    if d < 1 or len(gs) != d + 2 or gs[0] != xs[0] or gs[-1] != d:
        raise rlx.ShapeError(f"GridSample input of shape {xs} and grid of shape {gs}: expected [N, C, *spatial] and "
                             f"[N, *out, {max(d, 1)}]")
    if imp.dtype(xv).kind != "f" or imp.dtype(gv).kind != "f":
        raise rlx.DTypeError(f"GridSample on {imp.dtype(xv)} with a {imp.dtype(gv)} grid (float types)")
    g, o = imp.g, _Ops(imp)
    n, c, spatial, out = xs[0], xs[1], xs[2:], gs[1:-1]
    p, q = int(np.prod(spatial)), int(np.prod(out))
    if n * p >= 2**24:
        raise rlx.UnsupportedOpError(f"GridSample over {n * p} pixels: rlx computes their flat indices in float32 "
                                     "(exact below 2**24)")
    grid = g.reshape(imp.rt(gv), (n, q, d))
    # Per spatial axis: the taps' (index, weight, counts) of every output point, [N, Q] each.
    per_axis = []
    for i, size in enumerate(spatial):
        v = g.reshape(g.slice(grid, 2, d - 1 - i, d - i), (n, q))  # the grid lists x (last axis) first
        if align:
            x, lo, hi = g.mul(g.add(v, o.c(1.0)), o.c((size - 1) / 2.0)), 0.0, size - 1.0
        else:
            x, lo, hi = g.div(g.sub(g.mul(g.add(v, o.c(1.0)), o.c(float(size))), o.c(1.0)), o.c(2.0)), -0.5, size - 0.5
        if mode == "nearest":
            x = g.unary("round", x)
        if padding == "border":
            outside = g.where(g.lt(x, o.c(lo)), g.lt(x, o.c(lo)), g.gt(x, o.c(hi)))
            x = g.where(outside, o.clamp(x, 0.0, size - 1.0), x)
        elif padding == "reflection":
            x = o.reflect(x, lo, hi)
        if mode == "nearest":
            x = o.trunc(x)
        per_axis.append([_pixel(o, t, size, lo, hi, padding) + (w,) for t, w in _taps(o, x, mode)])
    strides = [int(np.prod(spatial[i + 1:])) for i in range(d)]
    base = g.constant((np.arange(n, dtype=np.float32) * p).reshape(n, 1))
    pixels = g.reshape(g.transpose(imp.rt(xv), [0] + list(range(2, d + 2)) + [1]), (n * p, c))
    acc = None
    for combo in itertools.product(*per_axis):
        flat, weight, ok = base, None, None
        for (idx, good, w), st in zip(combo, strides):
            flat = g.add(flat, g.mul(idx, o.c(float(st))))
            if w is not None:
                weight = w if weight is None else g.mul(weight, w)
            ok = good if ok is None else (ok if good is None else g.where(ok, good, ok))
        val = g.gather(pixels, g.cast(g.reshape(flat, (n * q,)), "int64"), 0)  # [N * Q, C]
        if weight is not None:
            val = g.mul(val, g.reshape(weight, (n * q, 1)))
        if ok is not None:
            val = g.where(g.reshape(ok, (n * q, 1)), val, o.c(0.0))
        acc = val if acc is None else g.add(acc, val)
    y = g.transpose(g.reshape(acc, (n, q, c)), [0, 2, 1])
    return g.reshape(y, tuple([n, c] + out))
