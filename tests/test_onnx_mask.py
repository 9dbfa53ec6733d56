"""rlx.onnx Trilu, EyeLike, OneHot, Hardmax and CenterCropPad against ONNX Runtime / the onnx
reference (bit for bit: masks and moves), and their errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_case_support import F, I32, I64, check, run, single  # noqa: E402

import rlx  # noqa: E402

RNG = np.random.default_rng(2)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -1, -7, 9])
@pytest.mark.parametrize("shape,elem", [([4, 6], F), ([2, 5, 3], I64), (["b", 3, 3], F)])
def test_trilu(upper, k, shape, elem):
    ins = [("x", elem, shape)] + (["k"] if k is not None else [])
    inits = {"k": np.array(k, np.int64)} if k is not None else {}
    x = _x(*[2 if d == "b" else d for d in shape])
    check(single("Trilu", ins, elem, inits, upper=upper), {"x": x if elem == F else (x * 10).astype(np.int64)}, exact=True)


def test_trilu_symbolic_matrix_is_unsupported():
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*symbolic size"):
        rlx.onnx.load(single("Trilu", [("x", F, [3, "n"])], F))


@pytest.mark.parametrize("k", [0, 1, -2, 5])
@pytest.mark.parametrize("dtype", [None, F, I64, I32])
def test_eye_like(k, dtype):
    at = {"dtype": dtype} if dtype is not None else {}
    check(single("EyeLike", [("x", I32, [3, 4])], dtype or I32, k=k, **at), {"x": np.zeros((3, 4), np.int32)}, exact=True)


def test_eye_like_needs_a_static_matrix():
    with pytest.raises(rlx.ShapeError, match="the_node.*rank 3"):
        rlx.onnx.load(single("EyeLike", [("x", F, [2, 3, 4])], F))


@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
@pytest.mark.parametrize("ielem", [I64, I32, F])
def test_one_hot(axis, ielem):
    depth = 5
    idx = RNG.integers(-7, 8, (3, 4)).astype({I64: np.int64, I32: np.int32, F: np.float32}[ielem])
    m = single("OneHot", [("i", ielem, [3, 4]), "depth", ("v", F, [2])], F, {"depth": np.array(depth, np.int64)}, axis=axis)
    # ONNX Runtime lacks some index types: the onnx reference for all.
    check(m, {"i": idx, "v": np.array([-1.5, 4.0], np.float32)}, which="ref", exact=True)


def test_one_hot_casts_float_depth_and_indices_to_int64():
    # The spec casts non-integer depth and indices to int64 (truncation); the onnx reference
    # does not (arange(3.7) has 4 entries) and ONNX Runtime has no kernel for these types.
    m = single("OneHot", [("i", F, [5]), "depth", "v"], I64, {"depth": np.array(3.7, np.float32), "v": np.array([0, 9])})
    got, = run(m, {"i": np.array([0.5, 2.9, -1.2, 3.0, -2.5], np.float32)})
    # indices 0, 2, -1 -> 2, 3 (out of range: all off), -2 -> 1
    np.testing.assert_array_equal(got, [[9, 0, 0], [0, 0, 9], [0, 0, 9], [0, 0, 0], [0, 9, 0]])


def test_one_hot_errors():
    with pytest.raises(rlx.ShapeError, match="the_node.*depth 0"):
        rlx.onnx.load(single("OneHot", [("i", I64, [4]), "depth", ("v", F, [2])], F, {"depth": np.array(0)}))
    with pytest.raises(rlx.ShapeError, match="the_node.*values of shape"):
        rlx.onnx.load(single("OneHot", [("i", I64, [4]), "depth", ("v", F, [3])], F, {"depth": np.array(3)}))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("opset", [11, 13])
def test_hardmax(axis, opset):
    x = np.round(_x(3, 4, 5))  # ties: the first maximum wins
    check(single("Hardmax", [("x", F, [3, 4, 5])], F, opset=opset, axis=axis), {"x": x}, exact=True)


@pytest.mark.parametrize("shape,axes", [([5, 4, 3], None), ([2, 7], [1]), ([3, 4, 3], [0, -1]), ([6, 1, 5], [2, 0])])
def test_center_crop_pad(shape, axes):
    r = len(shape)
    axes_n = list(range(r)) if axes is None else axes
    target = [max(int(shape[a] + RNG.integers(-3, 4)), 0) for a in axes_n]
    at = {"axes": axes} if axes is not None else {}
    m = single("CenterCropPad", [("x", F, shape), "s"], F, {"s": np.array(target, np.int64)}, opset=18, **at)
    check(m, {"x": _x(*shape)}, which="ref", exact=True)


def test_center_crop_pad_errors():
    with pytest.raises(rlx.ShapeError, match="the_node.*one size per distinct axis"):
        rlx.onnx.load(single("CenterCropPad", [("x", F, [3, 4]), "s"], F, {"s": np.array([2, 2, 2])}, opset=18))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*symbolic size"):
        rlx.onnx.load(single("CenterCropPad", [("x", F, ["n", 4]), "s"], F, {"s": np.array([2, 2])}, opset=18))


@pytest.mark.parametrize("axis,cond", [(0, [1, 0, 1]), (1, [0, 1]), (-1, [1, 1]), (None, [0, 1, 1, 0, 1]),
                                       (0, [1]), (None, [1, 0, 0, 0, 0, 1, 0, 0])])
def test_compress(axis, cond):
    at = {} if axis is None else {"axis": axis}
    m = single("Compress", [("x", F, [3, 2]), "c"], F, {"c": np.array(cond, bool)}, **at)
    check(m, {"x": _x(3, 2)}, which="ref", exact=True)


def test_compress_errors():
    with pytest.raises(rlx.ShapeError, match="the_node.*selects position 2"):
        rlx.onnx.load(single("Compress", [("x", F, [3, 2]), "c"], F, {"c": np.array([0, 0, 1], bool)}, axis=1))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*selects nothing"):
        rlx.onnx.load(single("Compress", [("x", F, [3, 2]), "c"], F, {"c": np.array([0, 0], bool)}, axis=1))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*known at import"):
        rlx.onnx.load(single("Compress", [("x", F, [3, 2]), ("c", 9, [3])], F, axis=0))
