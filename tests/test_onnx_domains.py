"""Ops of domains other than the default one (``ai.onnx.preview.training``'s optimizers,
``ai.onnx.ml``'s Binarizer and ArrayFeatureExtractor) against the onnx reference evaluator, on
the cases the backend node tests leave out: the first-step branches on T, integer inputs,
negative indices, malformed nodes, and how other domains are keyed."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64
TRAINING, ML = "ai.onnx.preview.training", "ai.onnx.ml"


def model(domain: str, op: str, inputs: Sequence[Tuple[str, int, Any]], outputs: Sequence[Tuple[str, int, Any]],
          **attrs: Any) -> onnx.ModelProto:
    node = helper.make_node(op, [i[0] for i in inputs], [o[0] for o in outputs], name="the_node", domain=domain, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(domain, 1)])
    m.ir_version = 8
    return m


def run_both(m: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    from onnx.reference import ReferenceEvaluator

    got = rlx.onnx.load(m).run(feeds)
    want = ReferenceEvaluator(m).run(None, feeds)
    return [got[o.name] for o in m.graph.output], list(want)


def _optimizer(op: str, kinds: int, n: int, t: int, **attrs: Any) -> Tuple[onnx.ModelProto, Dict[str, np.ndarray]]:
    """``op`` over ``n`` tensors (shapes [3], [2, 2], ...) with ``kinds`` input groups, at step ``t``."""
    rng = np.random.default_rng(0)
    shapes = [[3], [2, 2], [4]][:n]
    names = "XGVH"[:kinds] if op != "Adagrad" else "XGH"
    ins = [("R", F, []), ("T", I64, [])] + [(f"{k}{i}", F, s) for k in names for i, s in enumerate(shapes)]
    outs = [(f"{k}{i}_new", F, s) for k in names if k != "G" for i, s in enumerate(shapes)]
    feeds = {"R": np.array(0.1, np.float32), "T": np.array(t, np.int64)}
    for name, _, s in ins[2:]:
        v = rng.standard_normal(s).astype(np.float32)
        feeds[name] = np.abs(v) if name.startswith("H") else v
    return model(TRAINING, op, ins, outs, **attrs), feeds


@pytest.mark.parametrize("t", [0, 3])
@pytest.mark.parametrize("mode", ["standard", "nesterov"])
def test_momentum_first_step_and_later(mode, t):
    # T = 0 takes the gradient with coefficient 1, not beta.
    m, feeds = _optimizer("Momentum", 3, 2, t, alpha=0.9, beta=0.3, mode=mode, norm_coefficient=0.01)
    got, want = run_both(m, feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [0, 1, 5])
def test_adam_bias_correction_and_post_regularization(t):
    # T = 0: no bias correction (whose 1 - alpha^0 would divide by zero).
    m, feeds = _optimizer("Adam", 4, 3, t, alpha=0.8, beta=0.7, epsilon=1e-3, norm_coefficient=0.02,
                          norm_coefficient_post=0.1)
    got, want = run_both(m, feeds)
    for a, b in zip(got, want):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_adagrad_default_attributes():
    m, feeds = _optimizer("Adagrad", 3, 1, 2)
    got, want = run_both(m, feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_momentum_bad_mode_names_the_node():
    m, _ = _optimizer("Momentum", 3, 1, 1, alpha=0.9, beta=0.3, mode="heavy", norm_coefficient=0.0)
    with pytest.raises(rlx.ModelFormatError, match=r"the_node.*mode 'heavy'"):
        rlx.onnx.load(m)


def test_optimizer_inputs_that_do_not_split_into_groups():
    ins = [("R", F, []), ("T", I64, []), ("X", F, [2]), ("G", F, [2]), ("H", F, [2]), ("X2", F, [2])]
    m = model(TRAINING, "Adagrad", ins, [("X_new", F, [2])])
    with pytest.raises(rlx.ModelFormatError, match=r"the_node.*3 groups of equally many tensors, got 6 inputs"):
        rlx.onnx.load(m)


def test_optimizer_accumulator_of_another_shape():
    ins = [("R", F, []), ("T", I64, []), ("X", F, [2]), ("G", F, [2]), ("H", F, [3])]
    m = model(TRAINING, "Adagrad", ins, [("X_new", F, [2])])
    with pytest.raises(rlx.ShapeError, match=r"the_node.*'H' of shape \[3\]"):
        rlx.onnx.load(m)


@pytest.mark.parametrize("threshold", [1.5, -2.0, 0.0, 1e30, -1e30])
def test_binarizer_integer_input_compares_exactly(threshold):
    m = model(ML, "Binarizer", [("X", I64, [7])], [("Y", I64, [7])], threshold=threshold)
    x = np.array([-3, -2, -1, 0, 1, 2, 2**40], np.int64)
    got = rlx.onnx.load(m).run({"X": x})["Y"]
    np.testing.assert_array_equal(got, (x > threshold).astype(np.int64))


def test_binarizer_float_default_threshold():
    m = model(ML, "Binarizer", [("X", F, [2, 3])], [("Y", F, [2, 3])])
    x = np.array([[-1.0, 0.0, 1e-8], [2.0, -0.0, 0.5]], np.float32)
    got, want = run_both(m, {"X": x})
    np.testing.assert_array_equal(got[0], want[0])


def test_array_feature_extractor_vector_and_negative_indices():
    # A 1-D input gives one row (as onnxruntime); indices of any shape are flattened.
    m = model(ML, "ArrayFeatureExtractor", [("x", F, [5]), ("y", I64, [2, 2])], [("z", F, None)])
    x = np.arange(5, dtype=np.float32) * 10
    got = rlx.onnx.load(m).run({"x": x, "y": np.array([[4, 0], [-1, 2]], np.int64)})["z"]
    np.testing.assert_array_equal(got, np.array([[40, 0, 40, 20]], np.float32))


def test_array_feature_extractor_rank3():
    m = model(ML, "ArrayFeatureExtractor", [("x", F, [2, 3, 4]), ("y", I64, [3])], [("z", F, None)])
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    got, want = run_both(m, {"x": x, "y": np.array([3, 1, 3], np.int64)})
    np.testing.assert_array_equal(got[0], want[0])


def test_other_domains_are_keyed_by_domain():
    ops = set(rlx.onnx.SUPPORTED_OPS)
    assert {f"{TRAINING}.Adam", f"{TRAINING}.Adagrad", f"{TRAINING}.Momentum", f"{ML}.Binarizer",
            f"{ML}.ArrayFeatureExtractor"} <= ops
    assert "Binarizer" not in ops and "Adam" not in ops
    # The op type alone, in the default domain or in another one, is not the ML op.
    for domain, op in (("", "Binarizer"), ("com.example", "Binarizer"), ("", f"{ML}.Binarizer")):
        m = model(domain, op, [("X", F, [2])], [("Y", F, [2])])
        with pytest.raises(rlx.UnsupportedOpError, match=r"1 unsupported ONNX node"):
            rlx.onnx.load(m)
    m = model(ML, "LabelEncoder", [("X", I64, [2])], [("Y", I64, [2])], keys_int64s=[1], values_int64s=[2])
    with pytest.raises(rlx.UnsupportedOpError, match=r"LabelEncoder \(domain ai.onnx.ml, opset 1, node 'the_node'\)"):
        rlx.onnx.load(m)


def test_other_domain_nodes_are_checked_against_their_schema():
    # ArrayFeatureExtractor takes exactly 2 inputs (the ai.onnx.ml schema).
    m = model(ML, "ArrayFeatureExtractor", [("x", F, [3]), ("y", I64, [1]), ("w", I64, [1])], [("z", F, None)])
    with pytest.raises(rlx.GraphError, match=r"the_node.*has 3 input\(s\), the op takes 2"):
        rlx.onnx.load(m)
