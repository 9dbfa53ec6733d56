"""BitShift and BitwiseNot / And / Or / Xor (rlx._onnx_ops_bitwise) against the ONNX reference,
bit for bit, over every integer type rlx computes (int8 ... int64, uint8 ... uint32)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import helper  # noqa: E402
from onnx_case_support import check, single  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32]


def _elem(dt):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dt))


def _values(dt, shape, seed):
    """Random values over the whole range, with the extremes, 0 and -1 mixed in."""
    info = np.iinfo(dt)
    rng = np.random.default_rng(seed)
    v = rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
    special = np.array([info.min, info.max, 0, 1, info.max // 2 + 1] + ([-1] if info.min < 0 else []), dtype=dt)
    v.reshape(-1)[: special.size] = special
    return v


@pytest.mark.parametrize("dt", TYPES)
@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
def test_bitwise_binary(dt, op):
    e = _elem(dt)
    m = single(op, [("a", e, [3, 4, 5]), ("b", e, [4, 5])], e, opset=18)  # broadcasting too
    check(m, {"a": _values(dt, (3, 4, 5), 1), "b": _values(dt, (4, 5), 2)}, which="ref", exact=True)


@pytest.mark.parametrize("dt", TYPES)
def test_bitwise_not(dt):
    e = _elem(dt)
    check(single("BitwiseNot", [("a", e, [4, 6])], e, opset=18), {"a": _values(dt, (4, 6), 3)}, which="ref", exact=True)


@pytest.mark.parametrize("dt", TYPES)
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift(dt, direction):
    # Shifts from -3 to the width + 2: negative and too-wide shifts give the sign fill.
    e, bits = _elem(dt), 8 * np.dtype(dt).itemsize
    x = _values(dt, (2, bits + 6), 4)
    s = np.arange(-3, bits + 3).astype(dt) if np.dtype(dt).kind == "i" else np.arange(0, bits + 6).astype(dt)
    m = single("BitShift", [("x", e, [2, bits + 6]), ("s", e, [bits + 6])], e, opset=28, direction=direction)
    check(m, {"x": x, "s": s}, which="ref", exact=True)


def test_errors_name_the_node():
    F = onnx.TensorProto.FLOAT
    with pytest.raises(rlx.DTypeError, match="the_node.*BitwiseAnd on float32"):
        rlx.onnx.load(single("BitwiseAnd", [("a", F, [2]), ("b", F, [2])], F, opset=18))
    I32, I64 = onnx.TensorProto.INT32, onnx.TensorProto.INT64
    with pytest.raises(rlx.DTypeError, match="the_node.*one type"):
        rlx.onnx.load(single("BitwiseOr", [("a", I32, [2]), ("b", I64, [2])], I32, opset=18))
    with pytest.raises(rlx.ModelFormatError, match="the_node.*direction 'UP'"):
        rlx.onnx.load(single("BitShift", [("a", I32, [2]), ("b", I32, [2])], I32, opset=11, direction="UP"))


@pytest.mark.parametrize("src,to", [(np.int8, np.uint8), (np.uint8, np.int8), (np.int16, np.uint16),
                                    (np.uint16, np.int16), (np.int32, np.uint32), (np.uint32, np.int32),
                                    (np.bool_, np.uint8), (np.bool_, np.int8)])
def test_bitcast_between_integer_types(src, to):
    # Each value's bit pattern read as the other type: the extremes, 0 and -1 change sign.
    x = _values(src, (3, 5), 5) if src != np.bool_ else np.array([True, False, True, True, False], bool)
    m = single("BitCast", [("x", _elem(src), list(x.shape))], _elem(to), opset=26, to=_elem(to))
    check(m, {"x": x}, which="ref", exact=True)


def test_bitcast_of_a_float_known_at_import_folds():
    w = np.array([1.5, -0.0, np.inf, np.nan, -2.0**-149], np.float32)
    m = single("BitCast", ["w"], onnx.TensorProto.INT32, inits={"w": w}, opset=26, to=onnx.TensorProto.INT32)
    assert np.array_equal(rlx.onnx.load(m).run({})["y0"], w.view(np.int32))


def test_bitcast_of_a_run_time_float_is_a_dtype_error():
    F, I32 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32
    with pytest.raises(rlx.DTypeError, match="the_node.*BitCast from float32 to int32"):
        rlx.onnx.load(single("BitCast", [("x", F, [2])], I32, opset=26, to=I32))
    with pytest.raises(rlx.ModelFormatError, match="the_node.*one width"):
        rlx.onnx.load(single("BitCast", [("x", I32, [2])], onnx.TensorProto.INT64, opset=26, to=onnx.TensorProto.INT64))
