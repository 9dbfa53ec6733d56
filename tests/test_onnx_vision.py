"""rlx.onnx vision ops (Conv, pooling, BatchNormalization, LRN, CNN activations) against ONNX
Runtime on small graphs built with onnx.helper, the ONNX backend's nine light CNNs against their
shipped outputs and, with random weights, against ONNX Runtime; typed errors for bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "vision", inputs, outputs,
                              initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name, shape):
    return helper.make_tensor_value_info(name, F, shape)


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _rlx(model, feeds):
    m = rlx.onnx.load(model)
    out = m.run(feeds)
    return [out[n] for n in m.outputs], m


def _reference(model, feeds):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)


def _ort_differs(model):
    """SAME auto_pad with dilations, where ONNX Runtime departs from the ONNX spec (Conv: refused;
    MaxPool: pads for the undilated kernel)."""
    at = {a.name: helper.get_attribute_value(a) for a in model.graph.node[0].attribute}
    return at.get("auto_pad", b"").startswith(b"SAME") and any(d != 1 for d in at.get("dilations", []))


def check(model, feeds, rtol=1e-4, atol=1e-5):
    """rlx and ONNX Runtime (or the onnx reference evaluator where ONNX Runtime departs from the
    spec) agree on every output; returns the imported model."""
    got, m = _rlx(model, feeds)
    for g, r in zip(got, (_reference if _ort_differs(model) else _ort)(model, feeds)):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)
    return m


def _rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def single(op, x_shape, out_rank, inits=(), extra_inputs=(), opset=17, **attrs):
    """A one-node model over input "x" (plus initializers / extra graph inputs)."""
    names = ["x"] + [n for n, _ in inits] + [n for n, _ in extra_inputs]
    node = helper.make_node(op, names, ["y"], name=f"the_{op.lower()}", **attrs)
    ins = [_vi("x", x_shape)] + [_vi(n, s) for n, s in extra_inputs]
    return _model([node], ins, [_vi("y", [None] * out_rank)], inits, opset)


# -- Conv -----------------------------------------------------------------------------------

CONV_CASES = [
    # (x shape, weight shape, attrs)
    ((2, 3, 9, 9), (4, 3, 3, 3), {}),
    ((2, 3, 9, 9), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 3, 9, 8), (4, 3, 3, 2), {"pads": [0, 1, 2, 0], "strides": [2, 1]}),
    ((1, 3, 10, 10), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 10, 10), (4, 3, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [3, 3]}),
    ((1, 3, 10, 10), (4, 3, 4, 2), {"auto_pad": "SAME_UPPER"}),
    ((1, 3, 10, 10), (4, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    ((1, 3, 11, 11), (4, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 0, 3]}),
    ((1, 3, 11, 11), (4, 3, 3, 3), {"auto_pad": "SAME_LOWER", "dilations": [2, 2]}),
    ((2, 4, 8, 8), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    ((2, 4, 8, 8), (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),  # depthwise
    ((2, 4, 8, 8), (8, 1, 3, 3), {"group": 4, "strides": [2, 2]}),  # depthwise, multiplier 2
    ((2, 8, 7, 7), (16, 8, 1, 1), {}),  # pointwise
    ((2, 3, 16), (5, 3, 4), {"strides": [2], "pads": [1, 2]}),  # 1-D
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1], "strides": [1, 2, 1]}),  # 3-D
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xs,ws,at", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv(xs, ws, at, bias):
    rng = np.random.default_rng(0)
    inits = [("w", _rand(rng, *ws))] + ([("b", _rand(rng, ws[0]))] if bias else [])
    model = single("Conv", xs, len(xs), inits, **at)
    check(model, {"x": _rand(rng, *xs)})


def test_conv_kernel_shape_attribute_and_symbolic_batch():
    rng = np.random.default_rng(1)
    inits = [("w", _rand(rng, 4, 3, 3, 3)), ("b", _rand(rng, 4))]
    model = single("Conv", ["N", 3, 8, 8], 4, inits, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    m = rlx.onnx.load(model)
    assert "N" in m.symbols
    for n in (1, 3):
        x = _rand(rng, n, 3, 8, 8)
        np.testing.assert_allclose(m.run({"x": x})["y"], _ort(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_a_large_batch_of_a_convnet_runs_sample_by_sample():
    # Activations of 12 x 32 x 56 x 56 against 18 KiB of weights: the batch variant runs its
    # one-sample variant per image (per_sample=True, the default) with ORT's results.
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    inits = [("w", _rand(rng, 32, 16, 3, 3, scale=0.2)), ("b", _rand(rng, 32))]
    model = _model(nodes, [_vi("x", ["N", 16, 56, 56])], [_vi("y", ["N", 32, 1, 1])], inits)
    m = rlx.onnx.load(model)
    x = _rand(rng, 12, 16, 56, 56)
    want = _ort(model, {"x": x})[0]
    apart = m.pipeline().get_or_compile(N=12)
    whole = m.pipeline(per_sample=False).get_or_compile(N=12)
    assert apart.samples_apart == 12 and whole.samples_apart is None
    for exe in (apart, whole):
        np.testing.assert_allclose(exe.run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)
    assert m.pipeline().get_or_compile(N=1).samples_apart is None


def test_conv_weight_as_graph_input():
    # A weight fed at run time (static shape) is an ordinary operand.
    rng = np.random.default_rng(2)
    model = single("Conv", [1, 4, 6, 6], 4, extra_inputs=[("w", [6, 2, 3, 3])], group=2)
    check(model, {"x": _rand(rng, 1, 4, 6, 6), "w": _rand(rng, 6, 2, 3, 3)})


def test_conv_weight_from_a_constant_node_is_a_param():
    # A small weight in a Constant node (below the size that makes other arrays params) is
    # still a param: the compiler packs params for the fast convolution kernels.
    rng = np.random.default_rng(3)
    w = _rand(rng, 8, 3, 3, 3)
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w")),
             helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])]
    model = _model(nodes, [_vi("x", [1, 3, 9, 9])], [_vi("y", None)])
    x = _rand(rng, 1, 3, 9, 9)
    got, m = _rlx(model, {"x": x})
    assert list(m.params) == ["w"] and m.params["w"].shape == (8, 3, 3, 3)
    np.testing.assert_allclose(got[0], _ort(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


CONV_T_CASES = [
    # (x shape, weight shape [C, M/group, k..], attrs)
    ((2, 3, 5, 5), (3, 4, 3, 3), {}),
    ((2, 3, 5, 4), (3, 4, 3, 2), {"strides": [2, 3], "pads": [1, 0, 0, 1]}),
    ((1, 3, 5, 5), (3, 2, 3, 3), {"strides": [2, 2], "output_padding": [1, 1], "pads": [1, 1, 1, 1]}),
    ((1, 4, 4, 4), (4, 3, 3, 3), {"group": 2, "strides": [2, 2]}),
    ((1, 4, 4, 4), (4, 1, 4, 4), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),  # depthwise upsampling
    ((1, 2, 5, 5), (2, 3, 3, 3), {"dilations": [2, 2], "pads": [2, 1, 0, 2]}),
    ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [2, 2], "output_shape": [10, 9]}),
    ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 4, 4), (2, 3, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "VALID"}),
    ((2, 3, 7), (3, 2, 4), {"strides": [3], "pads": [2, 1]}),  # 1-D
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), {"strides": [2, 1, 2], "pads": [0, 1, 0, 1, 0, 1]}),  # 3-D
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xs,ws,at", CONV_T_CASES, ids=[str(i) for i in range(len(CONV_T_CASES))])
def test_conv_transpose(xs, ws, at, bias):
    rng = np.random.default_rng(21)
    m = ws[1] * at.get("group", 1)
    inits = [("w", _rand(rng, *ws))] + ([("b", _rand(rng, m))] if bias else [])
    model = single("ConvTranspose", ["N"] + list(xs[1:]), len(xs), inits, **at)
    om = check(model, {"x": _rand(rng, *xs)})
    assert any("flipped and transposed" in n for n in om.notes)


PAD_CASES = [
    ("constant", [0, 0, 1, 2, 0, 0, 3, 1], None),
    ("constant", [0, 1, 0, 2, 0, 0, 3, 0], 1.5),
    ("constant", [0, 0, -1, 2, 0, 0, 1, -2], 0.0),  # negative pads crop
    ("reflect", [0, 0, 2, 1, 0, 0, 1, 3]),
    ("edge", [0, 0, 3, 0, 0, 0, 1, 4]),
    ("wrap", [0, 0, 2, 1, 0, 0, 3, 2]),
]


@pytest.mark.parametrize("case", PAD_CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(PAD_CASES)])
def test_pad(case):
    mode, pads, *value = case
    rng = np.random.default_rng(22)
    inits = [("pads", np.array(pads, np.int64))]
    if value and value[0] is not None:
        inits.append(("value", np.array(value[0], np.float32)))
    model = single("Pad", ["N", 3, 4, 5], 4, inits, opset=19, mode=mode)
    check(model, {"x": _rand(rng, 2, 3, 4, 5)})


def test_pad_axes_and_old_opset():
    rng = np.random.default_rng(23)
    x = _rand(rng, 2, 3, 4, 5)
    inits = [("pads", np.array([1, 2, 3, 0], np.int64)), ("value", np.array(-1.0, np.float32)),
             ("axes", np.array([-1, 1], np.int64))]
    check(single("Pad", [2, 3, 4, 5], 4, inits, opset=19), {"x": x})
    check(single("Pad", [2, 3, 4, 5], 4, opset=10, pads=[0, 0, 1, 2, 0, 0, 2, 1], mode="reflect"), {"x": x})


# -- pooling --------------------------------------------------------------------------------

POOL_CASES = [
    ((1, 3, 9, 9), {"kernel_shape": [3, 3]}),
    ((2, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ((2, 3, 10, 9), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1]}),
    ((1, 3, 10, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 3, 11, 11), {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ((1, 3, 10, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 3, 10, 10), {"kernel_shape": [4, 4], "strides": [3, 3], "auto_pad": "SAME_LOWER"}),
    ((1, 3, 10, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID"}),
    ((2, 3, 12), {"kernel_shape": [4], "strides": [3], "pads": [2, 1]}),
    ((1, 2, 6, 7, 5), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1], "pads": [1, 0, 0, 0, 1, 1]}),
]


@pytest.mark.parametrize("xs,at", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
def test_max_pool(xs, at):
    x = _rand(np.random.default_rng(3), *xs)
    check(single("MaxPool", xs, len(xs), **at), {"x": x})


@pytest.mark.parametrize("at", [
    {"kernel_shape": [3, 3], "dilations": [2, 2]},
    {"kernel_shape": [2, 3], "dilations": [3, 2], "strides": [2, 1], "pads": [1, 2, 0, 1], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "dilations": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
])
def test_max_pool_dilations(at):
    x = _rand(np.random.default_rng(4), 1, 2, 11, 11)
    check(single("MaxPool", [1, 2, 11, 11], 4, **at), {"x": x})


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("channels", [2, 24])  # channel-major planes, and transposed to channels-last
@pytest.mark.parametrize("at", [
    {"kernel_shape": [3, 3], "dilations": [2, 2]},
    {"kernel_shape": [2, 3], "dilations": [3, 2], "strides": [2, 1], "pads": [1, 2, 0, 1], "ceil_mode": 1},
])
def test_average_pool_dilations(at, channels, include):
    # rlx against ONNX Runtime on dilated windows, in both pool layouts.
    x = _rand(np.random.default_rng(4), 1, channels, 11, 11)
    check(single("AveragePool", [1, channels, 11, 11], 4, opset=19, count_include_pad=include, **at), {"x": x})


@pytest.mark.parametrize("include", [0, 1])
def test_average_pool_same_upper_dilated_follows_the_spec(include):
    # SAME_UPPER, 3x3 dilated by 2, stride 2 over 11x11: 6x6 outputs, pads 2 and 2. ONNX Runtime
    # gives 5x5 and the onnx reference other values; the oracle is the spec's window, by hand.
    at = {"kernel_shape": [3, 3], "dilations": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]}
    x = _rand(np.random.default_rng(4), 1, 1, 11, 11)
    got = _rlx(single("AveragePool", [1, 1, 11, 11], 4, opset=19, count_include_pad=include, **at), {"x": x})[0][0]
    want = np.zeros((1, 1, 6, 6), np.float64)
    for oy in range(6):
        for ox in range(6):
            taps = [(oy * 2 - 2 + 2 * ky, ox * 2 - 2 + 2 * kx) for ky in range(3) for kx in range(3)]
            real = [x[0, 0, y, z] for y, z in taps if 0 <= y < 11 and 0 <= z < 11]
            padded = sum(1 for y, z in taps if -2 <= y < 13 and -2 <= z < 13)
            want[0, 0, oy, ox] = sum(real) / (padded if include else len(real))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("xs,at", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
def test_average_pool(xs, at, include):
    x = _rand(np.random.default_rng(5), *xs)
    check(single("AveragePool", xs, len(xs), count_include_pad=include, **at), {"x": x})


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("xs", [(2, 3, 7, 5), (1, 4, 9), (1, 2, 3, 4, 5)])
def test_global_pool(op, xs):
    x = _rand(np.random.default_rng(6), *xs)
    check(single(op, xs, len(xs)), {"x": x})


# -- BatchNormalization ---------------------------------------------------------------------


def _bn_inits(rng, c, prefix="bn"):
    return [(f"{prefix}_s", rng.uniform(0.5, 1.5, c).astype(np.float32)), (f"{prefix}_b", _rand(rng, c)),
            (f"{prefix}_m", _rand(rng, c)), (f"{prefix}_v", rng.uniform(0.5, 1.5, c).astype(np.float32))]


def _conv_bn(rng, *, second_reader=False, conv_bias=True):
    inits = [("w", _rand(rng, 6, 3, 3, 3))] + ([("cb", _rand(rng, 6))] if conv_bias else []) + _bn_inits(rng, 6)
    nodes = [helper.make_node("Conv", ["x", "w"] + (["cb"] if conv_bias else []), ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"], name="bn", epsilon=1e-3),
             helper.make_node("Relu", ["y"], ["r"])]
    outs = [_vi("r", None)]
    if second_reader:
        nodes.append(helper.make_node("Neg", ["c"], ["n"]))
        outs.append(_vi("n", None))
    return _model(nodes, [_vi("x", ["N", 3, 8, 8])], outs, inits)


@pytest.mark.parametrize("conv_bias", [True, False])
def test_batch_norm_folded_into_conv(conv_bias):
    rng = np.random.default_rng(7)
    model = _conv_bn(rng, conv_bias=conv_bias)
    m = check(model, {"x": _rand(rng, 2, 3, 8, 8)})
    assert any("folded into Conv 'conv'" in n for n in m.notes), m.notes
    assert "w.bn_folded" in m.params and "y.bn_bias" in m.params
    assert "w" not in m.params  # the original weight is not used any more
    unfolded = _conv_bn(np.random.default_rng(7), second_reader=True, conv_bias=conv_bias)
    # Folding saves the BN's mul and add.
    assert len(m.graph) < len(rlx.onnx.load(unfolded).graph)


def _conv_bn_scale(rng, *, mul_reads_twice=False):
    """Conv -> BN -> Mul / Add by per-channel factors made by Unsqueeze nodes after the Conv (a
    Caffe Scale layer) -> Relu."""
    inits = [("w", _rand(rng, 6, 3, 3, 3)), ("cb", _rand(rng, 6)), ("sw", _rand(rng, 6)), ("sb", _rand(rng, 6)),
             ("axes", np.array([1, 2], np.int64))] + _bn_inits(rng, 6)
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"], name="bn"),
             helper.make_node("Unsqueeze", ["sw", "axes"], ["swu"]),
             helper.make_node("Mul", ["y", "swu"], ["scaled"], name="scale_mul"),
             helper.make_node("Unsqueeze", ["sb", "axes"], ["sbu"]),
             helper.make_node("Add", ["sbu", "scaled"], ["shifted"], name="scale_add"),
             helper.make_node("Relu", ["shifted"], ["r"])]
    outs = [_vi("r", None)]
    if mul_reads_twice:
        nodes.append(helper.make_node("Neg", ["y"], ["n"]))
        outs.append(_vi("n", None))
    return _model(nodes, [_vi("x", ["N", 3, 8, 8])], outs, inits)


def test_scale_layer_folded_into_conv_with_its_batch_norm():
    rng = np.random.default_rng(17)
    m = check(_conv_bn_scale(rng), {"x": _rand(rng, 2, 3, 8, 8)})
    note = next(n for n in m.notes if "folded into Conv 'conv'" in n)
    assert "BatchNormalization 'bn' and Mul 'scale_mul' and Add 'scale_add'" in note, note
    assert "shifted.bn_bias" in m.params
    # A BN output read twice keeps the Mul and Add (and the BN folds alone).
    rng = np.random.default_rng(18)
    m2 = check(_conv_bn_scale(rng, mul_reads_twice=True), {"x": _rand(rng, 2, 3, 8, 8)})
    assert not any("Mul" in n for n in m2.notes), m2.notes
    assert len(m.graph) < len(m2.graph)


def _pad_conv(rng, pads, value=None, second_reader=False):
    """Pad (by ``value``, opset 11's input; none: zeros) -> Conv 3x3 stride 2 with its own pads
    -> Relu; ``second_reader``: a Neg reads the padded value too."""
    inits = [("w", _rand(rng, 8, 4, 3, 3)), ("pp", np.array(pads, np.int64))]
    pad_in = ["x", "pp"]
    if value is not None:
        inits.append(("pv", np.array(value, np.float32)))
        pad_in.append("pv")
    nodes = [helper.make_node("Pad", pad_in, ["p"], name="pad"),
             helper.make_node("Conv", ["p", "w"], ["c"], name="conv", pads=[1, 0, 0, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["y"])]
    outs = [_vi("y", None)]
    if second_reader:
        nodes.append(helper.make_node("Neg", ["p"], ["n"]))
        outs.append(_vi("n", None))
    return _model(nodes, [_vi("x", ["N", 4, 9, 10])], outs, inits)


@pytest.mark.parametrize("second_reader", [False, True])
def test_zero_pad_folded_into_conv(second_reader):
    rng = np.random.default_rng(21)
    x = _rand(rng, 2, 4, 9, 10)
    m = check(_pad_conv(rng, [0, 0, 1, 2, 0, 0, 2, 1], second_reader=second_reader), {"x": x})
    assert "Pad 'p': zeros folded into the Conv's pads" in m.notes, m.notes
    kernels = m.pipeline().specialize(N=2).report_data["kernels"]
    # Folded, as many kernels as the Conv given both pads; with a second reader the Pad's
    # gathers stay.
    alone = _model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[2, 2, 2, 2], strides=[2, 2]),
                    helper.make_node("Relu", ["c"], ["y"])],
                   [_vi("x", ["N", 4, 9, 10])], [_vi("y", None)], [("w", _rand(rng, 8, 4, 3, 3))])
    want = rlx.onnx.load(alone).pipeline().specialize(N=2).report_data["kernels"]
    assert (kernels == want) != second_reader, (kernels, want)


@pytest.mark.parametrize("pads, value", [([0, 0, 1, 2, 0, 0, 2, 1], 0.5),  # not zeros
                                         ([0, 1, 1, 2, 0, 0, 2, 1], None),  # a channel pad
                                         ([0, 0, -1, 2, 0, 0, 2, 1], None)])  # a crop
def test_pads_that_are_not_spatial_zeros_stay(pads, value):
    rng = np.random.default_rng(22)
    model = _pad_conv(rng, pads, value)
    if pads[1]:  # 5 channels into a 4-channel weight: the Conv refuses it, naming the counts
        with pytest.raises(rlx.ShapeError, match="5 channels"):
            rlx.onnx.load(model)
        return
    m = check(model, {"x": _rand(rng, 2, 4, 9, 10)})
    assert not any("Pad" in n for n in m.notes), m.notes


def test_batch_norm_not_folded_when_conv_has_other_readers():
    rng = np.random.default_rng(8)
    m = check(_conv_bn(rng, second_reader=True), {"x": _rand(rng, 2, 3, 8, 8)})
    assert not any("folded" in n for n in m.notes)


@pytest.mark.parametrize("xs", [(2, 5), (2, 5, 7), (1, 5, 4, 3), (1, 5, 2, 3, 2)])
def test_batch_norm_alone(xs):
    rng = np.random.default_rng(9)
    model = single("BatchNormalization", xs, len(xs), _bn_inits(rng, 5), epsilon=1e-2)
    check(model, {"x": _rand(rng, *xs)})


def test_batch_norm_runtime_stats():
    rng = np.random.default_rng(10)
    inits = _bn_inits(rng, 4)
    mean = inits.pop(2)
    node = helper.make_node("BatchNormalization", ["x", "bn_s", "bn_b", "mean", "bn_v"], ["y"])
    model = _model([node], [_vi("x", [2, 4, 3, 3]), _vi("mean", [4])], [_vi("y", None)], inits)
    check(model, {"x": _rand(rng, 2, 4, 3, 3), "mean": mean[1]})


def test_batch_norm_opset9_and_7():
    rng = np.random.default_rng(11)
    for opset in (7, 9):
        model = single("BatchNormalization", (2, 3, 4, 4), 4, _bn_inits(rng, 3), opset=opset)
        check(model, {"x": _rand(rng, 2, 3, 4, 4)})


# -- LRN, InstanceNormalization, activations ------------------------------------------------


def lrn_ref(x, size, alpha=1e-4, beta=0.75, bias=1.0):
    """The ONNX spec: channels [c - floor((size-1)/2), c + ceil((size-1)/2)], in float64."""
    x = x.astype(np.float64)
    sq = np.zeros_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - (size - 1) // 2), min(x.shape[1], c + size // 2 + 1)
        sq[:, c] = (x[:, lo:hi] ** 2).sum(axis=1)
    return x / (bias + alpha / size * sq) ** beta


@pytest.mark.parametrize("at", [{"size": 3}, {"size": 5, "alpha": 1e-3, "beta": 0.5, "bias": 2.0},
                                {"size": 2, "alpha": 0.5}, {"size": 4, "alpha": 0.1, "bias": 1.5}])
def test_lrn(at):
    # ONNX Runtime refuses even sizes (and the onnx reference evaluator's LRN mixes up the batch
    # and channel axes): those are checked against the spec formula only.
    x = _rand(np.random.default_rng(12), 2, 7, 5, 4, scale=3.0)
    model = single("LRN", (2, 7, 5, 4), 4, **at)
    got, _ = _rlx(model, {"x": x})
    np.testing.assert_allclose(got[0], lrn_ref(x, **at), rtol=1e-5, atol=1e-6)
    if at["size"] % 2:
        check(model, {"x": x})


def test_instance_norm():
    rng = np.random.default_rng(13)
    inits = [("s", _rand(rng, 4)), ("b", _rand(rng, 4))]
    check(single("InstanceNormalization", (2, 4, 5, 6), 4, inits, epsilon=1e-3), {"x": _rand(rng, 2, 4, 5, 6)})


ACTIVATIONS = [
    ("LeakyRelu", {}), ("LeakyRelu", {"alpha": 0.3}), ("Elu", {}), ("Elu", {"alpha": 0.5}),
    ("Selu", {}), ("Selu", {"alpha": 2.0, "gamma": 0.5}), ("Celu", {"alpha": 2.0}),
    ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.4, "beta": 0.3}), ("HardSwish", {}),
    ("Softplus", {}), ("Softsign", {}), ("Mish", {}), ("ThresholdedRelu", {"alpha": 0.5}),
    ("Shrink", {"lambd": 0.7, "bias": 0.2}), ("Relu", {}), ("Sigmoid", {}),
]


@pytest.mark.parametrize("op,at", ACTIVATIONS, ids=[f"{o}{i}" for i, (o, _) in enumerate(ACTIVATIONS)])
def test_activation(op, at):
    x = _rand(np.random.default_rng(14), 2, 3, 4, 5, scale=4.0)
    x[0, 0, 0, :3] = [40.0, -40.0, 0.0]  # far tails: no overflow in exp
    opset = 18 if op == "Mish" else 17
    check(single(op, (2, 3, 4, 5), 4, opset=opset, **at), {"x": x}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("slope_shape", [(1,), (3, 1, 1), (5,), ()])
def test_prelu(slope_shape):
    rng = np.random.default_rng(15)
    check(single("PRelu", (2, 3, 4, 5), 4, [("slope", _rand(rng, *slope_shape))]), {"x": _rand(rng, 2, 3, 4, 5)})


def test_prelu_opset6_slope_per_channel():
    # Before opset 7 a [C] slope applies per channel; numpy broadcasting would pair it with W.
    rng = np.random.default_rng(16)
    slope = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    x = _rand(rng, 2, 3, 4, 5)
    m = rlx.onnx.load(single("PRelu", (2, 3, 4, 5), 4, [("slope", slope)], opset=6))
    want = np.where(x < 0, x * slope.reshape(3, 1, 1), x)
    np.testing.assert_allclose(m.run({"x": x})["y"], want, rtol=1e-6)


def test_clip_flatten_dropout_in_a_cnn():
    """A small CNN: Conv-BN-Relu-MaxPool, a residual Conv-BN, Clip (ReLU6), GlobalAveragePool,
    Flatten, Dropout, Gemm, Softmax; symbolic batch."""
    rng = np.random.default_rng(17)
    inits = [("w1", _rand(rng, 8, 3, 3, 3, scale=0.3)), *_bn_inits(rng, 8, "bn1"),
             ("w2", _rand(rng, 8, 1, 3, 3, scale=0.3)), *_bn_inits(rng, 8, "bn2"),
             ("lo", np.array(0.0, np.float32)), ("hi", np.array(6.0, np.float32)),
             ("fc", _rand(rng, 10, 8, scale=0.3)), ("fcb", _rand(rng, 10))]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
             n("BatchNormalization", ["c1", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["b1"]),
             n("Relu", ["b1"], ["r1"]),
             n("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             n("Conv", ["p1", "w2"], ["c2"], group=8, pads=[1, 1, 1, 1]),  # depthwise
             n("BatchNormalization", ["c2", "bn2_s", "bn2_b", "bn2_m", "bn2_v"], ["b2"]),
             n("Add", ["b2", "p1"], ["s"]),
             n("Clip", ["s", "lo", "hi"], ["r6"]),
             n("GlobalAveragePool", ["r6"], ["g"]),
             n("Flatten", ["g"], ["f"]),
             n("Dropout", ["f"], ["d"]),
             n("Gemm", ["d", "fc", "fcb"], ["l"], transB=1),
             n("Softmax", ["l"], ["y"], axis=-1)]
    model = _model(nodes, [_vi("x", ["batch", 3, 32, 32])], [_vi("y", None)], inits)
    m = check(model, {"x": _rand(rng, 3, 3, 32, 32)})
    assert sum("folded" in note for note in m.notes) == 2


def _conv_then(act_nodes, rng, out="y"):
    """Conv (16 -> 32 channels, 3x3, pads 1) then ``act_nodes`` reading "c" and writing ``out``."""
    inits = [("w", _rand(rng, 32, 16, 3, 3, scale=0.5)), ("b", _rand(rng, 32)),
             ("lo", np.array(0.0, np.float32)), ("hi", np.array(6.0, np.float32)),
             ("five", np.array(5.0, np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), *act_nodes]
    return _model(nodes, [_vi("x", ["N", 16, 9, 10])], [_vi(out, None)], inits)


@pytest.mark.parametrize("act", ["relu6", "hard_swish", "silu"])
def test_relu6_hard_swish_and_silu_are_conv_epilogues(act):
    """Clip(0, 6), HardSwish and x * Sigmoid(x) after a Conv run in the Conv's epilogue: as
    many kernels as a Conv + Relu, and ORT's results."""
    rng = np.random.default_rng(31)
    n = helper.make_node
    act_nodes = {"relu6": [n("Clip", ["c", "lo", "hi"], ["y"])], "hard_swish": [n("HardSwish", ["c"], ["y"])],
                 "silu": [n("Sigmoid", ["c"], ["s"]), n("Mul", ["s", "c"], ["y"])]}
    model = _conv_then(act_nodes[act], rng)
    x = _rand(rng, 2, 16, 9, 10, scale=2.0)
    m = check(model, {"x": x})
    want = _ort(model, {"x": x})[0]
    if act != "silu":
        # Both clamps hit: relu6's 0 and 6, HardSwish's 0 (below -3) and identity (above 3).
        assert (want == 0).any() and ((want == 6) if act == "relu6" else (want > 3)).any()
    kernels = m.pipeline().specialize(N=2).report_data["kernels"]
    relu = rlx.onnx.load(_conv_then([n("Relu", ["c"], ["y"])], rng))
    assert kernels == relu.pipeline().specialize(N=2).report_data["kernels"]
    # Clip to other bounds stays two elementwise steps after the Conv (and still matches).
    other = _conv_then([n("Clip", ["c", "lo", "five"], ["y"])], rng)
    m5 = check(other, {"x": x})
    assert m5.pipeline().specialize(N=2).report_data["kernels"] > kernels


def test_a_mobilenet_v3_block_matches_onnxruntime():
    """MobileNet v3's block: a 1x1 expansion and a depthwise 5x5 with HardSwish, a squeeze-
    excitation gated by HardSigmoid, a 1x1 projection onto the shortcut; symbolic batch, 1 and
    3. The gate's HardSigmoid runs once per channel, not inside the gated product's program."""
    rng = np.random.default_rng(41)
    n = helper.make_node
    inits = [("we", _rand(rng, 48, 16, 1, 1, scale=0.4)), ("be", _rand(rng, 48, scale=0.1)),
             ("wd", _rand(rng, 48, 1, 5, 5, scale=0.3)), ("bd", _rand(rng, 48, scale=0.1)),
             ("wr", _rand(rng, 16, 48, 1, 1, scale=0.3)), ("br", _rand(rng, 16, scale=0.1)),
             ("wx", _rand(rng, 48, 16, 1, 1, scale=0.3)), ("bx", _rand(rng, 48, scale=0.1)),
             ("wp", _rand(rng, 16, 48, 1, 1, scale=0.3)), ("bp", _rand(rng, 16, scale=0.1))]
    nodes = [n("Conv", ["x", "we", "be"], ["e"]), n("HardSwish", ["e"], ["eh"]),
             n("Conv", ["eh", "wd", "bd"], ["d"], group=48, pads=[2, 2, 2, 2]), n("HardSwish", ["d"], ["dh"]),
             n("GlobalAveragePool", ["dh"], ["g"]), n("Conv", ["g", "wr", "br"], ["r"]), n("Relu", ["r"], ["rr"]),
             n("Conv", ["rr", "wx", "bx"], ["s"]), n("HardSigmoid", ["s"], ["hs"], alpha=1.0 / 6, beta=0.5),
             n("Mul", ["dh", "hs"], ["gated"]), n("Conv", ["gated", "wp", "bp"], ["p"]), n("Add", ["x", "p"], ["y"])]
    model = _model(nodes, [_vi("x", ["N", 16, 14, 14])], [_vi("y", None)], inits)
    for batch in (1, 3):
        m = check(model, {"x": _rand(rng, batch, 16, 14, 14, scale=2.0)})
    programs = [f for f in m.pipeline().report_data["fusions"] if f.startswith("elementwise:")]
    # HardSigmoid's four steps (x / 6, + 1/2, min 1, max 0) are one program of their own.
    assert len(programs) == 1 and programs[0].startswith("elementwise: 4 ops ->"), programs


def test_clip_to_relu6_keeps_nan_and_signed_zero():
    x = np.array([[-1.0, 0.0, -0.0, 3.0, 6.0, 7.5, np.nan, -np.inf, np.inf]], np.float32)
    inits = [("lo", np.array(0.0, np.float32)), ("hi", np.array(6.0, np.float32))]
    got = rlx.onnx.load(single("Clip", (1, 9), 2, inits)).run({"x": x})["y"]
    np.testing.assert_array_equal(got, np.clip(x, 0.0, 6.0))
    assert np.signbit(got[0, 2]) == np.signbit(np.clip(x, 0.0, 6.0)[0, 2])


@pytest.mark.parametrize("slope", [(0.25, 1.0, 0.5), (0.25, 0.0, 0.5), (0.25, 1.5, -0.5)])
def test_prelu_edges(slope):
    """PRelu with per-channel slopes in (0, 1] as max(x, slope * x), others as the select: the
    values of the select for infinities, NaN and signed zeros, and ORT's after a Conv."""
    s = np.array(slope, np.float32).reshape(3, 1, 1)
    x = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 3.0, -3.0, 1e-40, -1e-40, 2.0], np.float32)
    x = np.broadcast_to(x, (1, 3, 1, 10)).copy()
    got = rlx.onnx.load(single("PRelu", (1, 3, 1, 10), 4, [("slope", s)])).run({"x": x})["y"]
    with np.errstate(invalid="ignore"):
        want = np.where(x < 0, s * x, x)
    np.testing.assert_array_equal(got, want)
    assert (np.signbit(got) == np.signbit(want))[~np.isnan(want)].all()
    rng = np.random.default_rng(33)
    inits = [("w", _rand(rng, 3, 16, 3, 3, scale=0.5)), ("b", _rand(rng, 3)), ("slope", s)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c", "slope"], ["y"])]
    check(_model(nodes, [_vi("x", ["N", 16, 9, 10])], [_vi("y", None)], inits), {"x": _rand(rng, 2, 16, 9, 10)})


@pytest.mark.parametrize("alpha", [0.1, 1.0, 0.0, 2.0, -0.5])
def test_leaky_relu_edges(alpha):
    """LeakyRelu as max(x, alpha * x) for 0 < alpha <= 1, the select otherwise: the same values
    for infinities, NaN and signed zeros."""
    x = np.array([[np.inf, -np.inf, np.nan, -0.0, 0.0, 3.0, -3.0, 1e-40, -1e-40]], np.float32)
    got = rlx.onnx.load(single("LeakyRelu", (1, 9), 2, alpha=alpha)).run({"x": x})["y"]
    with np.errstate(invalid="ignore"):
        want = np.where(x < 0, np.float32(alpha) * x, x)
    np.testing.assert_array_equal(got, want)
    assert (np.signbit(got) == np.signbit(want))[~np.isnan(want)].all()


# -- errors ---------------------------------------------------------------------------------


def _load_error(model, exc, *words):
    with pytest.raises(exc) as e:
        rlx.onnx.load(model)
    text = str(e.value)
    for w in words:
        assert w in text, text
    return text


def test_error_channel_mismatch():
    w = np.zeros((4, 2, 3, 3), np.float32)
    _load_error(single("Conv", (1, 3, 8, 8), 4, [("w", w)]), rlx.ShapeError, "the_conv", "3 channels")


def test_error_groups_do_not_divide():
    w = np.zeros((4, 1, 3, 3), np.float32)
    _load_error(single("Conv", (1, 3, 8, 8), 4, [("w", w)], group=2), rlx.ShapeError, "the_conv", "group 2")


@pytest.mark.parametrize("op", ["Conv", "MaxPool", "AveragePool"])
def test_error_kernel_larger_than_padded_input(op):
    if op == "Conv":
        model = single(op, (1, 2, 4, 4), 4, [("w", np.zeros((3, 2, 6, 3), np.float32))], pads=[0, 0, 1, 0])
    else:
        model = single(op, (1, 2, 4, 4), 4, kernel_shape=[6, 3], pads=[0, 0, 1, 0])
    _load_error(model, rlx.ShapeError, f"the_{op.lower()}", "does not fit spatial axis 0 of size 4")


@pytest.mark.parametrize("op", ["Conv", "MaxPool", "AveragePool"])
def test_error_negative_pads(op):
    inits = [("w", np.zeros((3, 2, 3, 3), np.float32))] if op == "Conv" else []
    extra = {} if op == "Conv" else {"kernel_shape": [3, 3]}
    model = single(op, (1, 2, 8, 8), 4, inits, pads=[1, -1, 0, 0], **extra)
    _load_error(model, rlx.ShapeError, f"the_{op.lower()}", "negative")


def test_error_symbolic_spatial_size():
    model = single("MaxPool", (1, 2, "h", 8), 4, kernel_shape=[2, 2])
    _load_error(model, rlx.UnsupportedOpError, "the_maxpool", "static")


def test_error_bad_auto_pad():
    model = single("MaxPool", (1, 2, 8, 8), 4, kernel_shape=[2, 2], auto_pad="SAME")
    _load_error(model, rlx.ModelFormatError, "the_maxpool", "auto_pad")


def test_error_max_pool_indices():
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="mp", kernel_shape=[2, 2])
    model = _model([node], [_vi("x", [1, 1, 4, 4])], [_vi("y", None), helper.make_tensor_value_info("idx", TensorProto.INT64, None)])
    _load_error(model, rlx.UnsupportedOpError, "mp", "Indices")


def test_error_batch_norm_training_mode():
    rng = np.random.default_rng(18)
    model = single("BatchNormalization", (2, 3, 4, 4), 4, _bn_inits(rng, 3), training_mode=1)
    _load_error(model, rlx.UnsupportedOpError, "the_batchnormalization", "training_mode")


def test_error_batch_norm_channels():
    rng = np.random.default_rng(19)
    model = single("BatchNormalization", (2, 3, 4, 4), 4, _bn_inits(rng, 5))
    _load_error(model, rlx.ShapeError, "the_batchnormalization", "3 channels")


def test_error_conv_transpose_weight_at_run_time():
    model = single("ConvTranspose", (1, 2, 4, 4), 4, extra_inputs=[("w", [2, 3, 3, 3])])
    _load_error(model, rlx.UnsupportedOpError, "the_convtranspose", "known at import")


def test_error_pad():
    pads = [("pads", np.array([0, 0, 1, 0, 0, 0, 1, 0], np.int64))]
    _load_error(single("Pad", (1, 2, 4, 4), 4, pads, opset=19, mode="mirror"), rlx.UnsupportedOpError, "the_pad", "mirror")
    _load_error(single("Pad", (1, 2, 4, 4), 4, [("pads", np.array([1, 2], np.int64))]),
                rlx.ShapeError, "the_pad", "2 entries for 4 axes")
    _load_error(single("Pad", (1, 2, 4, 4), 4, [("pads", np.array([0, 0, -3, 0, 0, 0, -2, 0], np.int64))]),
                rlx.ShapeError, "the_pad", "cannot pad axis 2")


HANDLER_MODULES = ("rlx._onnx_ops_elementwise", "rlx._onnx_ops_shape", "rlx._onnx_ops_nn",
                   "rlx._onnx_ops_vision", "rlx._onnx_ops_activation", "rlx._onnx_ops_resize",
                   "rlx._onnx_ops_layout", "rlx._onnx_ops_einsum", "rlx._onnx_ops_math", "rlx._onnx_ops_index",
                   "rlx._onnx_ops_mask", "rlx._onnx_ops_signal", "rlx._onnx_ops_lp", "rlx._onnx_ops_gated",
                   "rlx._onnx_ops_bitwise", "rlx._onnx_ops_quantize", "rlx._onnx_ops_grid",
                   "rlx._onnx_ops_fold", "rlx._onnx_ops_linalg", "rlx._onnx_ops_rnn", "rlx._onnx_ops_norm",
                   "rlx._onnx_ops_loss", "rlx._onnx_ops_attention", "rlx._onnx_ops_training",
                   "rlx._onnx_ops_ml", "rlx._onnx_ops_state", "rlx._onnx_ops_control",
                   "rlx._onnx_ops_sampling", "rlx._onnx_ops_text")
# The modules a handler module may import from rlx (besides the package and its native module).
HANDLER_DEPS = {"rlx._onnx_registry", "rlx._onnx_helpers", "rlx._onnx_import", "rlx._onnx_dtypes", "rlx._onnx_sym"}


def test_supported_ops_whatever_the_import_order():
    for first in HANDLER_MODULES + ("rlx.onnx",):
        code = (f"import {first}, rlx.onnx, rlx._onnx_ops as o; "
                "assert rlx.onnx.SUPPORTED_OPS == sorted(o.HANDLERS), rlx.onnx.SUPPORTED_OPS; "
                "assert {'Conv', 'MaxPool', 'MatMul', 'Reshape', 'Add'} <= set(rlx.onnx.SUPPORTED_OPS)")
        subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


def test_handler_modules_import_no_circle():
    # A handler module needs only the registry and the shared helpers, never another handler
    # module nor the module that gathers them all; so each imports alone and registers its own ops.
    import pkgutil

    on_disk = {f"rlx.{m.name}" for m in pkgutil.iter_modules(rlx.__path__) if m.name.startswith("_onnx_ops_")}
    # _onnx_ops_check holds the structural checks before the walk and registers no op.
    assert on_disk - {"rlx._onnx_ops_check"} == set(HANDLER_MODULES)
    for mod in HANDLER_MODULES:
        code = (f"import sys, rlx; before = set(sys.modules); import {mod}; "
                f"new = sorted(m for m in set(sys.modules) - before if m.startswith(('rlx._onnx', 'rlx.onnx')) and m != '{mod}'); "
                f"bad = [m for m in new if m not in {sorted(HANDLER_DEPS)!r}]; "
                f"assert not bad, '{mod} loads ' + ', '.join(bad); "
                "from rlx._onnx_registry import HANDLERS; "
                f"own = [k for k, f in HANDLERS.items() if f.__module__ == '{mod}']; assert own, '{mod}'")
        subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


# -- the ONNX backend's light models --------------------------------------------------------

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
# (name, rtol, atol) as onnx.backend.test.case.model lists them.
LIGHT = [("bvlc_alexnet", 1e-3, 1e-7), ("densenet121", 2e-3, 1e-7), ("inception_v1", 1e-3, 1e-7),
         ("inception_v2", 1e-3, 1e-7), ("resnet50", 1e-3, 1e-7), ("shufflenet", 1e-3, 1e-7),
         ("squeezenet", 1e-3, 1e-7), ("vgg19", 1e-3, 1e-7), ("zfnet512", 1e-3, 1e-7)]
# With every weight 0.02 these four end in logits of 1e12 to 1e31, equal for all 1000 classes.
# ONNX Runtime sums every column in the same order (a uniform softmax); rlx's GEMM sums the last
# 1000 % 32 = 8 columns in another order (1e-5 relative apart), which saturates the softmax.
HEAVY = {"vgg19"}  # 20 GFLOP a run; the random-weights test takes ~10 s
FOLDED = {"densenet121": 59, "inception_v2": 69, "resnet50": 53, "shufflenet": 49}


def _light(name):
    return onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx"))


def _light_input():
    # The input the backend runner feeds light models (Runner.generate_dummy_data, random=False).
    shape = (1, 3, 224, 224)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def _light_params(shipped=False):
    """One param per model: (name, rtol, atol) for the shipped-output test, else (name,)."""
    out = []
    for name, rtol, atol in LIGHT:
        marks = [pytest.mark.heavy] if name in HEAVY else []
        args = (name, rtol, atol) if shipped else (name,)
        out.append(pytest.param(*args, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name,rtol,atol", _light_params(shipped=True))
def test_light_model_shipped_output(name, rtol, atol):
    m = rlx.onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx"))
    got = m.run({m.inputs[0]: _light_input()})[m.outputs[0]]
    want = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT_DIR, f"light_{name}_output_0.pb")))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    # Every Conv -> BatchNormalization pair is folded (densenet121's other 62 BNs do not follow a Conv).
    assert sum("folded into Conv" in n for n in m.notes) == FOLDED.get(name, 0)


def _logits(model):
    """The model with its final Softmax (if any) removed: the logits become the output."""
    sm = [n for n in model.graph.node if n.op_type == "Softmax" and n.output[0] == model.graph.output[0].name]
    if not sm:
        return model
    model.graph.node.remove(sm[0])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(sm[0].input[0], F, None))
    return model


def _readers(model):
    found = {}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            found.setdefault(name, []).append((n.op_type, i, n))
    return found


def _role_value(rng, shape, role, readers):
    """Random weights that keep activations of order 1 through a deep CNN."""
    op, i, node = role
    if op in ("Unsqueeze", "Reshape"):  # look through to the op that uses the value
        nxt = readers.get(node.output[0], [role])
        op, i, node = nxt[0]
    if op == "BatchNormalization" and i in (1, 4) or op == "Mul":
        return rng.uniform(0.5, 1.5, shape)
    if op == "Conv" and i == 1:
        return rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    if op == "Gemm" and i == 1:
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return rng.standard_normal(shape) * np.sqrt(1.0 / shape[1 if trans_b else 0])
    return rng.standard_normal(shape) * 0.1


def randomize(model, rng):
    """Every float weight (initializers and ConstantOfShape outputs) replaced by an initializer
    of random values."""
    inits = {t.name: t for t in model.graph.initializer}
    readers = _readers(model)
    weights, keep = {}, []
    for n in model.graph.node:
        value = next((a.t for a in n.attribute if a.name == "value"), None)
        if n.op_type == "ConstantOfShape" and n.input[0] in inits and value is not None and value.data_type == F:
            weights[n.output[0]] = tuple(numpy_helper.to_array(inits[n.input[0]]).tolist())
        else:
            keep.append(n)
    for t in model.graph.initializer:
        if t.data_type == F and np.prod(t.dims) > 1:
            weights[t.name] = tuple(t.dims)
    new = [t for t in model.graph.initializer if t.name not in weights]
    for name, shape in weights.items():
        if name not in readers:
            continue
        arr = _role_value(rng, shape, readers[name][0], readers).astype(np.float32)
        new.append(numpy_helper.from_array(arr, name))
    del model.graph.node[:]
    model.graph.node.extend(keep)
    del model.graph.initializer[:]
    model.graph.initializer.extend(new)
    return model


def _compare(got, want, cos_min, rel_max):
    g, w = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    cos = g @ w / (np.linalg.norm(g) * np.linalg.norm(w))
    rel = np.abs(g - w).max() / np.abs(w).max()
    assert cos >= cos_min and rel <= rel_max, (cos, rel)


@pytest.mark.parametrize("name", _light_params())
def test_light_model_logits_vs_ort(name):
    """The shipped weights, compared before the softmax. Measured: relative error <= 3.6e-5 (the
    GEMM tail above on logits of 1e12+), 1 - cosine <= 5e-12."""
    model = _logits(_light(name))
    feeds = {_ort_input(model): _light_input()}
    got, _ = _rlx(model, feeds)
    _compare(got[0], _ort(model, feeds)[0], 1 - 1e-9, 3e-4)


@pytest.mark.parametrize("name", _light_params())
def test_light_model_random_weights_vs_ort(name):
    """Random weights (the shipped ones are all 0.02), logits against ONNX Runtime. Measured:
    relative error <= 1.2e-6, 1 - cosine <= 6e-13."""
    rng = np.random.default_rng(20)
    model = _logits(randomize(_light(name), rng))
    feeds = {_ort_input(model): rng.random((1, 3, 224, 224), np.float32)}
    got, _ = _rlx(model, feeds)
    _compare(got[0], _ort(model, feeds)[0], 1 - 1e-9, 1e-4)


def _ort_input(model):
    inits = {t.name for t in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


@pytest.mark.parametrize("dt", [np.uint8, np.int8, np.int16, np.uint16])
def test_max_pool_narrow_integers(dt):
    # Pooled in float32 and cast back: exact for 8- and 16-bit values (the extremes included).
    from onnx_case_support import check as check_exact, single

    info = np.iinfo(dt)
    x = np.random.default_rng(4).integers(info.min, info.max, (2, 3, 6, 7), endpoint=True).astype(dt)
    x[0, 0, 0, :2] = [info.min, info.max]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dt))
    m = single("MaxPool", [("x", elem, list(x.shape))], elem, opset=12, kernel_shape=[3, 2], strides=[2, 1],
               pads=[1, 0, 1, 1])
    check_exact(m, {"x": x}, which="ref", exact=True)


def test_max_pool_wide_integers_are_refused():
    from onnx_case_support import single

    with pytest.raises(rlx.DTypeError, match="the_node.*MaxPool on (INT32|int32)"):
        rlx.onnx.load(single("MaxPool", [("x", TensorProto.INT32, [1, 1, 4, 4])], TensorProto.INT32, opset=12,
                             kernel_shape=[2, 2]))
