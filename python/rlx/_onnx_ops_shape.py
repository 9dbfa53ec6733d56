"""ONNX shape and data-movement ops: folded over symbolic dims when known at import."""

from __future__ import annotations

import math
from typing import Any, List

import numpy as np

import rlx
from rlx._onnx_helpers import dims_prod, node_axes, norm_axis, reshape_to
from rlx._onnx_import import RLX_NP, Importer, Known, normalize, shape_array
from rlx._onnx_registry import attrs, fold_shape, foldable, known, op, tensor_array
from rlx._onnx_sym import DimLike, Poly, dim_text

INT_BIG = 2**31 - 1


@op("Shape")
def _shape(imp: Importer, node: Any) -> Any:
    a = attrs(node)
    dims = imp.shape(imp.get(node.input[0]))
    r = len(dims)
    start, end = a.get("start", 0), a.get("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return Known(shape_array(dims[start:end]), np.int64)


@op("Size")
def _size(imp: Importer, node: Any) -> Any:
    n = dims_prod(imp.shape(imp.get(node.input[0])))
    arr = np.empty((), object)
    arr[()] = n
    return known(arr, np.int64)


@op("ConstantOfShape")
def _constant_of_shape(imp: Importer, node: Any) -> Any:
    a = attrs(node)
    value = tensor_array(a["value"], "ConstantOfShape value") if "value" in a else np.zeros((), np.float32)
    if value.size != 1:
        raise rlx.ModelFormatError(f"ConstantOfShape value has {value.size} elements, not 1")
    value = value.reshape(())
    shape = imp.ints(node.input[0], "ConstantOfShape shape")
    imp.reserve(shape, value.itemsize, "the result")
    if all(isinstance(d, int) for d in shape):
        return Known(np.full(shape, value, value.dtype), value.dtype)
    return imp.filled(shape, imp.g.constant(value))


@op("Gather")
def _gather(imp: Importer, node: Any) -> Any:
    data, idx = imp.get(node.input[0]), imp.get(node.input[1])
    axis = norm_axis(attrs(node).get("axis", 0), imp.rank(data), "Gather")
    if foldable(data, idx):
        n, flat = (data.arr.shape[axis] if data.arr.ndim else 0), idx.arr.reshape(-1)
        if (idx.symbolic and any(isinstance(i, Poly) for i in flat)) or np.any((flat < -n) | (flat >= n)):
            shown = ", ".join(str(i) for i in flat[:8])
            raise rlx.ShapeError(f"Gather indices [{shown}] out of range for axis {axis} of size {n}")
        imp.reserve(list(data.arr.shape[:axis]) + list(idx.arr.shape) + list(data.arr.shape[axis + 1:]), data.arr.itemsize, "the result")
        return known(np.take(data.arr, idx.arr.astype(np.int64), axis=axis), data.dtype)
    return imp.g.gather(imp.rt(data), imp.rt(idx), axis)


@op("Unsqueeze")
def _unsqueeze(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    axes = node_axes(imp, node, "Unsqueeze") or []
    r = len(dims) + len(axes)
    axes = sorted(norm_axis(a, r, "Unsqueeze") for a in axes)
    out: List[DimLike] = list(dims)
    for a in axes:
        out.insert(a, 1)
    return reshape_to(imp, x, out)


@op("Squeeze")
def _squeeze(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    axes = node_axes(imp, node, "Squeeze")
    if axes is None:
        keep = [d for d in dims if d != 1]
    else:
        drop = {norm_axis(a, len(dims), "Squeeze") for a in axes}
        for a in drop:
            if dims[a] != 1:
                raise rlx.ShapeError(f"Squeeze axis {a} has size {dims[a]}, not 1")
        keep = [d for i, d in enumerate(dims) if i not in drop]
    return reshape_to(imp, x, keep)


@op("Reshape")
def _reshape_op(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    target = imp.ints(node.input[1], "Reshape shape")
    allowzero = attrs(node).get("allowzero", 0)
    if sum(1 for t in target if isinstance(t, int) and t == -1) > 1:
        raise rlx.ShapeError(f"Reshape target {target} has more than one -1")
    out: List[DimLike] = []
    for i, t in enumerate(target):
        if t == 0 and not allowzero and not isinstance(t, Poly):
            if i >= len(dims):
                raise rlx.ShapeError(f"Reshape target {target}: 0 at position {i} copies a dim the input {dims} lacks")
            out.append(dims[i])
        else:
            out.append(t)
    if -1 in [d for d in out if isinstance(d, int)]:
        known = dims_prod([d for d in out if not (isinstance(d, int) and d == -1)])
        total = dims_prod(dims)
        try:
            inferred = Poly.of(total).exact_div(known) if isinstance(total, Poly) or isinstance(known, Poly) else (total // known if known else 0)
        except ValueError as e:
            raise rlx.ShapeError(f"Reshape {dims} -> {target}: {e}") from None
        out = [inferred if isinstance(d, int) and d == -1 else d for d in out]
    return reshape_to(imp, x, out)


@op("Flatten")
def _flatten(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    a = attrs(node).get("axis", 1)
    if not -len(dims) <= a <= len(dims):
        raise rlx.ShapeError(f"Flatten axis {a} out of range for rank {len(dims)}")
    a = a + len(dims) if a < 0 else a
    return reshape_to(imp, x, [dims_prod(dims[:a]), dims_prod(dims[a:])])


@op("Transpose")
def _transpose(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    r = imp.rank(x)
    perm = list(attrs(node).get("perm", range(r - 1, -1, -1)))
    if sorted(perm) != list(range(r)):
        raise rlx.ShapeError(f"Transpose perm {perm} is not a permutation of the {r} axes")
    if foldable(x):
        return Known(np.transpose(x.arr, perm), x.dtype)
    if perm == list(range(r)):
        return x
    return imp.g.transpose(imp.rt(x), perm)


@op("Concat")
def _concat(imp: Importer, node: Any) -> Any:
    vals = [imp.get(i) for i in node.input if i]
    axis = norm_axis(attrs(node)["axis"], imp.rank(vals[0]), "Concat")
    if foldable(*vals):
        shapes = [list(v.arr.shape) for v in vals]
        if any(len(s) != len(shapes[0]) or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:] for s in shapes):
            raise rlx.ShapeError(f"Concat on axis {axis}: shapes {shapes} differ off the axis")
        imp.reserve(shapes[0][:axis] + [sum(s[axis] for s in shapes)] + shapes[0][axis + 1:], max(v.arr.itemsize for v in vals), "the result")
        return known(np.concatenate([v.arr for v in vals], axis=axis), vals[0].dtype)
    return imp.g.concat([imp.rt(v) for v in vals if not _empty(imp, v, axis)] or [imp.rt(vals[0])], axis)


def _empty(imp: Importer, v: Any, axis: int) -> bool:
    return imp.shape(v)[axis] == 0


def _slice_args(imp: Importer, node: Any, rank: int) -> List[tuple]:
    if imp.opset < 10:
        a = attrs(node)
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        ins = list(node.input) + [""] * 5
        starts = imp.ints(ins[1], "Slice starts")
        ends = imp.ints(ins[2], "Slice ends")
        axes = [int(x) for x in imp.ints(ins[3], "Slice axes")] if ins[3] else list(range(len(starts)))
        steps = imp.ints(ins[4], "Slice steps") if ins[4] else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise rlx.ShapeError(f"Slice starts {starts}, ends {ends}, axes {axes}, steps {steps} differ in length")
    if any(not isinstance(st, Poly) and st == 0 for st in steps):
        raise rlx.ShapeError("Slice step 0")
    return [(norm_axis(int(ax), rank, "Slice"), s, e, st) for ax, s, e, st in zip(axes, starts, ends, steps)]


def _clamp(b: DimLike, d: DimLike) -> DimLike | None:
    """An ONNX slice bound as rlx takes it (None = to the end)."""
    if isinstance(b, Poly):
        return b
    if isinstance(d, int):
        b = b + d if b < 0 else b
        return min(max(b, 0), d)
    if b >= INT_BIG:
        return None
    return b


def _strided(imp: Importer, x: Any, ax: int, d: DimLike, s: DimLike, e: DimLike, st: DimLike) -> Any:
    """A slice with a step other than 1: a gather of the indices, worked out at import (numpy's
    slice semantics are ONNX's), so the axis and the bounds must be static."""
    if not all(isinstance(v, int) for v in (d, s, e, st)):
        shown = ", ".join(str(v) for v in (s, e, st))
        raise rlx.UnsupportedOpError(f"Slice with step {st} on axis {ax} of size {d} (start, end, step "
                                     f"{shown}): a step other than 1 needs a static axis and bounds")
    idx = np.arange(d, dtype=np.int64)[slice(max(min(s, 2**62), -2**62), max(min(e, 2**62), -2**62), st)]
    if idx.size == 0:
        return imp.g.slice(x, ax, 0, 0)
    return imp.g.gather(x, imp.g.constant(idx), ax)


@op("Slice")
def _slice(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    args = _slice_args(imp, node, len(dims))
    if foldable(x):
        idx = [slice(None)] * len(dims)
        for ax, s, e, st in args:
            idx[ax] = slice(int(max(min(s, 2**62), -2**62)), int(max(min(e, 2**62), -2**62)), int(st))
        return Known(x.arr[tuple(idx)], x.dtype)
    out = imp.rt(x)
    for ax, s, e, st in args:
        d = dims[ax]
        if st != 1:
            out = _strided(imp, out, ax, d, s, e, st)
            continue
        start, end = _clamp(s, d), _clamp(e, d)
        if isinstance(start, int) and isinstance(end, int) and end < start:
            end = start
        if start == 0 and (end is None or end == d):
            continue
        out = imp.g.slice(out, ax, dim_text(start), None if end is None else dim_text(end))
    return out


def _broadcast(a: List[DimLike], b: List[DimLike]) -> List[DimLike]:
    r = max(len(a), len(b))
    a = [1] * (r - len(a)) + list(a)
    b = [1] * (r - len(b)) + list(b)
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise rlx.ShapeError(f"Expand: shapes {a} and {b} do not broadcast")
    return out


@op("Expand")
def _expand(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    target = _broadcast(imp.shape(x), imp.ints(node.input[1], "Expand shape"))
    if foldable(x) and all(isinstance(d, int) for d in target):
        imp.reserve(target, x.arr.itemsize, "the result")
        return Known(np.array(np.broadcast_to(x.arr, target)), x.dtype)
    if not isinstance(x, Known) and imp.shape(x) == target:
        return x
    return imp.filled(target, imp.rt(x))


def _range_len(imp: Importer, vals: List[Any]) -> List[Any]:
    """Range's scalar operands, after checking them and the length against the budget."""
    for v, what in zip(vals, ("start", "limit", "delta")):
        if v.arr.size != 1:
            raise rlx.ShapeError(f"Range {what} must be a scalar, got shape {list(v.arr.shape)}")
    s, l, d = (v.arr.reshape(()) for v in vals)
    if d == 0:
        raise rlx.ShapeError("Range delta is 0: the length is undefined")
    if not all(np.isfinite(x) for x in (s, l, d)):
        raise rlx.ShapeError(f"Range({s}, {l}, {d}) has a non-finite operand")
    n = max(math.ceil((l.item() - s.item()) / d.item()), 0) if vals[0].dtype.kind == "f" else max(-(-(int(l) - int(s)) // int(d)), 0)
    imp.reserve([n], vals[0].arr.itemsize, "the result")
    return [s, l, d]


@op("Range")
def _range(imp: Importer, node: Any) -> Any:
    vals = [imp.get(i) for i in node.input]
    if foldable(*vals) and not any(v.symbolic for v in vals):
        s, l, d = _range_len(imp, vals)
        return Known(np.arange(s, l, d, dtype=vals[0].dtype), vals[0].dtype)
    if all(isinstance(v, Known) and not v.symbolic for v in vals):
        s, l, d = _range_len(imp, vals)
        return Known(np.arange(s, l, d).astype(vals[0].dtype), vals[0].dtype)
    return _symbolic_range(imp, vals)


def _symbolic_range(imp: Importer, vals: List[Any]) -> Any:
    """``Range(start, limit, 1)`` with a symbolic limit (``seq``, as exporters emit for
    position ids): a constant ``arange`` up to the limit's upper bound, sliced at run time."""
    known = all(isinstance(v, Known) for v in vals)
    start, limit, delta = (v.arr.reshape(()).item() for v in vals) if known else (None, None, None)
    if not (isinstance(start, (int, np.integer)) and isinstance(delta, (int, np.integer)) and delta == 1 and isinstance(limit, Poly)):
        raise rlx.UnsupportedOpError("Range with a size known only at run time, other than Range(int, symbol, 1)")
    syms = limit.symbols()
    offset = (limit - Poly.sym(next(iter(syms)))) if len(syms) == 1 else None
    if not (isinstance(offset, (int, np.integer)) and limit.terms.get((next(iter(syms)),)) == 1):
        raise rlx.UnsupportedOpError(f"Range up to {limit}: only a symbol plus a constant is supported")
    upper = imp.g.dims[next(iter(syms))][1] + int(offset)
    imp.reserve([max(upper - int(start), 0)], vals[0].dtype.itemsize, f"the table up to {limit}'s upper bound")
    table = imp.g.constant(np.arange(int(start), max(upper, int(start)), dtype=vals[0].dtype))
    return imp.g.slice(table, 0, 0, dim_text(limit - int(start)))


def _known_data(x: Any) -> bool:
    """Sliced or copied with numpy at import: a shape value, or a constant that is not an
    initializer (an initializer stays a param, sliced at run time)."""
    return isinstance(x, Known) and (x.init is None or foldable(x))


def _split_sizes(imp: Importer, node: Any, d: DimLike) -> List[DimLike]:
    """The chunk sizes of a Split along an axis of size ``d``: the ``split`` attribute (opset
    < 13) or input (13+), else ``num_outputs`` chunks of ceil(d / n) with a smaller last one
    (opset 18), else as many equal chunks as the node has outputs."""
    a = attrs(node)
    n = len(node.output)
    if "split" in a:
        sizes: List[DimLike] = [int(s) for s in a["split"]]
    elif len(node.input) > 1 and node.input[1]:
        sizes = imp.ints(node.input[1], "Split split")
    elif "num_outputs" in a:
        k = int(a["num_outputs"])
        if k != n:
            raise rlx.ModelFormatError(f"Split num_outputs {k} but the node has {n} output(s)")
        if isinstance(d, Poly):
            try:
                return [d.exact_div(k)] * k
            except ValueError:
                raise rlx.UnsupportedOpError(f"Split of a dim {d} into {k} uneven chunks (their sizes are known only at run time)") from None
        chunk = -(-d // k)
        last = d - chunk * (k - 1)
        if last < 0:
            raise rlx.ShapeError(f"Split of a dim of size {d} into {k} chunks of {chunk}: the last chunk would be {last}")
        return [chunk] * (k - 1) + [last]
    else:
        if isinstance(d, int) and d % n:
            raise rlx.ShapeError(f"Split of a dim of size {d} into {n} equal chunks: {n} does not divide it")
        try:
            return [Poly.of(d).exact_div(n)] * n
        except ValueError:
            raise rlx.UnsupportedOpError(f"Split of a dim {d} into {n} equal chunks (their size is known only at run time)") from None
    if len(sizes) != n:
        raise rlx.ShapeError(f"Split split {[str(s) for s in sizes]} has {len(sizes)} entries for {n} output(s)")
    if any(isinstance(s, int) and s < 0 for s in sizes):
        raise rlx.ShapeError(f"Split split {sizes} has a negative entry")
    total: DimLike = 0
    for s in sizes:
        total = total + s
    if total != d:
        raise rlx.ShapeError(f"Split split {[str(s) for s in sizes]} sums to {total}, not the axis size {d}")
    return sizes


@op("Split")
def _split(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    axis = norm_axis(attrs(node).get("axis", 0), len(dims), "Split")
    sizes = _split_sizes(imp, node, dims[axis])
    outs, start = [], 0
    for s in sizes:
        end = start + s
        if _known_data(x):
            idx = [slice(None)] * len(dims)
            idx[axis] = slice(int(start), int(end))
            outs.append(Known(x.arr[tuple(idx)], x.dtype))
        elif start == 0 and end == dims[axis]:
            outs.append(x)
        else:
            outs.append(imp.g.slice(imp.rt(x), axis, dim_text(start), dim_text(end)))
        start = end
    return outs


@op("Tile")
def _tile(imp: Importer, node: Any) -> Any:
    """Tile with repeats known at import: at run time, ``r`` copies concatenated along each
    axis repeated ``r`` times (a slice to size 0 for ``r == 0``)."""
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    reps = imp.ints(node.input[1], "Tile repeats")
    if len(reps) != len(dims):
        raise rlx.ShapeError(f"Tile repeats {[str(r) for r in reps]} has {len(reps)} entries for an input of rank {len(dims)}")
    if any(isinstance(r, Poly) for r in reps):
        raise rlx.UnsupportedOpError(f"Tile repeats {[str(r) for r in reps]} depend on a run-time dim")
    if any(r < 0 for r in reps):
        raise rlx.ShapeError(f"Tile repeats {reps} has a negative entry")
    if _known_data(x):
        imp.reserve([d * r for d, r in zip(dims, reps)], x.arr.itemsize, "the result")
        return known(np.tile(x.arr, [int(r) for r in reps]), x.dtype)
    out = imp.rt(x)
    for ax, r in enumerate(reps):
        if r == 0:
            out = imp.g.slice(out, ax, 0, 0)
        elif r > 1:
            out = imp.g.concat([out] * int(r), ax)
    return out
