"""Import ONNX models into rlx.

``rlx.onnx.load(path_or_model, dims=None)`` returns an :class:`OnnxModel`: the ``rlx.Graph``
plus the initializer arrays that became params, and ``bind(pipe)`` / ``pipeline()`` helpers.

- ``dim_param``s become rlx symbols with bounds (1, 4096), (1, 512) for sequence-like names
  (``seq``, ``sequence_length``, ...) or (0, 4096) for a decoder's past length (``past``,
  ``past_sequence_length``, ``cache``...: empty on the first call); ``dims={"batch": (1, 64)}``
  overrides them. A dim with
  neither a value nor a name gets a symbol named ``<input>_<axis>``.
- Initializers become params, never constants: the numpy arrays from
  ``onnx.numpy_helper.to_array`` (or a read-only ``numpy.memmap`` of an external-data file)
  are bound without a copy; float16 / float64 initializers are converted to float32 once (a
  copy, listed in ``OnnxModel.notes``). Small integer initializers that only feed shape computations
  (Reshape targets, Unsqueeze axes, Slice bounds, ...) are read at import and never become
  params.
- Shape subgraphs as exporters emit them (Shape -> Gather -> Unsqueeze -> Concat -> Reshape,
  Shape -> Slice, arithmetic on shape values, ConstantOfShape, Expand) are folded at import
  over symbolic dims, so ``Reshape`` gets an rlx shape such as ``("batch*seq", 384)``.
- Types rlx has no kernels for are computed in another type (``rlx._onnx_dtypes``): FLOAT16,
  BFLOAT16, DOUBLE, the 8-bit floats and FLOAT4E2M1 in float32, INT8 / UINT8 / INT16 / UINT16 /
  UINT32 and INT4 / UINT4 / INT2 / UINT2 in int64, wrapped back
  into range after arithmetic so integer results are exact, and UINT64 as int64 bit patterns
  (data movement, comparisons, integer casts and wrapping add / sub / mul; ops that read the
  value otherwise are a ``rlx.DTypeError`` naming the node). :meth:`OnnxModel.run` converts such
  inputs on the way in and outputs back to their declared type; initializers and constants are
  converted at import. Each conversion is listed in ``OnnxModel.conversions`` (and counted in
  the repr), and ``load`` warns once with :class:`DTypeConversionWarning`. STRING, the complex
  types and FLOAT8E8M0 stay a ``rlx.DTypeError`` naming the value.
- Ops outside the supported set raise one ``rlx.UnsupportedOpError`` listing every offending
  node (op type, domain, opset, node name). ``SUPPORTED_OPS`` lists the set: an op of the
  default domain by its op type, one of another domain as ``<domain>.<op type>``
  (``ai.onnx.ml.Binarizer``, ``ai.onnx.preview.training.Adam``).
- External-data locations that escape the model's directory (absolute paths, ``..``,
  symlinks) raise ``rlx.ModelFormatError``.
- The graph is checked before the walk (``rlx._onnx_ops_check``): node arity, empty required
  inputs, required attributes and single assignment of every value name.
- A graph input that shares its name with an initializer keeps the initializer's value (see
  ``rlx._onnx_import``); feeding it to :meth:`OnnxModel.run` is a ``BindingError``, as is any
  name that is not an input. ``constants={name: array}`` gives such an input another value.
- Quantized graphs (``onnxruntime.quantization``: ``quantize_dynamic``, ``quantize_static`` in
  QDQ or QOperator format) are rewritten before the walk into float matmuls against weights
  dequantized once at import (``rlx._onnx_quant``); ``OnnxModel.quantized`` lists what was
  folded and ``pipeline()`` then defaults to ``precision="int8"``. A quantized construct
  outside the supported patterns raises ``rlx.UnsupportedOpError`` naming the node.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

import rlx
from rlx import _onnx_dtypes, _onnx_ops, _onnx_ops_check, _onnx_quant
from rlx._onnx_dtypes import DTypeConversionWarning
from rlx._onnx_ops import Importer
from rlx._onnx_quant import QuantFold

__all__ = ["OnnxModel", "load", "SUPPORTED_OPS", "DEFAULT_BOUNDS", "SEQ_BOUNDS", "QuantFold", "DTypeConversionWarning"]

DEFAULT_BOUNDS = (1, 4096)
SEQ_BOUNDS = (1, 512)


class OnnxModel:
    """An imported model: ``graph`` (an ``rlx.Graph``), ``params`` (name -> numpy array, bound
    zero-copy by :meth:`bind`), ``symbols`` (name -> bounds), ``inputs`` / ``outputs`` (ONNX
    names, in the model's order), ``import_seconds`` and ``quantized`` (the :class:`QuantFold`
    records of a quantized graph's rewrite, empty for a float model)."""

    def __init__(
        self,
        graph: "rlx.Graph",
        params: Dict[str, np.ndarray],
        inputs: List[str],
        outputs: List[str],
        import_seconds: float,
        notes: List[str],
        shadowed: Sequence[str] = (),
        frozen: Sequence[str] = (),
        quantized: Sequence[QuantFold] = (),
        conversions: Sequence[str] = (),
        input_dtypes: Optional[Mapping[str, Any]] = None,
        output_dtypes: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.graph = graph
        self.params = params
        self.inputs = inputs
        self.outputs = outputs
        self.import_seconds = import_seconds
        self.notes = notes
        #: Graph inputs that are initializers (their values are compiled in, not fed).
        self.shadowed = list(shadowed)
        #: Graph inputs frozen at import by ``constants``.
        self.frozen = list(frozen)
        #: True when read back from an ``aot_dir`` instead of imported.
        self.from_cache = False
        #: What the quantized-graph rewrite folded (weights dequantized into params, activations
        #: run in float); an integer fold makes ``precision="int8"`` the pipeline default.
        self.quantized = list(quantized)
        #: Each input, output, initializer or constant rlx converts to or from the type it computes
        #: in (float16 / bfloat16 / float64 / 8-bit floats in float32, int8 ... uint32 and int4 ...
        #: uint2 in int64), as text.
        self.conversions = list(conversions)
        #: Converted inputs and outputs: name -> the declared numpy dtype :meth:`run` takes / returns.
        self.input_dtypes = {k: np.dtype(v) for k, v in (input_dtypes or {}).items()}
        self.output_dtypes = {k: np.dtype(v) for k, v in (output_dtypes or {}).items()}

    @property
    def symbols(self) -> Dict[str, Tuple[int, int]]:
        return dict(self.graph.dims)

    def bind(self, pipe: "rlx.ModelCompilePipeline", copy: bool = False) -> None:
        """Binds every param on ``pipe`` (borrowed, not copied, unless ``copy``)."""
        pipe.bind_params(self.params, copy=copy)

    def pipeline(self, **kwargs: Any) -> "rlx.ModelCompilePipeline":
        """A ``ModelCompilePipeline`` over the graph with the params bound. An integer-quantized
        model (a fold in ``quantized`` of an integer type) defaults to ``precision="int8"``,
        unless ``prepack=False`` (int8 packs the weights: f32 then); one whose weights were
        8-bit floats keeps float32, which holds them exactly; ``precision=...`` overrides."""
        int_quantized = any(not q.dtype.startswith("float") for q in self.quantized)
        if int_quantized and kwargs.get("prepack", True):
            kwargs.setdefault("precision", "int8")
        pipe = rlx.ModelCompilePipeline(self.graph, **kwargs)
        self.bind(pipe)
        return pipe

    def check_feed(self, inputs: Mapping[str, np.ndarray], complete: bool = False) -> None:
        """A ``BindingError`` listing the names of ``inputs`` that are not run-time inputs of
        the model (and, if ``complete``, the inputs it lacks)."""
        if not isinstance(inputs, Mapping):
            raise rlx.BindingError(f"inputs must be a dict of name -> array, got {type(inputs).__name__}")
        known = set(self.inputs)
        bad = [k for k in inputs if k not in known]
        problems = []
        shadowed = [k for k in bad if k in self.shadowed]
        frozen = [k for k in bad if k in self.frozen]
        unknown = [k for k in bad if k not in shadowed and k not in frozen]
        if unknown:
            problems.append(f"unknown input(s) {unknown} (the model's inputs are {self.inputs})" + _hints(unknown, self.inputs))
        if shadowed:
            problems.append(f"input(s) {shadowed} are initializers, compiled into the graph: pass "
                            "constants={name: array} to rlx.onnx.load for another value")
        if frozen:
            problems.append(f"input(s) {frozen} were frozen at import by constants=")
        if complete:
            missing = [n for n in self.inputs if n not in inputs]
            if missing:
                problems.append(f"missing input(s) {missing}")
        if problems:
            raise rlx.BindingError("; ".join(problems))

    def binding(self, inputs: Mapping[str, np.ndarray]) -> Dict[str, int]:
        """The symbol values implied by the shapes of ``inputs`` (for ``get_or_compile``)."""
        from rlx._onnx_sym import Poly, parse_dim

        self.check_feed(inputs)
        out: Dict[str, int] = {}
        shapes = {}
        pending = []
        for name, arr in inputs.items():
            shapes[name] = np.shape(arr)
        for name, value_shape in self._input_shapes().items():
            got = shapes.get(name)
            if got is None or len(got) != len(value_shape):
                continue
            for d, n in zip(value_shape, got):
                p = parse_dim(d)
                if isinstance(p, Poly):
                    pending.append((p, n))
        # Single symbols first, then expressions whose other symbols are now known.
        for _ in range(2):
            for p, n in pending:
                syms = p.symbols()
                unknown = [s for s in syms if s not in out]
                if len(unknown) == 1 and len(p.terms) == 1:
                    (m, c), = p.terms.items()
                    rest = c
                    for s in m:
                        if s != unknown[0]:
                            rest *= out[s]
                    if rest and n % rest == 0 and m.count(unknown[0]) == 1:
                        out[unknown[0]] = n // rest
        return out

    def _input_shapes(self) -> Dict[str, Tuple[Union[int, str], ...]]:
        return dict(self._shapes)

    def run(self, inputs: Mapping[str, np.ndarray], pipe: Optional["rlx.ModelCompilePipeline"] = None) -> Dict[str, np.ndarray]:
        """Compiles (cached by the pipeline) the variant the input shapes imply and runs it.
        Inputs listed in ``input_dtypes`` must have their declared dtype and are converted to the
        type rlx computes in; outputs in ``output_dtypes`` are converted back. (``pipeline()`` and
        :meth:`bucketed` take and return the computed types.)"""
        if pipe is None:
            pipe = getattr(self, "_pipe", None) or self.pipeline()
            self._pipe = pipe
        self.check_feed(inputs, complete=True)
        exe = pipe.get_or_compile(self.binding(inputs))
        feed = dict(inputs)
        for name, declared in self.input_dtypes.items():
            arr = np.asarray(feed[name])
            if arr.dtype != declared:
                computed = _onnx_dtypes.computed(declared)
                raise rlx.DTypeError(
                    f"input {name!r}: expected {declared} (the model's {_onnx_dtypes.type_name(declared)}, "
                    f"converted to {computed} by run), got {arr.dtype}")
            feed[name] = _onnx_dtypes.to_computed(f"input {name!r}", arr, declared)
        outs = exe.run(feed)
        for name, declared in self.output_dtypes.items():
            if name in outs:
                outs[name] = _onnx_dtypes.to_declared(outs[name], declared)
        return outs

    def bucketed(
        self,
        buckets: Optional[Mapping[str, Any]] = None,
        /,
        *,
        pipe: Optional["rlx.ModelCompilePipeline"] = None,
        pad_values: Optional[Mapping[str, Any]] = None,
        overflow: str = "exact",
        **symbol_buckets: Any,
    ) -> "rlx.Bucketed":
        """``rlx.bucketed`` over ``pipe`` (default: the pipeline :meth:`run` uses), e.g.
        ``model.bucketed(seq="pow2").run(feeds)``; see ``rlx.bucketing``. The same as
        ``model.pipeline().bucketed(...)`` on a pipeline of your own."""
        if pipe is None:
            pipe = getattr(self, "_pipe", None) or self.pipeline()
            self._pipe = pipe
        return rlx.bucketed(pipe, buckets, pad_values=pad_values, overflow=overflow, _stacklevel=4, **symbol_buckets)

    def __repr__(self) -> str:
        nbytes = sum(a.nbytes for a in self.params.values())
        weights = sum(f.kind == "weight" for f in self.quantized)
        quant = f", {weights} quantized weight(s) dequantized" if self.quantized else ""
        conv = f", {len(self.conversions)} dtype conversion(s)" if self.conversions else ""
        return (
            f"OnnxModel({self.graph.name!r}: {len(self.graph)} nodes, {len(self.params)} params "
            f"({nbytes / 2**20:.1f} MiB){quant}{conv}, symbols {self.symbols}, inputs {self.inputs}, outputs {self.outputs})"
        )


def _hints(names: Sequence[Any], choices: Sequence[str]) -> str:
    """"; 'xx' -> did you mean 'x'?" for the names with a close match, else ""."""
    hints = [f"{k!r} -> did you mean {m[0]!r}?" for k in names if isinstance(k, str)
             for m in [difflib.get_close_matches(k, list(choices), 1)] if m]
    return f"; {', '.join(hints)}" if hints else ""


def _default_bounds(sym: str) -> Tuple[int, int]:
    s = sym.lower()
    if "past" in s or "cache" in s:
        # A decoder's past length is 0 on its first call (empty past_key_values).
        return (0, DEFAULT_BOUNDS[1])
    if "seq" in s or "len" in s or "token" in s or s in ("s", "t", "time"):
        return SEQ_BOUNDS
    return DEFAULT_BOUNDS


def _read_model(model: Any) -> Tuple[Any, Optional[str]]:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model, None
    if not isinstance(model, (str, bytes, os.PathLike)):
        raise rlx.ModelFormatError(f"ONNX model must be a path or an onnx.ModelProto, got {type(model).__name__}")
    path = os.fsdecode(model)
    if not os.path.isfile(path):
        raise rlx.ModelFormatError(f"ONNX model {path!r}: no such file")
    if os.path.getsize(path) == 0:
        raise rlx.ModelFormatError(f"ONNX model {path!r}: the file is empty")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf decode errors have no common base class
        raise rlx.ModelFormatError(f"ONNX model {path!r}: cannot parse: {e}") from e
    # Protobuf parses many non-ONNX byte strings into an empty message: no graph, no outputs.
    if not proto.graph.output:
        raise rlx.ModelFormatError(f"ONNX model {path!r}: no graph outputs (not an ONNX model, or an empty graph)")
    return proto, os.path.dirname(os.path.abspath(path))


def _check_text(proto: Any) -> None:
    """A ``ModelFormatError`` for a name that is not valid UTF-8: protobuf hands such a string
    field back as ``bytes`` (ONNX is proto2), which rlx.Graph would reject with a raw TypeError."""

    def check(what: str, s: Any) -> None:
        if not isinstance(s, str):
            raise rlx.ModelFormatError(f"ONNX model: {what} {s!r} is not valid UTF-8")

    g = proto.graph
    for o in proto.opset_import:
        check("opset domain", o.domain)
    check("graph name", g.name)
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        check("value name", vi.name)
        if vi.type.HasField("tensor_type"):
            for d in vi.type.tensor_type.shape.dim:
                check(f"dim of {vi.name!r}", d.dim_param)
    for t in g.initializer:
        check("initializer name", t.name)
        for e in t.external_data:
            check(f"external data key of {t.name!r}", e.key)
            check(f"external data value of {t.name!r}", e.value)
    for n in g.node:
        for what, s in [("node name", n.name), ("op type", n.op_type), ("domain", n.domain)]:
            check(what, s)
        for s in list(n.input) + list(n.output):
            check(f"value name in node {n.name!r}", s)
        for at in n.attribute:
            check(f"attribute name in node {n.name!r}", at.name)


def external_array(tensor: Any, base_dir: Optional[str]) -> np.ndarray:
    """A read-only memory map of an external-data initializer, after checking that its
    location stays inside ``base_dir`` and its byte span fits the file and the shape."""
    info = {e.key: e.value for e in tensor.external_data}
    name = tensor.name
    loc = info.get("location", "")
    if base_dir is None:
        raise rlx.ModelFormatError(
            f"initializer {name!r}: external data {loc!r} needs the model's path (load the file, not a ModelProto)"
        )
    parts = loc.replace("\\", "/").split("/")
    if not loc or os.path.isabs(loc) or loc.startswith(("/", "\\")) or ".." in parts or ":" in loc:
        raise rlx.ModelFormatError(
            f"initializer {name!r}: external data location {loc!r} escapes the model directory"
        )
    path = os.path.join(base_dir, *parts)
    real_base = os.path.realpath(base_dir)
    probe = base_dir
    for p in parts:
        probe = os.path.join(probe, p)
        if os.path.islink(probe):
            raise rlx.ModelFormatError(
                f"initializer {name!r}: external data location {loc!r} goes through a symlink"
            )
    if os.path.commonpath([os.path.realpath(path), real_base]) != real_base:
        raise rlx.ModelFormatError(
            f"initializer {name!r}: external data location {loc!r} escapes the model directory"
        )
    if not os.path.isfile(path):
        raise rlx.ModelFormatError(f"initializer {name!r}: external data file {loc!r} not found")
    # Types rlx computes wider (float16, int8, ...) are mapped as stored, then converted by the importer.
    dtype = _onnx_ops.np_dtype(tensor.data_type, f"initializer {name!r}",
                               allow_any=_onnx_dtypes.declared_np(tensor.data_type) is not None)
    shape = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in shape) or _span(shape, dtype.itemsize) >= 2**63:
        raise rlx.ModelFormatError(f"initializer {name!r}: external data shape {list(shape)} is negative or too large")
    want = dtype.itemsize
    for d in shape:
        want *= d
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else want
    except ValueError as e:
        raise rlx.ModelFormatError(f"initializer {name!r}: bad external data offset/length: {e}") from e
    size = os.path.getsize(path)
    if offset < 0 or length < 0 or offset + length > size:
        raise rlx.ModelFormatError(
            f"initializer {name!r}: external data [{offset}, {offset + length}) is outside {loc!r} ({size} bytes)"
        )
    if length != want:
        raise rlx.ModelFormatError(
            f"initializer {name!r}: external data length {length} != {want} bytes for {dtype} {list(shape)}"
        )
    if want == 0:
        return np.zeros(shape, dtype)
    arr = np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", offset=offset, shape=shape)
    if arr.ctypes.data % dtype.itemsize:
        # An unaligned span cannot be borrowed as a typed slice: copy it (said in the notes).
        return np.array(arr)
    return arr


def _span(shape: Sequence[int], itemsize: int) -> int:
    """Bytes numpy reserves address space for: zero dims do not make a huge shape small."""
    n = itemsize
    for d in shape:
        n *= max(d, 1)
    return n


def _initializers(proto: Any, base_dir: Optional[str]) -> Dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    out: Dict[str, np.ndarray] = {}
    for t in proto.graph.initializer:
        if t.name in out:
            raise rlx.ModelFormatError(f"initializer {t.name!r} is defined twice")
        if t.data_location == onnx.TensorProto.EXTERNAL:
            out[t.name] = external_array(t, base_dir)
            continue
        _onnx_ops.np_dtype(t.data_type, f"initializer {t.name!r}", allow_any=True)
        try:
            out[t.name] = numpy_helper.to_array(t)
        except Exception as e:
            raise rlx.ModelFormatError(f"initializer {t.name!r}: cannot decode: {e}") from e
    for t in proto.graph.sparse_initializer:
        raise rlx.UnsupportedOpError(f"sparse initializer {t.values.name!r} is not supported")
    return out


def _check_dims(dims: Any) -> Dict[str, Tuple[int, int]]:
    """``dims`` as name -> (lo, hi) ints with 0 <= lo <= hi; else a BindingError naming the symbol."""
    if dims is None:
        return {}
    if not isinstance(dims, Mapping):
        raise rlx.BindingError(f"dims must be a dict of symbol -> (min, max), got {type(dims).__name__}")
    out = {}
    for k, v in dims.items():
        ok = isinstance(k, str) and isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) for x in v
        )
        if not ok or not 0 <= int(v[0]) <= int(v[1]) < 2**62:
            raise rlx.BindingError(f"dims[{k!r}] = {v!r}: bounds must be two ints with 0 <= min <= max < 2**62")
        out[k] = (int(v[0]), int(v[1]))
    return out


def load(
    model: Any,
    dims: Optional[Mapping[str, Tuple[int, int]]] = None,
    *,
    constants: Optional[Mapping[str, np.ndarray]] = None,
    name: Optional[str] = None,
    aot_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
) -> OnnxModel:
    """Imports an ONNX model (a path or a ``ModelProto``) as an :class:`OnnxModel`.

    ``dims`` overrides symbol bounds. ``constants`` freezes graph inputs to known values
    (they are folded like initializers that feed shapes; the ONNX backend tests use it for
    ``Reshape``'s ``shape`` input and the like). ``aot_dir`` saves the import there (graph and
    params) and reads it back in later processes instead of parsing the file again (a path
    model without ``constants``; see ``rlx._onnx_cache``); pass the same directory as
    ``pipeline(aot_dir=...)`` to persist compiled variants too.
    """
    import time

    t0 = time.perf_counter()
    bounds = _check_dims(dims)
    if constants is not None and not isinstance(constants, Mapping):
        raise rlx.BindingError(f"constants must be a dict of input name -> array, got {type(constants).__name__}")
    cache_key = None
    if aot_dir is not None and constants is None and isinstance(model, (str, bytes, os.PathLike)) \
            and os.path.isfile(os.fsdecode(model)):
        from rlx import _onnx_cache

        cache_key = _onnx_cache.key_text(os.fsdecode(model), bounds, name)
        cached = _onnx_cache.load(os.fsdecode(aot_dir), cache_key)
        if cached is not None:
            _onnx_dtypes.warn(cached.graph.name, cached.conversions)
            return cached
    proto, base_dir = _read_model(model)
    _check_text(proto)
    _onnx_ops.check_supported(proto, rewritten=_onnx_quant.OPS)
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    _onnx_ops_check.check_graph(proto.graph, opsets.get("ai.onnx", 1), opsets)
    inits = _initializers(proto, base_dir)
    proto, quantized = _onnx_quant.rewrite(proto, inits)
    imp = Importer(proto, inits, bounds, dict(constants or {}), _default_bounds, name)
    imp.run()
    unused = [k for k in bounds if k not in imp.dim_names]
    if unused:
        syms = list(imp.g.dims)
        raise rlx.BindingError(f"dims names unknown symbol(s) {unused} (the model's symbols are {syms})" + _hints(unused, syms))
    m = OnnxModel(imp.g, imp.params, imp.input_names, imp.output_names, time.perf_counter() - t0, imp.notes,
                  shadowed=imp.shadowed, frozen=imp.frozen, quantized=quantized, conversions=imp.conversions,
                  input_dtypes=imp.input_dtypes, output_dtypes=imp.output_dtypes)
    m._shapes = imp.input_shapes
    _onnx_dtypes.warn(imp.g.name, imp.conversions)
    if cache_key is not None and aot_dir is not None:
        from rlx import _onnx_cache

        _onnx_cache.store(os.fsdecode(aot_dir), cache_key, m)
    return m


def __getattr__(name: str) -> Any:
    if name == "SUPPORTED_OPS":  # every registered op, whatever order the modules were imported in
        return _onnx_ops.SUPPORTED_OPS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ += ["external_array"]
