"""ONNX NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss as rlx graph ops.

Input [N, C, d1..dk], target [N, d1..dk]. The class a target names is picked with a one-hot
compare (class index == target) and a sum over C, so no gather runs on labels: a target
outside [0, C) that is not ``ignore_index`` picks nothing (loss 0) instead of failing at run
time. ``mean`` divides by the summed weights of the counted targets (their number without
``weight``), as the spec says.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

import rlx
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import dim_text

_REDUCTIONS = ("none", "sum", "mean")


def _check(imp: Importer, node: Any, x: Any, target: Any, weight: Optional[Any]) -> int:
    """Validates the operands; returns C."""
    t = node.op_type
    xd, td = imp.shape(x), imp.shape(target)
    if imp.dtype(x) != np.float32:
        raise rlx.UnsupportedOpError(f"{t} on {imp.dtype(x)} (float32 only)")
    if imp.dtype(target) not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise rlx.DTypeError(f"{t} target of dtype {imp.dtype(target)} (int32 or int64)")
    if len(xd) < 2 or td != [xd[0]] + xd[2:]:
        raise rlx.ShapeError(f"{t} needs input [N, C, d1..dk] and target [N, d1..dk], got "
                             f"{[str(d) for d in xd]} and {[str(d) for d in td]}")
    c = xd[1]
    if not isinstance(c, int):
        raise rlx.UnsupportedOpError(f"{t} over a symbolic class count {dim_text(c)}")
    if weight is not None and (imp.shape(weight) != [c] or imp.dtype(weight) != np.float32):
        raise rlx.ShapeError(f"{t} weight must be float32 [{c}], got {imp.dtype(weight)} {[str(d) for d in imp.shape(weight)]}")
    return c


def _nll(imp: Importer, node: Any, logp: Any, target: Any, weight: Optional[Any], c: int) -> Any:
    """The loss of log-probabilities ``logp`` [N, C, ...] (a runtime value)."""
    at, g = attrs(node), imp.g
    reduction = at.get("reduction", "mean")
    if reduction not in _REDUCTIONS:
        raise rlx.ModelFormatError(f"{node.op_type} reduction {reduction!r} (none, sum or mean)")
    r = len(logp.shape)
    tdt = np.dtype(target.dtype)
    zero = g.constant(np.zeros((), np.float32))
    classes = g.constant(np.arange(c, dtype=tdt).reshape((1, c) + (1,) * (r - 2)))
    t1 = g.reshape(target, (target.shape[0], 1) + tuple(target.shape[1:]))
    onehot = g.eq(classes, t1)
    loss = g.neg(g.reduce_sum(g.where(onehot, logp, zero), [1]))
    w = None
    if weight is not None:
        wc = g.reshape(imp.rt(weight), (1, c) + (1,) * (r - 2))
        w = g.reduce_sum(g.where(onehot, wc, zero), [1])
        loss = g.mul(loss, w)
    if "ignore_index" in at:
        ii = int(at["ignore_index"])
        counted = g.ne(target, g.constant(np.array(ii, tdt)))
        loss = g.where(counted, loss, zero)
        w = g.where(counted, w if w is not None else g.constant(np.ones((), np.float32)), zero)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return g.reduce_sum(loss)
    if w is None:
        return g.reduce_mean(loss)
    return g.div(g.reduce_sum(loss), g.reduce_sum(w))


def _weight(imp: Importer, node: Any) -> Optional[Any]:
    return imp.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None


@op("NegativeLogLikelihoodLoss")
def _nll_loss(imp: Importer, node: Any) -> Any:
    x, target, weight = imp.get(node.input[0]), imp.get(node.input[1]), _weight(imp, node)
    c = _check(imp, node, x, target, weight)
    return _nll(imp, node, imp.rt(x), imp.rt(target), weight, c)


@op("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy(imp: Importer, node: Any) -> Any:
    x, target, weight = imp.get(node.input[0]), imp.get(node.input[1]), _weight(imp, node)
    c = _check(imp, node, x, target, weight)
    g = imp.g
    xs = imp.rt(x)
    # log softmax over the class axis: (x - max) - log(sum(exp(x - max))).
    shifted = g.sub(xs, g.reduce_max(xs, [1], keep_dim=True))
    logp = g.sub(shifted, g.log(g.reduce_sum(g.exp(shifted), [1], keep_dim=True)))
    return [_nll(imp, node, logp, imp.rt(target), weight, c), logp]
