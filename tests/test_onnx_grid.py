"""rlx.onnx AffineGrid and GridSample against the onnx reference (every mode, padding mode and
align_corners, 2-D and 3-D, grids reaching past the borders), and their errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_case_support import F, I64, check, single  # noqa: E402

import rlx  # noqa: E402

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [[2, 3, 4, 5], [1, 1, 3, 1], [2, 1, 3, 4, 2]])
def test_affine_grid(align, size):
    d = len(size) - 2
    theta = RNG.standard_normal((size[0], d, d + 1)).astype(np.float32)
    m = single("AffineGrid", [("theta", F, list(theta.shape)), "size"], F, {"size": np.array(size, np.int64)},
               opset=20, align_corners=align)
    check(m, {"theta": theta}, which="ref", rtol=1e-5, atol=1e-6)


def test_affine_grid_errors():
    with pytest.raises(rlx.ShapeError, match="the_node.*theta"):
        rlx.onnx.load(single("AffineGrid", [("theta", F, [2, 3, 4]), "size"], F, {"size": np.array([2, 1, 4, 5])},
                             opset=20))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*known at import"):
        rlx.onnx.load(single("AffineGrid", [("theta", F, [2, 2, 3]), ("size", I64, [4])], F, opset=20))


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("xs,out", [([2, 3, 4, 5], [3, 6]), ([1, 2, 3, 2, 4], [2, 3, 2])])
def test_grid_sample(align, padding, mode, xs, out):
    d = len(xs) - 2
    if d == 3 and mode == "cubic":
        pytest.skip("the spec defines cubic sampling for 4-D inputs only")
    x = RNG.standard_normal(xs).astype(np.float32)
    # Past the borders (|v| up to 2.3) to reach every padding rule, reflection folding twice.
    grid = RNG.uniform(-2.3, 2.3, [xs[0]] + out + [d]).astype(np.float32)
    m = single("GridSample", [("x", F, xs), ("grid", F, list(grid.shape))], F, opset=22,
               mode=mode, padding_mode=padding, align_corners=align)
    check(m, {"x": x, "grid": grid}, which="ref", rtol=1e-4, atol=1e-5)


def test_grid_sample_opset16_names():
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    grid = RNG.uniform(-1.2, 1.2, (1, 2, 5, 2)).astype(np.float32)
    for mode in ("bilinear", "bicubic", "nearest"):
        m = single("GridSample", [("x", F, [1, 2, 3, 4]), ("grid", F, [1, 2, 5, 2])], F, opset=16, mode=mode)
        check(m, {"x": x, "grid": grid}, which="ort", rtol=1e-4, atol=1e-5)  # the reference knows opset 20's names only


def test_grid_sample_errors():
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*mode 'area'"):
        rlx.onnx.load(single("GridSample", [("x", F, [1, 1, 3, 3]), ("grid", F, [1, 2, 2, 2])], F, opset=22, mode="area"))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*padding_mode"):
        rlx.onnx.load(single("GridSample", [("x", F, [1, 1, 3, 3]), ("grid", F, [1, 2, 2, 2])], F, opset=22,
                             padding_mode="wrap"))
    with pytest.raises(rlx.ShapeError, match="the_node.*grid of shape"):
        rlx.onnx.load(single("GridSample", [("x", F, [1, 1, 3, 3]), ("grid", F, [1, 2, 2, 3])], F, opset=22))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*static shapes"):
        rlx.onnx.load(single("GridSample", [("x", F, ["n", 1, 3, 3]), ("grid", F, ["n", 2, 2, 2])], F, opset=22))
