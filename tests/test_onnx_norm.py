"""rlx.onnx RMSNormalization against ONNX Runtime on small graphs built with onnx.helper: every
axis, broadcast scales, epsilon, a symbolic batch; typed errors naming the node."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402
from onnx_case_support import check_loaded  # noqa: E402

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _rms(xshape, sshape, **at):
    node = helper.make_node("RMSNormalization", ["x", "s"], ["y"], name="rms", **at)
    vis = [helper.make_tensor_value_info("x", F, xshape), helper.make_tensor_value_info("s", F, sshape)]
    model = helper.make_model(helper.make_graph([node], "rms", vis, [helper.make_tensor_value_info("y", F, None)]),
                              opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    return model


def check(model, feeds, rtol=1e-4, atol=1e-5):
    check_loaded(model, feeds, "ort", rtol, atol)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("axis", [-1, -2, -3, 0, 1, 2, 3])
def test_axis(axis):
    xshape = [2, 3, 4, 5]
    sshape = xshape[axis:]
    check(_rms(xshape, sshape, axis=axis), {"x": _x(*xshape), "s": _x(*sshape)})


@pytest.mark.parametrize("sshape", [[1], [1, 5], [4, 1], [3, 4, 5], [1, 1, 5]], ids=str)
def test_broadcast_scale(sshape):
    check(_rms([2, 3, 4, 5], sshape, axis=2), {"x": _x(2, 3, 4, 5), "s": _x(*sshape)})


def test_epsilon_and_default_axis():
    check(_rms([2, 3, 5], [5], epsilon=0.5), {"x": _x(2, 3, 5) * 0.1, "s": _x(5)})


def test_symbolic_batch():
    check(_rms(["n", 3, 4], [3, 4], axis=1), {"x": _x(5, 3, 4), "s": _x(3, 4)})


def _load_error(model, exc, *words):
    with pytest.raises(exc) as e:
        rlx.onnx.load(model)
    for w in ("rms",) + words:
        assert w in str(e.value), str(e.value)


def test_error_scale_does_not_broadcast():
    _load_error(_rms([2, 3, 4], [3]), rlx.ShapeError, "broadcast")


def test_error_axis_out_of_range():
    _load_error(_rms([2, 3, 4], [4], axis=3), rlx.ShapeError, "axis")


def test_error_stash_type():
    _load_error(_rms([2, 3, 4], [4], stash_type=11), rlx.UnsupportedOpError, "stash_type")
