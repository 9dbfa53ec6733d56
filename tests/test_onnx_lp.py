"""rlx.onnx LpNormalization, LpPool, GroupNormalization and MeanVarianceNormalization against
ONNX Runtime / the onnx reference, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_case_support import F, I64, check, single  # noqa: E402

import rlx  # noqa: E402

RNG = np.random.default_rng(4)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_lp_normalization(p, axis):
    x = _x(3, 4, 5)
    x[1, 2, :] = 0
    x[:, 1, 3] = 0
    x[2, :, 1] = 0  # zero norms along each axis give 0, not NaN
    # The onnx reference sums x, not |x|, for p=1: ONNX Runtime.
    check(single("LpNormalization", [("x", F, [3, 4, 5])], F, opset=1, axis=axis, p=p), {"x": x})


def test_lp_normalization_errors():
    with pytest.raises(rlx.ModelFormatError, match="the_node.*p=3"):
        rlx.onnx.load(single("LpNormalization", [("x", F, [3, 4])], F, opset=1, p=3))
    with pytest.raises(rlx.DTypeError, match="the_node.*int64"):
        rlx.onnx.load(single("LpNormalization", [("x", I64, [3, 4])], I64, opset=1))


LP_POOL = [  # (shape, attributes)
    ([1, 2, 9], dict(kernel_shape=[3])),
    ([2, 3, 6, 7], dict(kernel_shape=[3, 2], strides=[2, 1])),
    ([1, 2, 6, 7], dict(kernel_shape=[3, 3], pads=[1, 0, 2, 1])),
    ([1, 2, 7, 7], dict(kernel_shape=[2, 2], dilations=[2, 3])),
    ([1, 2, 7, 6], dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER")),
    ([1, 2, 7, 6], dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_LOWER")),
    ([1, 1, 4, 5, 6], dict(kernel_shape=[2, 2, 3])),
    ([1, 2, 8, 7], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
]


@pytest.mark.parametrize("shape,at", LP_POOL)
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(shape, at, p):
    check(single("LpPool", [("x", F, shape)], F, opset=18, p=p, **at), {"x": _x(*shape)}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset,per_group", [(18, True), (21, False)])
@pytest.mark.parametrize("shape,groups", [([2, 6, 5], 3), ([3, 4, 2, 3], 2), ([2, 4], 4), (["b", 6, 3], 6)])
def test_group_normalization(opset, per_group, shape, groups):
    c = shape[1]
    n = groups if per_group else c
    inits = {"s": RNG.uniform(0.5, 2, n).astype(np.float32), "b": _x(n)}
    m = single("GroupNormalization", [("x", F, shape), "s", "b"], F, inits, opset=opset, num_groups=groups, epsilon=1e-3)
    x = _x(*[2 if d == "b" else d for d in shape])
    # ONNX Runtime has opset 18's GroupNormalization only as a contrib op: the onnx reference.
    check(m, {"x": x}, which="ref", rtol=1e-4, atol=1e-5)


def test_group_normalization_errors():
    inits = {"s": np.ones(3, np.float32), "b": np.zeros(3, np.float32)}
    with pytest.raises(rlx.ShapeError, match="the_node.*does not divide the 4 channels"):
        rlx.onnx.load(single("GroupNormalization", [("x", F, [2, 4, 5]), "s", "b"], F, inits, opset=21, num_groups=3))
    with pytest.raises(rlx.ShapeError, match="the_node.*scale of shape"):
        rlx.onnx.load(single("GroupNormalization", [("x", F, [2, 6, 5]), "s", "b"], F, inits, opset=21, num_groups=2))


@pytest.mark.parametrize("axes", [None, [0, 2, 3], [1], [-1, 0]])
def test_mean_variance_normalization(axes):
    at = {"axes": axes} if axes is not None else {}
    check(single("MeanVarianceNormalization", [("x", F, [2, 3, 4, 5])], F, opset=13, **at), {"x": _x(2, 3, 4, 5)},
          rtol=1e-4, atol=1e-5)
