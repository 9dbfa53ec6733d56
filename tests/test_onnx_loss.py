"""rlx.onnx NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss against ONNX Runtime on small
graphs built with onnx.helper (weights, ignore_index, every reduction, N-d inputs, the log_prob
output); typed errors naming the node for malformed ones."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402
from onnx_case_support import check_loaded  # noqa: E402

F, I32, I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
RNG = np.random.default_rng(0)
OPSET = {"NegativeLogLikelihoodLoss": 22, "SoftmaxCrossEntropyLoss": 13}


def _loss(op, xshape, weight=False, log_prob=False, ttype=I64, **at):
    ins = ["x", "t"] + (["w"] if weight else [])
    outs = ["loss"] + (["log_prob"] if log_prob else [])
    node = helper.make_node(op, ins, outs, name="lossnode", **at)
    vis = [helper.make_tensor_value_info("x", F, xshape),
           helper.make_tensor_value_info("t", ttype, [xshape[0]] + list(xshape[2:]))]
    if weight:
        vis.append(helper.make_tensor_value_info("w", F, [xshape[1]]))
    model = helper.make_model(helper.make_graph([node], "loss", vis,
                                                [helper.make_tensor_value_info(o, F, None) for o in outs]),
                              opset_imports=[helper.make_opsetid("", OPSET[op])])
    model.ir_version = 10
    return model


def _feeds(xshape, weight=False, ignore=None, ttype=np.int64):
    c = xshape[1]
    t = RNG.integers(0, c, [xshape[0]] + list(xshape[2:])).astype(ttype)
    if ignore is not None:
        t.flat[::3] = ignore  # every third target ignored
    f = {"x": RNG.standard_normal(xshape).astype(np.float32), "t": t}
    if weight:
        f["w"] = RNG.random(c).astype(np.float32) + 0.1
    return f


def check(model, feeds, rtol=1e-4, atol=1e-5):
    check_loaded(model, feeds, "ort", rtol, atol)


OPS = sorted(OPSET)
SHAPES = [[3, 5], [3, 5, 2], [2, 4, 3, 2]]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weight", [False, True])
@pytest.mark.parametrize("xshape", SHAPES, ids=str)
def test_loss(op, reduction, weight, xshape):
    check(_loss(op, xshape, weight, reduction=reduction), _feeds(xshape, weight))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weight", [False, True])
@pytest.mark.parametrize("ignore", [0, 2, -1])
def test_ignore_index(op, reduction, weight, ignore):
    xshape = [4, 5, 3]
    check(_loss(op, xshape, weight, reduction=reduction, ignore_index=ignore), _feeds(xshape, weight, ignore))


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_sce_log_prob(reduction):
    xshape = [3, 5, 2]
    check(_loss("SoftmaxCrossEntropyLoss", xshape, True, log_prob=True, reduction=reduction),
          _feeds(xshape, True))


def test_int32_target():
    xshape = [3, 5, 2]
    check(_loss("NegativeLogLikelihoodLoss", xshape, ttype=I32, reduction="sum"), _feeds(xshape, ttype=np.int32))


def test_sce_large_scores_stay_finite():
    # The log-softmax is taken as (x - max) - log(sum(exp(x - max))): no overflow.
    xshape = [2, 3]
    model = _loss("SoftmaxCrossEntropyLoss", xshape, reduction="none", log_prob=True)
    feeds = {"x": np.array([[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0]], np.float32), "t": np.array([2, 1], np.int64)}
    out = rlx.onnx.load(model).run(feeds)
    np.testing.assert_allclose(out["loss"], [2000.0, np.log(3.0)], rtol=1e-5)


def _load_error(model, exc, *words):
    with pytest.raises(exc) as e:
        rlx.onnx.load(model)
    for w in ("lossnode",) + words:
        assert w in str(e.value), str(e.value)


def test_error_target_shape():
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["loss"], name="lossnode")
    vis = [helper.make_tensor_value_info("x", F, [3, 5, 2]), helper.make_tensor_value_info("t", I64, [3, 4])]
    model = helper.make_model(helper.make_graph([node], "l", vis, [helper.make_tensor_value_info("loss", F, None)]),
                              opset_imports=[helper.make_opsetid("", 22)])
    _load_error(model, rlx.ShapeError, "target")


def test_error_float_target():
    _load_error(_loss("SoftmaxCrossEntropyLoss", [3, 5], ttype=F), rlx.DTypeError, "target")


def test_error_bad_reduction():
    _load_error(_loss("NegativeLogLikelihoodLoss", [3, 5], reduction="avg"), rlx.ModelFormatError, "avg")


def test_error_rank_1_input():
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["x", "t"], ["loss"], name="lossnode")
    vis = [helper.make_tensor_value_info("x", F, [5]), helper.make_tensor_value_info("t", I64, [])]
    model = helper.make_model(helper.make_graph([node], "l", vis, [helper.make_tensor_value_info("loss", F, None)]),
                              opset_imports=[helper.make_opsetid("", 13)])
    _load_error(model, rlx.ShapeError, "[N, C")


def test_error_weight_shape():
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t", "w"], ["loss"], name="lossnode")
    vis = [helper.make_tensor_value_info("x", F, [3, 5]), helper.make_tensor_value_info("t", I64, [3]),
           helper.make_tensor_value_info("w", F, [4])]
    model = helper.make_model(helper.make_graph([node], "l", vis, [helper.make_tensor_value_info("loss", F, None)]),
                              opset_imports=[helper.make_opsetid("", 22)])
    _load_error(model, rlx.ShapeError, "weight")
