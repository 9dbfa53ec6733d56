"""ONNX control flow: If, Loop and Scan, imported into rlx's static dataflow graph by selecting
or unrolling at import. A subgraph (a branch, a body) is imported with :func:`run_graph`: its
inputs bound to values of the outer graph, its nodes walked by the importer's own node walk
(every handler, the dtype bookkeeping), the names of the outer graphs visible, and the names
it defines restored afterwards (an unrolled body defines them once a step).

- If: a condition known at import (a constant, or folded from shapes) imports the chosen branch
  only. A run-time condition imports both branches and selects each output with ``where``;
  the branches must then give the same shapes and types (else an UnsupportedOpError).
- Loop: unrolled at import. The trip count must be known at import (or absent with a condition
  that becomes false at import). A condition computed at run time is exact without scan
  outputs: every later step's carried values are kept only while the condition holds (a
  ``where`` per value), up to the known trip count. Scan outputs (stacked along a new first
  axis) need a number of steps known at import.
- Scan: unrolled over the scan axis, whose length must be static; opset 8's batch axis is a
  loop over the batch (``sequence_lens`` absent or all full length).

Each node unrolls at most ``MAX_STEPS`` body copies: more is an UnsupportedOpError naming the
node, as is every data-dependent case (a run-time trip count, a symbolic scan length).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

import rlx
from rlx._onnx_helpers import norm_axis, run_graph
from rlx._onnx_import import Importer, Known
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import dim_text

#: The most body copies one Loop or Scan node unrolls into at import.
MAX_STEPS = 4096


def _graph_attr(node: Any, name: str) -> Any:
    for a in node.attribute:
        if a.name == name and a.HasField("g"):
            return a.g
    raise rlx.ModelFormatError(f"{node.op_type} has no graph attribute {name!r}")


def _known_bool(v: Any) -> Optional[bool]:
    """The truth of a one-element condition known at import, else None (a run-time value)."""
    if not isinstance(v, Known):
        return None
    arr = np.asarray(v.arr)
    if arr.size != 1 or v.symbolic:
        raise rlx.ShapeError(f"a condition must have one element, got shape {list(arr.shape)}")
    return bool(arr.reshape(-1)[0])


def _scalar(imp: Importer, v: Any) -> Any:
    """A run-time condition as a rank-0 bool value."""
    x = imp.rt(v)
    dims = imp.shape(x)
    if any(d != 1 for d in dims):
        raise rlx.ShapeError(f"a condition must have one element, got shape {[dim_text(d) for d in dims]}")
    if dims:
        x = imp.g.reshape(x, ())
    if np.dtype(x.dtype) != np.bool_:
        x = imp.g.ne(x, imp.g.constant(np.zeros((), np.dtype(x.dtype))))
    return x


def _select(imp: Importer, cond: Any, a: Any, b: Any, what: str) -> Any:
    """``where(cond, a, b)`` for two values of the same shape and type."""
    sa, sb = imp.shape(a), imp.shape(b)
    if [dim_text(d) for d in sa] != [dim_text(d) for d in sb] or imp.dtype(a) != imp.dtype(b):
        raise rlx.UnsupportedOpError(
            f"{what}: the two values have shapes {[dim_text(d) for d in sa]} ({imp.dtype(a)}) and "
            f"{[dim_text(d) for d in sb]} ({imp.dtype(b)}); rlx selects between them at run time only when "
            "shapes and types agree (the condition must be known at import otherwise)")
    if a is b:
        return a
    return imp.g.where(cond, imp.rt(a), imp.rt(b))


def _take(imp: Importer, v: Any, axis: int, t: int) -> Any:
    """Index ``t`` of ``axis`` of ``v``, the axis removed."""
    if isinstance(v, Known):
        return Known(np.take(v.arr, t, axis=axis), v.dtype)
    dims = imp.shape(v)
    s = imp.g.slice(v, axis, t, t + 1)
    return imp.g.reshape(s, tuple(dim_text(d) for i, d in enumerate(dims) if i != axis))


def _stack(imp: Importer, vals: Sequence[Any], axis: int, what: str) -> Any:
    """The values (of one shape) stacked along a new ``axis``."""
    shapes = {tuple(dim_text(d) for d in imp.shape(v)) for v in vals}
    if len(shapes) != 1:
        raise rlx.ShapeError(f"{what}: the steps give shapes {sorted(list(s) for s in shapes)}; they must agree")
    if all(isinstance(v, Known) and not v.symbolic for v in vals):
        return Known(np.stack([np.asarray(v.arr) for v in vals], axis=axis), vals[0].dtype)
    (shape,) = shapes
    if not 0 <= axis <= len(shape):
        raise rlx.ShapeError(f"{what}: axis {axis} out of range for rank {len(shape) + 1}")
    new = shape[:axis] + (1,) + shape[axis:]
    parts = [imp.g.reshape(imp.rt(v), new) for v in vals]
    return parts[0] if len(parts) == 1 else imp.g.concat(parts, axis)


def _too_many(n: Any, what: str) -> rlx.UnsupportedOpError:
    return rlx.UnsupportedOpError(
        f"{what} unrolls into {n} body copies, over the limit of {MAX_STEPS} "
        "(rlx unrolls control flow at import)")


# -- If --------------------------------------------------------------------------------------


@op("If")
def _if(imp: Importer, node: Any) -> Any:
    then_g, else_g = _graph_attr(node, "then_branch"), _graph_attr(node, "else_branch")
    cond = imp.get(node.input[0])
    taken = _known_bool(cond)
    if taken is not None:
        return run_graph(imp, then_g if taken else else_g, [], "then_branch" if taken else "else_branch")
    c = _scalar(imp, cond)
    a = run_graph(imp, then_g, [], "then_branch")
    b = run_graph(imp, else_g, [], "else_branch")
    if len(a) != len(b):
        raise rlx.ModelFormatError(f"then_branch gives {len(a)} output(s), else_branch {len(b)}")
    return [_select(imp, c, x, y, f"output #{i} of the branches (condition computed at run time)")
            for i, (x, y) in enumerate(zip(a, b))]


# -- Loop ------------------------------------------------------------------------------------


@op("Loop")
def _loop(imp: Importer, node: Any) -> Any:
    body = _graph_attr(node, "body")
    ins = list(node.input)
    trip = ins[0] if ins and ins[0] else ""
    cond_name = ins[1] if len(ins) > 1 and ins[1] else ""
    carried = [imp.get(n) for n in ins[2:]]
    n_scan = len(body.output) - 1 - len(carried)
    if n_scan < 0:
        raise rlx.ModelFormatError(
            f"the body gives {len(body.output)} output(s) for {len(carried)} loop-carried value(s) and the condition")
    m: Optional[int] = None
    if trip:
        tv = imp.get(trip)
        if not isinstance(tv, Known) or tv.symbolic:
            raise rlx.UnsupportedOpError(
                f"the trip count {trip!r} is computed at run time; rlx unrolls a Loop at import and needs it "
                "known at import (a constant, an initializer or a shape computation)")
        m = max(int(np.asarray(tv.arr).reshape(-1)[0]), 0)
    active: Any = True  # True, False, or a run-time bool scalar
    if cond_name:
        cv = imp.get(cond_name)
        k = _known_bool(cv)
        active = k if k is not None else _scalar(imp, cv)
    if active is not True and active is not False and (m is None or n_scan):
        raise rlx.UnsupportedOpError(
            f"the loop condition {cond_name!r} is computed at run time: the number of steps is data-dependent "
            + ("(no trip count)" if m is None else "and the loop has scan outputs"))
    scans: List[List[Any]] = [[] for _ in range(n_scan)]
    cond_in: Any = imp.get(cond_name) if cond_name else Known(np.array(True), np.bool_)
    i = 0
    while active is not False and (m is None or i < m):
        if i >= MAX_STEPS:
            raise _too_many(f"more than {MAX_STEPS}" if m is None else m, "the Loop")
        outs = run_graph(imp, body, [Known(np.array(i, np.int64), np.int64), cond_in] + carried, f"Loop body (step {i})")
        cond_out, new = outs[0], outs[1:1 + len(carried)]
        for j, s in enumerate(outs[1 + len(carried):]):
            scans[j].append(s)
        if active is True:
            carried = list(new)
        else:
            carried = [_select(imp, active, x, y, f"loop-carried value #{j} (condition computed at run time)")
                       for j, (x, y) in enumerate(zip(new, carried))]
        k = _known_bool(cond_out)
        if k is False:
            active = False
        elif k is None:
            if m is None or n_scan:
                raise rlx.UnsupportedOpError(
                    f"the body's condition is computed at run time (step {i}): the number of steps is "
                    "data-dependent " + ("(no trip count)" if m is None else "and the loop has scan outputs"))
            c = _scalar(imp, cond_out)
            active = c if active is True else imp.g.where(active, c, imp.g.constant(np.array(False)))
        cond_in = cond_out
        i += 1
    out = list(carried)
    for j, vals in enumerate(scans):
        if not vals:
            raise rlx.UnsupportedOpError(f"scan output #{j} of a Loop that runs no step is empty; rlx has no empty tensors")
        out.append(_stack(imp, vals, 0, f"scan output #{j}"))
    return out


# -- Scan ------------------------------------------------------------------------------------


def _scan_steps(imp: Importer, body: Any, states: List[Any], xs: List[Any], in_axes: List[int],
                in_dirs: List[int], n_out: int, out_axes_attr: List[int], out_dirs: List[int],
                budget: List[int]) -> List[Any]:
    """One Scan over ``xs`` (their scan axes ``in_axes``): the final states, then the stacked
    scan outputs."""
    lens = set()
    for x, a in zip(xs, in_axes):
        d = imp.shape(x)[a]
        if not isinstance(d, int):
            raise rlx.UnsupportedOpError(
                f"the scan axis {a} has the symbolic length {dim_text(d)}; rlx unrolls a Scan at import and "
                "needs a static length")
        lens.add(d)
    if len(lens) != 1:
        raise rlx.ShapeError(f"the scan inputs have lengths {sorted(lens)} along their scan axes; they must agree")
    (n,) = lens
    budget[0] += n
    if budget[0] > MAX_STEPS:
        raise _too_many(budget[0], "the Scan")
    if n == 0:
        raise rlx.UnsupportedOpError("a Scan over a length of 0 gives empty scan outputs; rlx has no empty tensors")
    ys: List[List[Any]] = [[] for _ in range(n_out)]
    for t in range(n):
        elems = [_take(imp, x, a, n - 1 - t if d else t) for x, a, d in zip(xs, in_axes, in_dirs)]
        outs = run_graph(imp, body, states + elems, f"Scan body (step {t})")
        states = list(outs[:len(states)])
        for j, y in enumerate(outs[len(states):]):
            ys[j].append(y)
    out = list(states)
    for j, vals in enumerate(ys):
        if out_dirs[j]:
            vals = vals[::-1]
        rank = len(imp.shape(vals[0])) + 1
        out.append(_stack(imp, vals, norm_axis(out_axes_attr[j], rank, f"scan_output_axes[{j}]"), f"scan output #{j}"))
    return out


@op("Scan")
def _scan(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    body = _graph_attr(node, "body")
    m = int(at["num_scan_inputs"])
    ins = list(node.input)
    opset8 = imp.opset < 9
    if opset8:
        seq_lens, ins = (ins[0] if ins else ""), ins[1:]
    if not 0 < m <= len(ins):
        raise rlx.ModelFormatError(f"num_scan_inputs {m} for {len(ins)} state and scan input(s)")
    n_state = len(ins) - m
    n_out = len(body.output) - n_state
    if n_out < 0:
        raise rlx.ModelFormatError(f"the body gives {len(body.output)} output(s) for {n_state} state(s)")
    states = [imp.get(n) for n in ins[:n_state]]
    xs = [imp.get(n) for n in ins[n_state:]]
    budget = [0]
    if not opset8:
        in_axes = [norm_axis(int(a), imp.rank(x), f"scan_input_axes[{i}]")
                   for i, (a, x) in enumerate(zip(at.get("scan_input_axes", [0] * m), xs))]
        in_dirs = [int(d) for d in at.get("scan_input_directions", [0] * m)]
        out_axes = [int(a) for a in at.get("scan_output_axes", [0] * n_out)]
        out_dirs = [int(d) for d in at.get("scan_output_directions", [0] * n_out)]
        if len(in_axes) != m or len(in_dirs) != m or len(out_axes) != n_out or len(out_dirs) != n_out:
            raise rlx.ModelFormatError("scan_input_axes / directions and scan_output_axes / directions must have one "
                                       "entry per scan input / output")
        return _scan_steps(imp, body, states, xs, in_axes, in_dirs, n_out, out_axes, out_dirs, budget)
    # Opset 8: every input and output has a batch axis 0; the scan axis is 1 (0 per sample).
    in_dirs = [int(d) for d in at.get("directions", [0] * m)]
    batch = {imp.shape(v)[0] for v in states + xs}
    if len(batch) != 1 or not isinstance(next(iter(batch)), int):
        raise rlx.UnsupportedOpError(f"the batch axes have sizes {sorted(dim_text(b) for b in batch)}; they must be one "
                                     "static size")
    (b,) = batch
    if seq_lens:
        lens = imp.values(seq_lens, "Scan sequence_lens").reshape(-1)
        full = {int(imp.shape(x)[1]) for x in xs if isinstance(imp.shape(x)[1], int)}
        if len(full) != 1 or any(int(v) != next(iter(full)) for v in lens):
            raise rlx.UnsupportedOpError(f"sequence_lens {[int(v) for v in lens]}: rlx scans full-length sequences only")
    per: List[List[Any]] = []
    for s in range(b):
        per.append(_scan_steps(imp, body, [_take(imp, v, 0, s) for v in states], [_take(imp, x, 0, s) for x in xs],
                               [0] * m, in_dirs, n_out, [0] * n_out, [0] * n_out, budget))
    return [_stack(imp, [p[j] for p in per], 0, f"output #{j}") for j in range(n_state + n_out)]
