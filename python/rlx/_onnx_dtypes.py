"""ONNX element types rlx computes in another type: FLOAT16, BFLOAT16, DOUBLE, the 8-bit floats
and FLOAT4E2M1 in float32;
INT8, UINT8, INT16, UINT16, UINT32 and the sub-byte INT4, UINT4, INT2, UINT2 in int64; UINT64 as
int64 bit patterns.

At the graph's boundary ``OnnxModel.run`` converts inputs to the computed type
(:func:`to_computed`) and outputs back to their declared type (:func:`to_declared`);
initializers and constants of these types are converted once at import. Each conversion is
listed in ``OnnxModel.conversions`` and announced by one :class:`DTypeConversionWarning` when
the model is loaded: never silently.

Inside the graph the importer keeps the declared ("logical") type of every value whose computed
type differs (``Importer.logical``, filled by :func:`after_node`). A narrow integer is wrapped
back into its range (:func:`wrap`) after every op that can leave it: add, sub, mul, neg, pow
and sums are ring operations, so the int64 result taken modulo 2**n is the narrow result
exactly. Operands are then always in range, so division (truncating, as rlx's int64 Div),
comparisons, min / max and data movement are exact as computed. Mean and ReduceMean are a
DTypeError on narrow integers: their narrow result depends on how the sum overflows before the
division, which computing wide does not reproduce.

The sub-byte types are numpy's ``ml_dtypes`` int4 / uint4 / int2 / uint2, as onnx unpacks them
(one value per byte); :func:`int_bits` gives their width, which numpy's ``kind`` and
``itemsize`` do not. Converting a float to them truncates and wraps, as to int8 (ml_dtypes'
``astype``, which the ONNX tests follow).

Why int64 and not int32: one computed type holds every narrow type, uint32 included, and a
product of two in-range operands wraps modulo 2**64, which 2**n divides.

UINT64 is computed as the int64 of the same 64 bits (values from 2**63 on read as negative).
What only moves, tests or wraps those bits is exact: data movement, Equal, casts to integer and
bool types, and the ring operations (add, sub, mul, neg, sums, products) modulo 2**64. Less /
Greater / LessOrEqual / GreaterOrEqual compare the bits with the top one flipped (signed order
of ``x - 2**63`` is unsigned order of ``x``). Anything that reads the value otherwise (division,
modulo, shifts, bitwise ops, min / max, sorting, casts to floats, pools...) is a DTypeError
naming the node (:data:`_U64_EXACT` lists what is allowed).

Floats are computed in float32. A Cast to FLOAT16 or BFLOAT16 inside the graph does not round
to that type's precision (a value known at import is rounded); only the conversion of a graph
output does. The same holds for the 8-bit floats and FLOAT4E2M1 (ml_dtypes' types): a Cast or
QuantizeLinear to an 8-bit float clamps to its largest finite value where ``saturate`` asks
(the default), and a graph output rounds to nearest even as it converts; a value of such a type
that flows on inside the graph is not rounded.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import rlx

# ONNX element type -> the numpy dtype rlx computes it in.
COMPUTED_ELEM = {10: np.float32, 16: np.float32, 11: np.float32,
                 3: np.int64, 2: np.int64, 5: np.int64, 4: np.int64, 12: np.int64, 13: np.int64,
                 22: np.int64, 21: np.int64, 26: np.int64, 25: np.int64,
                 17: np.float32, 18: np.float32, 19: np.float32, 20: np.float32, 23: np.float32}
# Sub-byte integer element types (INT4, UINT4, INT2, UINT2) -> (bits, signed).
_SUB_BYTE = {22: (4, True), 21: (4, False), 26: (2, True), 25: (2, False)}
# The 8-bit floats (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ), which Cast and QuantizeLinear saturate to,
# and FLOAT4E2M1: computed in float32, rounded to their grid where a graph output is converted.
_FLOAT8 = {17, 18, 19, 20}
_SMALL_FLOATS = {*_FLOAT8, 23}
# Element types whose numpy dtype comes from onnx (ml_dtypes).
_FROM_ONNX = {16, *_SUB_BYTE, *_SMALL_FLOATS}


class DTypeConversionWarning(UserWarning):
    """A model's inputs, outputs, initializers or constants are converted to and from the types
    rlx computes in (see ``OnnxModel.conversions``)."""


def declared_np(elem: int) -> Optional[np.dtype]:
    """The numpy dtype of a converted ONNX element type (BFLOAT16 as ``ml_dtypes.bfloat16``, as
    onnx represents it), or None when rlx does not convert that type."""
    if elem not in COMPUTED_ELEM:
        return None
    if elem in _FROM_ONNX:
        from onnx import helper

        try:
            return np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        except (ImportError, KeyError, TypeError, ValueError):
            return None
    return np.dtype({10: np.float16, 11: np.float64, 3: np.int8, 2: np.uint8, 5: np.int16, 4: np.uint16,
                     12: np.uint32, 13: np.uint64}[elem])


_COMPUTED_NP: Dict[np.dtype, np.dtype] = {}
_SUB_BYTE_NP: Dict[np.dtype, Tuple[int, bool]] = {}


def int_bits(dt: Any) -> Optional[Tuple[int, bool]]:
    """``(bits, signed)`` of an integer dtype, the sub-byte ones included; None for any other."""
    d = np.dtype(dt)
    if d.kind in "iu":
        return 8 * d.itemsize, d.kind == "i"
    if d.kind != "V":
        return None
    if not _SUB_BYTE_NP:
        for elem, bits in _SUB_BYTE.items():
            sub = declared_np(elem)
            if sub is not None:
                _SUB_BYTE_NP[sub] = bits
    return _SUB_BYTE_NP.get(d)


def float8_max(dt: Any) -> Optional[float]:
    """The largest finite value of an 8-bit float type (what a saturating Cast or QuantizeLinear
    clamps to), else None."""
    # (No test of numpy's kind: ml_dtypes gives float8_e5m2 kind "f", the others "V".)
    d = np.dtype(dt)
    if not any(declared_np(e) == d for e in _FLOAT8):
        return None
    import ml_dtypes

    return float(ml_dtypes.finfo(d).max)


def small_float(dt: Any) -> bool:
    """Whether ``dt`` is an 8-bit float or FLOAT4E2M1 (computed in float32)."""
    d = np.dtype(dt)
    return any(declared_np(e) == d for e in _SMALL_FLOATS)


def sub_byte_ints() -> List[np.dtype]:
    """The numpy types of INT4, UINT4, INT2 and UINT2 (those onnx has)."""
    found = (declared_np(elem) for elem in _SUB_BYTE)
    return [d for d in found if d is not None]


def int_range(dt: Any) -> Tuple[int, int]:
    """The smallest and largest value of an integer dtype (sub-byte ones included)."""
    bits, signed = int_bits(dt) or (64, True)
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def computed(dt: Any) -> Optional[np.dtype]:
    """The dtype rlx computes a converted numpy dtype in (float32 or int64), else None."""
    if not _COMPUTED_NP:
        for elem, c in COMPUTED_ELEM.items():
            d = declared_np(elem)
            if d is not None:
                _COMPUTED_NP[d] = np.dtype(c)
    return _COMPUTED_NP.get(np.dtype(dt))


def elem_name(elem: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else str(elem)


def type_name(dt: np.dtype) -> str:
    """The ONNX name of a numpy dtype rlx converts (``uint8`` -> ``UINT8``)."""
    from onnx import helper

    try:
        return elem_name(helper.np_dtype_to_tensor_dtype(np.dtype(dt)))
    except (KeyError, TypeError, ValueError):
        return str(dt)


def to_computed(what: str, arr: np.ndarray, declared: np.dtype) -> np.ndarray:
    """``arr`` (of ``declared``) as the computed dtype; a finite float64 value float32 cannot
    hold is a DTypeError naming ``what`` (it would become inf)."""
    target = computed(declared)
    assert target is not None, declared
    with np.errstate(over="ignore"):
        out = np.asarray(arr).astype(target)
    if declared == np.float64 and np.count_nonzero(np.isfinite(out)) != np.count_nonzero(np.isfinite(arr)):
        raise rlx.DTypeError(f"{what}: float64 values outside float32's range (rlx computes DOUBLE in float32)")
    return out


def to_declared(arr: np.ndarray, declared: np.dtype) -> np.ndarray:
    """A computed output as its declared dtype (float16 rounds to nearest even; a narrow
    integer output is already in range; uint64 takes the int64's bits)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(arr).astype(declared)


def warn(model_name: str, conversions: List[str], stacklevel: int = 3) -> None:
    if conversions:
        shown = "; ".join(conversions[:3]) + (f"; (+{len(conversions) - 3} more)" if len(conversions) > 3 else "")
        warnings.warn(
            f"ONNX model {model_name!r}: {len(conversions)} dtype conversion(s) to the types rlx computes in "
            f"(see OnnxModel.conversions): {shown}", DTypeConversionWarning, stacklevel=stacklevel)


# -- inside the graph --------------------------------------------------------------------------

# Ops whose outputs are int64 indices or sizes whatever the input type (from this output on).
_INDEX_OUTPUTS = {"Shape": 0, "Size": 0, "ArgMax": 0, "ArgMin": 0, "NonZero": 0, "TopK": 1, "Unique": 1,
                  "MaxPool": 1}
# Ops whose result stays within their operands' values: no wrap needed.
_IN_RANGE = {"Identity", "Dropout", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split",
             "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Where", "Max", "Min", "Clip",
             "ReduceMax", "ReduceMin", "DepthToSpace", "SpaceToDepth", "MaxPool", "GlobalMaxPool", "TopK",
             "Trilu", "Compress", "ReverseSequence", "QuantizeLinear", "DynamicQuantizeLinear"}
# Ops whose narrow-integer result rlx cannot reproduce by computing wide (see the module doc).
_INEXACT = {"Mean", "ReduceMean"}
# Ops exact on UINT64 operands held as int64 bit patterns (see the module doc); Cast and
# CastLike to a float type are refused apart.
_U64_ORDER = {"Max", "Min", "Clip", "ReduceMax", "ReduceMin", "MaxPool", "GlobalMaxPool", "TopK",
              "QuantizeLinear", "DynamicQuantizeLinear"}
_U64_EXACT = (_IN_RANGE - _U64_ORDER) | {
    "Add", "Sub", "Mul", "Neg", "Sum", "ReduceSum", "ReduceProd", "CumSum", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "Shape", "Size", "Cast", "CastLike", "Pad"}


def logical_of(imp: Any, name: str) -> Optional[np.dtype]:
    """The declared type of value ``name`` when rlx computes it in another type, else None."""
    from rlx._onnx_import import Known

    if not name:
        return None
    lt = imp.logical.get(name)
    if lt is not None:
        return lt
    v = imp.env.get(name)
    if isinstance(v, Known) and computed(v.dtype) is not None:
        return v.dtype
    return None


def is_u64(imp: Any, name: str) -> bool:
    """Whether value ``name`` is a UINT64 held as int64 bits."""
    lt = logical_of(imp, name)
    return lt is not None and lt == np.uint64


def check_node(imp: Any, node: Any) -> None:
    u64 = [n for n in node.input if is_u64(imp, n)]
    if u64:
        to = None
        if node.op_type == "Cast":
            from rlx._onnx_import import declared_dtype

            to = declared_dtype(next((int(a.i) for a in node.attribute if a.name == "to"), 1), "Cast's to")
        elif node.op_type == "CastLike" and len(node.input) > 1:
            to = logical_of(imp, node.input[1]) or imp.dtype(imp.get(node.input[1]))
        # Casts to any float (ml_dtypes' are kind "V", or "f" for float8_e5m2) read the value.
        if node.op_type not in _U64_EXACT or (to is not None and np.dtype(to).kind in "fV"):
            raise rlx.DTypeError(
                f"{node.op_type} on UINT64 {u64[0]!r}: rlx computes UINT64 as int64 bit patterns, exact for data "
                "movement, comparisons, integer casts and wrapping add / sub / mul only")
    if node.op_type in _INEXACT:
        for n in node.input:
            lt = logical_of(imp, n)
            if lt is not None and int_bits(lt):
                raise rlx.DTypeError(
                    f"{node.op_type} on {type_name(lt)} {n!r}: rlx computes {type_name(lt)} in int64 and cannot "
                    "reproduce the overflow of a narrow sum before its division")


def _computed_of(imp: Any, v: Any) -> np.dtype:
    dt = imp.dtype(v)
    return computed(dt) or dt


def after_node(imp: Any, node: Any, outs: List[Any]) -> List[Any]:
    """``outs`` with the declared types of ``node``'s outputs recorded in ``imp.logical``, and
    narrow integer results wrapped into their range."""
    from rlx._onnx_import import Known

    op = node.op_type
    if op in ("Cast", "BitCast"):
        to = next((int(a.i) for a in node.attribute if a.name == "to"), None)
        sources = [declared_np(to) if to is not None else None]
    elif op == "CastLike":
        sources = [logical_of(imp, node.input[1]) if len(node.input) > 1 else None]
    else:
        srcs = [(n, imp.env.get(n)) for n in node.input if n]
        sources = None  # chosen per output, below
    first_index = _INDEX_OUTPUTS.get(op, len(outs))
    out = list(outs)
    for i, v in enumerate(out):
        name = node.output[i] if i < len(node.output) else ""
        if not name or v is None or i >= first_index:
            continue
        want = _computed_of(imp, v)
        if sources is not None:
            lt = sources[0]
        else:
            # The first operand of the output's computed type decides (Where's condition, Pow's
            # exponent or Gather's indices of another type do not).
            same = [n for n, x in srcs if x is not None and _computed_of(imp, x) == want]
            lt = logical_of(imp, same[0]) if same else None
        if lt is None or computed(lt) != want:
            continue
        if isinstance(v, Known):
            # Folded with numpy: an integer result is wrapped by a cast; a float one (a converted
            # initializer, say) is left as computed.
            if int_bits(lt) and not v.symbolic and v.dtype != lt:
                with np.errstate(over="ignore", invalid="ignore"):
                    out[i] = Known(np.asarray(v.arr).astype(lt), lt)
            continue
        # UINT64's ring results are its bits already (int64 wraps modulo 2**64 too).
        bits = int_bits(lt)
        if bits and bits[0] < 64 and op not in _IN_RANGE:
            out[i] = wrap(imp, v, lt)
        imp.logical[name] = lt
    return out


def wrap(imp: Any, v: Any, dt: np.dtype) -> Any:
    """An int64 value reduced modulo 2**bits into the range of the integer dtype ``dt``."""
    g = imp.g
    bits, signed = int_bits(dt) or (64, True)
    m = 1 << bits

    def c(x: int) -> Any:
        return g.constant(np.array(x, np.int64))

    # int64 division truncates, so this remainder has v's sign: move it into [0, m).
    r = g.sub(v, g.mul(g.div(v, c(m)), c(m)))
    r = g.where(g.lt(r, c(0)), g.add(r, c(m)), r)
    if signed:
        r = g.where(g.ge(r, c(m // 2)), g.sub(r, c(m)), r)
    return r
