"""ai.onnx.preview.FlexAttention (rlx._onnx_ops_attention) against the onnx reference evaluator,
on what the backend node tests leave out: grouped heads with both modifier subgraphs, a symbolic
batch, a modifier that reads outer-scope values, and the typed errors of malformed modifiers."""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64
vi = helper.make_tensor_value_info
RNG = np.random.default_rng(5)


def _init(name: str, arr: Any) -> Any:
    return numpy_helper.from_array(np.asarray(arr), name)


def _causal() -> Any:
    nodes = [helper.make_node("Shape", ["scores"], ["shp"]),
             helper.make_node("Gather", ["shp", "i2"], ["L"], axis=0),
             helper.make_node("Gather", ["shp", "i3"], ["S"], axis=0),
             helper.make_node("Range", ["zero", "L", "one"], ["qr"]), helper.make_node("Reshape", ["qr", "qs"], ["qi"]),
             helper.make_node("Range", ["zero", "S", "one"], ["kr"]), helper.make_node("Reshape", ["kr", "ks"], ["ki"]),
             helper.make_node("GreaterOrEqual", ["qi", "ki"], ["mask"]),
             helper.make_node("Where", ["mask", "scores", "ninf"], ["out"])]
    inits = [_init("i2", np.int64(2)), _init("i3", np.int64(3)), _init("zero", np.int64(0)), _init("one", np.int64(1)),
             _init("qs", np.array([-1, 1], np.int64)), _init("ks", np.array([1, -1], np.int64)),
             _init("ninf", np.float32(-np.inf))]
    return helper.make_graph(nodes, "causal", [vi("scores", F, None)], [vi("out", F, None)], inits)


def _model(q: List[Any], k: List[Any], v: List[Any], score_mod: Optional[Any] = None, prob_mod: Optional[Any] = None,
           extra: List[Any] = (), **at: Any) -> onnx.ModelProto:
    if score_mod is not None:
        at["score_mod"] = score_mod
    if prob_mod is not None:
        at["prob_mod"] = prob_mod
    node = helper.make_node("FlexAttention", ["Q", "K", "V"], ["Y"], name="flex", domain="ai.onnx.preview", **at)
    g = helper.make_graph([node], "g", [vi("Q", F, q), vi("K", F, k), vi("V", F, v)] + list(extra), [vi("Y", F, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 26), helper.make_opsetid("ai.onnx.preview", 1)])
    m.ir_version = 10
    return m


def _check(m: onnx.ModelProto, shapes: dict) -> None:
    from onnx.reference import ReferenceEvaluator

    feeds = {n: RNG.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    got = rlx.onnx.load(m).run(feeds)["Y"]
    (want,) = ReferenceEvaluator(m).run(None, feeds)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_grouped_heads_with_both_modifiers():
    half = helper.make_graph([helper.make_node("Mul", ["p", "h"], ["o"])], "half", [vi("p", F, None)], [vi("o", F, None)],
                             [_init("h", np.float32(0.5))])
    m = _model([2, 6, 5, 8], [2, 2, 5, 8], [2, 2, 5, 3], score_mod=_causal(), prob_mod=half, scale=0.3)
    _check(m, {"Q": [2, 6, 5, 8], "K": [2, 2, 5, 8], "V": [2, 2, 5, 3]})


def test_symbolic_batch_and_a_modifier_reading_an_outer_input():
    # The score modifier adds the graph input `bias` (outer scope), broadcast over the scores.
    mod = helper.make_graph([helper.make_node("Add", ["s", "bias"], ["o"])], "bias_mod", [vi("s", F, None)],
                            [vi("o", F, None)])
    # (The onnx reference does not give a modifier the outer scope: the expected value is numpy.)
    m = _model(["B", 2, 3, 4], ["B", 2, 5, 4], ["B", 2, 5, 4], score_mod=mod, extra=[vi("bias", F, [3, 5])])
    om = rlx.onnx.load(m)
    for b in (1, 3):
        q, k, v = (RNG.standard_normal(s).astype(np.float32) for s in ([b, 2, 3, 4], [b, 2, 5, 4], [b, 2, 5, 4]))
        bias = RNG.standard_normal((3, 5)).astype(np.float32)
        s = q @ np.swapaxes(k, -1, -2) / 2.0 + bias
        p = np.exp(s - s.max(-1, keepdims=True))
        want = (p / p.sum(-1, keepdims=True)) @ v
        got = om.run({"Q": q, "K": k, "V": v, "bias": bias})["Y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_modifier_that_changes_the_shape_is_a_typed_error():
    mod = helper.make_graph([helper.make_node("ReduceSum", ["s", "ax"], ["o"], keepdims=1)], "sum", [vi("s", F, None)],
                            [vi("o", F, None)], [_init("ax", np.array([-1], np.int64))])
    m = _model([1, 2, 3, 4], [1, 2, 5, 4], [1, 2, 5, 4], score_mod=mod)
    with pytest.raises(rlx.ShapeError, match=r"'flex'.*score_mod gives \[1, 2, 3, 1\].*a modifier keeps the shape"):
        rlx.onnx.load(m)


def test_heads_not_a_multiple_is_a_typed_error():
    m = _model([1, 3, 3, 4], [1, 2, 5, 4], [1, 2, 5, 4])
    with pytest.raises(rlx.ShapeError, match=r"'flex'.*q_num_heads 3 is not a multiple of kv_num_heads 2"):
        rlx.onnx.load(m)
