"""TensorScatter, CausalConvWithState and LinearAttention (rlx._onnx_ops_state) against the
onnx reference evaluator, on what the backend node tests leave out: negative and wrapping
write indices, an out-of-range linear write, symbolic lengths, a state carried across calls,
grouped heads with every update rule, and malformed nodes."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def model(op: str, inputs: Sequence[Any], outputs: Sequence[str], opset: int = 27, **attrs: Any) -> onnx.ModelProto:
    """One ``op`` node; ``inputs`` are (name, elem, shape) graph inputs or "" for an absent one."""
    names = [i if isinstance(i, str) else i[0] for i in inputs]
    node = helper.make_node(op, names, list(outputs), name="the_node", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(*i) for i in inputs if not isinstance(i, str)],
                              [helper.make_tensor_value_info(o, F, None) for o in outputs])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def reference(m: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return list(ReferenceEvaluator(m).run(None, feeds))


def check(m: onnx.ModelProto, feeds: Dict[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-5) -> List[np.ndarray]:
    feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
    got = rlx.onnx.load(m).run(feeds)
    outs = [got[o.name] for o in m.graph.output]
    for a, b in zip(outs, reference(m, feeds)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    return outs


rng = np.random.default_rng(7)


def randn(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


# -- TensorScatter ---------------------------------------------------------------------------


@pytest.mark.parametrize("w", [[0, 3, 5], [4, -1, 9], [-7, 2, 1]])
def test_tensor_scatter_circular_wraps(w):
    # Cache [3, 2, 5, 4] along axis 2 with 3 new rows: indices past the end and negative wrap.
    m = model("TensorScatter", [("past", F, [3, 2, 5, 4]), ("upd", F, [3, 2, 3, 4]), ("w", I64, [3])], ["y"],
              opset=24, mode="circular", axis=2)
    check(m, {"past": randn(3, 2, 5, 4), "upd": randn(3, 2, 3, 4), "w": np.array(w, np.int64)})


def test_tensor_scatter_linear_on_a_middle_axis():
    m = model("TensorScatter", [("past", F, [2, 6, 3]), ("upd", F, [2, 2, 3]), ("w", I64, [2])], ["y"], opset=24, axis=1)
    check(m, {"past": randn(2, 6, 3), "upd": randn(2, 2, 3), "w": np.array([4, 0], np.int64)})


def test_tensor_scatter_without_write_indices_writes_at_zero():
    m = model("TensorScatter", [("past", F, [2, 5, 3]), ("upd", F, [2, 2, 3])], ["y"], opset=24, mode="circular")
    check(m, {"past": randn(2, 5, 3), "upd": randn(2, 2, 3)})


@pytest.mark.parametrize("w", [[4, 0], [-1, 0]])
def test_tensor_scatter_linear_write_past_the_end_fails_at_run_time(w):
    # Linear mode requires 0 <= w and w + sequence_length <= max_sequence_length: never a dropped write.
    m = model("TensorScatter", [("past", F, [2, 5, 3]), ("upd", F, [2, 2, 3]), ("w", I64, [2])], ["y"], opset=24)
    om = rlx.onnx.load(m)
    with pytest.raises(IndexError, match="out of range"):
        om.run({"past": randn(2, 5, 3), "upd": randn(2, 2, 3), "w": np.array(w, np.int64)})


@pytest.mark.parametrize("attrs, err, text", [
    ({"mode": "ring"}, rlx.ModelFormatError, "mode 'ring'"),
    ({"axis": 0}, rlx.ShapeError, "axis 0 is the batch axis"),
    ({"axis": 2}, rlx.ShapeError, "update of shape"),
])
def test_tensor_scatter_bad_node_names_it(attrs, err, text):
    m = model("TensorScatter", [("past", F, [2, 5, 3]), ("upd", F, [2, 2, 3])], ["y"], opset=24, **attrs)
    with pytest.raises(err, match=f"the_node.*{text}"):
        rlx.onnx.load(m)


# -- CausalConvWithState ---------------------------------------------------------------------


def test_causal_conv_state_carried_across_calls_equals_one_call():
    # Two calls, the second fed the first's present_state, give the one-call output.
    c, k = 3, 4
    w, bias = randn(c, 1, k), randn(c)
    step = model("CausalConvWithState", [("x", F, [1, c, 5]), ("w", F, [c, 1, k]), ("b", F, [c]),
                                        ("s", F, [1, c, k - 1])], ["y", "state"], activation="silu")
    whole = model("CausalConvWithState", [("x", F, [1, c, 10]), ("w", F, [c, 1, k]), ("b", F, [c])], ["y", "state"],
                  activation="silu")
    x = randn(1, c, 10)
    a = check(step, {"x": x[:, :, :5], "w": w, "b": bias, "s": np.zeros((1, c, k - 1), np.float32)})
    b2 = check(step, {"x": x[:, :, 5:], "w": w, "b": bias, "s": a[1]})
    ref = check(whole, {"x": x, "w": w, "b": bias})
    np.testing.assert_allclose(np.concatenate([a[0], b2[0]], 2), ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b2[1], ref[1])


def test_causal_conv_symbolic_length():
    m = model("CausalConvWithState", [("x", F, [2, 3, "seq"]), ("w", F, [3, 1, 3])], ["y", "state"])
    om = rlx.onnx.load(m)
    w = randn(3, 1, 3)
    for n in (1, 2, 7):
        x = randn(2, 3, n)
        got = om.run({"x": x, "w": w})
        for o, want in zip(("y", "state"), reference(m, {"x": x, "w": w})):
            np.testing.assert_allclose(got[o], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("inputs, attrs, err, text", [
    ([("x", F, [1, 3, 4]), ("w", F, [3, 1, 2])], {"activation": "gelu"}, rlx.ModelFormatError, "activation 'gelu'"),
    ([("x", F, [1, 3, 4]), ("w", F, [3, 3, 2])], {}, rlx.ShapeError, r"expected \[3, 1, k\]"),
    ([("x", F, [1, 3, 4]), ("w", F, [3, 1, 2]), "", ("s", F, [1, 3, 2])], {}, rlx.ShapeError, "past_state of shape"),
    ([("x", F, [3, 4]), ("w", F, [3, 1, 2])], {}, rlx.ShapeError, r"\[batch, channels, length\]"),
])
def test_causal_conv_bad_node_names_it(inputs, attrs, err, text):
    m = model("CausalConvWithState", inputs, ["y", "state"], **attrs)
    with pytest.raises(err, match=f"the_node.*{text}"):
        rlx.onnx.load(m)


# -- LinearAttention -------------------------------------------------------------------------


def _la_inputs(rule: str, b: int, t: int, hq: int, hk: int, dk: int, dv: int, per_key: bool, past: bool) -> tuple:
    ins: List[Any] = [("q", F, [b, t, hq * dk]), ("k", F, [b, t, hk * dk]), ("v", F, [b, t, hk * dv])]
    feeds = {"q": randn(b, t, hq * dk), "k": randn(b, t, hk * dk) / 2, "v": randn(b, t, hk * dv)}
    ins.append(("s", F, [b, hk, dk, dv]) if past else "")
    if past:
        feeds["s"] = randn(b, hk, dk, dv)
    if rule in ("gated", "gated_delta"):
        n = hk * dk if per_key else hk
        ins.append(("g", F, [b, t, n]))
        feeds["g"] = -np.abs(randn(b, t, n))
    else:
        ins.append("")
    if rule in ("delta", "gated_delta"):
        ins.append(("beta", F, [b, t, hk]))
        feeds["beta"] = 1 / (1 + np.exp(-randn(b, t, hk)))
    while ins[-1] == "":
        ins.pop()
    return ins, feeds


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("per_key", [False, True])
def test_linear_attention_rules_with_groups_and_past(rule, per_key):
    ins, feeds = _la_inputs(rule, 2, 5, 6, 2, 4, 3, per_key, past=True)
    m = model("LinearAttention", ins, ["y", "state"], q_num_heads=6, kv_num_heads=2, update_rule=rule, scale=0.3)
    check(m, feeds, rtol=1e-4, atol=1e-4)


def test_linear_attention_decode_steps_equal_prefill():
    # T calls of one token, each fed the last state, give the prefill's output and state.
    hq = hk = 2
    ins, feeds = _la_inputs("gated_delta", 1, 4, hq, hk, 4, 4, True, past=True)
    pre = model("LinearAttention", ins, ["y", "state"], q_num_heads=hq, kv_num_heads=hk)
    ins1 = [(n, e, [s[0], 1] + s[2:]) if n in ("q", "k", "v", "g", "beta") else i
            for i in ins for (n, e, s) in [i if not isinstance(i, str) else ("", 0, [0, 0])]]
    step = rlx.onnx.load(model("LinearAttention", ins1, ["y", "state"], q_num_heads=hq, kv_num_heads=hk))
    full = rlx.onnx.load(pre).run(feeds)
    state, ys = feeds["s"], []
    for t in range(4):
        f = {n: np.ascontiguousarray(feeds[n][:, t:t + 1]) for n in ("q", "k", "v", "g", "beta")}
        out = step.run({**f, "s": state})
        ys.append(out["y"])
        state = out["state"]
    np.testing.assert_allclose(np.concatenate(ys, 1), full["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state, full["state"], rtol=1e-5, atol=1e-5)


def test_linear_attention_symbolic_length_is_unsupported():
    m = model("LinearAttention", [("q", F, [1, "seq", 8]), ("k", F, [1, "seq", 8]), ("v", F, [1, "seq", 8])],
              ["y", "state"], q_num_heads=2, kv_num_heads=2, update_rule="linear")
    with pytest.raises(rlx.UnsupportedOpError, match=r"the_node.*symbolic sequence length seq.*unrolled"):
        rlx.onnx.load(m)


@pytest.mark.parametrize("attrs, extra, err, text", [
    ({"update_rule": "softmax"}, [], rlx.ModelFormatError, "update_rule 'softmax'"),
    ({"update_rule": "gated"}, [], rlx.ModelFormatError, "'gated' needs the decay input"),
    ({"update_rule": "linear"}, ["", ("g", F, [1, 2, 2])], rlx.ModelFormatError, "'linear' forbids the decay input"),
    ({"q_num_heads": 3}, [], rlx.ModelFormatError, "q_num_heads 3 must be a positive multiple of kv_num_heads 2"),
    ({"update_rule": "gated"}, ["", ("g", F, [1, 2, 3])], rlx.ShapeError, "last dim must be 2 or 8"),
])
def test_linear_attention_bad_node_names_it(attrs, extra, err, text):
    at = {"q_num_heads": 2, "kv_num_heads": 2, "update_rule": "linear", **attrs}
    ins = [("q", F, [1, 2, 8]), ("k", F, [1, 2, 8]), ("v", F, [1, 2, 8])] + extra
    m = model("LinearAttention", ins, ["y", "state"], **at)
    with pytest.raises(err, match=f"the_node.*{text}"):
        rlx.onnx.load(m)
