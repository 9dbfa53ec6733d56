"""ONNX gathers and scatters on static shapes, as rlx gathers, compares and wheres.

GatherElements / GatherND / ReverseSequence flatten the data and gather once: the flat position
of every output element is import-time constants (one arange per axis, broadcast) plus the
run-time indices times their strides. A negative index counts from the end; one out of range
becomes the flat size, which rlx's gather reports as an IndexError at run time.

ScatterElements / Scatter compare the indices with an arange along the scattered axis (a one-hot
mask of |updates| x axis length) and reduce over the updates' axis. ScatterND compares the U
flat index tuples with an arange of the P = prod(data.shape[:k]) slots (a U x P mask); reduction
"none" then reads each slot's update with one gather, while add / mul / max / min reduce a
U x P x slice-size tensor (the cost of scattering without a scatter kernel). With reduction
"none", duplicate indices take the last update, as the onnx reference does. Out-of-range
scatter indices are a run-time IndexError too (a gather probes them).
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence

import numpy as np

import rlx
from rlx._onnx_helpers import norm_axis, prod_along, static_dims
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, foldable, known, op


def _c(imp: Importer, arr: Any, dt: Any = np.int64) -> Any:
    return imp.g.constant(np.ascontiguousarray(np.asarray(arr, dtype=np.dtype(dt))))


def _along(n: int, axis: int, rank: int, scale: int = 1) -> np.ndarray:
    """arange(n) * scale, shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    return (np.arange(n, dtype=np.int64) * scale).reshape([n if i == axis else 1 for i in range(rank)])


def _index64(imp: Importer, v: Any, what: str) -> Any:
    dt = imp.dtype(v)
    if dt.kind not in "iu":
        raise rlx.DTypeError(f"{what} of dtype {dt}: indices must be int32 or int64")
    x = imp.rt(v)
    return x if dt == np.int64 else imp.g.cast(x, "int64")


def _wrap(imp: Importer, idx: Any, n: int) -> Any:
    """``idx`` with negatives counted from the end, and whether it was in [-n, n)."""
    g = imp.g
    nn = _c(imp, n)
    ok = g.where(g.ge(idx, _c(imp, -n)), g.lt(idx, nn), g.lt(nn, nn))
    return g.where(g.lt(idx, _c(imp, 0)), g.add(idx, nn), idx), ok


def _and(imp: Importer, a: Any, b: Any) -> Any:
    return imp.g.where(a, b, a)


def _flat_gather(imp: Importer, data: Any, total: int, flat: Any, ok: Any) -> Any:
    """``data`` flattened and read at ``flat``; where ``ok`` is false the index is ``total``,
    which rlx's gather reports as out of range."""
    g = imp.g
    flat = g.where(ok, flat, _c(imp, total))
    return g.gather(g.reshape(imp.rt(data), (total,)), flat, 0)


def _strides(dims: Sequence[int]) -> List[int]:
    out, acc = [], 1
    for d in reversed(dims):
        out.append(acc)
        acc *= d
    return out[::-1]


def gather_along(imp: Importer, data: Any, idx: Any, axis: int, out: Sequence[int], what: str) -> Any:
    """out[p] = data[p with p[axis] replaced by idx[p]] for every position p of shape ``out``;
    ``idx`` is an int64 value broadcastable to ``out``."""
    g = imp.g
    dims = static_dims(imp, data, what)
    st, r = _strides(dims), len(dims)
    idx, ok = _wrap(imp, idx, dims[axis])
    flat = g.mul(idx, _c(imp, st[axis]))
    for d in range(r):
        if d != axis and out[d] > 1:
            flat = g.add(flat, _c(imp, _along(out[d], d, r, st[d])))
    return _flat_gather(imp, data, math.prod(dims), flat, ok)


@op("GatherElements")
def _gather_elements(imp: Importer, node: Any) -> Any:
    data, iv = imp.get(node.input[0]), imp.get(node.input[1])
    dims, ishape = imp.shape(data), imp.shape(iv)
    axis = norm_axis(int(attrs(node).get("axis", 0)), len(dims), "GatherElements")
    if len(ishape) != len(dims):
        raise rlx.ShapeError(f"GatherElements indices of rank {len(ishape)} for data of rank {len(dims)}")
    if foldable(data, iv) and not (data.symbolic or iv.symbolic):
        n, ix = dims[axis], iv.arr.astype(np.int64)
        if np.any((ix < -n) | (ix >= n)):
            raise rlx.ShapeError(f"GatherElements indices out of range for axis {axis} of size {n}")
        return known(np.take_along_axis(data.arr, np.where(ix < 0, ix + n, ix), axis), data.dtype)
    ishape = static_dims(imp, iv, "GatherElements")
    dims = static_dims(imp, data, "GatherElements")
    if any(i > d for a, (i, d) in enumerate(zip(ishape, dims)) if a != axis):
        raise rlx.ShapeError(f"GatherElements indices {ishape} larger than the data {dims} off axis {axis}")
    return gather_along(imp, data, _index64(imp, iv, "GatherElements indices"), axis, ishape, "GatherElements")


def _nd_flat(imp: Importer, iv: Any, dims: List[int], b: int, what: str) -> Any:
    """(flat slot of every index tuple in data.shape[:b + k] order, in-range mask), of shape
    indices.shape[:-1] + [1]."""
    g = imp.g
    ishape = static_dims(imp, iv, what)
    k, r = ishape[-1], len(ishape)
    if ishape[:b] != dims[:b]:
        raise rlx.ShapeError(f"{what} indices {ishape} and data {dims} differ in the {b} batch dims")
    if b + k > len(dims):
        raise rlx.ShapeError(f"{what} index tuples of {k} for data of rank {len(dims)} after {b} batch dims")
    idx = _index64(imp, iv, f"{what} indices")
    st = _strides(dims[: b + k])
    flat, ok = None, None
    for j in range(k):
        comp, okj = _wrap(imp, g.slice(idx, r - 1, j, j + 1), dims[b + j])
        term = g.mul(comp, _c(imp, st[b + j]))
        flat = term if flat is None else g.add(flat, term)
        ok = okj if ok is None else _and(imp, ok, okj)
    for d in range(b):
        bterm = _c(imp, _along(ishape[d], d, r, st[d]))
        flat = bterm if flat is None else g.add(flat, bterm)
    if flat is None:  # no batch dims and empty index tuples: the whole data, once per tuple
        flat = _c(imp, np.zeros([1] * r, np.int64))
    if ok is None:
        ok = g.eq(flat, flat)
    return flat, ok, ishape


@op("GatherND")
def _gather_nd(imp: Importer, node: Any) -> Any:
    data, iv = imp.get(node.input[0]), imp.get(node.input[1])
    b = int(attrs(node).get("batch_dims", 0))
    dims = static_dims(imp, data, "GatherND")
    flat, ok, ishape = _nd_flat(imp, iv, dims, b, "GatherND")
    k = ishape[-1]
    slots, rest = math.prod(dims[: b + k]), dims[b + k:]
    g = imp.g
    flat = g.where(ok, flat, _c(imp, slots))
    if ishape[:-1] != list(flat.shape[:-1]):  # batch-only offsets: broadcast to every tuple
        flat = g.add(flat, _c(imp, np.zeros(ishape[:-1] + [1], np.int64)))
    flat = g.reshape(flat, tuple(ishape[:-1]))
    src = g.reshape(imp.rt(data), (slots,) + tuple(rest))
    return g.gather(src, flat, 0)


@op("ReverseSequence")
def _reverse_sequence(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x, lens = imp.get(node.input[0]), imp.get(node.input[1])
    dims = static_dims(imp, x, "ReverseSequence")
    r = len(dims)
    if r < 2:
        raise rlx.ShapeError(f"ReverseSequence input of rank {r}, expected at least 2")
    ta, ba = norm_axis(int(at.get("time_axis", 0)), r, "ReverseSequence"), norm_axis(int(at.get("batch_axis", 1)), r, "ReverseSequence")
    if ta == ba:
        raise rlx.ShapeError(f"ReverseSequence time_axis and batch_axis are both {ta}")
    if imp.shape(lens) != [dims[ba]]:
        raise rlx.ShapeError(f"ReverseSequence sequence_lens of shape {imp.shape(lens)}, expected [{dims[ba]}]")
    g = imp.g
    n = g.reshape(_index64(imp, lens, "ReverseSequence sequence_lens"), tuple(dims[ba] if i == ba else 1 for i in range(r)))
    t = _c(imp, _along(dims[ta], ta, r))
    # Time step t reads n - 1 - t inside the sequence, t itself after it.
    src = g.where(g.lt(t, n), g.sub(g.sub(n, _c(imp, 1)), t), t)
    return gather_along(imp, x, src, ta, dims, "ReverseSequence")


# -- scatters --------------------------------------------------------------------------------

_REDUCTIONS = ("none", "add", "mul", "max", "min")


def _probe(imp: Importer, idx: Any, ok: Any) -> Any:
    """``idx`` plus a gather that is zero where ``ok`` and out of range elsewhere: out-of-range
    scatter indices raise at run time instead of being dropped."""
    g = imp.g
    bad = g.where(ok, _c(imp, 0), _c(imp, 1))
    return g.add(idx, g.gather(_c(imp, np.zeros(1, np.int64)), bad, 0))


def _fill(imp: Importer, dt: np.dtype, kind: str) -> Any:
    """The neutral element of a reduction over masked-out updates."""
    if kind == "sum":  # -0.0 + x is x for every float x, signed zeros included
        v = -0.0 if dt.kind == "f" else 0
    elif kind == "prod":
        v = 1
    else:  # "low": below every value
        v = -np.inf if dt.kind == "f" else np.iinfo(dt).min
    return _c(imp, v, dt)


def _combine(imp: Importer, red: str, mask: Any, upd: Any, axis: int, old: Any, last: Any) -> Any:
    """``old`` updated by the ``upd`` entries ``mask`` selects along ``axis`` (reduced away);
    ``last`` numbers the entries along ``axis`` (reduction "none" keeps the last one)."""
    g = imp.g
    dt = np.dtype(upd.dtype)

    def masked(v: Any, kind: str) -> Any:
        return g.where(mask, v, _fill(imp, dt, kind))

    if red == "add":
        return g.add(old, g.reduce_sum(masked(upd, "sum"), [axis], keep_dim=False))
    if red == "mul":
        p = prod_along(imp, masked(upd, "prod"), axis)
        return g.mul(old, g.reshape(p, tuple(old.shape)))
    hit = g.gt(g.reduce_max(g.cast(mask, "int32"), [axis], keep_dim=False), _c(imp, 0, np.int32))
    if red == "none":
        pos = g.reduce_max(g.where(mask, last, _c(imp, -1)), [axis], keep_dim=True)
        one = _and(imp, mask, g.eq(last, pos))
        val = g.reduce_sum(g.where(one, upd, _fill(imp, dt, "sum")), [axis], keep_dim=False)
        return g.where(hit, val, old)
    if red == "max":
        return g.where(hit, g.max(old, g.reduce_max(masked(upd, "low"), [axis], keep_dim=False)), old)
    # min(x) = ~max(~x) with ~x = -1 - x for ints (no overflow), -max(-x) for floats
    flip = (lambda v: g.neg(v)) if dt.kind == "f" else (lambda v: g.sub(_c(imp, -1, dt), v))
    m = flip(g.reduce_max(masked(flip(upd), "low"), [axis], keep_dim=False))
    return g.where(hit, g.min(old, m), old)


def _reduction(node: Any) -> str:
    red = attrs(node).get("reduction", "none")
    if red not in _REDUCTIONS:
        raise rlx.ModelFormatError(f"{node.op_type} reduction {red!r} (none, add, mul, max, min)")
    return red


def _scatter_inputs(imp: Importer, node: Any) -> Any:
    data, iv, uv = (imp.get(i) for i in node.input[:3])
    if imp.dtype(data) != imp.dtype(uv):
        raise rlx.DTypeError(f"{node.op_type} data of {imp.dtype(data)} and updates of {imp.dtype(uv)}")
    if imp.dtype(data) == np.bool_ and _reduction(node) != "none":
        raise rlx.UnsupportedOpError(f"{node.op_type} reduction on bool data")
    return data, iv, uv


def _embed(imp: Importer, block: Any, data: Any, dims: List[int], sub: List[int]) -> Any:
    """``data`` with its leading corner of shape ``sub`` replaced by ``block``."""
    g = imp.g
    full = imp.rt(data)
    short = [d for d in range(len(dims)) if sub[d] < dims[d]]
    # parents[i]: data cut to sub on the short axes before the i-th one.
    parents = [full]
    for d in short[:-1]:
        parents.append(g.slice(parents[-1], d, 0, sub[d]))
    for i in range(len(short) - 1, -1, -1):
        d = short[i]
        block = g.concat([block, g.slice(parents[i], d, sub[d], dims[d])], d)
    return block


@op("ScatterElements", "Scatter")
def _scatter_elements(imp: Importer, node: Any) -> Any:
    data, iv, uv = _scatter_inputs(imp, node)
    red = _reduction(node)
    dims = static_dims(imp, data, node.op_type)
    r = len(dims)
    axis = norm_axis(int(attrs(node).get("axis", 0)), r, node.op_type)
    ishape = static_dims(imp, iv, node.op_type)
    if ishape != static_dims(imp, uv, node.op_type) or len(ishape) != r:
        raise rlx.ShapeError(f"{node.op_type} indices {ishape} and updates {imp.shape(uv)} must have one shape, of rank {r}")
    if any(i > d for a, (i, d) in enumerate(zip(ishape, dims)) if a != axis):
        raise rlx.ShapeError(f"{node.op_type} indices {ishape} larger than the data {dims} off axis {axis}")
    g, n = imp.g, dims[axis]
    idx, ok = _wrap(imp, _index64(imp, iv, f"{node.op_type} indices"), n)
    idx = _probe(imp, idx, ok)
    # One-hot along a new axis right after ``axis``: mask[.., j, p, ..] = idx[.., j, ..] == p.
    ex = [d for d in ishape]
    ex.insert(axis + 1, 1)
    mask = g.eq(g.reshape(idx, tuple(ex)), _c(imp, _along(n, axis + 1, r + 1)))
    upd = g.reshape(imp.rt(uv), tuple(ex))
    sub = [n if a == axis else ishape[a] for a in range(r)]
    old = imp.rt(data)
    for a in range(r):
        if sub[a] < dims[a]:
            old = g.slice(old, a, 0, sub[a])
    last = _c(imp, _along(ishape[axis], axis, r + 1))
    block = _combine(imp, red, mask, upd, axis, old, last)
    return _embed(imp, block, data, dims, sub) if sub != dims else block


@op("ScatterND")
def _scatter_nd(imp: Importer, node: Any) -> Any:
    data, iv, uv = _scatter_inputs(imp, node)
    red = _reduction(node)
    dims = static_dims(imp, data, "ScatterND")
    flat, ok, ishape = _nd_flat(imp, iv, dims, 0, "ScatterND")
    k = ishape[-1]
    want = ishape[:-1] + dims[k:]
    if static_dims(imp, uv, "ScatterND") != want:
        raise rlx.ShapeError(f"ScatterND updates of shape {imp.shape(uv)}, expected {want}")
    g = imp.g
    u, p, rest = math.prod(ishape[:-1]), math.prod(dims[:k]), math.prod(dims[k:])
    flat = g.reshape(_probe(imp, flat, ok), (u, 1))
    mask = g.eq(flat, _c(imp, np.arange(p).reshape(1, p)))
    old = g.reshape(imp.rt(data), (p, rest))
    if red == "none":
        # The last update of each slot, read with one gather: a [u, p] mask, no [u, p, rest].
        pos = g.reduce_max(g.where(mask, _c(imp, np.arange(u).reshape(u, 1)), _c(imp, -1)), [0], keep_dim=False)
        val = g.gather(g.reshape(imp.rt(uv), (u, rest)), g.max(pos, _c(imp, 0)), 0)
        out = g.where(g.reshape(g.ge(pos, _c(imp, 0)), (p, 1)), val, old)
    else:
        upd = g.reshape(imp.rt(uv), (u, 1, rest))
        out = _combine(imp, red, g.reshape(mask, (u, p, 1)), upd, 0, old, None)
    return g.reshape(out, tuple(dims))


@op("TopK")
def _top_k(imp: Importer, node: Any) -> Any:
    """Values and int64 indices of the k largest (``largest=1``) or smallest elements along
    ``axis``, in order; equal elements by index, a NaN above every number. The indices come from
    rlx's ``top_k``, the values are gathered at them. k is read at import (opset 1: an
    attribute; later: a constant input)."""
    at = attrs(node)
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    if len(node.input) > 1 and node.input[1]:
        ks = imp.ints(node.input[1], "TopK k")
        if len(ks) != 1 or not isinstance(ks[0], int):
            raise rlx.ShapeError(f"TopK k must be one integer known at import, got {ks}")
        k = ks[0]
    else:
        k = int(at.get("k", -1))
    axis = norm_axis(int(at.get("axis", -1)), len(dims), "TopK")
    largest = bool(at.get("largest", 1))
    if k < 0:
        raise rlx.ShapeError(f"TopK k = {k} is negative")
    if isinstance(dims[axis], int) and k > dims[axis]:
        raise rlx.ShapeError(f"TopK k = {k} is larger than axis {axis} of size {dims[axis]}")
    idx = imp.g.top_k(imp.rt(x), k, axis, largest)
    out = list(static_dims(imp, x, "TopK"))
    out[axis] = k
    return [gather_along(imp, x, idx, axis, out, "TopK"), idx]
