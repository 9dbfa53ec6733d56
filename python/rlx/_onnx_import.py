"""The ONNX importer's state: ONNX names -> rlx values or values known at import.

A tensor is either a runtime ``rlx.Value`` or a :class:`Known`: a numpy array known at import
(a Constant, an initializer, or a folded shape computation). Shape values hold ``Poly``
elements in an object array. A ``Known`` becomes a runtime value only when an op needs it as
a tensor: an initializer becomes a param (zero-copy), anything else a constant.

A graph input that has the name of an initializer: in ONNX the initializer is the input's
default value (IR >= 4), or, for IR < 4, the way every initializer had to be declared. rlx keeps
the initializer as the value (a param, or folded when a shape computation reads it) and records
the name in ``shadowed``; feeding that input at run time is a ``BindingError``, never ignored.
Making such inputs run-time inputs instead would turn every weight of an IR 3 model, or of an
export with ``keep_initializers_as_inputs``, into a required feed and stop shape folding; a
caller who wants another value passes ``constants={name: array}`` to ``rlx.onnx.load``.

float16 / float64 initializers are converted once to float32 (a copy, listed in ``notes``); a
finite float64 value float32 cannot hold is a ``DTypeError``. Graph inputs and outputs of the
types ``rlx._onnx_dtypes`` converts get their computed type in the graph and are converted by
``OnnxModel.run``; ``logical`` keeps the declared type of every value computed in another type,
and ``conversions`` lists each conversion.

Arrays folded at import (ConstantOfShape, Expand, Range, broadcasts of shape values) are sized
with Python ints and counted against :func:`memory_budget` before numpy allocates them.

A float32 array of at least ``WEIGHT_MIN_ELEMENTS`` that a node makes at import (a weight in a
``Constant`` node, or a ``ConstantOfShape`` as in the ONNX backend's light models) is treated
like an initializer named after its value: a param bound zero-copy, and a weight to MatMul /
Gemm, instead of a graph constant the compiler would copy and fold through.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

import rlx
from rlx import _onnx_dtypes
from rlx._onnx_sym import DimLike, Poly, dim_text, parse_dim

# ONNX TensorProto element types rlx computes with; others are listed in errors.
_RLX_DTYPES = {1: np.float32, 7: np.int64, 6: np.int32, 9: np.bool_}
_ANY_DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
    9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}
RLX_NP = {np.dtype(np.float32): "float32", np.dtype(np.int64): "int64", np.dtype(np.int32): "int32", np.dtype(np.bool_): "bool"}


def np_dtype(elem_type: int, what: str, allow_any: bool = False) -> np.dtype:
    # Types rlx computes in another one: their declared numpy types (bfloat16 and the sub-byte
    # integers are ml_dtypes types, which only onnx names).
    converted = _onnx_dtypes.declared_np(elem_type) if allow_any else None
    if converted is not None:
        return converted
    table = _ANY_DTYPES if allow_any else _RLX_DTYPES
    if elem_type not in table:
        import onnx

        tname = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else str(elem_type)
        raise rlx.DTypeError(f"{what}: ONNX type {tname} is not supported (rlx computes in float32, int64, int32, bool)")
    return np.dtype(table[elem_type])


def declared_dtype(elem_type: int, what: str) -> np.dtype:
    """The numpy dtype of an ONNX type attribute (Cast's ``to``, EyeLike's ``dtype``, ...): a type
    rlx computes in, or one it computes wider (``rlx._onnx_dtypes.computed`` gives the graph's
    type); else a DTypeError naming ``what``."""
    dt = _onnx_dtypes.declared_np(elem_type)
    return dt if dt is not None else np_dtype(elem_type, what)


class Known:
    """A tensor known at import. ``init`` names the initializer it is (if any)."""

    __slots__ = ("arr", "dtype", "init")

    def __init__(self, arr: np.ndarray, dtype: Optional[np.dtype] = None, init: Optional[str] = None) -> None:
        self.arr = arr
        self.dtype = np.dtype(dtype if dtype is not None else arr.dtype)
        self.init = init

    @property
    def symbolic(self) -> bool:
        return self.arr.dtype == object

    @property
    def shape(self) -> List[DimLike]:
        return list(self.arr.shape)


Val = Union["rlx.Value", Known]


def shape_array(dims: Sequence[DimLike]) -> np.ndarray:
    """A 1-D int64 array, or an object array when some dim is symbolic."""
    if all(isinstance(d, (int, np.integer)) for d in dims):
        return np.array([int(d) for d in dims], dtype=np.int64)
    out = np.empty(len(dims), dtype=object)
    for i, d in enumerate(dims):
        out[i] = d if isinstance(d, Poly) else int(d)
    return out


def normalize(arr: np.ndarray) -> np.ndarray:
    """An object array whose elements all became ints turns back into int64."""
    if arr.dtype == object and all(not isinstance(x, Poly) for x in arr.flat):
        return arr.astype(np.int64)
    return arr


WEIGHT_MIN_ELEMENTS = 4096

_MEM_TOTAL: List[int] = []


def memory_budget() -> int:
    """Bytes the importer may fold into arrays: ``RLX_MEMORY_LIMIT`` (bytes) if set, else the
    machine's memory (the budget the runtime checks a run against)."""
    raw = os.environ.get("RLX_MEMORY_LIMIT")
    if raw is not None:
        if not re.fullmatch(r"\+?[0-9]+", raw.strip()):
            raise rlx.RlxError(f"RLX_MEMORY_LIMIT={raw!r} is not a byte count (a non-negative integer)")
        return int(raw.strip())
    if not _MEM_TOTAL:
        try:
            _MEM_TOTAL.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            _MEM_TOTAL.append(2**63 - 1)
    return _MEM_TOTAL[0]


def weight_like(name: str, v: Any, min_elements: int = WEIGHT_MIN_ELEMENTS) -> Any:
    """``v``, or for a float32 array of at least ``min_elements`` made at import, the same
    array as an initializer named ``name`` (see the module doc)."""
    if (isinstance(v, Known) and v.init is None and v.dtype == np.float32 and not v.symbolic
            and v.arr.size >= min_elements):
        return Known(v.arr, v.dtype, init=name)
    return v


def _as_float32(name: str, arr: np.ndarray) -> np.ndarray:
    """A float16 / float64 initializer as float32; a finite value float32 cannot hold is a
    DTypeError naming the initializer (it would become inf)."""
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if arr.dtype == np.float64 and np.count_nonzero(np.isfinite(out)) != np.count_nonzero(np.isfinite(arr)):
        raise rlx.DTypeError(f"initializer {name!r}: float64 values outside float32's range (rlx computes in float32)")
    return out


def subgraphs(node: Any) -> List[Any]:
    """The graphs in ``node``'s attributes (If's branches, Loop's and Scan's body)."""
    out = []
    for a in node.attribute:
        if a.HasField("g"):
            out.append(a.g)
        out.extend(a.graphs)
    return out


def graph_reads(graph: Any) -> set:
    """Every value name the nodes of ``graph`` read, with the names their subgraphs read
    (a subgraph sees the names of its outer graphs)."""
    names = set()
    for n in graph.node:
        names.update(i for i in n.input if i)
        for sub in subgraphs(n):
            names |= graph_reads(sub)
            names.update(o.name for o in sub.output)
    return names


def _sanitize(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else "d_" + s


class Importer:
    def __init__(
        self,
        proto: Any,
        inits: Dict[str, np.ndarray],
        dims: Mapping[str, Tuple[int, int]],
        constants: Dict[str, np.ndarray],
        default_bounds: Callable[[str], Tuple[int, int]],
        name: Optional[str],
    ) -> None:
        import onnx

        self.proto = proto
        self.graph = proto.graph
        self.opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
        self.opset = self.opsets.get("ai.onnx", 1)
        self.g = rlx.Graph(name or self.graph.name or "onnx", dims=None)
        self.dims = dict(dims)
        self.default_bounds = default_bounds
        self.env: Dict[str, Val] = {}
        # Node outputs an earlier node already computed (a per-channel scale folded into a
        # Conv): each maps to the value it equals, bound instead of running the node.
        self.applied: Dict[str, str] = {}
        # Outputs of a Pad by zeros of the spatial axes alone: output -> (the Pad's input, its
        # pads). A Conv reading one adds the pads to its own and reads the input instead.
        self.zero_padded: Dict[str, Tuple[str, List[int]]] = {}
        self.params: Dict[str, np.ndarray] = {}
        self.notes: List[str] = []
        self.input_names: List[str] = []
        self.input_shapes: Dict[str, Tuple[Union[int, str], ...]] = {}
        self.output_names: List[str] = []
        self._inits = inits
        self._materialized: Dict[Any, Any] = {}
        self._dim_src: Dict[str, Tuple[Any, int]] = {}
        self._zero_vec: Dict[str, Any] = {}
        self._constants = constants
        self._onnx = onnx
        self._folded = 0  # bytes of arrays folded at import so far (all stay alive in env)
        self.shadowed: List[str] = []  # graph inputs that are initializers (see the module doc)
        self.frozen: List[str] = []  # graph inputs given by ``constants``
        self.dim_names: set = set()  # names looked up in ``dims`` (raw and sanitized)
        self.transpose_w = "transpose_w" in (getattr(rlx.Graph.linear, "__text_signature__", "") or "")
        # Values computed in another type than declared: name -> declared dtype (rlx._onnx_dtypes).
        self.logical: Dict[str, np.dtype] = {}
        #: Every input, output, initializer or constant converted to or from a computed type.
        self.conversions: List[str] = []
        self.input_dtypes: Dict[str, np.dtype] = {}  # converted inputs: name -> declared dtype
        self.output_dtypes: Dict[str, np.dtype] = {}  # converted outputs: name -> declared dtype
        self._converted_constants: Dict[Tuple[str, np.dtype], int] = {}
        converted: Dict[str, List[str]] = {}
        for n, arr in inits.items():
            if arr.dtype != np.float32 and _onnx_dtypes.computed(arr.dtype) == np.float32:
                converted.setdefault(str(arr.dtype), []).append(n)
                self.conversions.append(f"initializer {n!r}: {_onnx_dtypes.type_name(arr.dtype)} -> float32 at import")
                self.logical[n] = arr.dtype
                arr = _as_float32(n, arr)
            self.env[n] = Known(arr, arr.dtype, init=n)
        for dt, names in converted.items():
            shown = ", ".join(repr(n) for n in names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
            self.notes.append(f"{len(names)} {dt} initializer(s) converted to float32 at import (a copy each): {shown}")

    # -- symbols and inputs ------------------------------------------------------------------

    def symbol(self, raw: str) -> str:
        sym = _sanitize(raw)
        self.dim_names.update((raw, sym))
        if sym not in self.g.dims:
            lo, hi = self.dims.get(raw, self.dims.get(sym, self.default_bounds(sym)))
            self.g.dim(sym, int(lo), int(hi))
        return sym

    def add_inputs(self) -> None:
        declared = {vi.name for vi in self.graph.input}
        unknown = [n for n in self._constants if n not in declared]
        if unknown:
            raise rlx.BindingError(f"constants names {unknown} are not graph inputs (inputs: {sorted(declared)})")
        for vi in self.graph.input:
            if vi.name in self._constants:
                # Frozen by the caller; this also replaces an initializer's default value.
                arr = np.asarray(self._constants[vi.name])
                self.env[vi.name] = Known(arr, arr.dtype)
                self.frozen.append(vi.name)
                continue
            if vi.name in self._inits:
                self.shadowed.append(vi.name)
                continue
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise rlx.UnsupportedOpError(f"input {vi.name!r}: only tensor inputs are supported")
            wide = _onnx_dtypes.declared_np(tt.elem_type)
            if wide is not None:
                # Converted by OnnxModel.run on the way in (rlx._onnx_dtypes).
                dt = np.dtype(_onnx_dtypes.computed(wide))
                self.input_dtypes[vi.name] = self.logical[vi.name] = wide
                self.conversions.append(f"input {vi.name!r}: {_onnx_dtypes.elem_name(tt.elem_type)} -> {dt} at run time")
            else:
                dt = np_dtype(tt.elem_type, f"input {vi.name!r}")
            shape: List[Union[int, str]] = []
            for axis, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    shape.append(int(d.dim_value))
                else:
                    shape.append(self.symbol(d.dim_param or f"{vi.name}_{axis}"))
            v = self.g.input(vi.name, tuple(shape), RLX_NP[dt])
            for axis, d in enumerate(shape):
                if isinstance(d, str):
                    self._dim_src.setdefault(d, (v, axis))
            self.env[vi.name] = v
            self.input_names.append(vi.name)
            self.input_shapes[vi.name] = tuple(shape)

    # -- values ------------------------------------------------------------------------------

    def get(self, name: str) -> Optional[Val]:
        if name == "":
            return None
        try:
            return self.env[name]
        except KeyError:
            raise rlx.GraphError(f"ONNX value {name!r} is used before it is defined") from None

    def reserve(self, dims: Sequence[Any], itemsize: int, what: str) -> None:
        """Counts an array about to be made at import (``what``, e.g. "the result") against the
        memory budget, with Python ints: a negative dim or a shape numpy cannot describe is a
        ShapeError, a size over the budget a MemoryError, both before numpy allocates."""
        text = "[" + ", ".join(str(d) for d in dims) + "]"
        n, span = 1, max(int(itemsize), 1)
        for d in dims:
            if isinstance(d, Poly):
                continue  # a run-time size: not allocated here
            if int(d) < 0:
                raise rlx.ShapeError(f"{what} {text} has a negative dim")
            n, span = n * int(d), span * max(int(d), 1)
        if span >= 2**63:
            raise rlx.ShapeError(f"{what} {text} is too large for an array")
        need = n * max(int(itemsize), 1)
        budget = memory_budget()
        if self._folded + need > budget:
            raise MemoryError(
                f"{what} {text} needs {need} bytes at import, over the {budget}-byte budget "
                f"({self._folded} already folded; RLX_MEMORY_LIMIT or the machine's memory)"
            )
        self._folded += need

    def dtype(self, v: Val) -> np.dtype:
        if isinstance(v, Known):
            return v.dtype
        return np.dtype(v.dtype)

    def shape(self, v: Val) -> List[DimLike]:
        if isinstance(v, Known):
            return list(v.arr.shape)
        return [parse_dim(d) for d in v.shape]

    def rank(self, v: Val) -> int:
        return len(v.arr.shape) if isinstance(v, Known) else len(v.shape)

    def values(self, name: str, what: str) -> np.ndarray:
        """The value of an operand that must be known at import (shape tensors, axes, ...)."""
        v = self.get(name)
        if not isinstance(v, Known):
            raise rlx.UnsupportedOpError(
                f"{what}: operand {name!r} must be known at import (a constant, an initializer or a "
                "shape computation); rlx has no data-dependent shapes"
            )
        return v.arr

    def ints(self, name: str, what: str) -> List[DimLike]:
        return [x if isinstance(x, Poly) else int(x) for x in np.asarray(self.values(name, what)).reshape(-1)]

    def rt(self, v: Val) -> "rlx.Value":
        """``v`` as a runtime value: a param for an initializer, else a constant."""
        if not isinstance(v, Known):
            return v
        key = v.init if v.init is not None else id(v)
        hit = self._materialized.get(key)
        if hit is not None:
            return hit[0]
        what = f"initializer {v.init!r}" if v.init else "constant"
        if v.dtype not in RLX_NP and not v.symbolic and _onnx_dtypes.computed(v.dtype) is not None:
            # Converted once here (rlx._onnx_dtypes), and reported.
            to = np.dtype(_onnx_dtypes.computed(v.dtype))
            tname = _onnx_dtypes.type_name(v.dtype)
            if v.init is not None:
                self.conversions.append(f"{what}: {tname} -> {to} at import")
            else:
                self._converted_constants[(tname, to)] = self._converted_constants.get((tname, to), 0) + 1
            arr = _onnx_dtypes.to_computed(what, np.asarray(v.arr).astype(v.dtype), v.dtype)
            self._materialized[key] = (self.rt(Known(arr, to, init=v.init)), v)
            return self._materialized[key][0]
        if v.dtype not in RLX_NP:
            raise rlx.DTypeError(f"{what}: dtype {v.dtype} is not supported (rlx computes in float32, int64, int32, bool)")
        # One-element initializers (sqrt(d), 0.5, 1.0 in exported graphs) are arithmetic
        # constants, not weights: as constants, fusions can read their values.
        if v.init is not None and v.arr.size > 1:
            out = self.g.param(v.init, tuple(int(d) for d in v.arr.shape), RLX_NP[v.dtype])
            self.params[v.init] = v.arr
        elif v.symbolic:
            out = self.symbolic_tensor(v)
        else:
            out = self.g.constant(np.array(v.arr, dtype=v.dtype, order="C"))
        self._materialized[key] = (out, v)  # keeps v alive so id() stays unique
        return out

    def param_from(self, name: str, arr: np.ndarray) -> "rlx.Value":
        """A param holding an array made at import (e.g. a transposed Gemm weight)."""
        if name in self._materialized:
            return self._materialized[name][0]
        out = self.g.param(name, arr.shape, RLX_NP[arr.dtype])
        self.params[name] = arr
        self._materialized[name] = (out, arr)
        return out

    # -- runtime tensors of symbolic shape ---------------------------------------------------

    def _zeros_for_symbol(self, sym: str) -> "rlx.Value":
        """A float32 zero vector of shape ``[sym]``, derived from an input that has the dim."""
        if sym in self._zero_vec:
            return self._zero_vec[sym]
        if sym not in self._dim_src:
            raise rlx.UnsupportedOpError(f"no input has dim {sym!r}; cannot build a tensor of that size")
        x, axis = self._dim_src[sym]
        zero = self.g.constant(np.zeros((), np.float32))
        z = self.g.where(self.g.eq(x, x), zero, zero)
        others = [a for a in range(len(x.shape)) if a != axis]
        if others:
            z = self.g.reduce_max(z, others, keep_dim=False)
        self._zero_vec[sym] = z
        return z

    def zeros_vec(self, d: DimLike) -> "rlx.Value":
        """A float32 zero vector of length ``d`` (an int or a single-term polynomial)."""
        if isinstance(d, int):
            self.reserve([d], 4, "a zero vector")
            return self.g.constant(np.zeros((d,), np.float32))
        if len(d.terms) != 1:
            raise rlx.UnsupportedOpError(f"cannot build a tensor of length {d} (a sum of terms)")
        (mono, coeff), = d.terms.items()
        parts = [self._zeros_for_symbol(s) for s in mono]
        if coeff != 1:
            self.reserve([coeff], 4, "a zero vector")
            parts.append(self.g.constant(np.zeros((coeff,), np.float32)))
        acc = parts[0]
        for i, p in enumerate(parts[1:], 1):
            # [a0..a(i-1)] + [1, .., 1, p]: an outer sum, flattened below.
            acc = self.g.add(self.g.reshape(acc, tuple(acc.shape) + (1,)), self.g.reshape(p, (1,) * i + (p.shape[0],)))
        if len(parts) > 1:
            acc = self.g.reshape(acc, (dim_text(d),))
        return acc

    def filled(self, shape: Sequence[DimLike], value: "rlx.Value") -> "rlx.Value":
        """``value`` (rank 0 or broadcastable) broadcast to ``shape`` at run time."""
        acc = None
        rank = len(shape)
        for i, d in enumerate(shape):
            if isinstance(d, int) and d == 1:
                continue
            z = self.g.reshape(self.zeros_vec(d), tuple(dim_text(x) if j == i else 1 for j, x in enumerate(shape)))
            acc = z if acc is None else self.g.add(acc, z)
        if acc is None:
            acc = self.g.constant(np.zeros((1,) * rank, np.float32))
        cond = self.g.eq(acc, acc)
        return self.g.where(cond, value, value)

    def symbolic_tensor(self, v: Known) -> "rlx.Value":
        raise rlx.UnsupportedOpError(
            f"a shape value {list(v.arr.flat)} with symbolic entries is used as tensor data; rlx "
            "has no run-time shape tensors"
        )

    # -- the walk ----------------------------------------------------------------------------

    def import_node(self, i: int, node: Any, used: set, top: bool = True) -> None:
        """Imports node ``i`` of a graph: its handler's outputs bound in ``env``. ``used`` holds
        the names the graph reads (an output the handler does not give must be unused);
        ``top`` is False for a node of a subgraph (``rlx._onnx_ops_control``), whose values are
        never turned into named weights (an unrolled body defines its names once a step)."""
        from rlx._onnx_registry import HANDLERS, op_key

        where = f"ONNX node {node.name or '#' + str(i)!r} ({node.op_type})"
        if top and node.output and node.output[0] in self.applied:
            self.env[node.output[0]] = self.env[self.applied[node.output[0]]]
            return
        handler = HANDLERS.get(op_key(node))
        if handler is None:
            raise rlx.UnsupportedOpError(f"{where}: op {op_key(node)} is not supported")
        try:
            _onnx_dtypes.check_node(self, node)
            outs = handler(self, node)
            outs = _onnx_dtypes.after_node(self, node, list(outs) if isinstance(outs, (list, tuple)) else [outs])
        except rlx.RlxError as e:
            raise type(e)(f"{where}: {e}") from e
        except MemoryError as e:
            raise MemoryError(f"{where}: {e}") from e
        except (KeyError, IndexError, ValueError, TypeError, ArithmeticError, RecursionError) as e:
            # A node the structural checks let through but the handler cannot read.
            raise rlx.ModelFormatError(f"{where}: cannot import: {type(e).__name__}: {e}") from e
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        for n, o in zip(node.output, outs):
            if n:
                self.env[n] = weight_like(n, o) if top else o
        for n in node.output[len(outs):]:
            if n and n in used:
                raise rlx.UnsupportedOpError(
                    f"{where}: output #{list(node.output).index(n)} "
                    f"{n!r} is not supported"
                )

    def run(self) -> None:
        self.add_inputs()
        used = self.used_names()
        for i, node in enumerate(self.graph.node):
            self.import_node(i, node, used)
        outs = []
        for vi in self.graph.output:
            v = self.get(vi.name)
            try:
                outs.append((vi.name, self.rt(v)))
                self._output_dtype(vi, outs[-1][1])
            except rlx.RlxError as e:
                raise type(e)(f"ONNX output {vi.name!r}: {e}") from e
            self.output_names.append(vi.name)
        for (tname, to), n in self._converted_constants.items():
            self.conversions.append(f"{n} {tname} constant(s) -> {to} at import")
        for n, v in outs:
            self.g.output(n, v)

    def _output_dtype(self, vi: Any, v: "rlx.Value") -> None:
        """Records the declared type of an output rlx computes in another type: the type the
        graph declares, else the value's own declared type (``rlx._onnx_dtypes``)."""
        elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        declared = _onnx_dtypes.declared_np(elem) if elem else self.logical.get(vi.name)
        if declared is None:
            return  # a type rlx computes in (a mismatch is the executor's to report)
        if _onnx_dtypes.computed(declared) != np.dtype(v.dtype):
            raise rlx.DTypeError(
                f"declared {_onnx_dtypes.type_name(declared)} but computed as {v.dtype} (rlx computes "
                f"{_onnx_dtypes.type_name(declared)} in {_onnx_dtypes.computed(declared)})")
        self.output_dtypes[vi.name] = declared
        self.conversions.append(f"output {vi.name!r}: {np.dtype(v.dtype)} -> {_onnx_dtypes.type_name(declared)} at run time")

    def used_names(self) -> set:
        if not hasattr(self, "_used"):
            self._used = graph_reads(self.graph) | {o.name for o in self.graph.output}
        return self._used
