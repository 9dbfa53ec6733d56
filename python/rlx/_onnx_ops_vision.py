"""ONNX vision ops: Conv, ConvTranspose (as a Conv), pooling, BatchNormalization (folded into a
Conv when it can be), InstanceNormalization, LRN and Pad (the activations CNNs use are in
``rlx._onnx_ops_activation``).

Channels and spatial sizes must be static (the batch may be symbolic): ``auto_pad`` and the
window checks are resolved at import (``rlx._onnx_helpers.window_args``, shared with LpPool
and ConvInteger). A Conv weight needs a static shape (an initializer, or a run-time input); a
ConvTranspose weight must be known at import (it is flipped and transposed into the equivalent
Conv's).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import rlx
from rlx import _onnx_dtypes
from rlx._onnx_helpers import int_list, node_axes, norm_axis, pool_kernel, spatial_sizes, window_args
from rlx._onnx_import import Importer, Known, graph_reads, subgraphs, weight_like
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import dim_text

# -- Conv, with BatchNormalization folded in ---------------------------------------------------


def _consumers(imp: Importer) -> Dict[str, List[Any]]:
    """Value name -> the nodes that read it (a graph output counts as a reader: None)."""
    found = getattr(imp, "_vision_consumers", None)
    if found is None:
        found = {}
        for n in imp.graph.node:
            for i in n.input:
                if i:
                    found.setdefault(i, []).append(n)
        for o in imp.graph.output:
            found.setdefault(o.name, []).append(None)
        for n in imp.graph.node:
            for sub in subgraphs(n):
                for name in graph_reads(sub) | {o.name for o in sub.output}:
                    found.setdefault(name, []).append(None)  # read inside a subgraph
        imp._vision_consumers = found
    return found


def _folded(imp: Importer) -> set:
    """Names of Conv outputs whose BatchNormalization was folded into the Conv."""
    if not hasattr(imp, "_vision_folded"):
        imp._vision_folded = set()
    return imp._vision_folded


def _bn_stats(imp: Importer, node: Any) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(s, t) with BN(x) = x * s + t per channel, s = scale / sqrt(var + eps) and
    t = B - mean * s, computed at import in float64 when all four are known; else None."""
    vals = [imp.get(i) for i in node.input[1:5]]
    if not all(isinstance(v, Known) and not v.symbolic for v in vals):
        return None
    scale, bias, mean, var = (np.asarray(v.arr, np.float64).reshape(-1) for v in vals)
    if not len(scale) == len(bias) == len(mean) == len(var):
        raise rlx.ShapeError(f"scale, B, mean and var have sizes {[len(scale), len(bias), len(mean), len(var)]}")
    with np.errstate(divide="ignore", invalid="ignore"):  # var + eps <= 0: inf / nan, as at run time
        s = scale / np.sqrt(var + float(attrs(node).get("epsilon", 1e-5)))
        return s, bias - mean * s


def _check_bn(node: Any) -> None:
    at = attrs(node)
    if at.get("training_mode", 0):
        raise rlx.UnsupportedOpError("BatchNormalization with training_mode=1 (batch statistics); rlx imports inference graphs")
    if not at.get("spatial", 1):
        raise rlx.UnsupportedOpError("BatchNormalization with spatial=0 (per-activation statistics)")


def _foldable_bn(imp: Importer, node: Any, w: Any, b: Any) -> Optional[Any]:
    """The BatchNormalization node that alone reads the Conv ``node``'s output, when it can be
    folded into the Conv: weight, bias and the BN's scale / B / mean / var known at import."""
    if not (isinstance(w, Known) and not w.symbolic and (b is None or isinstance(b, Known) and not b.symbolic)):
        return None
    readers = _consumers(imp).get(node.output[0], [])
    if len(readers) != 1 or readers[0] is None:
        return None
    bn = readers[0]
    if bn.op_type != "BatchNormalization" or (bn.domain or "ai.onnx") != "ai.onnx" or len(bn.input) < 5:
        return None
    at = attrs(bn)
    if bn.input[0] != node.output[0] or at.get("training_mode", 0) or not at.get("spatial", 1):
        return None
    stats = [imp.env.get(i) for i in bn.input[1:5]]  # defined before the Conv, or not foldable
    return bn if all(isinstance(v, Known) and not v.symbolic for v in stats) else None


def _fresh(imp: Importer, base: str) -> str:
    name, k = base, 1
    while name in imp.params or name in imp.env or name in imp._materialized:
        k += 1
        name = f"{base}_{k}"
    return name


def _producers(imp: Importer) -> Dict[str, Any]:
    """Value name -> the node that makes it."""
    found = getattr(imp, "_vision_producers", None)
    if found is None:
        found = {o: n for n in imp.graph.node for o in n.output if o}
        imp._vision_producers = found
    return found


def _known_ahead(imp: Importer, name: str) -> Optional[np.ndarray]:
    """The value ``name`` if known at import now, or an Unsqueeze / Identity of such a value
    that a later node makes (a Scale layer's factors after its Conv): else None."""
    v = imp.env.get(name)
    if v is not None:
        return np.asarray(v.arr) if isinstance(v, Known) and not v.symbolic else None
    n = _producers(imp).get(name)
    if n is None or n.op_type not in ("Unsqueeze", "Identity") or (n.domain or "ai.onnx") != "ai.onnx":
        return None
    x = _known_ahead(imp, n.input[0])
    if x is None or n.op_type == "Identity":
        return x
    if len(n.input) > 1 and n.input[1] and n.input[1] not in imp.env:
        return None
    axes = node_axes(imp, n, "Unsqueeze") or []
    r = x.ndim + len(axes)
    shape = list(x.shape)
    for a in sorted(norm_axis(a, r, "Unsqueeze") for a in axes):
        shape.insert(a, 1)
    return x.reshape(shape)


def _per_channel(imp: Importer, name: str, m: int, rank: int) -> Optional[np.ndarray]:
    """``name`` as ``m`` float factors that broadcast per channel over a rank-``rank`` [N, m, ..]
    value (one value: every channel), or None."""
    a = _known_ahead(imp, name)
    if a is None or a.dtype != np.float32 or a.ndim > rank:
        return None
    if a.size == 1:
        return np.full(m, float(a.reshape(-1)[0]))
    shape = (1,) * (rank - a.ndim) + a.shape
    if shape[1] != m or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return a.astype(np.float64).reshape(m)


def _foldable_scale(imp: Importer, tail: str, m: int, rank: int) -> List[Tuple[Any, str, np.ndarray]]:
    """The Mul then Add (either may be missing) by per-channel factors known at import that
    alone read ``tail``, a Conv's (or its folded BatchNorm's) output, in turn: a Caffe Scale
    layer. ``[(node, op type, factors)]``."""
    found: List[Tuple[Any, str, np.ndarray]] = []
    for want in ("Mul", "Add"):
        readers = _consumers(imp).get(tail, [])
        if len(readers) != 1 or readers[0] is None:
            break
        n = readers[0]
        if n.op_type != want or (n.domain or "ai.onnx") != "ai.onnx" or len(n.input) != 2:
            if want == "Mul":
                continue
            break
        other = n.input[1] if n.input[0] == tail else n.input[0]
        k = None if other == tail else _per_channel(imp, other, m, rank)
        if k is None:
            break
        found.append((n, want, k))
        tail = n.output[0]
    return found


def _fold_affine(imp: Importer, node: Any, bn: Optional[Any], w: Known, b: Optional[Known],
             scale: List[Tuple[Any, str, np.ndarray]]) -> Tuple[Any, Any]:
    """(weight, bias) params of the Conv ``node`` with ``bn`` and a Scale layer after it folded
    in: W * s, b * s + t, for the combined per-channel s and t."""
    m = w.arr.shape[0]
    s, t = _bn_stats(imp, bn) if bn is not None else (np.ones(m), np.zeros(m))
    if len(s) != m:
        raise rlx.ShapeError(f"BatchNormalization {bn.name or bn.output[0]!r} has {len(s)} channels, the Conv makes {m}")
    for _, op_type, k in scale:
        s, t = (s * k, t * k) if op_type == "Mul" else (s, t + k)
    bias = np.zeros(m) if b is None else np.asarray(b.arr, np.float64).reshape(-1)
    imp.reserve(w.arr.shape, 4, "the folded weight")
    w2 = (w.arr.astype(np.float64) * s.reshape((m,) + (1,) * (w.arr.ndim - 1))).astype(np.float32)
    b2 = (bias * s + t).astype(np.float32)
    src = w.init or node.input[1]
    last = (scale[-1][0] if scale else bn).output[0]
    wname, bname = _fresh(imp, f"{src}.bn_folded"), _fresh(imp, f"{last}.bn_bias")
    what = ([f"BatchNormalization {bn.name or bn.output[0]!r}"] if bn is not None else []) + [
        f"{n.op_type} {n.name or n.output[0]!r}" for n, _, _ in scale]
    imp.notes.append(
        f"{' and '.join(what)} folded into Conv {node.name or node.output[0]!r}: "
        f"new params {wname!r} (weight {src!r} scaled per channel) and {bname!r} (bias)"
    )
    if bn is not None:
        _folded(imp).add(node.output[0])
    prev = (bn or node).output[0]
    for n, _, _ in scale:
        imp.applied[n.output[0]] = prev
        prev = n.output[0]
    return imp.param_from(wname, w2), imp.param_from(bname, b2)


def _unpadded(imp: Importer, name: str, x: Any, pads: List[int]) -> Tuple[Any, List[int]]:
    """A Conv input made by a zero Pad of its spatial axes (a TensorFlow export's SAME
    padding): the Pad's input and the Conv's pads plus the Pad's, which the Conv pads as it
    reads (the Pad's gathers then go unused). Else ``x`` and ``pads``."""
    if name not in imp.zero_padded:
        return x, pads
    src, extra = imp.zero_padded[name]
    if len(extra) != len(pads):
        return x, pads
    imp.notes.append(f"Pad {name!r}: zeros folded into the Conv's pads")
    return imp.get(src), [p + e for p, e in zip(pads, extra)]


@op("Conv")
def _conv(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    # A weight made at import is a param whatever its size: the compiler packs params for the
    # fast kernels, and a constant weight ran the channel-major fallback (2.5x slower stems).
    x, w = imp.get(node.input[0]), weight_like(node.input[1], imp.get(node.input[1]), 1)
    b = imp.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    ws = imp.shape(w)
    if len(ws) < 3 or not all(isinstance(d, int) for d in ws):
        raise rlx.ShapeError(f"Conv weight {node.input[1]!r} has shape {[str(d) for d in ws]}: expected a static [M, C/group, k...]")
    kernel = [int(d) for d in ws[2:]]
    if "kernel_shape" in at and list(at["kernel_shape"]) != kernel:
        raise rlx.ShapeError(f"kernel_shape {list(at['kernel_shape'])} differs from the weight's {kernel}")
    group = int(at.get("group", 1))
    strides, pads, dilations = window_args(imp, node, x, kernel)
    x, pads = _unpadded(imp, node.input[0], x, pads)
    c, m = imp.shape(x)[1], int(ws[0])
    if group < 1 or c % group or m % group:
        raise rlx.ShapeError(f"group {group} does not divide the input channels {c} and the output channels {m}")
    if c != ws[1] * group:
        raise rlx.ShapeError(f"input has {c} channels, the weight {[int(d) for d in ws]} takes {ws[1]} x group {group} = {ws[1] * group}")
    if b is not None and imp.shape(b) != [m]:
        raise rlx.ShapeError(f"Conv bias has shape {[str(d) for d in imp.shape(b)]}, expected [{m}]")
    bn = _foldable_bn(imp, node, w, b)
    known = isinstance(w, Known) and not w.symbolic and (b is None or isinstance(b, Known) and not b.symbolic)
    scale = _foldable_scale(imp, (bn or node).output[0], m, len(ws)) if known else []
    if bn is not None or scale:
        wv, bv = _fold_affine(imp, node, bn, w, b, scale)
    else:
        wv, bv = imp.rt(w), None if b is None else imp.rt(b)
    return imp.g.conv(imp.rt(x), wv, bv, strides=strides, pads=pads, dilations=dilations, groups=group)


# -- ConvTranspose: a Conv over the input with zeros between its elements ---------------------


def _transpose_pads(at: Dict[str, Any], sizes: List[int], kernel: List[int], strides: List[int],
                    dilations: List[int], out_pad: List[int]) -> List[int]:
    """ConvTranspose pads (begins then ends), from ``output_shape`` or SAME auto_pad when given."""
    n = len(sizes)
    auto_pad = at.get("auto_pad", "NOTSET") or "NOTSET"
    if "output_shape" not in at and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        if auto_pad == "VALID":
            return [0] * 2 * n
        if auto_pad != "NOTSET":
            raise rlx.ModelFormatError(f"auto_pad {auto_pad!r} is not NOTSET, VALID, SAME_UPPER or SAME_LOWER")
        pads = [int(p) for p in at.get("pads", [0] * 2 * n)]
        if len(pads) != 2 * n:
            raise rlx.ShapeError(f"pads {pads} has {len(pads)} entries, expected {2 * n} (begins then ends)")
        return pads
    target = [int(v) for v in at["output_shape"]][-n:] if "output_shape" in at else [s * st for s, st in zip(sizes, strides)]
    if len(target) != n:
        raise rlx.ShapeError(f"output_shape {list(at['output_shape'])} has fewer than {n} spatial sizes")
    total = [st * (s - 1) + op + (k - 1) * d + 1 - t
             for s, st, op, k, d, t in zip(sizes, strides, out_pad, kernel, dilations, target)]
    if auto_pad == "SAME_UPPER":
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    return [t - t // 2 for t in total] + [t // 2 for t in total]


def _insert_zeros(imp: Importer, x: Any, strides: List[int]) -> Any:
    """``x`` with ``stride - 1`` zeros between neighbours on each spatial axis: a zero slab
    appended to the axis, then a gather that interleaves it."""
    for i, st in enumerate(strides):
        if st == 1:
            continue
        axis = 2 + i
        dims = imp.shape(x)
        n = dims[axis]
        slab = imp.filled(dims[:axis] + [1] + dims[axis + 1:], imp.g.constant(np.zeros((), np.float32)))
        idx = np.full((n - 1) * st + 1, n, np.int64)
        idx[::st] = np.arange(n)
        x = imp.g.gather(imp.g.concat([x, slab], axis), imp.g.constant(idx), axis)
    return x


def _transposed_weight(imp: Importer, node: Any, w: Known, group: int) -> Any:
    """[C, M/g, k..] -> [M, C/g, k..] with the kernel flipped: the equivalent Conv's weight."""
    c, mg, kernel = w.arr.shape[0], w.arr.shape[1], w.arr.shape[2:]
    a = w.arr.reshape((group, c // group, mg) + kernel).swapaxes(1, 2).reshape((mg * group, c // group) + kernel)
    # A copy: np.ascontiguousarray keeps the negative strides of a flipped size-1 axis.
    a = np.array(a[(slice(None), slice(None)) + (slice(None, None, -1),) * len(kernel)], np.float32, order="C")
    src = w.init or node.input[1]
    name = _fresh(imp, f"{src}.conv_transposed")
    imp.notes.append(f"ConvTranspose {node.name or node.output[0]!r}: weight {src!r} flipped and transposed at import into {name!r}")
    return imp.param_from(name, a)


@op("ConvTranspose")
def _conv_transpose(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x, w = imp.get(node.input[0]), imp.get(node.input[1])
    b = imp.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if not isinstance(w, Known) or w.symbolic or w.arr.ndim < 3:
        raise rlx.UnsupportedOpError("ConvTranspose weight must be known at import (an initializer) of shape [C, M/group, k...]")
    n, kernel = w.arr.ndim - 2, [int(k) for k in w.arr.shape[2:]]
    sizes = spatial_sizes(imp, x, n)
    c, group = imp.shape(x)[1], int(at.get("group", 1))
    if group < 1 or c % group or c != w.arr.shape[0]:
        raise rlx.ShapeError(f"input has {c} channels; the weight {list(w.arr.shape)} with group {group} takes {w.arr.shape[0]}")
    strides, dilations = int_list(at, "strides", n, 1), int_list(at, "dilations", n, 1)
    out_pad = [int(v) for v in at.get("output_padding", [0] * n)]
    if len(out_pad) != n or any(v < 0 for v in out_pad):
        raise rlx.ShapeError(f"output_padding {out_pad} must be {n} non-negative sizes")
    pads = _transpose_pads(at, sizes, kernel, strides, dilations, out_pad)
    # The equivalent Conv pads by dilation * (k - 1) - pad (+ output_padding at the end);
    # a negative amount crops the Conv's output instead.
    conv_pads = [d * (k - 1) - p for d, k, p in zip(dilations, kernel, pads[:n])]
    conv_pads += [d * (k - 1) - p + op for d, k, p, op in zip(dilations, kernel, pads[n:], out_pad)]
    for i, s in enumerate(sizes):
        out = strides[i] * (s - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - pads[i] - pads[i + n]
        if out < 1:
            raise rlx.ShapeError(f"pads {pads} leave no output on spatial axis {i} (size {s}, kernel {kernel[i]})")
    y = imp.g.conv(_insert_zeros(imp, imp.rt(x), strides), _transposed_weight(imp, node, w, group),
                   None if b is None else imp.rt(b), pads=[max(p, 0) for p in conv_pads], dilations=dilations, groups=group)
    for i in range(n):
        lo, hi = max(-conv_pads[i], 0), max(-conv_pads[i + n], 0)
        if lo or hi:
            size = int(y.shape[2 + i])
            y = imp.g.slice(y, 2 + i, lo, size - hi)
    return y


@op("BatchNormalization")
def _batch_norm(imp: Importer, node: Any) -> Any:
    _check_bn(node)
    x = imp.get(node.input[0])
    if node.input[0] in _folded(imp):
        return x  # already applied by the Conv that feeds it
    dims = imp.shape(x)
    if len(dims) < 2:
        raise rlx.ShapeError(f"BatchNormalization input of rank {len(dims)}: expected [N, C, ...]")
    c = dims[1]
    if not isinstance(c, int):
        raise rlx.UnsupportedOpError(f"BatchNormalization over {c} channels: the channel count must be static")
    per_channel = (c,) + (1,) * (len(dims) - 2)
    stats = _bn_stats(imp, node)
    if stats is not None:
        s, t = stats
        if len(s) != c:
            raise rlx.ShapeError(f"input has {c} channels, scale/B/mean/var have {len(s)}")
        sv = imp.g.constant(s.astype(np.float32).reshape(per_channel))
        tv = imp.g.constant(t.astype(np.float32).reshape(per_channel))
    else:
        sv, tv = _runtime_bn_stats(imp, node, per_channel)
    return imp.g.add(imp.g.mul(imp.rt(x), sv), tv)


def _runtime_bn_stats(imp: Importer, node: Any, per_channel: Tuple[Any, ...]) -> Tuple[Any, Any]:
    """(s, t) as graph values when some of scale / B / mean / var are run-time inputs."""
    scale, bias, mean, var = (imp.rt(imp.get(i)) for i in node.input[1:5])
    eps = imp.g.constant(np.array(float(attrs(node).get("epsilon", 1e-5)), np.float32))
    s = imp.g.mul(scale, imp.g.rsqrt(imp.g.add(var, eps)))
    t = imp.g.sub(bias, imp.g.mul(mean, s))
    shape = tuple(dim_text(d) for d in per_channel)
    return imp.g.reshape(s, shape), imp.g.reshape(t, shape)


@op("InstanceNormalization")
def _instance_norm(imp: Importer, node: Any) -> Any:
    x = imp.rt(imp.get(node.input[0]))
    dims = imp.shape(x)
    if len(dims) < 3:
        raise rlx.ShapeError(f"InstanceNormalization input of rank {len(dims)}: expected [N, C, spatial...]")
    axes = list(range(2, len(dims)))
    per_channel = (dim_text(dims[1]),) + (1,) * len(axes)
    scale, bias = (imp.g.reshape(imp.rt(imp.get(i)), per_channel) for i in node.input[1:3])
    eps = imp.g.constant(np.array(float(attrs(node).get("epsilon", 1e-5)), np.float32))
    centered = imp.g.sub(x, imp.g.reduce_mean(x, axes, keep_dim=True))
    var = imp.g.reduce_mean(imp.g.mul(centered, centered), axes, keep_dim=True)
    normed = imp.g.mul(centered, imp.g.rsqrt(imp.g.add(var, eps)))
    return imp.g.add(imp.g.mul(normed, scale), bias)


# -- pooling ----------------------------------------------------------------------------------


@op("MaxPool")
def _max_pool(imp: Importer, node: Any) -> Any:
    if len(node.output) > 1 and node.output[1] and node.output[1] in imp.used_names():
        raise rlx.UnsupportedOpError("MaxPool's Indices output (argmax positions) is not supported")
    x = imp.get(node.input[0])
    kernel = pool_kernel(node)
    strides, pads, dilations = window_args(imp, node, x, kernel)
    ceil = bool(attrs(node).get("ceil_mode", 0))
    xr = imp.rt(x)
    dt = np.dtype(xr.dtype)
    if dt.kind not in "iu":
        return imp.g.max_pool(xr, kernel, strides=strides, pads=pads, dilations=dilations, ceil_mode=ceil)
    # rlx pools float32: exact for integers below 2**24, so for the 8- and 16-bit types only.
    lt = _onnx_dtypes.logical_of(imp, node.input[0])
    if lt is None or lt.itemsize > 2:
        raise rlx.DTypeError(f"MaxPool on {_onnx_dtypes.type_name(lt or dt)}: rlx pools in float32, exact for "
                             "8- and 16-bit integers only")
    y = imp.g.max_pool(imp.g.cast(xr, "float32"), kernel, strides=strides, pads=pads, dilations=dilations, ceil_mode=ceil)
    return imp.g.cast(y, dt)


@op("AveragePool")
def _avg_pool(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x = imp.get(node.input[0])
    kernel = pool_kernel(node)
    strides, pads, dilations = window_args(imp, node, x, kernel)
    return imp.g.avg_pool(imp.rt(x), kernel, strides=strides, pads=pads, ceil_mode=bool(at.get("ceil_mode", 0)),
                          count_include_pad=bool(at.get("count_include_pad", 0)), dilations=dilations)


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(imp: Importer, node: Any) -> Any:
    x = imp.rt(imp.get(node.input[0]))
    r = len(x.shape)
    if r < 3:
        raise rlx.ShapeError(f"{node.op_type} input of rank {r}: expected [N, C, spatial...]")
    axes = list(range(2, r))
    if node.op_type == "GlobalMaxPool":
        return imp.g.reduce_max(x, axes, keep_dim=True)
    return imp.g.reduce_mean(x, axes, keep_dim=True)


@op("LRN")
def _lrn(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x = imp.get(node.input[0])
    if imp.rank(x) < 3:
        raise rlx.ShapeError(f"LRN input of rank {imp.rank(x)}: expected [N, C, spatial...]")
    size = int(at["size"])
    if size < 1:
        raise rlx.ShapeError(f"LRN size {size} must be positive")
    return imp.g.lrn(imp.rt(x), size, alpha=float(at.get("alpha", 1e-4)), beta=float(at.get("beta", 0.75)),
                     bias=float(at.get("bias", 1.0)))


# -- Pad --------------------------------------------------------------------------------------


def _pad_args(imp: Importer, node: Any, rank: int) -> Tuple[List[int], Any]:
    """(pads over every axis: begins then ends, the constant value or None)."""
    at = attrs(node)
    if imp.opset < 11:
        pads, value, axes = list(at.get("pads", at.get("paddings", []))), at.get("value"), list(range(rank))
        value = None if value is None else Known(np.array(value, np.float32))
    else:
        ins = list(node.input) + [""] * 3
        pads = imp.ints(ins[1], "Pad pads")
        value = imp.get(ins[2]) if ins[2] else None
        axes = [int(a) for a in imp.ints(ins[3], "Pad axes")] if ins[3] else list(range(rank))
    if any(not isinstance(p, (int, np.integer)) for p in pads):
        raise rlx.UnsupportedOpError(f"Pad pads {[str(p) for p in pads]} must be known integers")
    if len(pads) != 2 * len(axes):
        raise rlx.ShapeError(f"Pad pads {pads} has {len(pads)} entries for {len(axes)} axes (begins then ends)")
    full = [0] * (2 * rank)
    for j, a in enumerate(axes):
        if not -rank <= a < rank:
            raise rlx.ShapeError(f"Pad axis {a} out of range for rank {rank}")
        full[a % rank], full[a % rank + rank] = int(pads[j]), int(pads[j + len(axes)])
    return full, value


def _pad_index(n: int, before: int, after: int, mode: str) -> Tuple[np.ndarray, np.ndarray]:
    """(source index of each output position along one axis, whether it lies inside the input).
    Negative pads crop first; the positive ones then pad the cropped axis (as ONNX Runtime)."""
    lo = max(-before, 0)
    m = n - lo - max(-after, 0)
    pos = np.arange(-max(before, 0), m + max(after, 0))
    inside = (pos >= 0) & (pos < m)
    if mode == "reflect" and m > 1:
        r = pos % (2 * (m - 1))
        idx = np.where(r < m, r, 2 * (m - 1) - r)
    elif mode == "wrap":
        idx = pos % m
    else:  # constant (masked afterwards; m may be 0), edge, reflect of a single element
        idx = np.clip(pos, 0, max(m - 1, 0))
    return np.minimum(idx + lo, n - 1).astype(np.int64), inside


@op("Pad")
def _pad(imp: Importer, node: Any) -> Any:
    mode = attrs(node).get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise rlx.UnsupportedOpError(f"Pad mode {mode!r} (constant, reflect, edge, wrap are supported)")
    x = imp.rt(imp.get(node.input[0]))
    dims = imp.shape(x)
    r = len(dims)
    pads, value = _pad_args(imp, node, r)
    dt = np.dtype(x.dtype)
    if mode == "constant" and r >= 3 and _zero_fill(value) and min(pads) >= 0 and not any(pads[:2] + pads[r:r + 2]):
        imp.zero_padded[node.output[0]] = (node.input[0], pads[2:r] + pads[r + 2:])
    fill = None
    for axis in range(r):
        before, after = pads[axis], pads[axis + r]
        if before == 0 and after == 0:
            continue
        n = dims[axis]
        kept = n + min(before, 0) + min(after, 0) if isinstance(n, int) and n > 0 else -1
        if kept < (0 if mode == "constant" else 1):
            raise rlx.ShapeError(f"Pad {pads}: cannot pad axis {axis} of size {n} ({mode} padding needs a static, "
                                 "non-empty axis that the negative pads do not remove)")
        idx, inside = _pad_index(n, before, after, mode)
        x = imp.g.gather(x, imp.g.constant(idx), axis)
        if mode == "constant" and not inside.all():
            if fill is None:
                fill = imp.g.constant(np.zeros((), dt)) if value is None else _pad_value(imp, value, dt)
            mask = inside.reshape((1,) * axis + (len(idx),) + (1,) * (r - axis - 1))
            x = imp.g.where(imp.g.constant(mask), x, fill)
    return x


def _zero_fill(value: Any) -> bool:
    """Whether a Pad's constant is zero (or not given)."""
    if value is None:
        return True
    return isinstance(value, Known) and not value.symbolic and value.arr.size == 1 and float(value.arr.reshape(())) == 0.0


def _pad_value(imp: Importer, value: Any, dt: np.dtype) -> Any:
    if isinstance(value, Known) and not value.symbolic:
        if value.arr.size != 1:
            raise rlx.ShapeError(f"Pad constant_value has {value.arr.size} elements, not 1")
        return imp.g.constant(np.asarray(value.arr, dt).reshape(()))
    return imp.g.reshape(imp.rt(value), ())
