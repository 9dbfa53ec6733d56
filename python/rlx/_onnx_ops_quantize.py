"""ONNX quantization ops computed exactly as the spec writes them, on run-time tensors:
QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, QLinearMatMul,
ConvInteger and QLinearConv.

These handlers take the graphs that the quantized-model rewrite (``rlx._onnx_quant``, which
folds quantized weights and runs activations in float) does not recognise: ``rlx.onnx.load``
imports a graph as written when that rewrite refuses it. The quantized integer types (int8,
uint8, int16, uint16) are computed in int64 (``rlx._onnx_dtypes``); other target types (int4,
float8, ...) are a DTypeError.

- QuantizeLinear: ``clip(round_half_even(x / scale) + zero_point)``, in float32 up to the clip
  (exact: a rounded quotient past 2**24 is clipped anyway), per tensor, per axis or blocked
  (the scale repeated along the axis by a gather of import-time indices).
- DequantizeLinear: ``(float(x) - float(zero_point)) * scale``, as the reference computes it.
- DynamicQuantizeLinear: the uint8 scale and zero point of the range of ``x`` widened to hold 0,
  then QuantizeLinear.
- MatMulInteger: ``(A - a_zp) @ (B - b_zp)`` in float32 matmuls over chunks of at most 256 of
  the reduced axis (each product of two 8-bit differences is below 2**16, so every partial sum
  of a chunk stays below 2**24, exact in float32), the chunks summed in int64. ConvInteger
  likewise, over groups of input channels.
- QLinearMatMul / QLinearConv: that exact integer product or conv, rescaled and rounded in
  float32 into the output's type.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

import rlx
from rlx import _onnx_dtypes
from rlx._onnx_helpers import norm_axis, window_args
from rlx._onnx_import import Importer, declared_dtype
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import dim_text

# Integer types QuantizeLinear targets -> their range.
_QTYPES = {np.dtype(t): _onnx_dtypes.int_range(t) for t in [np.int8, np.uint8, np.int16, np.uint16,
                                                          *_onnx_dtypes.sub_byte_ints()]}
_F32 = np.dtype(np.float32)
_CHUNK = 256  # see the module doc


def _opt(node: Any, i: int) -> Optional[str]:
    return node.input[i] if len(node.input) > i and node.input[i] else None


def _declared(imp: Importer, name: str) -> np.dtype:
    return np.dtype(_onnx_dtypes.logical_of(imp, name) or imp.dtype(imp.get(name)))


def _float(imp: Importer, name: str) -> Any:
    v = imp.rt(imp.get(name))
    return v if np.dtype(v.dtype) == _F32 else imp.g.cast(v, "float32")


def _params(imp: Importer, node: Any, i: int, x: Any, what: str) -> Any:
    """Scale or zero point input ``i`` shaped to broadcast over ``x`` (per tensor, per axis
    along ``axis``, or blocked by ``block_size`` along it)."""
    at = attrs(node)
    v = _float(imp, node.input[i])
    dims, pdims = imp.shape(x), imp.shape(imp.get(node.input[i]))
    size = int(np.prod([d for d in pdims if isinstance(d, int)])) if pdims else 1
    if not pdims or (len(pdims) == 1 and size == 1):
        return v if not pdims else imp.g.reshape(v, ())
    axis = norm_axis(int(at.get("axis", 1)), len(dims), node.op_type)
    block = int(at.get("block_size", 0))
    g = imp.g
    if not block:
        if len(pdims) != 1 or pdims[0] != dims[axis]:
            raise rlx.ShapeError(f"{node.op_type} {what} of shape {[dim_text(d) for d in pdims]}: per-axis needs one value "
                                 f"per element of axis {axis} ({dim_text(dims[axis])})")
        return g.reshape(v, tuple(dim_text(d) if k == axis else 1 for k, d in enumerate(dims)))
    n = dims[axis]
    if block < 0 or not isinstance(n, int) or len(pdims) != len(dims) or pdims[axis] != -(-n // block) \
            or any(p != d for k, (p, d) in enumerate(zip(pdims, dims)) if k != axis):
        raise rlx.ShapeError(f"{node.op_type} {what} of shape {[dim_text(d) for d in pdims]} does not block "
                             f"{[dim_text(d) for d in dims]} by {block} along a static axis {axis}")
    return g.gather(v, g.constant(np.arange(n, dtype=np.int64) // block), axis)


def _target(imp: Importer, node: Any) -> np.dtype:
    at = attrs(node)
    zp = _opt(node, 2)
    dt = _declared(imp, zp) if zp else None
    if at.get("output_dtype"):
        out = declared_dtype(at["output_dtype"], "QuantizeLinear output_dtype")
        if dt is not None and dt != out:
            raise rlx.DTypeError(f"QuantizeLinear output_dtype {out} differs from the zero point's {dt}")
        dt = out
    dt = dt if dt is not None else np.dtype(np.uint8)
    if dt not in _QTYPES and not _onnx_dtypes.small_float(dt):
        raise rlx.DTypeError(f"QuantizeLinear to {dt} (rlx quantizes to int8, uint8, int16, uint16, int4, uint4, "
                             "int2, uint2, the 8-bit floats and FLOAT4E2M1)")
    return dt


def _quantize(imp: Importer, x: Any, scale: Any, zp: Optional[Any], dt: np.dtype, saturate: bool = True) -> Any:
    """int64 ``clip(round(x / scale) + zp)`` into ``dt``'s range, all float operands; to an
    8-bit float or FLOAT4E2M1, float32 ``x / scale + zp``, an 8-bit float's clamped to its
    largest finite value where ``saturate`` (their rounding is the output conversion's, which
    saturates FLOAT4E2M1 itself: rlx._onnx_dtypes)."""
    g = imp.g
    if _onnx_dtypes.small_float(dt):
        q = g.div(x, scale) if zp is None else g.add(g.div(x, scale), zp)
        top = _onnx_dtypes.float8_max(dt)
        if not saturate or top is None:
            return q
        return g.min(g.max(q, g.constant(np.array(-top, np.float32))), g.constant(np.array(top, np.float32)))
    lo, hi = _QTYPES[dt]
    q = g.unary("round", g.div(x, scale))
    if zp is not None:
        q = g.add(q, zp)
    q = g.min(g.max(q, g.constant(np.array(lo, np.float32))), g.constant(np.array(hi, np.float32)))
    return g.cast(q, "int64")


@op("QuantizeLinear")
def _quantize_linear(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    if at.get("precision") not in (None, 0, 1):
        raise rlx.UnsupportedOpError(f"QuantizeLinear precision {at['precision']} (rlx divides in float32)")
    dt = _target(imp, node)
    x = _float(imp, node.input[0])
    zp = _params(imp, node, 2, x, "zero point") if _opt(node, 2) else None
    imp.logical[node.output[0]] = dt
    return _quantize(imp, x, _params(imp, node, 1, x, "scale"), zp, dt, bool(at.get("saturate", 1)))


@op("DequantizeLinear")
def _dequantize_linear(imp: Importer, node: Any) -> Any:
    dt = _declared(imp, node.input[0])
    bits = _onnx_dtypes.int_bits(dt)
    if (bits is None or bits[0] > 32) and not _onnx_dtypes.small_float(dt):
        raise rlx.DTypeError(f"DequantizeLinear of {dt} (rlx dequantizes integers of 2 to 32 bits, the 8-bit floats "
                             "and FLOAT4E2M1)")
    if _opt(node, 2) and _declared(imp, node.input[2]) != dt:
        raise rlx.DTypeError(f"DequantizeLinear zero point of {_declared(imp, node.input[2])}, input of {dt}")
    out = attrs(node).get("output_dtype")
    if out and declared_dtype(out, "DequantizeLinear output_dtype").kind != "f":
        raise rlx.DTypeError(f"DequantizeLinear output_dtype {_onnx_dtypes.elem_name(out)}: a float type")
    x = _float(imp, node.input[0])
    if _opt(node, 2):
        x = imp.g.sub(x, _params(imp, node, 2, x, "zero point"))
    return imp.g.mul(x, _params(imp, node, 1, x, "scale"))


@op("DynamicQuantizeLinear")
def _dynamic_quantize_linear(imp: Importer, node: Any) -> Any:
    g = imp.g
    x = _float(imp, node.input[0])
    c = lambda v: g.constant(np.array(v, np.float32))  # noqa: E731
    axes = list(range(len(x.shape)))
    hi = g.max(g.reduce_max(x, axes), c(0.0))
    lo = g.min(g.neg(g.reduce_max(g.neg(x), axes)), c(0.0))
    span = g.where(g.eq(hi, lo), c(1.0), g.sub(hi, lo))
    scale = g.div(span, c(255.0))
    zp = g.unary("round", g.min(g.max(g.sub(c(0.0), g.div(lo, scale)), c(0.0)), c(255.0)))
    for name in (node.output[0], node.output[2] if len(node.output) > 2 else ""):
        if name:
            imp.logical[name] = np.dtype(np.uint8)
    return [_quantize(imp, x, scale, zp, np.dtype(np.uint8)), scale, g.cast(zp, "int64")]


@op("MatMulInteger")
def _matmul_integer(imp: Importer, node: Any) -> Any:
    g = imp.g
    _int8_operands(imp, node)
    a, b = _float(imp, node.input[0]), _float(imp, node.input[1])
    sa, sb = imp.shape(a), imp.shape(b)
    if not sa or not sb:
        raise rlx.ShapeError("MatMulInteger of a scalar")
    if _opt(node, 2):
        za = _float(imp, node.input[2])
        # A per-row zero point [M] applies along A's rows.
        a = g.sub(a, g.reshape(za, (dim_text(imp.shape(za)[0]), 1)) if imp.rank(za) == 1 and len(sa) > 1 else za)
    if _opt(node, 3):
        b = g.sub(b, _float(imp, node.input[3]))
    acc = _integer_product(imp, a, b, "MatMulInteger")
    return g.cast(_onnx_dtypes.wrap(imp, acc, np.dtype(np.int32)), "int32")


def _integer_product(imp: Importer, a: Any, b: Any, what: str) -> Any:
    """The exact int64 ``a @ b`` of float values holding small integers (zero points taken
    off int8 / uint8 operands): float products summed over K in chunks short enough to be
    exact in float32, then added in int64."""
    g = imp.g
    sa, sb = imp.shape(a), imp.shape(b)
    k = sa[-1]
    if not isinstance(k, int):
        raise rlx.UnsupportedOpError(f"{what} over a symbolic inner size {dim_text(k)}")
    acc = None
    for s in range(0, max(k, 1), _CHUNK):
        e = min(s + _CHUNK, k)
        pa = a if (s, e) == (0, k) else g.slice(a, len(sa) - 1, s, e)
        pb = b if (s, e) == (0, k) else g.slice(b, max(len(sb) - 2, 0), s, e)
        part = g.cast(g.matmul(pa, pb), "int64")
        acc = part if acc is None else g.add(acc, part)
    return acc


def _qlinear_operands(imp: Importer, node: Any, takes: str) -> None:
    """A QLinear* node's input count (at least 8) and its int8 / uint8 operands: the two
    quantized inputs, their zero points and the output's zero point."""
    if len(node.input) < 8:
        raise rlx.ModelFormatError(f"{node.op_type} takes {takes} inputs, got {len(node.input)}")
    for i in (0, 2, 3, 5, 7):
        if _declared(imp, node.input[i]) not in (np.dtype(np.int8), np.dtype(np.uint8)):
            raise rlx.DTypeError(f"{node.op_type} input {i} of {_declared(imp, node.input[i])} (int8 or uint8)")


@op("QLinearMatMul")
def _qlinear_matmul(imp: Importer, node: Any) -> Any:
    """``quantize((a - a_zp) @ (b - b_zp) * a_scale * b_scale, y_scale, y_zp)``: the integer
    product exact, the rescale and the rounding (half to even) in float32, as QuantizeLinear.
    Scales per tensor, b's zero point and scale per tensor or per column."""
    g = imp.g
    _qlinear_operands(imp, node, "8")
    a, b = _float(imp, node.input[0]), _float(imp, node.input[3])
    if not imp.shape(a) or not imp.shape(b):
        raise rlx.ShapeError("QLinearMatMul of a scalar")

    def one(i: int, what: str) -> Any:
        return _one_or_per_channel(imp, node.input[i], None, f"QLinearMatMul {what}")

    def per_column(i: int, what: str) -> Any:
        v = _float(imp, node.input[i])
        dims, n = imp.shape(v), imp.shape(b)[-1]
        if not dims or (len(dims) == 1 and dims[0] == 1):
            return g.reshape(v, ()) if dims else v
        if len(dims) != 1 or dims[0] != n:
            raise rlx.ShapeError(f"QLinearMatMul {what} of shape {[dim_text(d) for d in dims]}: one value, "
                                 f"or one per column of b ({dim_text(n)})")
        return v

    acc = _integer_product(imp, g.sub(a, one(2, "a_zero_point")), g.sub(b, per_column(5, "b_zero_point")),
                           "QLinearMatMul")
    x = g.mul(g.mul(g.cast(acc, "float32"), one(1, "a_scale")), per_column(4, "b_scale"))
    dt = _declared(imp, node.input[7])
    imp.logical[node.output[0]] = dt
    return _quantize(imp, x, one(6, "y_scale"), one(7, "y_zero_point"), dt)


def _int8_operands(imp: Importer, node: Any) -> None:
    for i in range(min(len(node.input), 4)):
        if node.input[i] and _declared(imp, node.input[i]) not in (np.dtype(np.int8), np.dtype(np.uint8)):
            raise rlx.DTypeError(f"{node.op_type} input {i} of {_declared(imp, node.input[i])} (int8 or uint8)")


def _conv_weight(imp: Importer, node: Any, w: Any, what: str) -> tuple:
    """(M, C/group, kernel) of a static conv weight ``w``; else a ShapeError naming ``what``."""
    ws = imp.shape(w)
    if len(ws) < 3 or not all(isinstance(d, int) for d in ws):
        raise rlx.ShapeError(f"{what} weight of shape {[dim_text(d) for d in ws]}: expected a static [M, C/group, k...]")
    return int(ws[0]), int(ws[1]), [int(d) for d in ws[2:]]


def _integer_conv(imp: Importer, node: Any, x: Any, w: Any, what: str) -> Any:
    """The exact int64 Conv of float ``x`` and ``w`` holding small integers (zero points taken
    off int8 / uint8 operands), with the node's window attributes: float32 convs over groups of
    input channels few enough that every sum stays below 2**24, added in int64."""
    g = imp.g
    m, cg, kernel = _conv_weight(imp, node, w, what)
    strides, pads, dilations = window_args(imp, node, x, kernel)
    group = int(attrs(node).get("group", 1))
    if group < 1 or m % group or imp.shape(x)[1] != cg * group:
        raise rlx.ShapeError(f"{what} input of {imp.shape(x)[1]} channels, weight {[m, cg] + kernel}, group {group}")
    kk = int(np.prod(kernel))
    if kk > _CHUNK:
        raise rlx.UnsupportedOpError(f"{what} kernel {kernel} of more than {_CHUNK} elements (float32 sums would round)")

    def conv(xs: Any, wt: Any, groups: int) -> Any:
        return g.conv(xs, wt, None, strides=strides, pads=pads, dilations=dilations, groups=groups)

    if cg * kk <= _CHUNK:
        return g.cast(conv(x, w, group), "int64")
    step, mg, outs = _CHUNK // kk, m // group, []
    for gi in range(group):
        wg = g.slice(w, 0, gi * mg, (gi + 1) * mg) if group > 1 else w
        acc = None
        for s in range(0, cg, step):
            e = min(s + step, cg)
            part = g.cast(conv(g.slice(x, 1, gi * cg + s, gi * cg + e), g.slice(wg, 1, s, e), 1), "int64")
            acc = part if acc is None else g.add(acc, part)
        outs.append(acc)
    return outs[0] if group == 1 else g.concat(outs, 1)


def _one_or_per_channel(imp: Importer, name: str, per: Optional[tuple], what: str) -> Any:
    """A scale or zero point as float32: one value as a scalar, or, when ``per`` is given (the
    shape that spreads M output channels over a weight or an output), one value per channel."""
    v = _float(imp, name)
    dims = imp.shape(v)
    size = int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else -1
    if size == 1:
        return imp.g.reshape(v, ())
    m = max(per) if per else None
    if per is None or len(dims) != 1 or size != m:
        raise rlx.ShapeError(f"{what} of shape {[dim_text(d) for d in dims]}: one value"
                             + (f" or one per output channel ({m})" if per else ""))
    return imp.g.reshape(v, per)


@op("ConvInteger")
def _conv_integer(imp: Importer, node: Any) -> Any:
    _int8_operands(imp, node)
    g = imp.g
    x, w = _float(imp, node.input[0]), _float(imp, node.input[1])
    m, _, kernel = _conv_weight(imp, node, w, "ConvInteger")
    if _opt(node, 2):
        zp = _float(imp, node.input[2])
        if int(np.prod([int(d) for d in imp.shape(zp)])) != 1:
            raise rlx.ShapeError(f"ConvInteger x_zero_point of shape {imp.shape(zp)}: one value")
        x = g.sub(x, g.reshape(zp, ()))
    if _opt(node, 3):
        zp = _float(imp, node.input[3])
        size = int(np.prod([int(d) for d in imp.shape(zp)]))
        if size not in (1, m):
            raise rlx.ShapeError(f"ConvInteger w_zero_point of shape {imp.shape(zp)}: one value or one per output channel ({m})")
        w = g.sub(w, g.reshape(zp, (size,) + (1,) * (len(kernel) + 1)))
    acc = _integer_conv(imp, node, x, w, "ConvInteger")
    return g.cast(_onnx_dtypes.wrap(imp, acc, np.dtype(np.int32)), "int32")


@op("QLinearConv")
def _qlinear_conv(imp: Importer, node: Any) -> Any:
    """``(conv(x - x_zp, w - w_zp) + B) * (x_scale * w_scale / y_scale) + y_zp``, clipped to
    the output type and rounded half to even, as the onnx reference computes it (the zero
    point is added before the rounding; onnxruntime rounds first, which differs only on exact
    halves with an odd zero point). The integer conv is exact; w's scale and zero point per
    tensor or per output channel, B int32 with zero point 0."""
    g = imp.g
    _qlinear_operands(imp, node, "8 or 9")
    for i, what in ((0, "x"), (3, "w")):
        if _declared(imp, node.input[i + 2]) != _declared(imp, node.input[i]):
            raise rlx.DTypeError(f"QLinearConv {what} of {_declared(imp, node.input[i])} and its zero point of "
                                 f"{_declared(imp, node.input[i + 2])}")
    x, w = _float(imp, node.input[0]), _float(imp, node.input[3])
    m, _, kernel = _conv_weight(imp, node, w, "QLinearConv")
    on_w, on_y = (m,) + (1,) * (len(kernel) + 1), (1, m) + (1,) * len(kernel)

    def param(i: int, per: Optional[tuple], what: str) -> Any:
        return _one_or_per_channel(imp, node.input[i], per, f"QLinearConv {what}")

    x = g.sub(x, param(2, None, "x_zero_point"))
    w = g.sub(w, param(5, on_w, "w_zero_point"))
    acc = _integer_conv(imp, node, x, w, "QLinearConv")
    if _opt(node, 8):
        b = imp.get(node.input[8])
        if _declared(imp, node.input[8]) != np.dtype(np.int32) or imp.shape(b) != [m]:
            raise rlx.ShapeError(f"QLinearConv B of {_declared(imp, node.input[8])} {imp.shape(b)}: int32 of shape [{m}]")
        acc = g.add(acc, g.reshape(g.cast(imp.rt(b), "int64"), on_y))
    scale = g.div(g.mul(param(1, None, "x_scale"), param(4, on_y, "w_scale")), param(6, None, "y_scale"))
    y = g.add(g.mul(g.cast(acc, "float32"), scale), param(7, None, "y_zero_point"))
    dt = _declared(imp, node.input[7])
    if dt not in _QTYPES:
        raise rlx.DTypeError(f"QLinearConv y_zero_point of {dt} (an integer type of 2 to 16 bits)")
    lo, hi = _QTYPES[dt]
    y = g.min(g.max(y, g.constant(np.array(lo, np.float32))), g.constant(np.array(hi, np.float32)))
    imp.logical[node.output[0]] = dt
    return g.cast(g.unary("round", y), "int64")
