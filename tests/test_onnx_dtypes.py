"""ONNX element types rlx computes in another type (rlx._onnx_dtypes): float16 / bfloat16 /
float64 in float32, int8 / uint8 / int16 / uint16 / uint32 and int4 / uint4 / int2 / uint2 in
int64, uint64 as int64 bits. Inputs and outputs are converted by OnnxModel.run and reported
(OnnxModel.conversions, one DTypeConversionWarning); narrow integer arithmetic wraps exactly;
what cannot be exact is a typed error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto as T  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402
from rlx.onnx import DTypeConversionWarning  # noqa: E402

NARROW = [(np.int8, T.INT8), (np.uint8, T.UINT8), (np.int16, T.INT16), (np.uint16, T.UINT16), (np.uint32, T.UINT32)]
n = helper.make_node


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "dtypes", inputs, outputs,
                          initializer=[numpy_helper.from_array(a, k) for k, a in dict(inits).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _load(model):
    with pytest.warns(DTypeConversionWarning, match="dtype conversion"):
        return rlx.onnx.load(model)


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _extremes(dt, size, seed=0):
    info = np.iinfo(dt)
    a = np.random.default_rng(seed).integers(info.min, info.max, size, endpoint=True).astype(dt)
    a[:3] = [info.min, info.max, 0]
    return a


# -- the boundary ------------------------------------------------------------------------------


@pytest.mark.parametrize("np_t,elem", [(np.float16, T.FLOAT16), (np.float64, T.DOUBLE)])
def test_float_input_and_output_are_converted_and_match_onnxruntime(np_t, elem):
    nodes = [n("Mul", ["x", "x"], ["xx"]), n("Add", ["xx", "x"], ["s"]), n("Softmax", ["s"], ["y"], axis=-1)]
    model = _model(nodes, [_vi("x", elem, ["b", 6])], [_vi("y", elem, ["b", 6])])
    m = _load(model)
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np_t)
    got = m.run({"x": x})["y"]
    assert got.dtype == np_t
    np.testing.assert_allclose(got.astype(np.float64), _ort(model, {"x": x})["y"].astype(np.float64),
                               rtol=2e-3 if np_t == np.float16 else 1e-6, atol=1e-3 if np_t == np.float16 else 1e-7)
    name = helper.tensor_dtype_to_string(elem).split(".")[-1]
    assert m.conversions == [f"input 'x': {name} -> float32 at run time", f"output 'y': float32 -> {name} at run time"]
    assert m.input_dtypes == {"x": np.dtype(np_t)} and m.output_dtypes == {"y": np.dtype(np_t)}
    assert "2 dtype conversion(s)" in repr(m)


def test_a_float16_model_with_float16_weights_matches_onnxruntime():
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal((8, 5)).astype(np.float16), rng.standard_normal(5).astype(np.float16)
    half = helper.make_tensor("half", T.FLOAT16, [], np.array([0.5], np.float16).view(np.uint16).tolist())
    nodes = [n("MatMul", ["x", "w"], ["xw"]), n("Add", ["xw", "b"], ["s"]), n("Constant", [], ["c"], value=half),
             n("Mul", ["s", "c"], ["h"]), n("Relu", ["h"], ["y"])]
    model = _model(nodes, [_vi("x", T.FLOAT16, ["b", 8])], [_vi("y", T.FLOAT16, ["b", 5])], {"w": w, "b": b})
    m = _load(model)
    x = rng.standard_normal((3, 8)).astype(np.float16)
    got = m.run({"x": x})["y"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), _ort(model, {"x": x})["y"].astype(np.float32), rtol=1e-2, atol=1e-2)
    assert m.params["w"].dtype == np.float32
    assert "initializer 'w': FLOAT16 -> float32 at import" in m.conversions
    assert "1 FLOAT16 constant(s) -> float32 at import" in m.conversions


def test_bfloat16_input_is_converted():
    bf16 = helper.tensor_dtype_to_np_dtype(T.BFLOAT16)
    model = _model([n("Cast", ["x"], ["y"], to=T.FLOAT)], [_vi("x", T.BFLOAT16, [4])], [_vi("y", T.FLOAT, [4])])
    x = np.array([1.5, -2.25, 3.0e8, 0.0078125], np.float32).astype(bf16)
    np.testing.assert_array_equal(_load(model).run({"x": x})["y"], x.astype(np.float32))


def test_one_warning_at_load_names_the_conversions():
    model = _model([n("Add", ["x", "w"], ["y"])], [_vi("x", T.UINT8, [3])], [_vi("y", T.UINT8, [3])],
                   {"w": np.array([1, 2, 250], np.uint8)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = rlx.onnx.load(model)
    ours = [w for w in caught if issubclass(w.category, DTypeConversionWarning)]
    assert len(ours) == 1 and "3 dtype conversion(s)" in str(ours[0].message)
    assert sorted(m.conversions) == sorted(["input 'x': UINT8 -> int64 at run time", "initializer 'w': UINT8 -> int64 at import",
                                            "output 'y': int64 -> UINT8 at run time"])
    assert m.params["w"].dtype == np.int64
    got = m.run({"x": np.array([0, 255, 10], np.uint8)})["y"]
    np.testing.assert_array_equal(got, np.array([1, 1, 4], np.uint8))


def test_a_float32_model_converts_nothing_and_does_not_warn():
    model = _model([n("Relu", ["x"], ["y"])], [_vi("x", T.FLOAT, [2])], [_vi("y", T.FLOAT, [2])])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DTypeConversionWarning)
        m = rlx.onnx.load(model)
    assert m.conversions == [] and m.input_dtypes == {} and "conversion" not in repr(m)


def test_feeding_the_computed_type_instead_of_the_declared_one_is_a_dtype_error():
    model = _model([n("Relu", ["x"], ["y"])], [_vi("x", T.FLOAT16, [2])], [_vi("y", T.FLOAT16, [2])])
    m = _load(model)
    with pytest.raises(rlx.DTypeError, match="input 'x': expected float16 .*got float32"):
        m.run({"x": np.ones(2, np.float32)})


def test_float64_input_outside_float32_range_is_a_dtype_error_at_run_time():
    model = _model([n("Relu", ["x"], ["y"])], [_vi("x", T.DOUBLE, [2])], [_vi("y", T.DOUBLE, [2])])
    m = _load(model)
    with pytest.raises(rlx.DTypeError, match="input 'x': float64 values outside float32's range"):
        m.run({"x": np.array([1.0, 1e300])})
    np.testing.assert_array_equal(m.run({"x": np.array([-1.0, np.inf])})["y"], [0.0, np.inf])


# -- UINT64 as int64 bit patterns ----------------------------------------------------------------

U64 = np.array([0, 1, 2**63 - 1, 2**63, 2**63 + 5, 2**64 - 1, 12345678901234567890, 7], np.uint64)


def test_uint64_ring_ops_and_comparisons_match_numpy_from_two_to_the_63():
    # a*b + a - b wraps modulo 2**64; the comparisons read values from 2**63 on as unsigned.
    nodes = [n("Mul", ["a", "b"], ["p"]), n("Add", ["p", "a"], ["s"]), n("Sub", ["s", "b"], ["y"]),
             n("Less", ["y", "a"], ["lt"]), n("GreaterOrEqual", ["a", "b"], ["ge"]), n("Equal", ["a", "b"], ["eq"]),
             n("Greater", ["a", "k"], ["gk"]), n("ReduceSum", ["a"], ["sum"], keepdims=0)]
    k = np.array(2**63 + 1, np.uint64)
    model = _model(nodes, [_vi("a", T.UINT64, [8]), _vi("b", T.UINT64, [8])],
                   [_vi(o, t, None) for o, t in [("y", T.UINT64), ("lt", T.BOOL), ("ge", T.BOOL), ("eq", T.BOOL),
                                                 ("gk", T.BOOL), ("sum", T.UINT64)]], {"k": k})
    a, b = U64, U64[::-1].copy()
    out = _load(model).run({"a": a, "b": b})
    with np.errstate(over="ignore"):
        y = a * b + a - b
        total = np.add.reduce(a, dtype=np.uint64)
    want = {"y": y, "lt": y < a, "ge": a >= b, "eq": a == b, "gk": a > k, "sum": total}
    for name, w in want.items():
        assert out[name].dtype == np.asarray(w).dtype, name
        np.testing.assert_array_equal(out[name], w, err_msg=name)


def test_uint64_data_movement_and_integer_casts_are_exact():
    nodes = [n("Reshape", ["x", "shape"], ["r"]), n("Transpose", ["r"], ["t"], perm=[1, 0]),
             n("Concat", ["t", "t"], ["c"], axis=0), n("Gather", ["c", "i"], ["g"], axis=0),
             n("Cast", ["x"], ["i32"], to=T.INT32), n("Cast", ["x"], ["b"], to=T.BOOL),
             n("Cast", ["x"], ["u8"], to=T.UINT8)]
    model = _model(nodes, [_vi("x", T.UINT64, [8])],
                   [_vi("g", T.UINT64, None), _vi("i32", T.INT32, None), _vi("b", T.BOOL, None),
                    _vi("u8", T.UINT8, None)],
                   {"shape": np.array([2, 4], np.int64), "i": np.array([3, 0, 7], np.int64)})
    out = _load(model).run({"x": U64})
    c = np.concatenate([U64.reshape(2, 4).T] * 2, 0)
    np.testing.assert_array_equal(out["g"], c[[3, 0, 7]])
    assert out["g"].dtype == np.uint64
    np.testing.assert_array_equal(out["i32"], U64.astype(np.int32))
    np.testing.assert_array_equal(out["b"], U64 != 0)
    np.testing.assert_array_equal(out["u8"], U64.astype(np.uint8))


@pytest.mark.parametrize("node", [n("Div", ["x", "x"], ["y"], name="d"), n("Max", ["x", "x"], ["y"], name="d"),
                                  n("Cast", ["x"], ["y"], to=T.FLOAT, name="d"),
                                  n("BitShift", ["x", "x"], ["y"], direction="RIGHT", name="d")])
def test_uint64_ops_that_read_the_value_are_a_dtype_error_naming_the_node(node):
    model = _model([node], [_vi("x", T.UINT64, [2])], [_vi("y", T.UINT64, None)])
    with pytest.raises(rlx.DTypeError, match=f"'d' \\({node.op_type}\\).*UINT64 'x'.*bit patterns"):
        rlx.onnx.load(model)


def test_conversions_survive_the_import_cache(tmp_path):
    model = _model([n("Relu", ["x"], ["y"])], [_vi("x", T.FLOAT16, [2])], [_vi("y", T.FLOAT16, [2])])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.warns(DTypeConversionWarning):
        first = rlx.onnx.load(path, aot_dir=tmp_path / "aot")
    with pytest.warns(DTypeConversionWarning):
        again = rlx.onnx.load(path, aot_dir=tmp_path / "aot")
    assert again.from_cache and again.conversions == first.conversions
    assert again.input_dtypes == {"x": np.float16} and again.output_dtypes == {"y": np.float16}
    assert again.run({"x": np.array([-1, 2], np.float16)})["y"].dtype == np.float16


# -- narrow integers inside the graph -----------------------------------------------------------


@pytest.mark.parametrize("np_t,elem", NARROW)
def test_narrow_int_arithmetic_wraps_like_numpy(np_t, elem):
    # a*b + a - b wraps; the comparison and the division read wrapped values.
    nodes = [n("Mul", ["a", "b"], ["p"]), n("Add", ["p", "a"], ["s"]), n("Sub", ["s", "b"], ["y"]),
             n("Less", ["y", "a"], ["lt"]), n("Max", ["y", "b"], ["mx"]), n("Div", ["y", "d"], ["q"])]
    model = _model(nodes, [_vi("a", elem, [64]), _vi("b", elem, [64]), _vi("d", elem, [64])],
                   [_vi("y", elem, [64]), _vi("lt", T.BOOL, [64]), _vi("mx", elem, [64]), _vi("q", elem, [64])])
    a, b = _extremes(np_t, 64, 1), _extremes(np_t, 64, 2)
    d = np.where(_extremes(np_t, 64, 3) == 0, 7, _extremes(np_t, 64, 3)).astype(np_t)
    d[d == -1] = 3  # int8 -128 / -1 overflows in C and numpy alike; not what this test is about
    out = _load(model).run({"a": a, "b": b, "d": d})
    with np.errstate(over="ignore"):
        y = a * b + a - b
    q = (np.trunc(y.astype(np.float64) / d.astype(np.float64))).astype(np_t)
    for k, want in {"y": y, "lt": y < a, "mx": np.maximum(y, b), "q": q}.items():
        assert out[k].dtype == want.dtype, k
        np.testing.assert_array_equal(out[k], want, err_msg=k)


@pytest.mark.parametrize("np_t,elem", NARROW)
def test_narrow_int_data_movement_is_exact(np_t, elem):
    nodes = [n("Transpose", ["x"], ["t"], perm=[1, 0]), n("Concat", ["t", "t"], ["c"], axis=0),
             n("Gather", ["c", "i"], ["g"], axis=1), n("Where", ["m", "g", "g2"], ["y"]),
             n("ReduceMax", ["x"], ["r"], axes=[1], keepdims=0), n("ArgMax", ["x"], ["am"], axis=1, keepdims=0),
             n("Shape", ["x"], ["sh"])]
    model = _model(nodes, [_vi("x", elem, [3, 4]), _vi("m", T.BOOL, [8, 2]), _vi("g2", elem, [8, 2])],
                   [_vi("y", elem, [8, 2]), _vi("r", elem, [3]), _vi("am", T.INT64, [3]), _vi("sh", T.INT64, [2])],
                   {"i": np.array([2, 0], np.int64)})
    x, g2 = _extremes(np_t, 12, 4).reshape(3, 4), _extremes(np_t, 16, 5).reshape(8, 2)
    m = np.random.default_rng(6).random((8, 2)) < 0.5
    out = _load(model).run({"x": x, "m": m, "g2": g2})
    c = np.concatenate([x.T, x.T], 0)
    np.testing.assert_array_equal(out["y"], np.where(m, c[:, [2, 0]], g2))
    assert out["y"].dtype == np_t and out["r"].dtype == np_t
    np.testing.assert_array_equal(out["r"], x.max(1))
    np.testing.assert_array_equal(out["am"], x.argmax(1))
    np.testing.assert_array_equal(out["sh"], [3, 4])


@pytest.mark.parametrize("to,np_to", [(T.UINT8, np.uint8), (T.INT8, np.int8), (T.UINT16, np.uint16), (T.INT16, np.int16)])
def test_casts_between_integer_types_wrap_like_numpy(to, np_to):
    model = _model([n("Cast", ["x"], ["y"], to=to)], [_vi("x", T.INT32, [6])], [_vi("y", to, [6])])
    x = np.array([0, 127, 128, 255, 256, -1], np.int32)
    got = _load(model).run({"x": x})["y"]
    assert got.dtype == np_to
    np.testing.assert_array_equal(got, x.astype(np_to))


def test_cast_float_to_uint8_truncates_in_range_values_like_onnxruntime():
    model = _model([n("Cast", ["x"], ["y"], to=T.UINT8)], [_vi("x", T.FLOAT, [5])], [_vi("y", T.UINT8, [5])])
    x = np.array([0.0, 1.9, 127.5, 254.99, 255.0], np.float32)
    np.testing.assert_array_equal(_load(model).run({"x": x})["y"], _ort(model, {"x": x})["y"])


def test_cast_to_float16_inside_the_graph_does_not_round():
    # Documented: only a value known at import, or a float16 graph output, is rounded.
    nodes = [n("Cast", ["x"], ["h"], to=T.FLOAT16), n("Cast", ["h"], ["y"], to=T.FLOAT)]
    model = _model(nodes, [_vi("x", T.FLOAT, [2])], [_vi("y", T.FLOAT, [2])])
    x = np.array([1.0 + 2.0**-20, 70000.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DTypeConversionWarning)  # no boundary conversion here
        m = rlx.onnx.load(model)
    np.testing.assert_array_equal(m.run({"x": x})["y"], x)


def test_castlike_to_a_float16_value_gives_a_float16_output():
    nodes = [n("CastLike", ["x", "like"], ["y"])]
    model = _model(nodes, [_vi("x", T.FLOAT, [3]), _vi("like", T.FLOAT16, [1])], [_vi("y", T.FLOAT16, [3])])
    x = np.array([1.0 + 2.0**-20, -3.5, 1e5], np.float32)
    got = _load(model).run({"x": x, "like": np.zeros(1, np.float16)})["y"]
    assert got.dtype == np.float16
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, x.astype(np.float16))


@pytest.mark.parametrize("op", ["ReduceMean", "Mean"])
def test_averages_of_narrow_ints_are_a_dtype_error(op):
    node = n(op, ["x"], ["y"], keepdims=0) if op == "ReduceMean" else n(op, ["x", "x"], ["y"])
    model = _model([node], [_vi("x", T.UINT8, [4])], [_vi("y", T.UINT8, None)])
    with pytest.raises(rlx.DTypeError, match=f"{op} on UINT8 'x'.*overflow"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DTypeConversionWarning)
            rlx.onnx.load(model)


# -- sub-byte integers (ml_dtypes' int4 / uint4 / int2 / uint2) ---------------------------------

# (ml_dtypes name, ONNX element type, bits, signed); the numbers, as older onnx lacks INT2 / UINT2.
SUB_BYTE = [("int4", 22, 4, True), ("uint4", 21, 4, False), ("int2", 26, 2, True), ("uint2", 25, 2, False)]


def _sub_byte(name, elem):
    """ml_dtypes' numpy type ``name`` (skips where this onnx or ml_dtypes lacks it)."""
    mld = pytest.importorskip("ml_dtypes")
    if not hasattr(mld, name) or elem not in T.DataType.values():
        pytest.skip(f"this onnx / ml_dtypes has no {name}")
    return np.dtype(getattr(mld, name))


def _wrapped(v, bits, signed):
    """int64 values reduced into a ``bits``-wide integer's range (numpy's ring, by hand)."""
    m, off = 1 << bits, (1 << (bits - 1)) if signed else 0
    return (np.asarray(v, np.int64) + off) % m - off


@pytest.mark.parametrize("name,elem,bits,signed", SUB_BYTE)
def test_sub_byte_int_arithmetic_wraps_over_every_pair_of_values(name, elem, bits, signed):
    dt = _sub_byte(name, elem)
    lo = -(1 << (bits - 1)) if signed else 0
    values = np.arange(lo, lo + (1 << bits))
    a, b = (v.ravel() for v in np.meshgrid(values, values))
    nodes = [n("Mul", ["a", "b"], ["p"]), n("Add", ["p", "a"], ["s"]), n("Sub", ["s", "b"], ["y"]),
             n("Less", ["y", "a"], ["lt"])]
    k = a.size
    model = _model(nodes, [_vi("a", elem, [k]), _vi("b", elem, [k])], [_vi("y", elem, [k]), _vi("lt", T.BOOL, [k])])
    out = _load(model).run({"a": a.astype(dt), "b": b.astype(dt)})
    y = _wrapped(a * b + a - b, bits, signed)
    assert out["y"].dtype == dt
    np.testing.assert_array_equal(out["y"].astype(np.int64), y)
    np.testing.assert_array_equal(out["lt"], y < a)


@pytest.mark.parametrize("name,elem,bits,signed", SUB_BYTE)
def test_cast_float_to_sub_byte_int_truncates_and_wraps_like_ml_dtypes(name, elem, bits, signed):
    dt = _sub_byte(name, elem)
    model = _model([n("Cast", ["x"], ["y"], to=elem)], [_vi("x", T.FLOAT, [9])], [_vi("y", elem, [9])])
    x = np.array([-9.5, -3.0, -1.5, -0.5, 0.0, 1.9, 3.0, 7.5, 16.0], np.float32)
    got = _load(model).run({"x": x})["y"]
    assert got.dtype == dt
    np.testing.assert_array_equal(got.astype(np.int64), x.astype(dt).astype(np.int64))
    np.testing.assert_array_equal(got.astype(np.int64), _wrapped(np.trunc(x), bits, signed))


def test_quantize_linear_to_int4_rounds_half_to_even_and_saturates():
    mld = pytest.importorskip("ml_dtypes")
    model = _model([n("QuantizeLinear", ["x", "s", "z"], ["y"])], [_vi("x", T.FLOAT, [10])], [_vi("y", T.INT4, [10])],
                   {"s": np.array(0.5, np.float32), "z": np.array(1, mld.int4)})
    model.opset_import[0].version = 21
    x = np.array([-9.0, -4.75, -4.25, -1.25, -0.25, 0.25, 0.75, 1.25, 2.9, 100.0], np.float32)
    got = _load(model).run({"x": x})["y"]
    want = np.clip(np.rint(x / 0.5) + 1, -8, 7)
    np.testing.assert_array_equal(got.astype(np.int64), want)
    # ONNX Runtime's Python API cannot return int4; ONNX's reference evaluator can.
    from onnx.reference import ReferenceEvaluator

    (ref,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_array_equal(got.astype(np.int64), ref.astype(np.int64))


def test_dequantize_linear_of_blocked_int4_weights_matches_numpy():
    # The weight-only int4 layout of quantized language models: blocks of 4 along the input
    # axis, one scale and zero point per block, the weights an initializer.
    mld = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(7)
    w = rng.integers(-8, 8, (6, 8))
    zp = rng.integers(-2, 3, (6, 2))
    s = rng.uniform(0.01, 0.1, (6, 2)).astype(np.float32)
    nodes = [n("DequantizeLinear", ["w", "s", "z"], ["wf"], axis=1, block_size=4), n("MatMul", ["x", "wf"], ["y"])]
    model = _model(nodes, [_vi("x", T.FLOAT, [3, 6])], [_vi("y", T.FLOAT, [3, 8])],
                   {"w": w.astype(mld.int4), "s": s, "z": zp.astype(mld.int4)})
    model.opset_import[0].version = 21
    x = rng.standard_normal((3, 6)).astype(np.float32)
    got = _load(model).run({"x": x})["y"]
    wf = (w - np.repeat(zp, 4, axis=1)) * np.repeat(s, 4, axis=1)
    np.testing.assert_allclose(got, x @ wf, rtol=1e-5, atol=1e-6)


# -- 8-bit floats and FLOAT4E2M1 (computed in float32, rounded where an output converts) --------

def _ref(model, feeds):
    # ONNX Runtime's Python API cannot return these types; ONNX's reference evaluator can.
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)


@pytest.mark.parametrize("name,elem", [("float8_e4m3fn", 17), ("float8_e4m3fnuz", 18), ("float8_e5m2", 19),
                                       ("float8_e5m2fnuz", 20), ("float4_e2m1fn", 23)])
@pytest.mark.parametrize("saturate", [1, 0])
def test_cast_to_small_floats_rounds_and_saturates_like_the_onnx_reference(name, elem, saturate):
    dt = _sub_byte(name, elem)
    model = _model([n("Cast", ["x"], ["y"], to=elem, saturate=saturate)], [_vi("x", T.FLOAT, [12])],
                   [_vi("y", elem, [12])])
    model.opset_import[0].version = 21
    x = np.array([0.0, -0.3, 0.47, 1.3, 2.5, 3.1, 17.4, 250.0, 460.0, 1e5, np.inf, -np.inf], np.float32)
    got = _load(model).run({"x": x})["y"]
    (want,) = _ref(model, {"x": x})
    assert got.dtype == dt
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


def test_dequantize_linear_of_float8_weights_matches_numpy():
    # An FP8 (e4m3fn) weight with a scale per output column, dequantized at import into a param.
    mld = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(8)
    w = (rng.standard_normal((6, 5)) * 40).astype(mld.float8_e4m3fn)
    s = rng.uniform(0.01, 0.1, 5).astype(np.float32)
    nodes = [n("DequantizeLinear", ["w", "s"], ["wf"], axis=1), n("MatMul", ["x", "wf"], ["y"])]
    model = _model(nodes, [_vi("x", T.FLOAT, [3, 6])], [_vi("y", T.FLOAT, [3, 5])], {"w": w, "s": s})
    model.opset_import[0].version = 21
    x = rng.standard_normal((3, 6)).astype(np.float32)
    got = _load(model).run({"x": x})["y"]
    np.testing.assert_allclose(got, x @ (w.astype(np.float32) * s), rtol=1e-5, atol=1e-6)


def test_cast_to_float8_inside_the_graph_clamps_but_does_not_round():
    # Documented (rlx._onnx_dtypes): only a graph output of the type rounds to its grid.
    nodes = [n("Cast", ["x"], ["h"], to=17), n("Cast", ["h"], ["y"], to=T.FLOAT)]
    model = _model(nodes, [_vi("x", T.FLOAT, [3])], [_vi("y", T.FLOAT, [3])])
    model.opset_import[0].version = 21
    x = np.array([0.3, 500.0, -np.inf], np.float32)
    np.testing.assert_array_equal(rlx.onnx.load(model).run({"x": x})["y"], [np.float32(0.3), 448.0, -448.0])
