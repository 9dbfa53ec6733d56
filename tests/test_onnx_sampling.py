"""DeformConv and RoiAlign (rlx._onnx_ops_sampling) against the onnx reference evaluator, on
what the backend node tests leave out: batches, groups, strides and dilations, offsets that
leave the image, regions of several samples in other images and scales, sampling_ratio 0 with
regions known at import, and the typed errors of the data-dependent case."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64
vi = helper.make_tensor_value_info
RNG = np.random.default_rng(11)


def _model(op: str, inputs: List[Any], inits: List[Any] = (), **at: Any) -> onnx.ModelProto:
    names = [i[0] for i in inputs] + [t.name for t in inits]
    order = {"DeformConv": ["X", "W", "offset", "B", "mask"], "RoiAlign": ["X", "rois", "batch_indices"]}[op]
    ins = [n if n in names else "" for n in order]
    while ins[-1] == "":
        ins.pop()
    node = helper.make_node(op, ins, ["Y"], name="the_node", **at)
    g = helper.make_graph([node], "g", [vi(*i) for i in inputs], [vi("Y", F, None)], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)])
    m.ir_version = 10
    return m


def _check(m: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    got = rlx.onnx.load(m).run(feeds)["Y"]
    (want,) = ReferenceEvaluator(m).run(None, feeds)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return got


@pytest.mark.parametrize("at", [
    {"group": 2, "offset_group": 2, "strides": [2, 1], "pads": [1, 0, 1, 2]},
    {"dilations": [2, 1], "pads": [1, 1, 1, 1], "offset_group": 4},
    {"group": 4, "strides": [1, 2], "dilations": [1, 2], "pads": [0, 1, 0, 1]},
])
@pytest.mark.parametrize("mask", [False, True])
def test_deform_conv(at, mask):
    n, c, h, w, oc, kh, kw = 2, 4, 5, 6, 4, 2, 3
    g = at.get("group", 1)
    og = at.get("offset_group", 1)
    st, d, p = at.get("strides", [1, 1]), at.get("dilations", [1, 1]), at["pads"]
    oh = (h + p[0] + p[2] - ((kh - 1) * d[0] + 1)) // st[0] + 1
    ow = (w + p[1] + p[3] - ((kw - 1) * d[1] + 1)) // st[1] + 1
    shapes = {"X": [n, c, h, w], "W": [oc, c // g, kh, kw], "offset": [n, og * kh * kw * 2, oh, ow], "B": [oc]}
    if mask:
        shapes["mask"] = [n, og * kh * kw, oh, ow]
    m = _model("DeformConv", [(k, F, s) for k, s in shapes.items()], kernel_shape=[kh, kw], **at)
    feeds = {k: RNG.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    feeds["offset"] *= 2.5  # many taps land outside the image
    _check(m, feeds)


def _rois_model(rois: Any, known: bool, **at: Any) -> onnx.ModelProto:
    inputs = [("X", F, [2, 3, 8, 7]), ("batch_indices", I64, [len(rois)])]
    if known:
        return _model("RoiAlign", inputs, [numpy_helper.from_array(np.asarray(rois, np.float32), "rois")], **at)
    return _model("RoiAlign", inputs + [("rois", F, [len(rois), 4])], **at)


ROIS = [[0.0, 0.0, 6.0, 7.0], [1.5, 2.0, 5.0, 6.5], [-2.0, -1.0, 8.5, 9.0], [3.0, 3.0, 3.2, 3.1]]


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
def test_roi_align_run_time_regions(mode, ctm):
    m = _rois_model(ROIS, False, mode=mode, coordinate_transformation_mode=ctm, output_height=3, output_width=2,
                    sampling_ratio=3, spatial_scale=0.8)
    _check(m, {"X": RNG.standard_normal((2, 3, 8, 7)).astype(np.float32), "rois": np.array(ROIS, np.float32),
               "batch_indices": np.array([1, 0, 1, 0], np.int64)})


def test_roi_align_sampling_ratio_0_with_regions_known_at_import():
    rois = [[0.0, 0.0, 4.0, 4.0], [2.0, 1.0, 6.0, 5.0]]  # both 4 x 4: one 2 x 2 grid for 2 x 2 bins
    m = _rois_model(rois, True, output_height=2, output_width=2, sampling_ratio=0)
    _check(m, {"X": RNG.standard_normal((2, 3, 8, 7)).astype(np.float32), "batch_indices": np.array([0, 1], np.int64)})


def test_roi_align_sampling_ratio_0_is_data_dependent_at_run_time():
    m = _rois_model(ROIS, False, output_height=2, output_width=2, sampling_ratio=0)
    with pytest.raises(rlx.UnsupportedOpError, match=r"'the_node' \(RoiAlign\).*sampling_ratio 0.*data-dependent"):
        rlx.onnx.load(m)
    m = _rois_model(ROIS, True, output_height=2, output_width=2, sampling_ratio=0)
    with pytest.raises(rlx.UnsupportedOpError, match=r"'the_node' \(RoiAlign\).*one grid size"):
        rlx.onnx.load(m)


def test_deform_conv_3d_is_a_typed_error():
    shapes = {"X": [1, 1, 3, 3, 3], "W": [1, 1, 2, 2, 2], "offset": [1, 24, 2, 2, 2]}
    m = _model("DeformConv", [(k, F, s) for k, s in shapes.items()])
    with pytest.raises(rlx.UnsupportedOpError, match=r"'the_node' \(DeformConv\).*2-d"):
        rlx.onnx.load(m)
