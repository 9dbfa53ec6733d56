"""Quantized ONNX graphs: rewritten at import into float graphs that rlx runs on its int8 path.

rlx tensors are float32, int64, int32 or bool, so the int8 / uint8 tensors of a quantized graph
cannot flow through an rlx graph. Before the import walk, :func:`rewrite` turns the quantized
matmul patterns that ``onnxruntime.quantization`` writes back into float ops, each weight
dequantized ONCE at import into a float32 initializer (a param, like any weight):

- dynamic (``quantize_dynamic``): ``DynamicQuantizeLinear(x) -> MatMulInteger(xq, Bq, xzp, Bzp)
  -> Cast(float) -> Mul(., Mul(x_scale, B_scale))`` => ``MatMul(x, (Bq - Bzp) * B_scale)``, with
  a per-tensor or per-column scale and zero point, B int8 or uint8. A quantized embedding table,
  ``Gather(Tq, ids) -> DequantizeLinear(., scale, zp)``, => ``Gather((Tq - zp) * scale, ids)``.
- QDQ (``quantize_static``, ``QuantFormat.QDQ``): ``DequantizeLinear`` of initializers => a
  float32 initializer; an activation's ``QuantizeLinear -> DequantizeLinear`` pair => the float
  activation itself.
- QOperator (``QuantFormat.QOperator``): ``QuantizeLinear(x) -> QLinearMatMul(...) ->
  DequantizeLinear`` => ``MatMul`` of the float operands (initializer operands dequantized);
  likewise onnxruntime's contrib ``QLinearAdd``, ``QLinearMul``, ``QLinearSoftmax`` and
  ``QGemm`` => ``Add``, ``Mul``, ``Softmax``, ``Gemm`` (so a default QOperator BERT imports),
  and data movement (Reshape, Transpose, ...) on a quantized tensor => the same op in float.

``OnnxModel.pipeline()`` of such a model defaults to ``precision="int8"``: rlx quantizes each
linear weight again, per output channel to s8, and the activations per row to u8 at run time with
their own range, NOT with the graph's static (calibrated) scale and zero point. Results therefore
match ONNX Runtime's on the quantized model up to quantization error, not bit for bit.

One exception to "the activation passes through": onnxruntime deletes a Relu or Clip that
follows a quantized op and relies on the saturation of the next QuantizeLinear (a zero point at
the type's minimum clamps at 0). So a static pair whose range starts at exactly 0 is kept as a
clamp to its range (``Relu`` + ``Min``), unless the producer is provably non-negative (Softmax,
Relu, ``erf(x) + 1``, ...). Other saturation at a calibrated range is not reproduced.

A graph outside these patterns (a node reading a quantized tensor elsewhere, a scale that is
not an initializer, per-axis or blocked activation quantization, a requantization with another
scale, a quantized graph output) is imported as written when its quantized ops are all standard
QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger and QLinearMatMul: the
import walk computes those as ONNX defines them, integer products exactly
(``rlx._onnx_ops_quantize``), and nothing is folded; so is a graph with an ONNX QLinearConv,
which no pattern folds. Otherwise (the contrib ops outside their patterns) it is an
``UnsupportedOpError`` naming the node, never a silent wrong result.
:class:`QuantFold` records of what was folded become ``OnnxModel.quantized``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

import rlx
from rlx import _onnx_dtypes
from rlx._onnx_import import memory_budget
from rlx._onnx_registry import attrs, tensor_array

__all__ = ["OPS", "QuantFold", "rewrite"]

_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul")
_CONTRIB_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearAdd", "QLinearMul", "QLinearSoftmax", "QGemm")
#: (domain, op type) pairs handled here, not by the import walk.
OPS = frozenset({("ai.onnx", o) for o in _QUANT_OPS} | {("com.microsoft", o) for o in _CONTRIB_OPS})
_QINTS = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, *_onnx_dtypes.sub_byte_ints())}
_INF = math.inf
# Ops that only move elements: they commute with per-tensor (de)quantization.
_MOVES = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Expand", "Gather"}
# Ranges of float producers, for "does the pair's clamp at 0 change anything?".
_OP_RANGE = {"Relu": (0.0, _INF), "Softmax": (0.0, 1.0), "Sigmoid": (0.0, 1.0), "Exp": (0.0, _INF),
             "Abs": (0.0, _INF), "Sqrt": (0.0, _INF), "Erf": (-1.0, 1.0), "Tanh": (-1.0, 1.0)}


class QuantFold(NamedTuple):
    """One quantized construct the import rewrote (an entry of ``OnnxModel.quantized``)."""

    node: str  # the ONNX node (name, or #index)
    op: str  # its op type
    scheme: str  # "dynamic", "qdq" or "qoperator" (how the graph was quantized)
    kind: str  # "weight": dequantized into the float32 param ``param``; "activation": runs in float
    param: Optional[str]  # the param made (weights)
    source: str  # the quantized initializer (weights) or the float tensor quantized (activations)
    dtype: str  # the quantized element type
    per_channel: bool  # a scale per output channel (weights)
    clamp: Optional[Tuple[float, float]] = None  # a saturation kept (see the module doc)

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> "QuantFold":
        """A record read back from ``list(fold)`` through JSON (the import cache)."""
        f = cls(*row)
        if f.clamp is None:
            return f
        lo, hi = f.clamp
        return f._replace(clamp=(float(lo), float(hi)))


# Quantized tensors of the ONNX graph, as the rewrite tracks them (none is a float tensor).
class _Act(NamedTuple):  # static: QuantizeLinear / QLinearMatMul output; float value in ``name``
    name: str
    scale: np.ndarray
    zp: np.ndarray
    src: str


class _Dyn(NamedTuple):  # an output of DynamicQuantizeLinear(x): role "q", "scale" or "zp"
    role: str
    x: str
    src: str


class _Prod(NamedTuple):  # MatMulInteger(DQL(x), B) (stage "int"), after Cast (stage "float")
    stage: str
    x: str
    b: str
    bzp: Optional[str]
    at: Tuple[str, str]  # the MatMulInteger (name, op type), for the record
    src: str


class _Scales(NamedTuple):  # Mul(x_scale, B_scale)
    x: str
    s: str
    src: str


class _QGather(NamedTuple):  # Gather of a quantized initializer
    node: Any
    src: str


_Mark = Union[_Act, _Dyn, _Prod, _Scales, _QGather]


def is_quantized(graph: Any) -> bool:
    return any((n.domain or "ai.onnx", n.op_type) in OPS for n in graph.node)


def rewrite(proto: Any, inits: Dict[str, np.ndarray]) -> Tuple[Any, List[QuantFold]]:
    """``proto`` with its quantized patterns turned into float ops (a light copy: nodes and
    interface only, the importer reads initializers from ``inits``, which gains the dequantized
    weights), and what was folded. An unquantized model comes back unchanged."""
    if not is_quantized(proto.graph):
        return proto, []
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    r = _Rewriter(proto.graph, dict(inits), opsets.get("ai.onnx", 1))
    try:
        r.run()
    except rlx.UnsupportedOpError:
        if not exact(proto.graph):
            raise
        return proto, []  # imported as written (see the module doc)
    inits.update(r.inits)
    return r.model(proto), r.folds


def exact(graph: Any) -> bool:
    """Whether the import walk computes every quantized node of ``graph`` exactly
    (``rlx._onnx_ops_quantize``): then a graph outside the patterns is imported as written."""
    from rlx._onnx_registry import HANDLERS

    return all((n.domain or "ai.onnx") == "ai.onnx" and n.op_type in HANDLERS
               for n in graph.node if (n.domain or "ai.onnx", n.op_type) in OPS)


def _label(node: Any, i: int) -> str:
    return node.name or f"#{i}"


def _base(name: str) -> str:
    for suffix in ("_quantized", "_quant"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name + "_dequantized"


class _Rewriter:
    def __init__(self, graph: Any, inits: Dict[str, np.ndarray], opset: int) -> None:
        self.graph = graph
        self.opset = opset
        self.inits = inits
        self.nodes: List[Any] = []
        self.folds: List[QuantFold] = []
        self.marks: Dict[str, _Mark] = {}
        self.consts: Dict[str, np.ndarray] = {}  # Constant node outputs
        self.alias: Dict[str, str] = {}  # emitted Identity: output -> input
        self.ranges: Dict[str, Tuple[float, float]] = {}  # emitted clamps
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.used = set(inits) | {vi.name for vi in graph.input} | set(self.producer)
        self.used |= {i for n in graph.node for i in n.input}
        self._deq: Dict[Tuple[Any, ...], str] = {}
        self._bytes = 0
        ops = {n.op_type for n in graph.node}
        qoperator = any(o.startswith("QLinear") or o == "QGemm" for o in ops)
        self.scheme = "qoperator" if qoperator else "dynamic" if "DynamicQuantizeLinear" in ops else "qdq"
        self.node: Any = None  # the node being rewritten, and its label for records and errors
        self.label = ""

    def model(self, proto: Any) -> Any:
        import onnx

        m = onnx.ModelProto()
        m.ir_version = proto.ir_version
        m.opset_import.extend(proto.opset_import)
        m.graph.name = proto.graph.name
        m.graph.input.extend(proto.graph.input)
        m.graph.output.extend(proto.graph.output)
        m.graph.node.extend(self.nodes)
        return m

    # -- the walk ------------------------------------------------------------------------------

    def run(self) -> None:
        for i, node in enumerate(self.graph.node):
            self.node, self.label = node, _label(node, i)
            where = f"ONNX node {self.label!r} ({node.op_type})"
            try:
                self.visit(node)
            except rlx.RlxError as e:
                raise type(e)(f"{where}: {e}") from e
            except MemoryError as e:
                raise MemoryError(f"{where}: {e}") from e
            except (KeyError, IndexError, ValueError, TypeError, ArithmeticError) as e:
                raise rlx.ModelFormatError(f"{where}: cannot import: {type(e).__name__}: {e}") from e
        for vi in self.graph.output:
            if vi.name in self.marks:
                raise rlx.UnsupportedOpError(
                    f"ONNX output {vi.name!r} is a quantized tensor ({self.marks[vi.name].src}); rlx outputs float32, int64, int32 or bool"
                )

    def visit(self, node: Any) -> None:
        handler = _HANDLERS.get(node.op_type) if (node.domain or "ai.onnx", node.op_type) in OPS else None
        if handler is not None:
            return handler(self, node)
        if node.op_type == "Constant" and node.output:
            a = attrs(node)
            if "value" in a:
                self.consts[node.output[0]] = tensor_array(a["value"], "Constant value")
        if node.op_type == "Gather" and self.qinit(node.input[0]) and node.input[1] not in self.marks:
            self.marks[node.output[0]] = _QGather(node, f"Gather of the quantized initializer {node.input[0]!r}")
            return
        marked = [n for n in node.input if n in self.marks]
        if not marked:
            self.nodes.append(node)
            return
        follow = {"Cast": self.cast, "Mul": self.mul}.get(node.op_type, self.move)
        if not follow(node):
            self.unsupported(marked[0])

    def move(self, node: Any) -> bool:
        """Data movement on a static quantized activation (onnxruntime's QOperator format
        reshapes and transposes int8 tensors): the same op on its float value."""
        act = self.marks.get(node.input[0])
        if node.op_type not in _MOVES or not isinstance(act, _Act) or any(i in self.marks for i in node.input[1:]):
            return False
        import onnx

        moved = onnx.NodeProto()
        moved.CopyFrom(node)
        out = node.output[0]
        moved.input[0], moved.output[0] = act.name, self.fresh(f"{out}_float")
        self.nodes.append(moved)
        self.alias[moved.output[0]] = act.name  # the same values, for value_range
        self.marks[out] = act._replace(name=moved.output[0], src=f"{node.op_type} {self.label!r} of {act.src}")
        return True

    def unsupported(self, name: str) -> None:
        raise rlx.UnsupportedOpError(
            f"reads {name!r}, a quantized tensor ({self.marks[name].src}), outside the quantized patterns rlx "
            "imports (DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul, QuantizeLinear -> DequantizeLinear, "
            "QuantizeLinear -> QLinearMatMul / QGemm / QLinearAdd / QLinearMul / QLinearSoftmax -> DequantizeLinear, "
            "DequantizeLinear of initializers, Gather of a quantized table -> DequantizeLinear)"
        )

    # -- helpers -------------------------------------------------------------------------------

    def qinit(self, name: str) -> bool:
        """An initializer of a quantized integer type (int8, uint8, int16, uint16, the sub-byte ones)."""
        a = self.inits.get(name)
        return a is not None and a.dtype in _QINTS and a.dtype != np.int32

    def const(self, name: str, what: str) -> np.ndarray:
        """The value of an initializer or Constant operand (scales, zero points)."""
        if name in self.inits:
            return np.asarray(self.inits[name])
        if name in self.consts:
            return self.consts[name]
        raise rlx.UnsupportedOpError(f"{what} {name!r} must be an initializer or a Constant")

    def fresh(self, hint: str) -> str:
        name, k = hint, 0
        while name in self.used:
            k += 1
            name = f"{hint}_{k}"
        self.used.add(name)
        return name

    def emit(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **kw: Any) -> None:
        from onnx import helper

        node = helper.make_node(op_type, list(inputs), list(outputs), name=self.label, **kw)
        self.nodes.append(node)
        self.producer.update((o, node) for o in outputs)  # for value_range

    def scalar(self, value: float) -> str:
        name = self.fresh("rlx_quant_bound")
        self.inits[name] = np.array(value, np.float32)
        return name

    def fold_activation(self, source: str, dtype: Any, clamp: Optional[Tuple[float, float]] = None) -> None:
        self.folds.append(QuantFold(self.label, self.node.op_type, self.scheme, "activation", None, source,
                                    np.dtype(dtype).name, False, clamp))

    # -- dequantized weights -------------------------------------------------------------------

    def weight(self, q: str, s: str, zp: Optional[str], axis: Optional[int], at: Optional[Tuple[str, str]] = None) -> str:
        """The float32 initializer ``(q - zp) * s``, made once per operand set, by name. ``axis``
        is the per-channel axis, used when the scale has more than one element; ``at`` is the
        (node, op type) the fold is recorded under (default: the current node)."""
        qa = self.const(q, "quantized tensor")
        # An 8-bit float or FLOAT4E2M1 weight (FP8 checkpoints) is exact in float32.
        small = _onnx_dtypes.small_float(qa.dtype)
        if qa.dtype not in _QINTS and not small:
            raise rlx.DTypeError(f"quantized initializer {q!r} is {qa.dtype}, not an integer or 8-bit float type")
        scale = self.const(s, "scale").astype(np.float32)
        zero = self.const(zp, "zero point") if zp else np.zeros((), qa.dtype)
        per_channel = scale.size > 1
        key = (q, s, zp, axis if per_channel else None)
        if key in self._deq:
            return self._deq[key]
        if per_channel:
            scale, zero = self.channel(qa.shape, axis, scale, zero, q)
        elif zero.size != 1:
            raise rlx.ShapeError(f"zero point {zp!r} has {zero.size} elements, scale {s!r} has one")
        else:
            scale, zero = scale.reshape(()), zero.reshape(())
        self.reserve(qa.size * 4)
        wide = np.float32 if small else np.int64
        arr = ((qa.astype(wide) - zero.astype(wide)).astype(np.float32) * scale).astype(np.float32)
        name = self.fresh(_base(q))
        self.inits[name] = arr
        self._deq[key] = name
        node, op_type = at or (self.label, self.node.op_type)
        self.folds.append(QuantFold(node, op_type, self.scheme, "weight", name, q, qa.dtype.name, per_channel))
        return name

    def quantized(self, x: str, s: str, zp: Optional[str], out_dtype: np.dtype, axis: int) -> np.ndarray:
        """The initializer ``x`` quantized as QuantizeLinear does (round half to even, saturate)."""
        w = np.asarray(self.inits[x], np.float32)
        scale = self.const(s, "scale").astype(np.float32)
        zero = self.const(zp, "zero point") if zp else np.zeros((), out_dtype)
        if scale.size > 1:
            scale, zero = self.channel(w.shape, axis, scale, zero, x)
        else:
            scale, zero = scale.reshape(()), zero.reshape(())
        lo, hi = _onnx_dtypes.int_range(zero.dtype)
        self.reserve(w.size * zero.dtype.itemsize)
        q = np.rint(w / scale) + zero.astype(np.float32)
        return np.clip(q, lo, hi).astype(zero.dtype)

    def channel(self, shape: Tuple[int, ...], axis: Optional[int], scale: np.ndarray, zero: np.ndarray, q: str) -> Tuple[np.ndarray, np.ndarray]:
        """Per-channel scale and zero point, shaped to broadcast along ``axis`` of ``shape``."""
        r = len(shape)
        if axis is None or not -r <= axis < r:
            raise rlx.ShapeError(f"a per-channel scale for {q!r} of shape {list(shape)} needs an axis in range, got {axis}")
        axis %= r
        n = shape[axis]
        if scale.size != n or zero.size not in (1, n):
            raise rlx.ShapeError(
                f"scale ({scale.size} elements) and zero point ({zero.size}) of {q!r} do not match its axis {axis} of size {n}"
            )
        bshape = [1] * r
        bshape[axis] = n
        return scale.reshape(bshape), (zero.reshape(bshape) if zero.size == n else zero.reshape(()))

    def reserve(self, nbytes: int) -> None:
        budget = memory_budget()
        if self._bytes + nbytes > budget:
            raise MemoryError(
                f"dequantizing needs {self._bytes + nbytes} bytes at import, over the {budget}-byte budget "
                "(RLX_MEMORY_LIMIT or the machine's memory)"
            )
        self._bytes += nbytes

    # -- static activations --------------------------------------------------------------------

    def activation(self, x: str, s: str, zp: Optional[str], out_dtype: np.dtype, what: str, source: str = "") -> _Act:
        """The quantized activation ``quantize(x, s, zp)``, kept as the float ``x`` (or ``x``
        clamped, when the pair's range ends at 0: see the module doc)."""
        scale = self.const(s, f"{what} scale").astype(np.float32)
        zero = self.const(zp, f"{what} zero point") if zp else np.zeros((), out_dtype)
        if scale.size != 1 or zero.size != 1:
            raise rlx.UnsupportedOpError(f"per-axis quantization of the activation {x!r} (rlx takes one scale per tensor)")
        lo, hi = _onnx_dtypes.int_range(zero.dtype)
        st, z = float(scale.reshape(())), int(zero.reshape(()))
        name, clamp = x, None
        if z == lo and not self.nonnegative(x, st / 2):
            top = (hi - z) * st
            name, clamp = self.clamp(x, top), (0.0, top)
        self.fold_activation(source or x, zero.dtype, clamp)
        return _Act(name, scale.reshape(()), zero.reshape(()), f"{self.node.op_type} {self.label!r}")

    def clamp(self, x: str, hi: float) -> str:
        """``min(relu(x), hi)``: Relu first, so that it fuses into a linear's epilogue."""
        mid, out = self.fresh(f"{x}_relu"), self.fresh(f"{x}_clamped")
        self.emit("Relu", [x], [mid])
        self.emit("Min", [mid, self.scalar(hi)], [out])
        self.ranges[out] = (0.0, hi)
        return out

    def nonnegative(self, x: str, tol: float) -> bool:
        """Whether the float ``x`` provably stays above ``-tol`` (half a quantization step: a
        clamp at 0 would change it by less than the rounding the pair already implies)."""
        return self.value_range(x, 8)[0] >= -tol

    def value_range(self, name: str, depth: int) -> Tuple[float, float]:
        """Bounds of a float tensor from its producers: a few op types and constant shifts."""
        if name in self.ranges:
            return self.ranges[name]
        if name in self.alias:
            return self.value_range(self.alias[name], depth)
        known = self.inits.get(name, self.consts.get(name))
        if known is not None and np.asarray(known).dtype.kind == "f" and 0 < np.asarray(known).size <= 4096:
            return float(np.min(known)), float(np.max(known))
        node = self.producer.get(name)
        if node is None or depth == 0:
            return (-_INF, _INF)
        if node.op_type in _OP_RANGE:
            return _OP_RANGE[node.op_type]
        if node.op_type in ("Add", "Sub", "Mul") and len(node.input) == 2:
            (a0, a1), (b0, b1) = (self.value_range(i, depth - 1) for i in node.input)
            if node.op_type == "Add":
                return a0 + b0, a1 + b1
            if node.op_type == "Sub":
                return a0 - b1, a1 - b0
            if all(math.isfinite(v) for v in (a0, a1, b0, b1)):
                ps = [a0 * b0, a0 * b1, a1 * b0, a1 * b1]
                return min(ps), max(ps)
        return (-_INF, _INF)

    def same_params(self, act: _Act, s: str, zp: Optional[str], what: str) -> None:
        scale = self.const(s, f"{what} scale").astype(np.float32).reshape(-1)
        zero = self.const(zp, f"{what} zero point").reshape(-1) if zp else np.zeros(1, act.zp.dtype)
        if scale.size != 1 or zero.size != 1 or scale[0] != act.scale or int(zero[0]) != int(act.zp):
            raise rlx.UnsupportedOpError(
                f"{what} reads the quantized activation of {act.src} with another scale or zero point (a requantization)"
            )

    def operand(self, q: str, s: str, zp: Optional[str], what: str, axis: Optional[int]) -> str:
        """A QLinear op's quantized operand as a float value: a quantized activation's float
        value, or an initializer dequantized (per channel along ``axis``)."""
        m = self.marks.get(q)
        what = f"{self.node.op_type} {what}"
        if isinstance(m, _Act):
            self.same_params(m, s, zp, what)
            return m.name
        if isinstance(m, _QGather):
            return self.gathered(m, s, zp, self.fresh(f"{q}_float"))
        if m is not None:
            self.unsupported(q)
        if q in self.inits or q in self.consts:
            return self.weight(q, s, zp, axis)
        raise rlx.UnsupportedOpError(f"{what} {q!r} is neither an initializer nor a quantized activation")

    def gathered(self, m: _QGather, s: str, zp: Optional[str], out: str) -> str:
        """Rows of a quantized table read with ``(s, zp)``: a Gather of the dequantized table."""
        g = m.node
        if self.const(s, "scale").size != 1:
            raise rlx.UnsupportedOpError(f"a per-axis scale on the rows of the quantized table {g.input[0]!r}")
        w = self.weight(g.input[0], s, zp, None)
        self.emit("Gather", [w, g.input[1]], [out], **attrs(g))
        return out

    # -- the dynamic pattern's middle --------------------------------------------------------

    def cast(self, node: Any) -> bool:
        from onnx import TensorProto

        p = self.marks[node.input[0]]
        if not isinstance(p, _Prod) or p.stage != "int" or attrs(node).get("to") != TensorProto.FLOAT:
            return False
        self.marks[node.output[0]] = p._replace(stage="float", src=f"Cast {self.label!r} of {p.src}")
        return True

    def mul(self, node: Any) -> bool:
        a, b = node.input
        ma, mb = self.marks.get(a), self.marks.get(b)
        for m, other, mo in ((ma, b, mb), (mb, a, ma)):
            if isinstance(m, _Dyn) and m.role == "scale" and mo is None:
                self.marks[node.output[0]] = _Scales(m.x, other, f"Mul {self.label!r} of {m.src}'s scale")
                return True
            if isinstance(m, _Prod) and m.stage == "float" and isinstance(mo, _Scales):
                if mo.x != m.x:
                    raise rlx.UnsupportedOpError(f"scales {other!r} are not those of the activation MatMulInteger read")
                self.dynamic_matmul(m, mo, node.output[0])
                return True
        return False

    def dynamic_matmul(self, p: _Prod, sc: _Scales, out: str) -> None:
        self.emit("MatMul", [p.x, self.weight(p.b, sc.s, p.bzp, -1, at=p.at)], [out])


# -- quantized op handlers ---------------------------------------------------------------------

def _opt(node: Any, i: int) -> Optional[str]:
    return node.input[i] if len(node.input) > i and node.input[i] else None


def _no_blocks(node: Any) -> Dict[str, Any]:
    a = attrs(node)
    if a.get("block_size", 0):
        raise rlx.UnsupportedOpError("blocked quantization (block_size) is not supported")
    return a


def _quantize_linear(r: _Rewriter, node: Any) -> None:
    a = _no_blocks(node)
    x, s, zp = node.input[0], node.input[1], _opt(node, 2)
    if x in r.marks:
        r.unsupported(x)
    out_dtype = np.dtype(np.uint8)
    if a.get("output_dtype"):
        from rlx._onnx_import import np_dtype

        out_dtype = np_dtype(a["output_dtype"], "QuantizeLinear output_dtype", allow_any=True)
    if x in r.inits and r.inits[x].dtype.kind == "f":
        # A float weight quantized in the graph (quantization-aware training exports):
        # quantized here, dequantized by the DequantizeLinear that reads it.
        r.inits[node.output[0]] = r.quantized(x, s, zp, out_dtype, int(a.get("axis", 1)))
        return
    r.marks[node.output[0]] = r.activation(x, s, zp, out_dtype, "QuantizeLinear")


def _dequantize_linear(r: _Rewriter, node: Any) -> None:
    a = _no_blocks(node)
    q, s, zp, out = node.input[0], node.input[1], _opt(node, 2), node.output[0]
    m = r.marks.get(q)
    if isinstance(m, _Act):
        r.same_params(m, s, zp, "DequantizeLinear")
        r.emit("Identity", [m.name], [out])
        r.alias[out] = m.name
    elif isinstance(m, _QGather):
        r.gathered(m, s, zp, out)
    elif m is not None:
        r.unsupported(q)
    elif q in r.inits or q in r.consts:
        w = r.weight(q, s, zp, int(a.get("axis", 1)))
        r.emit("Identity", [w], [out])
        r.alias[out] = w
    else:
        raise rlx.UnsupportedOpError(
            f"dequantizes {q!r}, which is neither a constant nor the output of a QuantizeLinear or QLinear op"
        )


def _dynamic_quantize_linear(r: _Rewriter, node: Any) -> None:
    x = node.input[0]
    if x in r.marks:
        r.unsupported(x)
    src = f"DynamicQuantizeLinear {r.label!r}"
    for role, name in zip(("q", "scale", "zp"), node.output):
        if name:
            r.marks[name] = _Dyn(role, x, src)
    r.fold_activation(x, np.uint8)


def _matmul_integer(r: _Rewriter, node: Any) -> None:
    a, b, azp, bzp = node.input[0], node.input[1], _opt(node, 2), _opt(node, 3)
    ma = r.marks.get(a)
    if not (isinstance(ma, _Dyn) and ma.role == "q"):
        raise rlx.UnsupportedOpError(f"input A {a!r} is not the output of a DynamicQuantizeLinear")
    mz = r.marks.get(azp) if azp else None
    if not (isinstance(mz, _Dyn) and mz.role == "zp" and mz.x == ma.x):
        raise rlx.UnsupportedOpError(f"a_zero_point {azp!r} is not the zero point of {ma.src}")
    if not r.qinit(b) or r.inits[b].ndim != 2:
        raise rlx.UnsupportedOpError(f"input B {b!r} is not a rank-2 int8/uint8 initializer (a weight)")
    if bzp and bzp in r.marks:
        r.unsupported(bzp)
    r.marks[node.output[0]] = _Prod("int", ma.x, b, bzp, (r.label, node.op_type), f"MatMulInteger {r.label!r}")


def _qlinear_out(r: _Rewriter, node: Any, op_type: str, floats: List[str], s: int, **kw: Any) -> None:
    """Emits the float op, and marks the node's quantized output (scale and zero point at
    inputs ``s`` and ``s + 1``) as that float value; without a scale (QGemm) it is float."""
    out = node.output[0]
    if not _opt(node, s):
        r.emit(op_type, floats, [out], **kw)
        return
    y = r.fresh(f"{out}_float")
    r.emit(op_type, floats, [y], **kw)
    zp = _opt(node, s + 1)
    zp_dtype = r.const(zp, "output zero point").dtype if zp else np.dtype(np.uint8)
    r.marks[out] = r.activation(y, node.input[s], zp, zp_dtype, f"{node.op_type} output", source=out)


def _qlinear_matmul(r: _Rewriter, node: Any) -> None:
    ins = node.input
    a = r.operand(ins[0], ins[1], _opt(node, 2), "a", -2)
    b = r.operand(ins[3], ins[4], _opt(node, 5), "b", -1)
    _qlinear_out(r, node, "MatMul", [a, b], 6)


def _qlinear_binary(r: _Rewriter, node: Any) -> None:
    ins = node.input
    a = r.operand(ins[0], ins[1], _opt(node, 2), "A", None)
    b = r.operand(ins[3], ins[4], _opt(node, 5), "B", None)
    _qlinear_out(r, node, node.op_type[len("QLinear"):], [a, b], 6)


def _qgemm(r: _Rewriter, node: Any) -> None:
    ins, a = node.input, attrs(node)
    kw = {k: a[k] for k in ("alpha", "transA", "transB") if k in a}
    x = r.operand(ins[0], ins[1], _opt(node, 2), "A", None)
    w = r.operand(ins[3], ins[4], _opt(node, 5), "B", 0 if a.get("transB", 0) else 1)
    floats = [x, w]
    if _opt(node, 6):
        # The int32 bias is quantized with scale A_scale * B_scale and zero point 0.
        bias = r.const(ins[6], "C")
        scale = r.const(ins[1], "A scale").astype(np.float32).reshape(()) * r.const(ins[4], "B scale").astype(np.float32)
        name = r.fresh(_base(ins[6]))
        r.reserve(bias.size * 4)
        r.inits[name] = (bias.astype(np.float32) * scale.reshape(-1)).astype(np.float32).reshape(bias.shape)
        r.folds.append(QuantFold(r.label, node.op_type, r.scheme, "weight", name, ins[6], bias.dtype.name, scale.size > 1))
        floats.append(name)
    _qlinear_out(r, node, "Gemm", floats, 7, **kw)


def _qlinear_softmax(r: _Rewriter, node: Any) -> None:
    a = attrs(node)
    axis, opset = int(a.get("axis", -1)), int(a.get("opset", r.opset))
    if axis != -1 and (opset >= 13) != (r.opset >= 13):
        raise rlx.UnsupportedOpError(f"QLinearSoftmax of opset {opset} semantics on axis {axis} in an opset {r.opset} model")
    x = r.operand(node.input[0], node.input[1], _opt(node, 2), "X", None)
    _qlinear_out(r, node, "Softmax", [x], 3, axis=axis)


_HANDLERS = {
    "QuantizeLinear": _quantize_linear,
    "DequantizeLinear": _dequantize_linear,
    "DynamicQuantizeLinear": _dynamic_quantize_linear,
    "MatMulInteger": _matmul_integer,
    "QLinearMatMul": _qlinear_matmul,
    "QLinearAdd": _qlinear_binary,
    "QLinearMul": _qlinear_binary,
    "QLinearSoftmax": _qlinear_softmax,
    "QGemm": _qgemm,
}
