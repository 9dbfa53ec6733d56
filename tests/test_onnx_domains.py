"""Ops of domains other than the default one (``ai.onnx.preview.training``'s optimizers,
``ai.onnx.ml``'s Binarizer, ArrayFeatureExtractor, LabelEncoder and TreeEnsemble) against the
onnx reference evaluator, on the cases the backend node tests leave out: the first-step
branches on T, integer inputs, negative indices, numeric label maps (the node tests map
strings), tree ensembles with several trees, aggregates, modes and missing values, malformed
nodes, and how other domains are keyed."""

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
    assert f"{ML}.LabelEncoder" in ops and f"{ML}.TreeEnsemble" in ops and "LabelEncoder" not in ops
    m = model(ML, "Imputer", [("X", F, [2])], [("Y", F, [2])], imputed_value_floats=[0.0], replaced_value_float=1.0)
    with pytest.raises(rlx.UnsupportedOpError, match=r"Imputer \(domain ai.onnx.ml, opset 1, node 'the_node'\)"):
        rlx.onnx.load(m)


def test_other_domain_nodes_are_checked_against_their_schema():
    # ArrayFeatureExtractor takes exactly 2 inputs (the ai.onnx.ml schema).
    m = model(ML, "ArrayFeatureExtractor", [("x", F, [3]), ("y", I64, [1]), ("w", I64, [1])], [("z", F, None)])
    with pytest.raises(rlx.GraphError, match=r"the_node.*has 3 input\(s\), the op takes 2"):
        rlx.onnx.load(m)


# -- LabelEncoder (numeric: the node tests map strings, which rlx does not have) ------------


def _ml4(op: str, inputs, outputs, **attrs: Any) -> onnx.ModelProto:
    m = model(ML, op, inputs, outputs, **attrs)
    del m.opset_import[1]
    m.opset_import.append(helper.make_opsetid(ML, 4 if op == "LabelEncoder" else 5))
    return m


@pytest.mark.parametrize("kind", ["int_int", "int_float", "float_int", "float_float", "tensor"])
def test_label_encoder_numeric(kind):
    xi = np.array([[3, -1, 7], [3, 0, 12]], np.int64)
    xf = np.array([[0.5, -2.0, np.nan], [7.0, 0.5, 3.0]], np.float32)
    at: Dict[str, Any] = {}
    if kind == "int_int":
        at = dict(keys_int64s=[3, 7, 12, 3], values_int64s=[10, 20, 30, 40], default_int64=-5)  # repeated key: last
        x, xt, yt = xi, I64, I64
    elif kind == "int_float":
        at = dict(keys_int64s=[0, 7], values_floats=[1.5, -2.5], default_float=9.0)
        x, xt, yt = xi, I64, F
    elif kind == "float_int":
        at = dict(keys_floats=[0.5, 7.0, np.nan], values_int64s=[1, 2, 3])
        x, xt, yt = xf, F, I64
    elif kind == "float_float":
        at = dict(keys_floats=[-2.0, 3.0], values_floats=[4.0, 5.0])
        x, xt, yt = xf, F, F
    else:
        at = dict(keys_tensor=helper.make_tensor("k", I64, [3], [12, 0, 3]),
                  values_tensor=helper.make_tensor("v", F, [3], [0.25, 0.5, 0.75]),
                  default_tensor=helper.make_tensor("d", F, [1], [-1.0]))
        x, xt, yt = xi, I64, F
    m = _ml4("LabelEncoder", [("X", xt, list(x.shape))], [("Y", yt, None)], **at)
    got, want = run_both(m, {"X": x})
    np.testing.assert_array_equal(got[0], want[0])


def test_label_encoder_string_keys_are_a_dtype_error():
    m = _ml4("LabelEncoder", [("X", I64, [2])], [("Y", I64, [2])], keys_strings=["a"], values_int64s=[1])
    with pytest.raises(rlx.DTypeError, match=r"'the_node'.*string"):
        rlx.onnx.load(m)


# -- TreeEnsemble ---------------------------------------------------------------------------


def _forest(agg: int, modes: List[int], missing: Any = None, members: Any = None) -> onnx.ModelProto:
    """Two trees over 3 features and 2 targets: tree 0 has nodes 0-2, tree 1 nodes 3-4."""
    at: Dict[str, Any] = dict(
        aggregate_function=agg, n_targets=2, tree_roots=[0, 3],
        nodes_featureids=[0, 1, 2, 2, 0],
        nodes_splits=helper.make_tensor("s", F, [5], [0.5, -0.2, 1.0, 0.0, 2.0]),
        nodes_modes=helper.make_tensor("m", TensorProto.UINT8, [5], modes),
        nodes_truenodeids=[1, 0, 2, 4, 4], nodes_trueleafs=[0, 1, 1, 0, 1],
        nodes_falsenodeids=[2, 1, 3, 5, 6], nodes_falseleafs=[0, 1, 1, 1, 1],
        leaf_targetids=[0, 1, 0, 1, 0, 1, 1],
        leaf_weights=helper.make_tensor("w", F, [7], [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]))
    if missing is not None:
        at["nodes_missing_value_tracks_true"] = missing
    if members is not None:
        at["membership_values"] = helper.make_tensor("mv", F, [len(members)], members)
    return _ml4("TreeEnsemble", [("X", F, [8, 3])], [("Y", F, None)], **at)


@pytest.mark.parametrize("agg", [0, 1, 2, 3])
@pytest.mark.parametrize("modes", [[0, 1, 2, 3, 4], [5, 0, 1, 2, 3]])
def test_tree_ensemble_aggregates_and_modes(agg, modes):
    x = np.random.default_rng(agg).choice(np.float32([-1, -0.2, 0, 0.5, 1, 2, 3]), (8, 3))
    got, want = run_both(_forest(agg, modes), {"X": x})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)


def test_tree_ensemble_missing_values_and_set_membership():
    x = np.random.default_rng(4).choice(np.float32([-1, 0, 0.5, 1, 2, np.nan]), (8, 3))
    m = _forest(1, [6, 1, 6, 3, 0], missing=[1, 0, 0, 1, 1], members=[0.5, 2.0, np.nan, 1.0, -1.0, 0.0, np.nan])
    got, want = run_both(m, {"X": x})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)


def test_tree_ensemble_post_transform_is_a_typed_error():
    m = _forest(1, [0, 0, 0, 0, 0])
    m.graph.node[0].attribute.append(helper.make_attribute("post_transform", 1))
    with pytest.raises(rlx.UnsupportedOpError, match=r"'the_node'.*post_transform 1"):
        rlx.onnx.load(m)
