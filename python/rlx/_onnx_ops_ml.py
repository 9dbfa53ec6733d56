"""Ops of the ``ai.onnx.ml`` domain that are tensor math: Binarizer (a threshold compare),
ArrayFeatureExtractor (a gather along the last axis), LabelEncoder (numeric keys and values:
a compare against every key, an argmax, a gather) and TreeEnsemble (every node's decision at
once, each leaf reached when its path's decisions all hold, the leaves' weights summed per
target by a matmul), composed from rlx graph ops.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

import rlx
from rlx import _onnx_dtypes
from rlx._onnx_helpers import dims_prod
from rlx._onnx_import import RLX_NP as RLX_NAME, Importer
from rlx._onnx_registry import attrs, op, tensor_array
from rlx._onnx_sym import dim_text

_DOMAIN = "ai.onnx.ml"


@op(f"{_DOMAIN}.Binarizer")
def _binarizer(imp: Importer, node: Any) -> Any:
    """1 where x > threshold, else 0, in x's type."""
    x = imp.rt(imp.get(node.input[0]))
    dt = np.dtype(x.dtype)
    if dt.kind not in "fi":
        raise rlx.DTypeError(f"Binarizer of {dt}: the input must be a float or integer tensor")
    threshold = float(attrs(node).get("threshold", 0.0))
    g = imp.g
    if dt.kind == "f":
        above = g.gt(x, g.constant(np.array(threshold, dt)))
    elif np.isnan(threshold):
        above = g.ne(x, x)  # nothing is above NaN
    else:
        # An integer is above the threshold when it is above its floor: compared exactly, the
        # floor clamped into the type's range (below it, every value is above).
        info = np.iinfo(dt)
        bound = int(min(max(np.floor(threshold), info.min - 1), info.max))
        above = g.ge(x, g.constant(np.array(info.min, dt))) if bound < info.min else g.gt(x, g.constant(np.array(bound, dt)))
    return g.where(above, g.constant(np.array(1, dt)), g.constant(np.array(0, dt)))


@op(f"{_DOMAIN}.ArrayFeatureExtractor")
def _array_feature_extractor(imp: Importer, node: Any) -> Any:
    """``x[..., indices.flat]``: the last axis gathered at every index; a 1-D ``x`` gives one
    row, as onnxruntime does. A negative index counts from the end."""
    x, idx = imp.get(node.input[0]), imp.get(node.input[1])
    if imp.dtype(idx).kind not in "iu":
        raise rlx.DTypeError(f"ArrayFeatureExtractor indices of {imp.dtype(idx)}: they must be int64")
    dims = imp.shape(x)
    if not dims:
        raise rlx.ShapeError("ArrayFeatureExtractor of a scalar: the input needs a last axis")
    g = imp.g
    n = dims_prod(imp.shape(idx))
    flat = g.reshape(imp.rt(idx), (dim_text(n),))
    if np.dtype(flat.dtype) != np.int64:
        flat = g.cast(flat, "int64")
    out = g.gather(imp.rt(x), flat, len(dims) - 1)
    if len(dims) == 1:
        out = g.reshape(out, (1, dim_text(n)))
    return out


# -- LabelEncoder ----------------------------------------------------------------------------


def _attr_array(at: dict, names: Sequence[str], what: str) -> Optional[np.ndarray]:
    """The first of the attributes ``names`` that is set, as numpy (None if none is)."""
    for n in names:
        v = at.get(n)
        if v is None or (isinstance(v, (list, tuple)) and not v):
            continue
        if hasattr(v, "data_type"):
            return tensor_array(v, f"{what} {n}")
        return np.asarray(v)
    return None


@op(f"{_DOMAIN}.LabelEncoder")
def _label_encoder(imp: Importer, node: Any) -> Any:
    """Each element mapped through the keys -> values table, the default where no key matches
    (numeric keys and values: rlx has no strings). The matching key is found by a compare
    against every key and an argmax; a repeated key maps to its last value, as the reference's
    dict does."""
    at = attrs(node)
    if any(at.get(n) for n in ("keys_strings", "values_strings")) or "default_string" in at:
        raise rlx.DTypeError("LabelEncoder with string keys or values: rlx has no string tensors")
    keys = _attr_array(at, ("keys_floats", "keys_int64s", "keys_tensor"), "LabelEncoder")
    values = _attr_array(at, ("values_floats", "values_int64s", "values_tensor"), "LabelEncoder")
    if keys is None or values is None or keys.size != values.size or keys.size == 0:
        raise rlx.ModelFormatError("LabelEncoder needs numeric keys and values of one non-zero length")
    if keys.dtype.kind not in "iuf" or values.dtype.kind not in "iufb":
        raise rlx.DTypeError(f"LabelEncoder keys of {keys.dtype}, values of {values.dtype}: rlx maps numbers only")
    if at.get("values_tensor") is not None:
        dflt = _attr_array(at, ("default_tensor",), "LabelEncoder")
        default = dflt.reshape(-1)[0] if dflt is not None else np.zeros((), values.dtype)
    elif at.get("values_floats"):
        values, default = values.astype(np.float32), np.float32(at.get("default_float", -0.0))
    else:
        values, default = values.astype(np.int64), np.int64(at.get("default_int64", -1))
    out_dt = np.dtype(_onnx_dtypes.computed(values.dtype) or values.dtype)
    table: dict = {}
    for k, v in zip(keys.reshape(-1).tolist(), values.reshape(-1).tolist()):
        table[k] = v  # the last value of a repeated key, as a dict keeps it
    x = imp.rt(imp.get(node.input[0]))
    xdt = np.dtype(x.dtype)
    if xdt.kind not in "iuf":
        raise rlx.DTypeError(f"LabelEncoder of {xdt}: rlx maps numbers only")
    g = imp.g
    if xdt.kind != "f":
        # An integer never equals a fractional key: those are dropped, the rest compared as int64.
        table = {k: v for k, v in table.items() if float(k).is_integer()}
        if not table:
            return imp.filled(imp.shape(x), g.constant(np.array(default).astype(out_dt)))
    kdt = np.dtype(np.float32 if xdt.kind == "f" else np.int64)
    kv = np.array([float(k) if kdt.kind == "f" else int(k) for k in table], dtype=kdt)
    xc = x if np.dtype(x.dtype) == kdt else g.cast(x, RLX_NAME[kdt])
    dims = tuple(dim_text(d) for d in imp.shape(x))
    hit = g.eq(g.reshape(xc, dims + (1,)), g.constant(np.ascontiguousarray(kv)))
    score = g.cast(hit, "float32")
    idx = g.argmax(score, len(dims), keep_dim=False)
    vals = np.ascontiguousarray(np.array(list(table.values())).astype(out_dt))
    picked = g.gather(g.constant(vals), idx, 0)
    found = g.gt(g.reduce_max(score, [len(dims)], keep_dim=False), g.constant(np.array(0.0, np.float32)))
    return g.where(found, picked, g.constant(np.array(default).astype(out_dt)))


# -- TreeEnsemble ----------------------------------------------------------------------------

#: The largest node x path matrix (float32 elements) TreeEnsemble builds at import.
MAX_TREE_MATRIX = 1 << 26

_MODES = {0: "le", 1: "lt", 2: "ge", 3: "gt", 4: "eq", 5: "ne"}
_MEMBER = 6


def _tree_paths(roots: Sequence[int], true_ids: Sequence[int], false_ids: Sequence[int], true_leaf: Sequence[int],
                false_leaf: Sequence[int], n_nodes: int) -> List[tuple]:
    """(leaf index, [(node, took the true branch)]) of every root-to-leaf path, tree by tree."""
    paths = []
    for root in roots:
        if true_leaf[root] and false_leaf[root] and true_ids[root] == false_ids[root]:
            paths.append((int(true_ids[root]), []))  # a tree that is one leaf
            continue
        stack = [(int(root), [])]
        while stack:
            node, path = stack.pop()
            if not 0 <= node < n_nodes:
                raise rlx.ModelFormatError(f"TreeEnsemble node id {node} out of range (0 to {n_nodes - 1})")
            if len(path) > n_nodes:
                raise rlx.ModelFormatError("TreeEnsemble nodes form a cycle")
            for nxt, leaf, branch in ((true_ids[node], true_leaf[node], True), (false_ids[node], false_leaf[node], False)):
                step = path + [(node, branch)]
                if leaf:
                    paths.append((int(nxt), step))
                else:
                    stack.append((int(nxt), step))
    return paths


@op(f"{_DOMAIN}.TreeEnsemble")
def _tree_ensemble(imp: Importer, node: Any) -> Any:
    """Every node's decision on its feature at once ([N, nodes]); a path's leaf is reached when
    the decisions along it (true, or false) all hold: their count, a matmul with a +1 / -1
    node x path matrix, equals the path's length. SUM and AVERAGE weigh the reached leaves by a
    matmul; MIN and MAX reduce per target. The reference applies no post_transform; rlx imports
    NONE only."""
    at = attrs(node)
    if int(at.get("post_transform", 0)) != 0:
        raise rlx.UnsupportedOpError(f"TreeEnsemble post_transform {at['post_transform']}: rlx imports NONE (0) only")
    agg = int(at.get("aggregate_function", 1))
    if agg not in (0, 1, 2, 3):
        raise rlx.ModelFormatError(f"TreeEnsemble aggregate_function {agg} (0 to 3)")

    def arr(name: str, required: bool = True) -> Optional[np.ndarray]:
        v = _attr_array(at, (name,), "TreeEnsemble")
        if v is None and required:
            raise rlx.ModelFormatError(f"TreeEnsemble needs {name}")
        return None if v is None else v.reshape(-1)

    splits, feats, modes = arr("nodes_splits"), arr("nodes_featureids").astype(np.int64), arr("nodes_modes").astype(np.int64)
    t_ids, f_ids = arr("nodes_truenodeids").astype(np.int64), arr("nodes_falsenodeids").astype(np.int64)
    t_leaf, f_leaf = arr("nodes_trueleafs").astype(np.int64), arr("nodes_falseleafs").astype(np.int64)
    l_targets, l_weights = arr("leaf_targetids").astype(np.int64), arr("leaf_weights").astype(np.float64)
    roots = arr("tree_roots").astype(np.int64)
    missing = arr("nodes_missing_value_tracks_true", False)
    members = arr("membership_values", False)
    n_targets = int(at.get("n_targets", 0))
    n = len(splits)
    if n == 0 or len(roots) == 0:
        raise rlx.ModelFormatError("TreeEnsemble needs at least one node and one tree")
    if any(len(a) != n for a in (feats, modes, t_ids, f_ids, t_leaf, f_leaf)) or len(l_targets) != len(l_weights):
        raise rlx.ModelFormatError("TreeEnsemble node attributes (and leaf attributes) must have one length")
    if n_targets < 1 or np.any(l_targets < 0) or np.any(l_targets >= n_targets):
        raise rlx.ModelFormatError(f"TreeEnsemble leaf_targetids must lie in [0, n_targets = {n_targets})")
    bad = sorted(set(modes.tolist()) - set(_MODES) - {_MEMBER})
    if bad:
        raise rlx.ModelFormatError(f"TreeEnsemble nodes_modes {bad} (0 to 6)")
    # The set of each membership node: the values up to the next NaN, in node order.
    sets: dict = {}
    if np.any(modes == _MEMBER):
        if members is None:
            raise rlx.ModelFormatError("TreeEnsemble set membership nodes need membership_values")
        groups, cur = [], []
        for v in members.tolist():
            if np.isnan(v):
                groups.append(cur)
                cur = []
            else:
                cur.append(v)
        idx = [i for i in range(n) if modes[i] == _MEMBER]
        if len(groups) != len(idx):
            raise rlx.ModelFormatError("TreeEnsemble membership_values must end one NaN-terminated set per membership node")
        sets = dict(zip(idx, groups))
    paths = _tree_paths(roots.tolist(), t_ids.tolist(), f_ids.tolist(), t_leaf.tolist(), f_leaf.tolist(), n)
    if any(not 0 <= leaf < len(l_weights) for leaf, _ in paths):
        raise rlx.ModelFormatError(f"TreeEnsemble leaf id out of range (0 to {len(l_weights) - 1})")
    n_paths = len(paths)
    if max(n, 1) * n_paths > MAX_TREE_MATRIX:
        raise rlx.UnsupportedOpError(f"TreeEnsemble of {n} nodes and {n_paths} leaf paths: over the "
                                     f"{MAX_TREE_MATRIX}-element node x path matrix rlx builds at import")
    xv = imp.get(node.input[0])
    dims = imp.shape(xv)
    if len(dims) != 2 or not isinstance(dims[1], int):
        raise rlx.ShapeError(f"TreeEnsemble X of shape {[dim_text(d) for d in dims]}: expected [N, features] "
                             "with static features")
    if n and (feats.min() < 0 or feats.max() >= dims[1]):
        raise rlx.ShapeError(f"TreeEnsemble feature ids {sorted(set(feats.tolist()))} for {dims[1]} features")
    g = imp.g
    x = imp.rt(xv)
    if np.dtype(x.dtype) != np.float32:
        x = g.cast(x, "float32")
    f32 = lambda a: g.constant(np.ascontiguousarray(np.asarray(a, np.float32)))  # noqa: E731
    xf = g.gather(x, g.constant(np.ascontiguousarray(feats)), 1)  # [N, nodes]
    dec = None
    for mode, name in list(_MODES.items()) + [(_MEMBER, "member")]:
        sel = modes == mode
        if not sel.any():
            continue
        if mode == _MEMBER:
            d = g.lt(xf, f32(-np.inf))  # an empty set holds nothing
            for j in range(max(len(v) for v in sets.values())):
                row = np.full(n, np.nan, np.float32)  # NaN: no member at this position
                for i, vals in sets.items():
                    if j < len(vals):
                        row[i] = vals[j]
                d = g.where(d, d, g.eq(xf, f32(row)))
        else:
            d = g.compare(name, xf, f32(splits))
        dec = d if dec is None else g.where(g.constant(np.ascontiguousarray(sel)), d, dec)
    if missing is not None and np.any(missing != 0):
        # A missing (NaN) feature takes the true branch of the nodes that say so.
        tracks = g.where(g.constant(np.ascontiguousarray(missing != 0)), g.ne(xf, xf), g.constant(np.array(False)))
        dec = g.where(tracks, g.constant(np.array(True)), dec)
    dec = g.cast(dec, "float32")
    a = np.zeros((n, n_paths), np.float32)
    need = np.zeros(n_paths, np.float32)
    for j, (_, path) in enumerate(paths):
        for i, took_true in path:
            a[i, j] += 1.0 if took_true else -1.0
            need[j] += 1.0 if took_true else 0.0
    reached = g.eq(g.matmul(dec, f32(a)), f32(need))  # [N, paths]
    leaf = np.array([lf for lf, _ in paths], np.int64)
    w = l_weights[leaf]
    tgt = l_targets[leaf]
    if agg in (0, 1):
        wt = np.zeros((n_paths, n_targets), np.float64)
        for j in range(n_paths):
            wt[j, tgt[j]] += w[j] / (len(roots) if agg == 0 else 1)
        return g.matmul(g.cast(reached, "float32"), f32(wt))
    fill = np.finfo(np.float32).max if agg == 2 else np.finfo(np.float32).min
    outs = []
    for t in range(n_targets):
        row = np.where(tgt == t, w, fill).astype(np.float32)
        v = g.where(reached, f32(row), f32(np.float32(fill)))
        outs.append(g.neg(g.reduce_max(g.neg(v), [1], keep_dim=True)) if agg == 2 else g.reduce_max(v, [1], keep_dim=True))
    return outs[0] if len(outs) == 1 else g.concat(outs, 1)
