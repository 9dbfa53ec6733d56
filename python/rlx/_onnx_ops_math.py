"""ONNX arithmetic ops composed exactly of rlx elementwise ops: Mod, ReduceProd, CumProd and
CumSum.

Mod on int32 / int64 is a truncating division and a sign fix. Mod on float32 must not lose the
low bits that ``a - b * trunc(a / b)`` rounds away when the quotient is large, so it is worked
out on integers: with ``|a| = ma * 2**ea`` and ``|b| = mb * 2**eb`` (24-bit integer mantissas),
``fmod(|a|, |b|) = (ma * 2**(ea - eb) mod mb) * 2**eb``, where ``2**(ea - eb) mod mb`` is a
square-and-multiply over the 8 bits of ``ea - eb``; every step is exact in int64. ``fmod=0``
then adds ``b`` when the signs differ, rounded once, as numpy does.

ReduceProd and CumProd multiply slices: log2(n) steps along each static axis (a product tree,
and a Hillis-Steele scan), exact for integers (wrapping, as numpy does). CumSum on float32 is a
matmul with a triangular constant; on int32 / int64 it is log2(n) shifted adds, exact. The
axis CumProd and CumSum work along must be known at import and static.
"""

from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np

import rlx
from rlx._onnx_helpers import norm_axis, prod_along, reduce_args, static_len
from rlx._onnx_import import Importer, Known
from rlx._onnx_registry import STATIC_OPERANDS, attrs, fold_shape, foldable, known, op
from rlx._onnx_sym import DimLike, dim_text

STATIC_OPERANDS.update({"ReduceProd": {1}, "CumProd": {1}, "CumSum": {1}})

_NUMERIC = (np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.int64))


def _c(imp: Importer, v: Any, dt: Any) -> Any:
    return imp.g.constant(np.array(v, np.dtype(dt)))


# -- Mod -------------------------------------------------------------------------------------


def _int_mod(imp: Importer, a: Any, b: Any, fmod: bool) -> Any:
    g, dt = imp.g, a.dtype
    zero = _c(imp, 0, dt)
    r = g.sub(a, g.mul(g.div(a, b), b))  # truncating division: the sign of a (C's %)
    if not fmod:
        # Python's %: a non-zero remainder takes the divisor's sign.
        flip = g.ne(g.lt(r, zero), g.lt(b, zero))
        r = g.where(g.eq(r, zero), r, g.where(flip, g.add(r, b), r))
    return g.where(g.eq(b, zero), zero, r)  # x mod 0 is 0, as numpy gives


def _exp2(imp: Importer, e: Any) -> Any:
    return imp.g.pow(_c(imp, 2.0, np.float32), e)


def _split(imp: Importer, v: Any) -> Any:
    """(mantissa as int64, exponent as float32) of positive finite float32 ``v``: v = m * 2**s,
    m < 2**24 (subnormals included, s >= -149)."""
    g = imp.g
    one = _c(imp, 1.0, np.float32)
    e = g.unary("floor", g.mul(g.log(v), _c(imp, 1 / np.log(2.0), np.float32)))
    # log rounds: move e by one where 2**e overshoots or 2**(e + 1) still fits.
    e = g.where(g.gt(_exp2(imp, e), v), g.sub(e, one), e)
    e = g.where(g.le(_exp2(imp, g.add(e, one)), v), g.add(e, one), e)
    s = g.sub(g.max(e, _c(imp, -126.0, np.float32)), _c(imp, 23.0, np.float32))
    # v * 2**-s in two halves: 2**149 itself overflows float32.
    half = g.unary("floor", g.mul(g.neg(s), _c(imp, 0.5, np.float32)))
    m = g.mul(g.mul(v, _exp2(imp, half)), _exp2(imp, g.sub(g.neg(s), half)))
    return g.cast(m, "int64"), s


def _float_fmod(imp: Importer, a: Any, b: Any) -> Any:
    """C's fmod on float32, exactly (see the module doc)."""
    g = imp.g
    f32 = np.float32
    one, inf, nan = _c(imp, 1.0, f32), _c(imp, np.inf, f32), _c(imp, np.nan, f32)
    A, B = g.abs(a), g.abs(b)

    def finite_pos(v: Any) -> Any:  # the decomposition only sees positive finite numbers
        v = g.where(g.lt(v, inf), v, one)
        return g.where(g.gt(v, _c(imp, 0.0, f32)), v, one)

    ma, sa = _split(imp, finite_pos(A))
    mb, sb = _split(imp, finite_pos(B))

    def mod(x: Any) -> Any:
        return g.sub(x, g.mul(g.div(x, mb), mb))

    d = g.cast(g.max(g.sub(sa, sb), _c(imp, 0.0, f32)), "int64")  # < 2**8
    p, acc = mod(_c(imp, 2, np.int64)), mod(_c(imp, 1, np.int64))
    one64 = _c(imp, 1, np.int64)
    for j in range(8):
        bit = g.sub(g.div(d, _c(imp, 2**j, np.int64)), g.mul(g.div(d, _c(imp, 2 ** (j + 1), np.int64)), _c(imp, 2, np.int64)))
        acc = g.where(g.eq(bit, one64), mod(g.mul(acc, p)), acc)
        if j < 7:
            p = mod(g.mul(p, p))
    r = mod(g.mul(mod(ma), acc))
    rem = g.mul(g.cast(r, "float32"), _exp2(imp, sb))
    res = g.where(g.lt(A, B), a, g.where(g.lt(a, _c(imp, 0.0, f32)), g.neg(rem), rem))
    res = g.where(g.eq(B, _c(imp, 0.0, f32)), nan, res)
    res = g.where(g.eq(A, inf), nan, res)
    res = g.where(g.ne(b, b), b, res)
    return g.where(g.ne(a, a), a, res)


def _float_mod(imp: Importer, a: Any, b: Any, fmod: bool) -> Any:
    g = imp.g
    r = _float_fmod(imp, a, b)
    if fmod:
        return r
    zero = _c(imp, 0.0, np.float32)
    # numpy's float %: a zero takes the divisor's sign, else add b where the signs differ.
    signed_zero = g.where(g.lt(b, zero), _c(imp, -0.0, np.float32), zero)
    flip = g.ne(g.lt(r, zero), g.lt(b, zero))
    return g.where(g.eq(r, zero), signed_zero, g.where(flip, g.add(r, b), r))


@op("Mod")
def _mod(imp: Importer, node: Any) -> Any:
    a, b = imp.get(node.input[0]), imp.get(node.input[1])
    fmod = bool(attrs(node).get("fmod", 0))
    da, db = imp.dtype(a), imp.dtype(b)
    if da != db:
        raise rlx.DTypeError(f"Mod of {da} and {db}: the operands must have one dtype")
    if da not in _NUMERIC:
        raise rlx.DTypeError(f"Mod on {da} (rlx computes it in float32, int32, int64)")
    if foldable(a, b) and not (a.symbolic or b.symbolic):
        fold_shape(imp, "Mod", a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return known((np.fmod if fmod else np.mod)(a.arr, b.arr), da)
    x, y = imp.rt(a), imp.rt(b)
    return _float_mod(imp, x, y, fmod) if da.kind == "f" else _int_mod(imp, x, y, fmod)


# -- ReduceProd / CumProd --------------------------------------------------------------------


@op("ReduceProd")
def _reduce_prod(imp: Importer, node: Any) -> Any:
    x, axes, keep, noop = reduce_args(imp, node)
    if np.dtype(x.dtype) not in _NUMERIC:
        raise rlx.DTypeError(f"ReduceProd on {x.dtype} (float32, int32, int64)")
    if noop:
        return x
    dims = imp.shape(x)
    r = len(dims)
    axes = sorted({norm_axis(int(a), r, "ReduceProd") for a in (axes if axes is not None else range(r))})
    for a in axes:
        x = prod_along(imp, x, a)
    if keep:
        return x
    return imp.g.reshape(x, tuple(dim_text(d) for i, d in enumerate(dims) if i not in axes))


def _reverse(imp: Importer, x: Any, axis: int, n: int) -> Any:
    return imp.g.gather(x, imp.g.constant(np.arange(n - 1, -1, -1, dtype=np.int64)), axis)


def _scan_args(imp: Importer, node: Any, what: str) -> Tuple[Any, List[Any], int, bool, bool]:
    """A CumSum / CumProd node's input, its dims, the axis (read at import) and the
    exclusive / reverse flags."""
    at = attrs(node)
    xv = imp.get(node.input[0])
    axis_arr = np.asarray(imp.values(node.input[1], f"{what} axis")).reshape(-1)
    if axis_arr.size != 1:
        raise rlx.ShapeError(f"{what} axis must be a scalar, got {axis_arr.size} values")
    dims = imp.shape(xv)
    axis = norm_axis(int(axis_arr[0]), len(dims), what)
    return xv, dims, axis, bool(at.get("exclusive", 0)), bool(at.get("reverse", 0))


@op("CumProd")
def _cumprod(imp: Importer, node: Any) -> Any:
    xv, dims, axis, exclusive, reverse = _scan_args(imp, node, "CumProd")
    dt = imp.dtype(xv)
    if dt not in _NUMERIC:
        raise rlx.DTypeError(f"CumProd on {dt} (float32, int32, int64)")
    n = static_len(dims[axis], "CumProd", axis)
    g, x = imp.g, imp.rt(xv)
    if n == 0:
        return x
    src = _reverse(imp, x, axis, n) if reverse else x
    one = _c(imp, 1, dt)
    y, s = src, 1
    # Hillis-Steele: after the step of shift s, y[i] is the product of x[i-2s+1 .. i].
    while s < n:
        pad = imp.filled([s if i == axis else d for i, d in enumerate(dims)], one)
        y = g.mul(y, g.concat([pad, g.slice(y, axis, 0, n - s)], axis))
        s *= 2
    if exclusive:
        pad = imp.filled([1 if i == axis else d for i, d in enumerate(dims)], one)
        y = g.concat([pad, g.slice(y, axis, 0, n - 1)], axis) if n > 1 else pad
    return _reverse(imp, y, axis, n) if reverse else y


# -- CumSum ----------------------------------------------------------------------------------


@op("CumSum")
def _cumsum(imp: Importer, node: Any) -> Any:
    xv, dims, axis, exclusive, reverse = _scan_args(imp, node, "CumSum")
    r = len(dims)
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
        y = imp.g.reshape(imp.g.matmul(imp.g.reshape(x, (1, n)), _c(imp, tri, np.float32)), (n,))
    else:
        y = imp.g.matmul(x, _c(imp, tri, np.float32))
    return imp.g.transpose(y, perm) if axis != last else y


def _cumsum_int(imp: Importer, x: Any, dims: List[DimLike], axis: int, n: int, exclusive: bool, reverse: bool) -> Any:
    """Integer CumSum, exact: log2(n) adds of the running sum shifted by 1, 2, 4, ... along
    the axis (zeros shifted in); reverse reads the axis backwards; exclusive subtracts x."""
    if n <= 1 and not exclusive:
        return x
    rev = _c(imp, np.arange(n - 1, -1, -1), np.int64)
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
