"""ONNX bit operations on integers, exact with rlx's int64 arithmetic (which wraps modulo
2**64): BitShift, BitwiseNot, BitwiseAnd, BitwiseOr, BitwiseXor, and BitCast between integer
types (and bool) of one width.

Every operand is taken as int64 (int32 is cast, and cast back at the end; int8 ... uint32 are
computed in int64 already, see ``rlx._onnx_dtypes``, which wraps a narrow result into its
range after the node). With ``n`` the bits of the declared type:

- BitShift LEFT is ``x * 2**s`` (the powers are gathered from a table made at import, 2**63
  stored as its int64 bit pattern), RIGHT a floor division by ``2**s`` (an arithmetic shift on
  signed types); a shift below 0 or from ``n`` on gives 0, or -1 for a right shift of a negative
  signed value, as the spec says.
- BitwiseNot is ``-1 - x``, two's complement's identity.
- BitCast between two integer types of ``n`` bits keeps the ``n``-bit pattern: the value is
  taken modulo ``2**n`` into the target's range (``rlx._onnx_dtypes.after_node`` wraps a
  narrow result; int32 is cast, which wraps). From bool it is 0 or 1, to bool nonzero. A float
  operand or target is a DTypeError unless the operand is known at import (then numpy's
  ``view`` folds it): rlx computes floats in float32 and has no op that reinterprets bits.
- And / Or / Xor split each operand into 4-bit digits of its n-bit pattern (a signed value
  below 0 is moved up by ``2**n``; int64 is split into a signed high and an unsigned low
  32-bit half first) and look each pair of digits up in a 256-entry table made at import.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import numpy as np

import rlx
from rlx import _onnx_dtypes
from rlx._onnx_import import RLX_NP, Importer, Known, declared_dtype
from rlx._onnx_registry import attrs, fold_shape, known, op

_I64 = np.dtype(np.int64)


def _c(imp: Importer, v: int) -> Any:
    return imp.g.constant(np.array(v, np.int64))


def _int_type(imp: Importer, node: Any, names: Tuple[str, ...]) -> np.dtype:
    """The declared integer type of ``node``'s operands (one type for all)."""
    types = []
    for n in names:
        v = imp.get(n)
        if v is None:
            raise rlx.ModelFormatError(f"{node.op_type} operand {n!r} is missing")
        types.append(_onnx_dtypes.logical_of(imp, n) or imp.dtype(v))
    if len(set(types)) != 1:
        raise rlx.DTypeError(f"{node.op_type} of {' and '.join(str(t) for t in types)}: the operands must have one type")
    dt = np.dtype(types[0])
    if dt.kind not in "iu" or dt == np.uint64:
        raise rlx.DTypeError(f"{node.op_type} on {dt} (integers up to 64 bits, uint64 excepted: rlx holds it as int64 bits)")
    return dt


def _wide(imp: Importer, name: str) -> Any:
    x = imp.rt(imp.get(name))
    return x if np.dtype(x.dtype) == _I64 else imp.g.cast(x, "int64")


def _back(imp: Importer, r: Any, dt: np.dtype) -> Any:
    """An int64 result as ``dt``'s computed type (int32 wrapped into range, then cast)."""
    if _onnx_dtypes.computed(dt) is not None or dt == _I64:
        return r  # a narrow type is wrapped by rlx._onnx_dtypes.after_node
    return imp.g.cast(_onnx_dtypes.wrap(imp, r, dt), "int32")


# -- BitShift ----------------------------------------------------------------------------------


def _powers(n: int) -> np.ndarray:
    return (np.uint64(1) << np.arange(n, dtype=np.uint64)).view(np.int64)


@op("BitShift")
def _bitshift(imp: Importer, node: Any) -> Any:
    direction = attrs(node).get("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise rlx.ModelFormatError(f"BitShift direction {direction!r} (LEFT or RIGHT)")
    dt = _int_type(imp, node, tuple(node.input[:2]))
    g, n, signed = imp.g, 8 * dt.itemsize, dt.kind == "i"
    x, s = _wide(imp, node.input[0]), _wide(imp, node.input[1])
    zero = _c(imp, 0)
    # A right shift by n - 1 of a signed value is its sign fill too: 2**(n-1) stays out of the divisors.
    top = n - 1 if direction == "RIGHT" and signed else n
    below = g.lt(s, zero)
    outside = g.where(below, below, g.ge(s, _c(imp, top)))  # s < 0 or s >= top
    p = g.gather(g.constant(_powers(top)), g.where(outside, zero, s), 0)
    if direction == "LEFT":
        r = g.mul(x, p)
    else:
        q = g.div(x, p)  # truncates; a floor division on signed values:
        r = g.where(g.gt(g.mul(q, p), x), g.sub(q, _c(imp, 1)), q) if signed else q
    fill = g.where(g.lt(x, zero), _c(imp, -1), zero) if direction == "RIGHT" and signed else zero
    return _back(imp, g.where(outside, fill, r), dt)


# -- BitwiseNot / And / Or / Xor ---------------------------------------------------------------

_FOLD: Dict[str, Callable[..., np.ndarray]] = {
    "BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or, "BitwiseXor": np.bitwise_xor}


@op("BitwiseNot")
def _bitwise_not(imp: Importer, node: Any) -> Any:
    dt = _int_type(imp, node, (node.input[0],))
    v = imp.get(node.input[0])
    if isinstance(v, Known) and not v.symbolic:
        return known(np.invert(v.arr), v.dtype)
    return _back(imp, imp.g.sub(_c(imp, -1), _wide(imp, node.input[0])), dt)


def _table(fold: Callable[..., np.ndarray]) -> np.ndarray:
    a, b = np.divmod(np.arange(256, dtype=np.int64), 16)
    return fold(a, b).astype(np.int64)


def _digits_op(imp: Importer, a: Any, b: Any, bits: int, table: Any) -> Any:
    """``table``'s op on two int64 values in [0, 2**bits), 4 bits at a time."""
    g = imp.g
    acc = None
    for k in range(0, bits, 4):
        lo, hi = _c(imp, 1 << k), _c(imp, 1 << (k + 4))
        sixteen = _c(imp, 16)
        da = g.sub(g.div(a, lo), g.mul(g.div(a, hi), sixteen))
        db = g.sub(g.div(b, lo), g.mul(g.div(b, hi), sixteen))
        d = g.mul(g.gather(table, g.add(g.mul(da, sixteen), db), 0), lo)
        acc = d if acc is None else g.add(acc, d)
    return acc


def _unsigned(imp: Importer, x: Any, bits: int) -> Any:
    """A signed ``bits``-bit value as its bit pattern, in [0, 2**bits)."""
    g = imp.g
    return g.where(g.lt(x, _c(imp, 0)), g.add(x, _c(imp, 1 << bits)), x)


def _signed(imp: Importer, r: Any, bits: int) -> Any:
    g = imp.g
    return g.where(g.ge(r, _c(imp, 1 << (bits - 1))), g.sub(r, _c(imp, 1 << bits)), r)


def _halves(imp: Importer, x: Any) -> Tuple[Any, Any]:
    """int64 ``x`` as (high, low): x = high * 2**32 + low, low in [0, 2**32), high signed."""
    g = imp.g
    m = _c(imp, 1 << 32)
    hi = g.div(x, m)
    lo = g.sub(x, g.mul(hi, m))
    neg = g.lt(lo, _c(imp, 0))
    return g.where(neg, g.sub(hi, _c(imp, 1)), hi), g.where(neg, g.add(lo, m), lo)


@op(*_FOLD)
def _bitwise(imp: Importer, node: Any) -> Any:
    dt = _int_type(imp, node, tuple(node.input[:2]))
    va, vb = imp.get(node.input[0]), imp.get(node.input[1])
    fold = _FOLD[node.op_type]
    if isinstance(va, Known) and isinstance(vb, Known) and not (va.symbolic or vb.symbolic):
        fold_shape(imp, node.op_type, va, vb)
        return known(fold(va.arr, vb.arr), va.dtype)
    g, n = imp.g, 8 * dt.itemsize
    a, b = _wide(imp, node.input[0]), _wide(imp, node.input[1])
    table = g.constant(_table(fold))
    if n == 64:
        (ha, la), (hb, lb) = _halves(imp, a), _halves(imp, b)
        high = _signed(imp, _digits_op(imp, _unsigned(imp, ha, 32), _unsigned(imp, hb, 32), 32, table), 32)
        return g.add(g.mul(high, _c(imp, 1 << 32)), _digits_op(imp, la, lb, 32, table))
    if dt.kind == "i":
        a, b = _unsigned(imp, a, n), _unsigned(imp, b, n)
    r = _digits_op(imp, a, b, n, table)
    return _back(imp, _signed(imp, r, n) if dt.kind == "i" else r, dt)


@op("BitCast")
def _bitcast(imp: Importer, node: Any) -> Any:
    to = declared_dtype(attrs(node)["to"], "BitCast's to")
    x = imp.get(node.input[0])
    if x is None:
        raise rlx.ModelFormatError("BitCast has no input")
    src = np.dtype(_onnx_dtypes.logical_of(imp, node.input[0]) or imp.dtype(x))
    if src.itemsize != to.itemsize:
        raise rlx.ModelFormatError(f"BitCast from {src} to {to}: the types must have one width")
    if isinstance(x, Known) and not x.symbolic and np.dtype(x.arr.dtype) == src:
        imp.reserve(x.arr.shape, to.itemsize, "the result")
        return Known(np.ascontiguousarray(x.arr).view(to), to)
    if src.kind not in "iub" or to.kind not in "iub" or np.uint64 in (src, to):
        raise rlx.DTypeError(
            f"BitCast from {src} to {to}: rlx computes floats in float32 (and UINT64 as int64 bits) "
            "and reinterprets only integer and bool values")
    v = imp.rt(x)
    computed = np.dtype(_onnx_dtypes.computed(to) or to)
    if to.kind == "b":
        return imp.g.cast(v, "bool")
    return v if np.dtype(v.dtype) == computed else imp.g.cast(v, RLX_NP[computed])
