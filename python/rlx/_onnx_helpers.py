"""Helpers that more than one ONNX op family uses: dims and axes, reshapes, Conv / pool windows,
reductions and products along an axis, and the import of a subgraph attribute (``run_graph``:
control flow's branches and bodies, FlexAttention's score and probability modifiers).

Handler modules (``_onnx_ops_*``) import these from here and never from one another; this
module imports only the importer, the registry, the dtype conversions and the symbolic dims, so
there is no circle.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

import rlx
from rlx import _onnx_dtypes
from rlx._onnx_import import Importer, Known, _as_float32, graph_reads
from rlx._onnx_registry import attrs, foldable, tensor_array
from rlx._onnx_sym import DimLike, dim_text

# -- dims and axes ---------------------------------------------------------------------------


def dims_prod(ds: List[DimLike]) -> DimLike:
    """The product of a list of dims, static or symbolic (1 for an empty list)."""
    acc: DimLike = 1
    for d in ds:
        acc = acc * d
    return acc


def norm_axis(a: int, rank: int, what: str) -> int:
    """Axis ``a`` of a rank-``rank`` tensor made non-negative; out of range is a ShapeError."""
    if not -rank <= a < max(rank, 1):
        raise rlx.ShapeError(f"{what}: axis {a} out of range for rank {rank}")
    return a + rank if a < 0 else a


def node_axes(imp: Importer, node: Any, what: str) -> List[int] | None:
    """A node's axes, from its ``axes`` attribute or its second input; None when it gives none."""
    a = attrs(node)
    if "axes" in a:
        return list(a["axes"])
    if len(node.input) > 1 and node.input[1]:
        return [int(x) for x in imp.ints(node.input[1], f"{what} axes")]
    return None


def static_dims(imp: Importer, v: Any, what: str) -> List[int]:
    """The shape of ``v``, which must be static (an UnsupportedOpError naming ``what`` if not)."""
    dims = imp.shape(v)
    if not all(isinstance(d, int) for d in dims):
        raise rlx.UnsupportedOpError(f"{what} needs static shapes, got {[dim_text(d) for d in dims]}")
    return [int(d) for d in dims]


def static_len(d: DimLike, what: str, axis: int) -> int:
    """The size ``d`` of ``axis``, which must be static (an UnsupportedOpError if symbolic)."""
    if not isinstance(d, int):
        raise rlx.UnsupportedOpError(f"{what} along axis {axis} of symbolic size {dim_text(d)}: the axis must be static")
    return d


def reshape_to(imp: Importer, x: Any, shape: List[DimLike]) -> Any:
    """``x`` reshaped to ``shape``: folded when known at import, else a graph reshape."""
    bad = [d for d in shape if isinstance(d, int) and d < 0]
    if bad:
        raise rlx.ShapeError(f"cannot reshape {[str(d) for d in imp.shape(x)]} to {[str(d) for d in shape]}: negative dim")
    if isinstance(x, Known) and not x.symbolic and all(isinstance(d, int) for d in shape):
        have, want = math.prod(x.arr.shape), math.prod(int(d) for d in shape)
        if have != want:
            raise rlx.ShapeError(f"cannot reshape {list(x.arr.shape)} ({have} elements) to {shape} ({want} elements)")
    if isinstance(x, Known) and foldable(x) or isinstance(x, Known) and all(isinstance(d, int) for d in shape) and x.init is None:
        return Known(x.arr.reshape([int(d) for d in shape]), x.dtype)
    if not isinstance(x, Known) and imp.shape(x) == list(shape):
        return x
    return imp.g.reshape(imp.rt(x), tuple(dim_text(d) for d in shape))


# -- reductions and products -----------------------------------------------------------------


def reduce_args(imp: Importer, node: Any) -> Tuple[Any, Any, bool, bool]:
    """(x, axes or None for all, keepdims, whether the node is a no-op: empty axes with
    noop_with_empty_axes) of a Reduce* node."""
    at = attrs(node)
    x = imp.rt(imp.get(node.input[0]))
    axes = node_axes(imp, node, node.op_type)
    noop = not axes and bool(at.get("noop_with_empty_axes", 0))
    return x, axes or None, bool(at.get("keepdims", 1)), noop


def prod_along(imp: Importer, x: Any, axis: int) -> Any:
    """The product of ``x`` along a static ``axis``, kept as a dim of 1: a tree of halves
    multiplied together (an odd last slice carried to the next level)."""
    g = imp.g
    dims = imp.shape(x)
    n = static_len(dims[axis], "a product", axis)
    if n == 0:
        return imp.filled([1 if i == axis else d for i, d in enumerate(dims)], g.constant(np.array(1, np.dtype(x.dtype))))
    while n > 1:
        h = n // 2
        y = g.mul(g.slice(x, axis, 0, h), g.slice(x, axis, h, 2 * h))
        x = g.concat([y, g.slice(x, axis, 2 * h, n)], axis) if n % 2 else y
        n = h + n % 2
    return x


# -- windows: strides, pads, dilations, auto_pad ---------------------------------------------


def int_list(at: Dict[str, Any], key: str, n: int, default: int) -> List[int]:
    """Attribute ``key`` as ``n`` positive ints (``default`` each when absent)."""
    vals = [int(v) for v in at.get(key, [default] * n)]
    if len(vals) != n:
        raise rlx.ShapeError(f"{key} {vals} has {len(vals)} entries for {n} spatial axes")
    if any(v < 1 for v in vals):
        raise rlx.ShapeError(f"{key} {vals} must be positive")
    return vals


def spatial_sizes(imp: Importer, x: Any, n: int) -> List[int]:
    """The ``n`` spatial sizes of ``x`` ([N, C, *spatial]), which must be static."""
    dims = imp.shape(x)
    if len(dims) != n + 2:
        raise rlx.ShapeError(f"input of shape {[str(d) for d in dims]} for a {n}-d window: expected [N, C] + {n} spatial dims")
    if not all(isinstance(d, int) for d in dims[1:]):
        raise rlx.UnsupportedOpError(f"channels and spatial sizes must be static, got {[str(d) for d in dims]}")
    return [int(d) for d in dims[2:]]


def _same_pads(sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], lower: bool) -> List[int]:
    """``auto_pad`` SAME_UPPER / SAME_LOWER: output ceil(size / stride), the odd pad at the end
    (upper) or the beginning (lower)."""
    begins, ends = [], []
    for s, k, st, d in zip(sizes, kernel, strides, dilations):
        out = -(-s // st)
        total = max((out - 1) * st + (k - 1) * d + 1 - s, 0)
        small, big = total // 2, total - total // 2
        begins.append(big if lower else small)
        ends.append(small if lower else big)
    return begins + ends


def window_args(imp: Importer, node: Any, x: Any, kernel: Sequence[int]) -> Tuple[List[int], List[int], List[int]]:
    """(strides, pads, dilations) of a Conv / pool node over ``x``, after checking that the
    window fits every padded spatial axis."""
    at = attrs(node)
    n = len(kernel)
    sizes = spatial_sizes(imp, x, n)
    strides = int_list(at, "strides", n, 1)
    dilations = int_list(at, "dilations", n, 1)
    auto_pad = at.get("auto_pad", "NOTSET") or "NOTSET"
    if auto_pad == "NOTSET":
        pads = [int(p) for p in at.get("pads", [0] * 2 * n)]
        if len(pads) != 2 * n:
            raise rlx.ShapeError(f"pads {pads} has {len(pads)} entries, expected {2 * n} (begins then ends)")
        if any(p < 0 for p in pads):
            raise rlx.ShapeError(f"pads {pads} has a negative entry")
    elif auto_pad == "VALID":
        pads = [0] * 2 * n
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # A kernel smaller than its stride can leave a negative total: clamped to 0, as ONNX
        # Runtime and the onnx reference do for Conv (their pools disagree with each other).
        pads = _same_pads(sizes, kernel, strides, dilations, auto_pad == "SAME_LOWER")
    else:
        raise rlx.ModelFormatError(f"auto_pad {auto_pad!r} is not NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    for i, (s, k, d) in enumerate(zip(sizes, kernel, dilations)):
        span = (k - 1) * d + 1
        if k < 1 or span > s + pads[i] + pads[i + n]:
            raise rlx.ShapeError(
                f"kernel {list(kernel)} (dilations {dilations}) does not fit spatial axis {i} of size {s} "
                f"with pads {pads[i]} + {pads[i + n]}"
            )
    return strides, pads, dilations


def pool_kernel(node: Any) -> List[int]:
    """A pool node's ``kernel_shape``, checked non-empty and positive."""
    kernel = [int(k) for k in attrs(node)["kernel_shape"]]
    if not kernel or any(k < 1 for k in kernel):
        raise rlx.ShapeError(f"kernel_shape {kernel} must be non-empty and positive")
    return kernel


# -- subgraphs -------------------------------------------------------------------------------

_MISSING = object()


def run_graph(imp: Importer, graph: Any, bound: Sequence[Any], what: str) -> List[Any]:
    """The output values of ``graph`` (a subgraph attribute) with its inputs bound to ``bound``
    (values of the outer graph, or ``Known``); the names it defines are restored afterwards."""
    inputs = list(graph.input)
    if len(bound) != len(inputs):
        raise rlx.ModelFormatError(f"{what} declares {len(inputs)} input(s), the node gives it {len(bound)}")
    defined = [vi.name for vi in inputs] + [t.name for t in graph.initializer]
    defined += [o for n in graph.node for o in n.output if o]
    saved = {n: (imp.env.get(n, _MISSING), imp.logical.get(n, _MISSING)) for n in defined}
    try:
        for t in graph.initializer:
            arr = tensor_array(t, f"{what} initializer {t.name!r}")
            if arr.dtype != np.float32 and _onnx_dtypes.computed(arr.dtype) == np.float32:
                imp.logical[t.name] = arr.dtype
                arr = _as_float32(t.name, arr)
            imp.env[t.name] = Known(arr, arr.dtype)
        for vi, v in zip(inputs, bound):
            imp.env[vi.name] = v
            imp.logical.pop(vi.name, None)
        used = graph_reads(graph) | {o.name for o in graph.output}
        for i, node in enumerate(graph.node):
            imp.import_node(i, node, used, top=False)
        outs = []
        for o in graph.output:
            if o.name not in imp.env:
                raise rlx.GraphError(f"{what} output {o.name!r} is not computed by the subgraph")
            outs.append(imp.env[o.name])
        return outs
    finally:
        for n, (v, lt) in saved.items():
            if v is _MISSING:
                imp.env.pop(n, None)
            else:
                imp.env[n] = v
            if lt is _MISSING:
                imp.logical.pop(n, None)
            else:
                imp.logical[n] = lt
