"""QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, ConvInteger,
QLinearMatMul and QLinearConv on run-time tensors (rlx._onnx_ops_quantize) against the ONNX
reference: integers bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402
from onnx_case_support import F, check, single  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

QTYPES = [np.int8, np.uint8, np.int16, np.uint16]
RNG = np.random.default_rng(0)


def _elem(dt):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dt))


def _zp(dt, shape=()):
    info = np.iinfo(dt)
    return RNG.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dt)


@pytest.mark.parametrize("dt", QTYPES)
@pytest.mark.parametrize("mode", ["tensor", "axis", "blocked"])
def test_quantize_dequantize(dt, mode):
    # Wide values: saturation at both ends, and halves (x / scale = k + 0.5) round to even.
    x = (RNG.standard_normal((2, 6, 5)) * 300).astype(np.float32)
    x[0, 0, :4] = [2.5, 3.5, -2.5, -0.5]
    pshape = {"tensor": [], "axis": [6], "blocked": [2, 2, 5]}[mode]
    scale = np.full(pshape, 1.0, np.float32) if mode == "tensor" else (RNG.random(pshape) + 0.5).astype(np.float32)
    zp = _zp(dt, pshape)
    e = _elem(dt)
    kw = dict(axis=1, **({"block_size": 4} if mode == "blocked" else {}))  # 6 = 4 + a remainder block of 2
    q = single("QuantizeLinear", [("x", F, list(x.shape)), ("s", F, pshape), ("z", e, pshape)], e, **kw)
    got = check(q, {"x": x, "s": scale, "z": zp}, which="ref", exact=True)[0]
    d = single("DequantizeLinear", [("q", e, list(x.shape)), ("s", F, pshape), ("z", e, pshape)], F, **kw)
    check(d, {"q": got, "s": scale, "z": zp}, which="ref", rtol=1e-6, atol=1e-6)


def test_quantize_without_zero_point_is_uint8():
    x = (RNG.standard_normal((3, 4)) * 100).astype(np.float32)
    m = single("QuantizeLinear", [("x", F, [3, 4]), ("s", F, [])], TensorProto.UINT8)
    check(m, {"x": x, "s": np.array(0.5, np.float32)}, which="ref", exact=True)


@pytest.mark.parametrize("scale", [1.0, 40.0, 0.0])
def test_dynamic_quantize_linear(scale):
    # All positive, all negative (the range widened to 0) and all zero.
    x = (RNG.standard_normal((3, 7)) * scale).astype(np.float32)
    x = np.abs(x) if scale == 1.0 else -np.abs(x) if scale == 40.0 else x
    m = single("DynamicQuantizeLinear", [("x", F, [3, 7])], TensorProto.UINT8, n_out=3)
    m.graph.output[1].type.tensor_type.elem_type = F
    check(m, {"x": x}, which="ref", exact=True)


@pytest.mark.parametrize("k", [5, 600])  # 600: three chunks of the reduced axis
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
@pytest.mark.parametrize("per_row", [False, True])
def test_matmul_integer(k, dt, per_row):
    info = np.iinfo(dt)
    e = _elem(dt)
    a = RNG.integers(info.min, info.max, (3, k), endpoint=True).astype(dt)
    b = RNG.integers(info.min, info.max, (k, 4), endpoint=True).astype(dt)
    za, zb = _zp(dt, [3] if per_row else []), _zp(dt, [4])
    m = single("MatMulInteger", [("a", e, [3, k]), ("b", e, [k, 4]), ("za", e, list(za.shape)), ("zb", e, [4])],
               TensorProto.INT32, opset=10)
    feeds = {"a": a, "b": b, "za": za, "zb": zb}
    if not per_row:
        check(m, feeds, which="ref", exact=True)
        return
    # The reference evaluator cannot broadcast a per-row zero point (the spec allows one): numpy.
    got = rlx.onnx.load(m).run(feeds)["y0"]
    want = (a.astype(np.int64) - za.astype(np.int64)[:, None]) @ (b.astype(np.int64) - zb.astype(np.int64))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_errors_name_the_node():
    with pytest.raises(rlx.DTypeError, match="the_node.*QuantizeLinear to"):
        rlx.onnx.load(single("QuantizeLinear", [("x", F, [4]), ("s", F, [])], TensorProto.INT32,
                             output_dtype=TensorProto.INT32))
    e = TensorProto.INT8
    with pytest.raises(rlx.ShapeError, match="the_node.*per-axis needs one value per element of axis 1"):
        rlx.onnx.load(single("QuantizeLinear", [("x", F, [2, 4]), ("s", F, [3]), ("z", e, [3])], e, axis=1))
    with pytest.raises(rlx.DTypeError, match="the_node.*MatMulInteger input 1"):
        rlx.onnx.load(single("MatMulInteger", [("a", e, [2, 4]), ("b", TensorProto.INT32, [4, 2])], TensorProto.INT32,
                             opset=10))


@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)])
@pytest.mark.parametrize("c,group,kernel,at", [
    (3, 1, [2, 2], {}),
    (4, 2, [3, 3], {"pads": [1, 1, 1, 1], "strides": [2, 1]}),
    # 40 channels x 9 = 360 products per output: two chunks of float32 sums.
    (40, 1, [3, 3], {"dilations": [2, 1]}),
    (64, 2, [3, 3], {"auto_pad": "SAME_UPPER"}),
])
def test_conv_integer(xdt, wdt, c, group, kernel, at):
    x = RNG.integers(np.iinfo(xdt).min, np.iinfo(xdt).max + 1, (2, c, 7, 6)).astype(xdt)
    w = RNG.integers(np.iinfo(wdt).min, np.iinfo(wdt).max + 1, [4, c // group] + kernel).astype(wdt)
    ort_ok = xdt == wdt == np.uint8
    feeds = {"x": x, "w": w, "xz": _zp(xdt), "wz": _zp(wdt, () if ort_ok else (4,))}
    ins = [("x", _elem(xdt), list(x.shape)), ("w", _elem(wdt), list(w.shape)), ("xz", _elem(xdt), []),
           ("wz", _elem(wdt), list(feeds["wz"].shape))]
    m = single("ConvInteger", ins, TensorProto.INT32, opset=10, group=group, **at)
    # ONNX Runtime implements uint8 inputs and per-tensor zero points only; the onnx reference
    # covers every pairing, with per-channel weight zero points.
    check(m, feeds, which="ort" if ort_ok else "ref", exact=True)


def test_conv_integer_sums_past_float32_precision():
    # 64 x 9 products near 255 * 255: sums near 2**25, where one float32 sum would round.
    x = RNG.integers(200, 256, (1, 64, 5, 5)).astype(np.uint8)
    w = RNG.integers(200, 256, (2, 64, 3, 3)).astype(np.uint8)
    m = single("ConvInteger", [("x", TensorProto.UINT8, list(x.shape)), ("w", TensorProto.UINT8, list(w.shape))],
               TensorProto.INT32, opset=10)
    got = check(m, {"x": x, "w": w}, exact=True)
    assert got[0].max() > 2**24


def test_conv_integer_without_zero_points():
    x = RNG.integers(0, 256, (1, 2, 4, 4)).astype(np.uint8)
    w = RNG.integers(0, 256, (3, 2, 2, 2)).astype(np.uint8)
    m = single("ConvInteger", [("x", TensorProto.UINT8, [1, 2, 4, 4]), ("w", TensorProto.UINT8, [3, 2, 2, 2])],
               TensorProto.INT32, opset=10)
    check(m, {"x": x, "w": w}, exact=True)


def test_conv_integer_errors():
    u8 = TensorProto.UINT8
    with pytest.raises(rlx.DTypeError, match="the_node.*input 0 of float32"):
        rlx.onnx.load(single("ConvInteger", [("x", F, [1, 1, 3, 3]), ("w", u8, [1, 1, 2, 2])], TensorProto.INT32, opset=10))
    with pytest.raises(rlx.ShapeError, match="the_node.*w_zero_point"):
        rlx.onnx.load(single("ConvInteger", [("x", u8, [1, 1, 3, 3]), ("w", u8, [2, 1, 2, 2]), "", ("z", u8, [3])],
                             TensorProto.INT32, opset=10))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*more than 256"):
        rlx.onnx.load(single("ConvInteger", [("x", u8, [1, 1, 20, 20]), ("w", u8, [1, 1, 17, 17])], TensorProto.INT32,
                             opset=10))


@pytest.mark.parametrize("k", [5, 600])  # 600: three chunks of the reduced axis
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
@pytest.mark.parametrize("per_column", [False, True])
def test_qlinear_matmul(k, dt, per_column):
    info = np.iinfo(dt)
    e = _elem(dt)
    a = RNG.integers(info.min, info.max, (3, k), endpoint=True).astype(dt)
    b = RNG.integers(info.min, info.max, (k, 4), endpoint=True).astype(dt)
    cols = [4] if per_column else []
    sa, sb = np.array(0.02, np.float32), (RNG.random(cols) * 0.01 + 0.005).astype(np.float32)
    # The output scale spreads the products over the output range (some saturate).
    sy = np.array(0.02 * 0.01 * k * 6, np.float32)
    za, zb, zy = _zp(dt, []), _zp(dt, cols), _zp(dt, [])
    m = single("QLinearMatMul", [("a", e, [3, k]), "sa", "za", ("b", e, [k, 4]), "sb", "zb", "sy", "zy"], e,
               inits={"sa": sa, "za": za, "sb": sb, "zb": zb, "sy": sy, "zy": zy})
    check(m, {"a": a, "b": b}, which="ref", exact=True)


@pytest.mark.parametrize("dt", [np.int8, np.uint8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("c, group, kernel, at", [
    (3, 1, [3, 3], {"pads": [1, 1, 1, 1]}),
    (4, 2, [2, 3], {"strides": [2, 1]}),
    (40, 1, [3, 3], {}),  # 360 products per sum: two channel groups added in int64
])
def test_qlinear_conv(dt, per_channel, c, group, kernel, at):
    info, e = np.iinfo(dt), _elem(dt)
    x = RNG.integers(info.min, info.max, (2, c, 6, 5), endpoint=True).astype(dt)
    w = RNG.integers(info.min, info.max, [4, c // group] + kernel, endpoint=True).astype(dt)
    chans = [4] if per_channel else []
    sx, sw = np.array(0.03, np.float32), (RNG.random(chans) * 0.01 + 0.005).astype(np.float32)
    # The output scale spreads the sums over the output range (some saturate).
    sy = np.array(0.03 * 0.01 * np.prod(kernel) * c // group * 5, np.float32)
    bias = RNG.integers(-5000, 5000, 4).astype(np.int32)
    inits = {"sx": sx, "zx": _zp(dt, []), "sw": sw, "zw": _zp(dt, chans), "sy": sy, "zy": _zp(dt, []), "B": bias}
    m = single("QLinearConv", [("x", e, list(x.shape)), "sx", "zx", ("w", e, list(w.shape)), "sw", "zw", "sy", "zy", "B"],
               e, inits=inits, opset=10, group=group, **at)
    check(m, {"x": x, "w": w}, which="ref", exact=True)


def test_qlinear_conv_errors_name_the_node():
    u8 = TensorProto.UINT8

    def model(sw, b=None):
        inits = {"s": np.array(0.1, np.float32), "z": np.array(0, np.uint8), "sw": sw}
        ins = [("x", u8, [1, 2, 4, 4]), "s", "z", ("w", u8, [3, 2, 2, 2]), "sw", "z", "s", "z"]
        if b is not None:
            inits["B"], ins = b, ins + ["B"]
        return single("QLinearConv", ins, u8, inits=inits, opset=10)
    with pytest.raises(rlx.ShapeError, match=r"the_node.*w_scale of shape \[2\]: one value or one per output channel \(3\)"):
        rlx.onnx.load(model(np.array([0.1, 0.2], np.float32)))
    with pytest.raises(rlx.ShapeError, match=r"the_node.*B of int32 \[2\]: int32 of shape \[3\]"):
        rlx.onnx.load(model(np.array(0.1, np.float32), np.zeros(2, np.int32)))
    with pytest.raises(rlx.DTypeError, match="the_node.*QLinearConv input 0 of float32"):
        rlx.onnx.load(single("QLinearConv", [("x", F, [1, 2, 4, 4]), "s", "z", ("w", u8, [3, 2, 2, 2]), "s", "z", "s",
                                             "z"], u8, opset=10,
                             inits={"s": np.array(0.1, np.float32), "z": np.array(0, np.uint8)}))


def test_qlinear_matmul_errors_name_the_node():
    e = TensorProto.INT8
    z = np.array(0, np.int8)

    def model(sa, b_elem=e):
        return single("QLinearMatMul", [("a", e, [2, 4]), "sa", "z", ("b", b_elem, [4, 2]), "s", "z", "s", "z"], e,
                      inits={"sa": sa, "s": np.array(0.1, np.float32), "z": z})
    with pytest.raises(rlx.ShapeError, match="the_node.*a_scale of shape \\[2\\]: one value"):
        rlx.onnx.load(model(np.array([0.1, 0.2], np.float32)))
    with pytest.raises(rlx.DTypeError, match="the_node.*QLinearMatMul input 3"):
        rlx.onnx.load(model(np.array(0.1, np.float32), TensorProto.INT32))
