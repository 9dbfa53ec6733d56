"""rlx.onnx Resize / Upsample, DepthToSpace / SpaceToDepth, CumSum and Einsum against ONNX
Runtime on small graphs built with onnx.helper; UnsupportedOpError naming the node for the
variants rlx does not import."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, inits=(), opset=19):
    graph = helper.make_graph(nodes, "more", inputs, outputs,
                              initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def check(model, feeds, rtol=1e-4, atol=1e-5, oracle="ort"):
    """rlx against ONNX Runtime, or (oracle="ref") against the onnx reference evaluator, which
    generates the ONNX backend tests' expected outputs: used where the two disagree."""
    if oracle == "ref":
        from onnx.reference import ReferenceEvaluator

        want = ReferenceEvaluator(model).run(None, feeds)
    else:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, feeds)
    m = rlx.onnx.load(model)
    out = m.run(feeds)
    got = [out[n] for n in m.outputs]
    for g, w in zip(got, want):
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return m


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# -- Resize ----------------------------------------------------------------------------------


def _resize(shape, scales=None, sizes=None, roi=None, opset=19, **at):
    inits = [("roi", np.asarray(roi if roi is not None else [], np.float32))]
    ins = ["x", "roi"]
    if scales is not None:
        inits.append(("scales", np.asarray(scales, np.float32)))
        ins.append("scales")
    else:
        inits.append(("sizes", np.asarray(sizes, np.int64)))
        ins += ["", "sizes"]
    node = helper.make_node("Resize", ins, ["y"], name="rs", **at)
    return _model([node], [_vi("x", shape)], [_vi("y", None)], inits, opset)


COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("nearest_mode", NEAREST)
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 0.6, 1.7], [1, 1, 0.5, 0.5]])
def test_resize_nearest_scales(coord, nearest_mode, scales):
    m = _resize([1, 2, 5, 4], scales=scales, mode="nearest", coordinate_transformation_mode=coord,
                nearest_mode=nearest_mode)
    # Fractional scales: ONNX Runtime computes source coordinates in float32 (a coordinate of
    # exactly 2 can land at 1.9999998 and floor to 1) and align_corners with the rounded output
    # length; rlx follows the onnx reference (float64, the spec's unrounded length).
    check(m, {"x": _x(1, 2, 5, 4)}, oracle="ort" if scales == [1, 1, 2, 3] else "ref")


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("sizes", [[2, 3, 9, 7], [2, 3, 3, 2], [2, 3, 1, 8]])
def test_resize_interp_sizes(coord, mode, sizes):
    m = _resize([2, 3, 5, 4], sizes=sizes, mode=mode, coordinate_transformation_mode=coord)
    # An output length of 1 under pytorch_half_pixel: the spec (and the onnx reference) read
    # source coordinate -0.5, ONNX Runtime's cubic kernel reads 0.
    ort_differs = mode == "cubic" and coord == "pytorch_half_pixel" and 1 in sizes
    check(m, {"x": _x(2, 3, 5, 4)}, oracle="ref" if ort_differs else "ort")


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_interp_scales(mode):
    m = _resize([1, 1, 4, 6], scales=[1, 1, 2.5, 0.5], mode=mode)
    check(m, {"x": _x(1, 1, 4, 6)})


def test_resize_cubic_exclude_outside_and_a():
    m = _resize([1, 1, 4, 4], scales=[1, 1, 1.6, 2.0], mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1)
    check(m, {"x": _x(1, 1, 4, 4)})


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_tf_crop_and_resize(mode):
    m = _resize([1, 1, 4, 4], sizes=[1, 1, 3, 3], roi=[0, 0, 0.4, 0.6, 1, 1, 1.2, 1.7], mode=mode,
                coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=10.0)
    check(m, {"x": _x(1, 1, 4, 4)})


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
def test_resize_axes_keep_aspect(policy):
    m = _resize([1, 1, 4, 4], sizes=[7, 8], mode="linear", axes=[2, 3], keep_aspect_ratio_policy=policy)
    check(m, {"x": _x(1, 1, 4, 4)})


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_antialias(mode):
    m = _resize([1, 1, 8, 8], scales=[1, 1, 0.6, 0.4], mode=mode, antialias=1)
    check(m, {"x": _x(1, 1, 8, 8)})


def test_resize_symbolic_batch_nearest_int():
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")
    m = _model([node], [_vi("x", ["n", 2, 3, 3], TensorProto.INT32)], [_vi("y", None, TensorProto.INT32)],
               [("scales", np.array([1, 1, 2, 2], np.float32))])
    x = RNG.integers(-50, 50, (3, 2, 3, 3)).astype(np.int32)
    check(m, {"x": x}, rtol=0, atol=0)


def test_resize_opset10_and_upsample():
    node = helper.make_node("Resize", ["x", "scales"], ["y"], mode="nearest")
    m = _model([node], [_vi("x", [1, 1, 3, 4])], [_vi("y", None)], [("scales", np.array([1, 1, 1.5, 2.5], np.float32))], 10)
    check(m, {"x": _x(1, 1, 3, 4)})
    node = helper.make_node("Resize", ["x", "scales"], ["y"], mode="linear")
    m = _model([node], [_vi("x", [1, 1, 3, 4])], [_vi("y", None)], [("scales", np.array([1, 1, 2, 1.5], np.float32))], 10)
    check(m, {"x": _x(1, 1, 3, 4)})
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")
    m = _model([node], [_vi("x", [1, 1, 3, 4])], [_vi("y", None)], [("scales", np.array([1, 1, 2, 3], np.float32))], 9)
    check(m, {"x": _x(1, 1, 3, 4)})


def test_resize_unsupported_names_node():
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="bad_resize", mode="lanczos")
    m = _model([node], [_vi("x", [1, 1, 2, 2])], [_vi("y", None)], [("scales", np.array([1, 1, 2, 2], np.float32))])
    with pytest.raises(rlx.UnsupportedOpError, match=r"bad_resize.*lanczos"):
        rlx.onnx.load(m)


def test_resize_runtime_scales_refused():
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rt", mode="nearest")
    m = _model([node], [_vi("x", [1, 1, 2, 2]), _vi("scales", [4])], [_vi("y", None)])
    with pytest.raises(rlx.UnsupportedOpError, match=r"rt.*known at import"):
        rlx.onnx.load(m)


# -- DepthToSpace / SpaceToDepth -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode)
    m = _model([node], [_vi("x", ["n", 8, 3, 5])], [_vi("y", None)])
    check(m, {"x": _x(2, 8, 3, 5)}, rtol=0, atol=0)


def test_space_to_depth():
    node = helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=3)
    m = _model([node], [_vi("x", ["n", 2, 6, 9])], [_vi("y", None)])
    check(m, {"x": _x(3, 2, 6, 9)}, rtol=0, atol=0)


def test_depth_to_space_bad_channels():
    node = helper.make_node("DepthToSpace", ["x"], ["y"], name="d2s", blocksize=2)
    m = _model([node], [_vi("x", [1, 6, 2, 2])], [_vi("y", None)])
    with pytest.raises(rlx.ShapeError, match="d2s"):
        rlx.onnx.load(m)


# -- CumSum ----------------------------------------------------------------------------------


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumsum_float(exclusive, reverse, axis):
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    m = _model([node], [_vi("x", [3, 5, 7])], [_vi("y", None)], [("axis", np.array(axis, np.int64))])
    check(m, {"x": _x(3, 5, 7)})


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum_int(exclusive, reverse):
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    m = _model([node], [_vi("x", ["b", 11], TensorProto.INT64)], [_vi("y", None, TensorProto.INT64)],
               [("axis", np.array(1, np.int32))])
    check(m, {"x": RNG.integers(-100, 100, (4, 11)).astype(np.int64)}, rtol=0, atol=0)


def test_cumsum_1d():
    node = helper.make_node("CumSum", ["x", "axis"], ["y"])
    m = _model([node], [_vi("x", [6])], [_vi("y", None)], [("axis", np.array(0, np.int64))])
    check(m, {"x": _x(6)})


def test_cumsum_symbolic_axis_refused():
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], name="cs")
    m = _model([node], [_vi("x", [2, "t"])], [_vi("y", None)], [("axis", np.array(1, np.int64))])
    with pytest.raises(rlx.UnsupportedOpError, match="cs.*symbolic"):
        rlx.onnx.load(m)


# -- Einsum ----------------------------------------------------------------------------------

EINSUM = [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bhid,bhjd->bhij", [(2, 3, 4, 8), (2, 3, 5, 8)]),
    ("bhij,bhjd->bhid", [(2, 3, 4, 5), (2, 3, 5, 8)]),
    ("ij->ji", [(3, 4)]),
    ("ij->i", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij", [(3, 4)]),
    ("ii->i", None),
    ("i,i->", [(5,), (5,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("bij,jk->bik", [(2, 3, 4), (4, 5)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("bij,bkj->bki", [(2, 3, 4), (2, 5, 4)]),
    ("ijk,ik->j", [(2, 3, 4), (2, 4)]),
]


@pytest.mark.parametrize("eq,shapes", [e for e in EINSUM if e[1] is not None])
def test_einsum(eq, shapes):
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], equation=eq)
    m = _model([node], [_vi(n, s) for n, s in zip(names, shapes)], [_vi("y", None)], opset=12)
    check(m, {n: _x(*s) for n, s in zip(names, shapes)})


def test_einsum_symbolic_batch():
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="bhid,bhjd->bhij")
    m = _model([node], [_vi("a", ["b", 2, "s", 4]), _vi("b", ["b", 2, "s", 4])], [_vi("y", None)], opset=12)
    check(m, {"a": _x(3, 2, 5, 4), "b": _x(3, 2, 5, 4)})


@pytest.mark.parametrize("eq,shapes", [
    ("ii->i", [(4, 4)]),
    ("ii", [(5, 5)]),  # the trace (implicit output: a repeated index is summed)
    ("iij->ji", [(3, 3, 2)]),
    ("...ii->...i", [(2, 3, 4, 4)]),
    ("ijij->ij", [(2, 3, 2, 3)]),  # two repeated indices
    ("ij,jj->i", [(2, 3), (3, 3)]),  # a diagonal feeding a product
    ("bii,bij->bj", [(2, 3, 3), (2, 3, 4)]),
])
def test_einsum_diagonals_match_numpy(eq, shapes):
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], equation=eq)
    m = _model([node], [_vi(n, s) for n, s in zip(names, shapes)], [_vi("y", None)], opset=12)
    feeds = {n: _x(*s) for n, s in zip(names, shapes)}
    got = rlx.onnx.load(m).run(feeds)["y"]
    want = np.einsum(eq, *feeds.values())
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_einsum_diagonal_ignores_what_is_off_it():
    # NaN and inf off the diagonal do not reach it (a multiply by an identity mask would).
    node = helper.make_node("Einsum", ["x"], ["y"], equation="ii->i")
    m = _model([node], [_vi("x", [3, 3])], [_vi("y", None)], opset=12)
    x = np.array([[1, np.nan, np.inf], [-np.inf, 2, np.nan], [np.nan, 0, -3]], np.float32)
    np.testing.assert_array_equal(rlx.onnx.load(m).run({"x": x})["y"], [1, 2, -3])


def test_einsum_diagonal_of_a_symbolic_size_refused():
    node = helper.make_node("Einsum", ["x"], ["y"], name="diag", equation="ii->i")
    m = _model([node], [_vi("x", ["n", "n"])], [_vi("y", None)], opset=12)
    with pytest.raises(rlx.UnsupportedOpError, match="diag.*diagonal.*symbolic"):
        rlx.onnx.load(m)


def test_einsum_three_operands_refused():
    node = helper.make_node("Einsum", ["a", "b", "c"], ["y"], name="e3", equation="ij,jk,kl->il")
    m = _model([node], [_vi("a", [2, 3]), _vi("b", [3, 4]), _vi("c", [4, 5])], [_vi("y", None)], opset=12)
    with pytest.raises(rlx.UnsupportedOpError, match="e3.*3 operands"):
        rlx.onnx.load(m)
