"""The optimizer steps of the ``ai.onnx.preview.training`` domain: Momentum (standard and
Nesterov), Adagrad and Adam, each elementwise math composed from rlx graph ops.

Every op takes a learning rate ``R`` and an update count ``T`` (int64 scalars at run time,
shared by all tensors), then ``n`` tensors to optimize, their ``n`` gradients and their
``n`` accumulators of each kind; it makes the ``n`` new tensors, then the ``n`` new
accumulators of each kind. The branches on ``T`` (Momentum's first step, Adam's bias
correction) are ``where``s at run time.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np

import rlx
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, op

_DOMAIN = "ai.onnx.preview.training"


def _c(imp: Importer, v: float) -> Any:
    return imp.g.constant(np.array(v, np.float32))


def _groups(imp: Importer, node: Any, kinds: int) -> List[List[Any]]:
    """The ``kinds`` groups (X, G, then the accumulators) of ``n`` run-time tensors each after R
    and T; a count that does not split into ``kinds`` groups is a ModelFormatError."""
    rest = list(node.input[2:])
    if not rest or len(rest) % kinds:
        raise rlx.ModelFormatError(
            f"{node.op_type} takes R, T and {kinds} groups of equally many tensors, got {len(node.input)} inputs")
    n = len(rest) // kinds
    if len(node.output) > n * (kinds - 1):
        raise rlx.ModelFormatError(
            f"{node.op_type} of {n} tensor(s) makes at most {n * (kinds - 1)} outputs, got {len(node.output)}")
    groups = [[imp.rt(imp.get(name)) for name in rest[k * n:(k + 1) * n]] for k in range(kinds)]
    for i, x in enumerate(groups[0]):
        want = list(x.shape)
        for k in range(1, kinds):
            if list(groups[k][i].shape) != want:
                raise rlx.ShapeError(f"{node.op_type}: input {rest[k * n + i]!r} of shape {list(groups[k][i].shape)} "
                                     f"for the tensor {rest[i]!r} of shape {want}")
    return groups


def _scalars(imp: Importer, node: Any) -> Any:
    """(R, T as float32) as rank-0 run-time values."""
    out = []
    for name, what in ((node.input[0], "R"), (node.input[1], "T")):
        v = imp.rt(imp.get(name))
        if len(v.shape) != 0 and list(v.shape) != [1]:
            raise rlx.ShapeError(f"{node.op_type}: {what} {name!r} of shape {list(v.shape)}: a scalar")
        if len(v.shape):
            v = imp.g.reshape(v, ())
        out.append(v if v.dtype == "float32" else imp.g.cast(v, "float32"))
    return out


def _regularized(imp: Importer, x: Any, g: Any, norm: float) -> Any:
    """The gradient plus that of the L2 term: ``norm * x + g``."""
    return imp.g.add(imp.g.mul(_c(imp, norm), x), g) if norm else g


@op(f"{_DOMAIN}.Momentum")
def _momentum(imp: Importer, node: Any) -> Sequence[Any]:
    at = attrs(node)
    mode = at.get("mode", "")
    if mode not in ("standard", "nesterov"):
        raise rlx.ModelFormatError(f"Momentum mode {mode!r} is not 'standard' or 'nesterov'")
    alpha, beta, norm = float(at["alpha"]), float(at["beta"]), float(at["norm_coefficient"])
    g = imp.g
    r, t = _scalars(imp, node)
    xs, gs, vs = _groups(imp, node, 3)
    # The gradient's coefficient is 1 on the first step (T = 0).
    beta_t = g.where(g.gt(t, _c(imp, 0.0)), _c(imp, beta), _c(imp, 1.0))
    new_x, new_v = [], []
    for x, grad, v in zip(xs, gs, vs):
        gr = _regularized(imp, x, grad, norm)
        v2 = g.add(g.mul(_c(imp, alpha), v), g.mul(beta_t, gr))
        step = v2 if mode == "standard" else g.add(gr, g.mul(_c(imp, alpha), v2))
        new_x.append(g.sub(x, g.mul(r, step)))
        new_v.append(v2)
    return new_x + new_v


@op(f"{_DOMAIN}.Adagrad")
def _adagrad(imp: Importer, node: Any) -> Sequence[Any]:
    at = attrs(node)
    decay, eps = float(at.get("decay_factor", 0.0)), float(at.get("epsilon", 1e-6))
    norm = float(at.get("norm_coefficient", 0.0))
    g = imp.g
    r, t = _scalars(imp, node)
    xs, gs, hs = _groups(imp, node, 3)
    rate = g.div(r, g.add(_c(imp, 1.0), g.mul(t, _c(imp, decay))))
    new_x, new_h = [], []
    for x, grad, h in zip(xs, gs, hs):
        gr = _regularized(imp, x, grad, norm)
        h2 = g.add(h, g.mul(gr, gr))
        new_x.append(g.sub(x, g.div(g.mul(rate, gr), g.add(g.sqrt(h2), _c(imp, eps)))))
        new_h.append(h2)
    return new_x + new_h


@op(f"{_DOMAIN}.Adam")
def _adam(imp: Importer, node: Any) -> Sequence[Any]:
    at = attrs(node)
    alpha, beta = float(at.get("alpha", 0.9)), float(at.get("beta", 0.999))
    eps, norm = float(at.get("epsilon", 1e-6)), float(at.get("norm_coefficient", 0.0))
    post = float(at.get("norm_coefficient_post", 0.0))
    g = imp.g
    r, t = _scalars(imp, node)
    xs, gs, vs, hs = _groups(imp, node, 4)
    # Bias correction from the second step on: R * sqrt(1 - beta^T) / (1 - alpha^T).
    corr = g.div(g.sqrt(g.sub(_c(imp, 1.0), g.pow(_c(imp, beta), t))), g.sub(_c(imp, 1.0), g.pow(_c(imp, alpha), t)))
    rate = g.where(g.gt(t, _c(imp, 0.0)), g.mul(r, corr), r)
    new_x, new_v, new_h = [], [], []
    for x, grad, v, h in zip(xs, gs, vs, hs):
        gr = _regularized(imp, x, grad, norm)
        v2 = g.add(g.mul(_c(imp, alpha), v), g.mul(_c(imp, 1.0 - alpha), gr))
        h2 = g.add(g.mul(_c(imp, beta), h), g.mul(_c(imp, 1.0 - beta), g.mul(gr, gr)))
        x2 = g.sub(x, g.mul(rate, g.div(v2, g.add(g.sqrt(h2), _c(imp, eps)))))
        new_x.append(g.mul(_c(imp, 1.0 - post), x2) if post else x2)
        new_v.append(v2)
        new_h.append(h2)
    return new_x + new_v + new_h
