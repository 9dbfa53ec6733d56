"""Slice with steps other than 1 (a gather of import-time indices, rlx._onnx_ops_shape) against
ONNX Runtime, bit for bit, and its error on a symbolic axis."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_case_support import F, check, single  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([0], [7], [1], [2]),
    ([-1], [-9], [1], [-1]),  # the whole axis reversed
    ([5, 20], [-100, 0], [1, 2], [-2, -3]),  # out-of-range bounds are clamped
    ([1, 0], [3, 10], [0, 2], [1, 4]),
    ([2], [2], [1], [-1]),  # empty
])
def test_strided_slice(starts, ends, axes, steps):
    x = np.random.default_rng(0).standard_normal((3, 7, 10)).astype(np.float32)
    inits = {"st": np.array(starts, np.int64), "en": np.array(ends, np.int64), "ax": np.array(axes, np.int64),
             "sp": np.array(steps, np.int64)}
    m = single("Slice", [("x", F, [3, 7, 10]), "st", "en", "ax", "sp"], F, inits=inits, opset=13)
    check(m, {"x": x}, exact=True)


def test_strided_slice_on_a_symbolic_axis_is_an_error():
    inits = {"st": np.array([0], np.int64), "en": np.array([10], np.int64), "ax": np.array([0], np.int64),
             "sp": np.array([2], np.int64)}
    m = single("Slice", [("x", F, ["n", 4]), "st", "en", "ax", "sp"], F, inits=inits, opset=13)
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*static axis"):
        rlx.onnx.load(m)
