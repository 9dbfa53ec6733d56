"""If, Loop and Scan (rlx._onnx_ops_control) against the onnx reference evaluator, on what the
backend node tests leave out: a run-time If condition over outer-scope values, a Loop whose
condition is computed at run time, Scan's reverse directions and other axes, nesting, and the
typed errors of the data-dependent cases (each naming the node)."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402
from rlx import _onnx_ops_control  # noqa: E402

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
vi = helper.make_tensor_value_info


def const(name: str, arr: Any) -> Any:
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(arr), name + "_v"))


def graph_model(nodes: List[Any], inputs: List[Any], outputs: List[Any], opset: int = 17) -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def reference(m: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return list(ReferenceEvaluator(m).run(None, feeds))


def check(m: onnx.ModelProto, feeds: Dict[str, np.ndarray], om: Any = None) -> List[np.ndarray]:
    om = om or rlx.onnx.load(m)
    got = om.run(feeds)
    outs = [got[o.name] for o in m.graph.output]
    for a, b in zip(outs, reference(m, feeds)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    return outs


# -- If --------------------------------------------------------------------------------------


def _if_model(then_out: List[Any], else_out: List[Any], then_nodes: List[Any], else_nodes: List[Any]) -> onnx.ModelProto:
    then_g = helper.make_graph(then_nodes, "then", [], then_out)
    else_g = helper.make_graph(else_nodes, "else", [], else_out)
    node = helper.make_node("If", ["c"], ["y"], name="the_if", then_branch=then_g, else_branch=else_g)
    return graph_model([node], [vi("c", B, []), vi("x", F, [2, 3])], [vi("y", F, None)])


def test_if_run_time_condition_selects_between_branches_over_outer_values():
    m = _if_model([vi("t", F, [2, 3])], [vi("e", F, [2, 3])],
                  [helper.make_node("Relu", ["x"], ["t"])], [helper.make_node("Neg", ["x"], ["e"])])
    om = rlx.onnx.load(m)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    for c in (True, False):
        check(m, {"c": np.array(c), "x": x}, om)


def test_if_run_time_condition_with_different_shapes_is_a_typed_error():
    m = _if_model([vi("t", F, None)], [vi("e", F, None)],
                  [helper.make_node("Relu", ["x"], ["t"])],
                  [helper.make_node("ReduceSum", ["x"], ["e"], keepdims=0)])
    with pytest.raises(rlx.UnsupportedOpError, match=r"'the_if'.*shapes \[2, 3\].*and \[\]"):
        rlx.onnx.load(m)


def test_if_condition_known_at_import_imports_one_branch():
    # The condition folds from x's shape; the branches have different shapes.
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", F, None)])
    else_g = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["e"], keepdims=0)], "else", [], [vi("e", F, None)])
    nodes = [helper.make_node("Size", ["x"], ["n"]),
             const("six", np.array(6, np.int64)), helper.make_node("Equal", ["n", "six"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    m = graph_model(nodes, [vi("x", F, [2, 3])], [vi("y", F, None)])
    (y,) = check(m, {"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert y.shape == (2, 3)


# -- Loop ------------------------------------------------------------------------------------


def _loop_model(body_nodes: List[Any], body_out: List[Any], trip: Any, cond: Any, scan: bool = False,
                extra_inputs: List[Any] = ()) -> onnx.ModelProto:
    body = helper.make_graph(body_nodes, "body", [vi("i", I64, []), vi("c_in", B, []), vi("y_in", F, [2])], body_out)
    nodes, inputs = [], [vi("y0", F, [2])] + list(extra_inputs)
    for name, v, t in (("M", trip, I64), ("c0", cond, B)):
        if isinstance(v, str):
            inputs.append(vi(name, t, []))
        elif v is not None:
            nodes.append(const(name, v))
    ins = ["M" if trip is not None else "", "c0" if cond is not None else "", "y0"]
    outs = ["y"] + (["ys"] if scan else [])
    nodes.append(helper.make_node("Loop", ins, outs, name="the_loop", body=body))
    return graph_model(nodes, inputs, [vi(o, F, None) for o in outs])


def _doubling(limit_from_outer: bool = True) -> List[Any]:
    """y_out = 2 * y_in + 1; the condition: sum(y_out) < limit."""
    return [const("two", np.float32(2)), const("one", np.float32(1)),
            helper.make_node("Mul", ["y_in", "two"], ["y2"]), helper.make_node("Add", ["y2", "one"], ["y_out"]),
            helper.make_node("ReduceSum", ["y_out"], ["s"], keepdims=0),
            helper.make_node("Less", ["s", "limit"], ["c_out"]), helper.make_node("Identity", ["y_out"], ["scan_out"])]


def test_loop_with_run_time_condition_and_known_trip_count():
    # The condition is data-dependent; without scan outputs every step is kept only while it holds.
    m = _loop_model(_doubling(), [vi("c_out", B, []), vi("y_out", F, [2])], np.array(6, np.int64), "c",
                    extra_inputs=[vi("limit", F, [])])
    om = rlx.onnx.load(m)
    y0 = np.array([0.5, 1.0], np.float32)
    for limit, c in ((10.0, True), (50.0, True), (1e9, True), (10.0, False)):
        check(m, {"y0": y0, "limit": np.array(limit, np.float32), "c0": np.array(c)}, om)


def test_loop_trip_count_at_run_time_is_a_typed_error():
    body_out = [vi("c_out", B, []), vi("y_out", F, [2])]
    nodes = [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Neg", ["y_in"], ["y_out"])]
    m = _loop_model(nodes, body_out, "M", np.array(True))
    with pytest.raises(rlx.UnsupportedOpError, match=r"'the_loop' \(Loop\): the trip count 'M' is computed at run time"):
        rlx.onnx.load(m)
    # Frozen, as a real model carries it, it unrolls.
    om = rlx.onnx.load(m, constants={"M": np.array(3, np.int64)})
    np.testing.assert_array_equal(om.run({"y0": np.array([1, 2], np.float32)})["y"], [-1, -2])


def test_loop_run_time_condition_with_scan_outputs_is_a_typed_error():
    body_out = [vi("c_out", B, []), vi("y_out", F, [2]), vi("scan_out", F, [2])]
    m = _loop_model(_doubling(), body_out, np.array(4, np.int64), np.array(True), scan=True,
                    extra_inputs=[vi("limit", F, [])])
    with pytest.raises(rlx.UnsupportedOpError, match=r"'the_loop'.*condition is computed at run time.*scan outputs"):
        rlx.onnx.load(m)


def test_loop_with_scan_outputs_and_a_condition_that_stops_at_import():
    # No trip count; the condition (i < 3) folds each step, so the loop ends after 4 steps.
    nodes = [const("three", np.array(3, np.int64)), helper.make_node("Less", ["i", "three"], ["c_out"]),
             helper.make_node("Cast", ["i"], ["fi"], to=F), helper.make_node("Add", ["y_in", "fi"], ["y_out"]),
             helper.make_node("Identity", ["y_out"], ["scan_out"])]
    body_out = [vi("c_out", B, []), vi("y_out", F, [2]), vi("scan_out", F, [2])]
    m = _loop_model(nodes, body_out, None, np.array(True), scan=True)
    y, ys = check(m, {"y0": np.array([1, 2], np.float32)})
    assert ys.shape == (4, 2)


def test_loop_unrolling_is_capped():
    nodes = [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Neg", ["y_in"], ["y_out"])]
    body_out = [vi("c_out", B, []), vi("y_out", F, [2])]
    m = _loop_model(nodes, body_out, np.array(_onnx_ops_control.MAX_STEPS + 1, np.int64), None)
    with pytest.raises(rlx.UnsupportedOpError, match=rf"'the_loop'.*{_onnx_ops_control.MAX_STEPS + 1} body copies"):
        rlx.onnx.load(m)
    m = _loop_model(nodes, body_out, None, np.array(True))  # no trip count, a condition always true
    with pytest.raises(rlx.UnsupportedOpError, match=r"'the_loop'.*more than \d+ body copies"):
        rlx.onnx.load(m)


def test_loop_body_with_an_if_on_the_iteration_number():
    # Nested control flow: the If's condition is known at each unrolled step.
    then_g = helper.make_graph([helper.make_node("Neg", ["y_in"], ["t"])], "then", [], [vi("t", F, [2])])
    else_g = helper.make_graph([helper.make_node("Relu", ["y_in"], ["e"])], "else", [], [vi("e", F, [2])])
    nodes = [const("two", np.array(2, np.int64)), helper.make_node("Mod", ["i", "two"], ["r"]),
             const("zero", np.array(0, np.int64)), helper.make_node("Equal", ["r", "zero"], ["even"]),
             helper.make_node("If", ["even"], ["z"], then_branch=then_g, else_branch=else_g),
             const("half", np.float32(0.5)), helper.make_node("Sub", ["z", "half"], ["y_out"]),
             helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["z"], ["scan_out"])]
    body_out = [vi("c_out", B, []), vi("y_out", F, [2]), vi("scan_out", F, [2])]
    m = _loop_model(nodes, body_out, np.array(5, np.int64), np.array(True), scan=True)
    check(m, {"y0": np.array([1.5, -2.0], np.float32)})


# -- Scan ------------------------------------------------------------------------------------


def _scan_model(x_shape: List[Any], **attrs: Any) -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]), helper.make_node("Mul", ["s_out", "x_t"], ["y_t"])],
        "body", [vi("s_in", F, [2]), vi("x_t", F, [2])], [vi("s_out", F, [2]), vi("y_t", F, [2])])
    node = helper.make_node("Scan", ["s0", "x"], ["s", "ys"], name="the_scan", body=body, num_scan_inputs=1, **attrs)
    return graph_model([node], [vi("s0", F, [2]), vi("x", F, x_shape)], [vi("s", F, None), vi("ys", F, None)])


def _scan_expected(s: np.ndarray, x: np.ndarray, attrs: Dict[str, Any]) -> List[np.ndarray]:
    """The Scan of ``_scan_model`` in numpy (the onnx reference runs forward along axis 0 only)."""
    xs = np.moveaxis(x, attrs.get("scan_input_axes", [0])[0], 0)
    if attrs.get("scan_input_directions", [0])[0]:
        xs = xs[::-1]
    ys = []
    for x_t in xs:
        s = s + x_t
        ys.append(s * x_t)
    if attrs.get("scan_output_directions", [0])[0]:
        ys = ys[::-1]
    return [s, np.stack(ys, axis=attrs.get("scan_output_axes", [0])[0])]


@pytest.mark.parametrize("attrs", [
    {},
    {"scan_input_directions": [1]},
    {"scan_output_directions": [1]},
    {"scan_input_axes": [-1], "scan_output_axes": [1]},
    {"scan_input_axes": [1], "scan_input_directions": [1], "scan_output_axes": [-1], "scan_output_directions": [1]},
])
def test_scan_directions_and_axes(attrs):
    shape = [2, 4] if attrs.get("scan_input_axes") else [4, 2]
    rng = np.random.default_rng(3)
    s0, x = rng.standard_normal(2).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    m = _scan_model(shape, **attrs)
    got = rlx.onnx.load(m).run({"s0": s0, "x": x})
    if not attrs:
        check(m, {"s0": s0, "x": x})
    for o, want in zip(m.graph.output, _scan_expected(s0, x, attrs)):
        assert got[o.name].shape == want.shape
        np.testing.assert_allclose(got[o.name], want, rtol=1e-5, atol=1e-6)


def test_scan_of_symbolic_length_is_a_typed_error():
    m = _scan_model(["T", 2])
    with pytest.raises(rlx.UnsupportedOpError, match=r"'the_scan' \(Scan\): the scan axis 0 has the symbolic length T"):
        rlx.onnx.load(m)


def test_unsupported_op_inside_a_subgraph_is_listed_up_front():
    body = helper.make_graph([helper.make_node("Unique", ["x_t"], ["u"], name="inner")], "body",
                             [vi("s_in", F, [2]), vi("x_t", F, [2])], [vi("s_in", F, [2]), vi("u", F, [2])])
    node = helper.make_node("Scan", ["s0", "x"], ["s", "ys"], name="the_scan", body=body, num_scan_inputs=1)
    m = graph_model([node], [vi("s0", F, [2]), vi("x", F, [3, 2])], [vi("s", F, None), vi("ys", F, None)])
    want = r"Unique \(domain ai.onnx, opset 17, node 'inner' in subgraph 'body' of node 'the_scan'\)"
    with pytest.raises(rlx.UnsupportedOpError, match=want):
        rlx.onnx.load(m)
