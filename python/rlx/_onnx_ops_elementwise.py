"""ONNX elementwise handlers: arithmetic, comparisons, logic, Where, unary math, Clip, Cast and
Constant. Values known at import (shape computations) are folded with numpy here; the rest
become rlx ops.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

import rlx
from rlx import _onnx_dtypes
from rlx._onnx_import import RLX_NP, Importer, Known, declared_dtype, normalize, shape_array
from rlx._onnx_registry import attrs, fold_shape, foldable, known, op, tensor_array
from rlx._onnx_sym import DimLike, Poly, dim_text


def _int_div(x: Any, y: Any) -> Any:
    if not isinstance(y, Poly) and int(y) == 0:
        raise rlx.ShapeError(f"integer division of {x} by zero")
    if isinstance(x, Poly) or isinstance(y, Poly):
        return Poly.of(x).exact_div(y)
    q = abs(int(x)) // abs(int(y))
    return q if (x >= 0) == (y >= 0) else -q


# -- elementwise -----------------------------------------------------------------------------

_BIN = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Max": "max", "Min": "min"}
_NP_BIN = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "pow": np.power, "max": np.maximum, "min": np.minimum}


def _binary(imp: Importer, name: str, a: Any, b: Any) -> Any:
    if foldable(a, b):
        fold_shape(imp, name, a, b)
        if name == "div":
            return known(np.frompyfunc(_int_div, 2, 1)(a.arr, b.arr), a.dtype)
        return known(_NP_BIN[name](a.arr, b.arr), a.dtype)
    if name == "pow" and imp.dtype(b) != imp.dtype(a):
        b = Known(b.arr.astype(imp.dtype(a)), imp.dtype(a)) if isinstance(b, Known) and b.init is None else imp.g.cast(imp.rt(b), RLX_NP[imp.dtype(a)])
    return imp.g.binary(name, imp.rt(a), imp.rt(b))


@op(*_BIN, "Sum", "Mean")
def _elementwise(imp: Importer, node: Any) -> Any:
    name = {"Sum": "add", "Mean": "add"}.get(node.op_type, _BIN.get(node.op_type))
    vals = [imp.get(i) for i in node.input]
    acc = vals[0]
    for v in vals[1:]:
        acc = _binary(imp, name, acc, v)
    if node.op_type == "Mean" and len(vals) > 1:
        acc = imp.g.div(imp.rt(acc), imp.g.constant(np.array(len(vals), np.float32)))
    return acc


_CMP = {"Equal": "eq", "Less": "lt", "Greater": "gt", "LessOrEqual": "le", "GreaterOrEqual": "ge"}


def _sym_eq(imp: Importer, x: Any, y: Any) -> bool:
    if x == y:
        return True
    if isinstance(x, int) and isinstance(y, int):
        return False
    p, c = (x, y) if isinstance(x, Poly) else (y, x)
    if isinstance(c, int) and len(p.terms) == 1:
        (mono, coeff), = p.terms.items()
        lo = coeff * int(np.prod([imp.g.dims[s][0] for s in mono]))
        if coeff > 0 and c < lo:
            return False
    raise rlx.UnsupportedOpError(f"cannot decide {x} == {y} at import")


@op(*_CMP)
def _compare(imp: Importer, node: Any) -> Any:
    a, b = imp.get(node.input[0]), imp.get(node.input[1])
    name = _CMP[node.op_type]
    if foldable(a, b) and (name == "eq" or not (a.symbolic or b.symbolic)):
        fold_shape(imp, node.op_type, a, b)
        if name == "eq":
            f = np.frompyfunc(lambda x, y: _sym_eq(imp, x, y), 2, 1)
            return Known(np.asarray(f(a.arr, b.arr)).astype(bool), np.bool_)
        return Known(getattr(np, {"lt": "less", "gt": "greater", "le": "less_equal", "ge": "greater_equal"}[name])(a.arr, b.arr), np.bool_)
    x, y = imp.rt(a), imp.rt(b)
    if name != "eq" and any(_onnx_dtypes.is_u64(imp, n) for n in node.input[:2]):
        # UINT64 as int64 bits: the top bit flipped (adding -2**63, wrapping) makes signed order
        # the unsigned one.
        top = imp.g.constant(np.array(np.iinfo(np.int64).min, np.int64))
        x, y = imp.g.add(x, top), imp.g.add(y, top)
    return imp.g.compare(name, x, y)


@op("Not")
def _not(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    if foldable(x):
        return Known(np.logical_not(x.arr), np.bool_)
    return imp.g.eq(imp.rt(x), imp.g.constant(np.zeros((), np.bool_)))


@op("And", "Or", "Xor")
def _logical(imp: Importer, node: Any) -> Any:
    a, b = imp.get(node.input[0]), imp.get(node.input[1])
    if foldable(a, b):
        fold_shape(imp, node.op_type, a, b)
        f = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}[node.op_type]
        return Known(f(a.arr, b.arr), np.bool_)
    x, y = imp.rt(a), imp.rt(b)
    if node.op_type == "Xor":
        return imp.g.ne(x, y)
    # Through int32: and = min, or = max (rlx has no bool arithmetic).
    xi, yi = imp.g.cast(x, "int32"), imp.g.cast(y, "int32")
    r = imp.g.min(xi, yi) if node.op_type == "And" else imp.g.max(xi, yi)
    return imp.g.cast(r, "bool")


@op("Where")
def _where(imp: Importer, node: Any) -> Any:
    c, a, b = (imp.get(i) for i in node.input)
    if foldable(c, a, b):
        fold_shape(imp, "Where", c, a, b)
        return known(np.where(c.arr, a.arr, b.arr), a.dtype)
    return imp.g.where(imp.rt(c), imp.rt(a), imp.rt(b))


_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log",
          "Sqrt": "sqrt", "Neg": "neg", "Abs": "abs", "Erf": "erf", "Floor": "floor", "Ceil": "ceil",
          "Round": "round", "Sign": "sign", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin",
          "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh",
          "Acosh": "acosh", "Atanh": "atanh"}


@op(*_UNARY)
def _unary(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    if foldable(x) and node.op_type in ("Neg", "Abs"):
        return known(-x.arr if node.op_type == "Neg" else np.abs(x.arr), x.dtype)
    return imp.g.unary(_UNARY[node.op_type], imp.rt(x))


@op("Reciprocal")
def _reciprocal(imp: Importer, node: Any) -> Any:
    return imp.g.div(imp.g.constant(np.ones((), np.float32)), imp.rt(imp.get(node.input[0])))


@op("Gelu")
def _gelu(imp: Importer, node: Any) -> Any:
    approx = attrs(node).get("approximate", "none")
    x = imp.rt(imp.get(node.input[0]))
    return imp.g.gelu_tanh(x) if approx == "tanh" else imp.g.gelu(x)


@op("Identity", "Dropout")
def _identity(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    if node.op_type != "Dropout":
        return x
    if len(node.input) > 2 and node.input[2]:
        training = imp.values(node.input[2], "Dropout training_mode")
        if bool(np.asarray(training).reshape(-1)[0]):
            raise rlx.UnsupportedOpError("Dropout in training mode (random masks)")
    if len(node.output) > 1 and node.output[1]:
        # Inference: the mask keeps everything.
        return [x, imp.filled(imp.shape(x), imp.g.constant(np.ones((), np.bool_)))]
    return x


def _scalar_is(v: Any, value: float) -> bool:
    """Whether ``v`` is a scalar known at import that equals ``value``."""
    return isinstance(v, Known) and not v.symbolic and v.arr.ndim == 0 and float(v.arr) == value


@op("Clip")
def _clip(imp: Importer, node: Any) -> Any:
    a = attrs(node)
    x = imp.get(node.input[0])
    dt = imp.dtype(x)
    lo = imp.get(node.input[1]) if len(node.input) > 1 else None
    hi = imp.get(node.input[2]) if len(node.input) > 2 else None
    if imp.opset < 11:
        lo = Known(np.array(a.get("min", -np.inf), dt)) if "min" in a else None
        hi = Known(np.array(a.get("max", np.inf), dt)) if "max" in a else None
    if np.dtype(dt) == np.float32 and _scalar_is(lo, 0.0) and _scalar_is(hi, 6.0):
        # MobileNet's activation: one op the convolutions and linears take as their epilogue.
        return imp.g.unary("relu6", imp.rt(x))
    out = imp.rt(x)
    if lo is not None:
        out = imp.g.max(out, imp.rt(lo))
    if hi is not None:
        out = imp.g.min(out, imp.rt(hi))
    return out


@op("Cast")
def _cast(imp: Importer, node: Any) -> Any:
    # A type rlx computes wider (rlx._onnx_dtypes) is cast to at run time in its computed type:
    # no rounding to float16 precision; a narrow int is wrapped into its range after the node.
    a = attrs(node)
    to = declared_dtype(a["to"], "Cast target")
    x = imp.get(node.input[0])
    top = _onnx_dtypes.float8_max(to) if a.get("saturate", 1) else None
    if foldable(x) or (isinstance(x, Known) and not x.symbolic and x.init is None and _onnx_dtypes.computed(to) is not None):
        if x.symbolic and _onnx_dtypes.int_bits(to):
            return Known(x.arr, to)
        if not x.symbolic:
            imp.reserve(x.arr.shape, to.itemsize, "the result")
            with np.errstate(over="ignore", invalid="ignore"):
                return Known(_saturated(x.arr, top).astype(to), to)
    return _saturate(imp, _cast_computed(imp, x, _onnx_dtypes.computed(to) or to), top)


def _cast_computed(imp: Importer, x: Any, to: np.dtype) -> Any:
    """``x`` cast to the computed type ``to`` (as it is when it already has it)."""
    if (_onnx_dtypes.computed(imp.dtype(x)) or imp.dtype(x)) == to:
        return imp.rt(x) if isinstance(x, Known) and x.dtype != to else x
    if to not in RLX_NP:
        raise rlx.DTypeError(f"a cast to {to} is not supported")
    return imp.g.cast(imp.rt(x), RLX_NP[to])


def _saturated(arr: np.ndarray, top: Optional[float]) -> np.ndarray:
    return arr if top is None else np.clip(arr, -top, top)


def _saturate(imp: Importer, v: Any, top: Optional[float]) -> Any:
    """``v`` clamped to [-top, top] (a saturating cast to an 8-bit float; NaN stays NaN)."""
    if top is None:
        return v
    v = imp.rt(v)
    return imp.g.min(imp.g.max(v, imp.g.constant(np.array(-top, np.float32))), imp.g.constant(np.array(top, np.float32)))


@op("CastLike")
def _cast_like(imp: Importer, node: Any) -> Any:
    to = imp.dtype(imp.get(node.input[1]))
    x = imp.get(node.input[0])
    declared = _onnx_dtypes.logical_of(imp, node.input[1]) or to
    top = _onnx_dtypes.float8_max(declared) if attrs(node).get("saturate", 1) else None
    if isinstance(x, Known) and not x.symbolic and x.init is None:
        with np.errstate(over="ignore", invalid="ignore"):
            return Known(_saturated(x.arr, top).astype(to), to)
    return _saturate(imp, _cast_computed(imp, x, _onnx_dtypes.computed(to) or to), top)  # see Cast


@op("Constant")
def _constant(imp: Importer, node: Any) -> Any:
    a = attrs(node)
    if not a:
        raise rlx.ModelFormatError("Constant has no value attribute")
    if "value" in a:
        arr = tensor_array(a["value"], "Constant value")
    elif "value_float" in a:
        arr = np.array(a["value_float"], np.float32)
    elif "value_floats" in a:
        arr = np.array(a["value_floats"], np.float32)
    elif "value_int" in a:
        arr = np.array(a["value_int"], np.int64)
    elif "value_ints" in a:
        arr = np.array(a["value_ints"], np.int64)
    else:
        raise rlx.UnsupportedOpError(f"Constant with attribute(s) {sorted(a)}")
    return Known(arr, arr.dtype)
