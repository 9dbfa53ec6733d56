"""rlx.onnx Det (the Leibniz sum) against ONNX Runtime, including singular matrices, and its
errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_case_support import F, I64, check, run, single  # noqa: E402

import rlx  # noqa: E402

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("shape", [[1, 1], [2, 2], [3, 3], [4, 3, 3], [2, 2, 4, 4], [3, 5, 5], [2, 6, 6]])
def test_det(shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    check(single("Det", [("x", F, shape)], F), {"x": x}, rtol=1e-4, atol=1e-5)


def test_det_singular_and_zero_pivot():
    # A zero leading entry (LU without pivoting would divide by it) and a rank-deficient matrix.
    x = np.array([[[0, 1, 2], [3, 4, 5], [6, 7, 9]], [[1, 2, 3], [2, 4, 6], [1, 0, 1]]], np.float32)
    got, = run(single("Det", [("x", F, [2, 3, 3])], F), {"x": x})
    np.testing.assert_allclose(got, [-3.0, 0.0], atol=1e-6)


def test_det_errors():
    with pytest.raises(rlx.ShapeError, match="the_node.*n, n"):
        rlx.onnx.load(single("Det", [("x", F, [2, 3])], F))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*7 x 7"):
        rlx.onnx.load(single("Det", [("x", F, [7, 7])], F))
    with pytest.raises(rlx.DTypeError, match="the_node.*int64"):
        rlx.onnx.load(single("Det", [("x", I64, [2, 2])], I64))
