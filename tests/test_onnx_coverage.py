"""rlx.onnx coverage additions (issue 14) against ONNX Runtime on small onnx.helper graphs:
Split (opset 11 attribute, opset 13 input, opset 18 num_outputs with an uneven last chunk), Tile,
float16 / float64 initializers converted to float32 at import, and the typed errors for inputs
of types rlx does not convert and for malformed nodes."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "coverage", inputs, outputs,
                              initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def check(model, feeds, rtol=1e-5, atol=1e-6):
    """rlx and ONNX Runtime agree on every output (shape and values); returns the imported model."""
    m = rlx.onnx.load(model)
    out = m.run(feeds)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert len(m.outputs) == len(want)
    for name, r in zip(m.outputs, want):
        assert out[name].shape == r.shape, name
        np.testing.assert_allclose(out[name], r, rtol=rtol, atol=atol)
    return m


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- Split -----------------------------------------------------------------------------------


def _split(x_shape, n_out, opset, inits=(), split_input=None, **attrs):
    ins = ["x"] + ([split_input] if split_input else [])
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node("Split", ins, outs, name="the_split", **attrs)
    return _model([node], [_vi("x", x_shape)], [_vi(o, None) for o in outs], inits, opset)


SPLITS = {
    # opset 11: sizes as the `split` attribute
    "opset11_attr": (dict(n_out=2, opset=11, axis=1, split=[2, 4]), (3, 6)),
    "opset11_equal": (dict(n_out=3, opset=11), (6, 2)),
    # opset 13: sizes as the `split` input, negative axis, a zero-size chunk
    "opset13_input": (dict(n_out=3, opset=13, axis=-1, split_input="s", inits=[("s", np.array([1, 2, 3], np.int64))]), (2, 6)),
    "opset13_zero_chunk": (dict(n_out=3, opset=13, split_input="s", inits=[("s", np.array([2, 0, 2], np.int64))]), (4, 3)),
    "opset13_equal": (dict(n_out=2, opset=13, axis=1), (2, 4, 3)),
    # opset 18: num_outputs, the last chunk smaller when the size does not divide
    "opset18_even": (dict(n_out=3, opset=18, axis=0, num_outputs=3), (6, 2)),
    "opset18_uneven_1d": (dict(n_out=3, opset=18, num_outputs=3), (7,)),
    "opset18_uneven_2d": (dict(n_out=4, opset=18, axis=1, num_outputs=4), (2, 10)),
    "opset18_input": (dict(n_out=2, opset=18, axis=1, split_input="s", inits=[("s", np.array([3, 1], np.int64))]), (2, 4)),
}


@pytest.mark.parametrize("case", sorted(SPLITS))
def test_split_matches_onnxruntime(case):
    kw, shape = SPLITS[case]
    check(_split(shape, **kw), {"x": _x(*shape)})


def test_split_of_a_symbolic_batch_slices_at_run_time():
    model = _split(["batch", 6], n_out=3, opset=13, axis=1, split_input="s", inits=[("s", np.array([1, 3, 2], np.int64))])
    for b in (1, 5):
        check(model, {"x": _x(b, 6, seed=b)})


def test_split_along_a_symbolic_axis():
    # Sizes that are sums of symbols and ints: [seq - 2, 2] via a Split of a folded shape value.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        helper.make_node("Sub", ["seq", "two"], ["head"]),
        helper.make_node("Concat", ["head", "two"], ["sizes"], axis=0),
        helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
    ]
    model = _model(nodes, [_vi("x", [2, "seq"])], [_vi("a", None), _vi("b", None)],
                   [("one", np.array(1, np.int64)), ("two", np.array([2], np.int64))], opset=13)
    for s in (2, 3, 9):
        check(model, {"x": _x(2, s, seed=s)})


def test_split_of_values_known_at_import_is_folded():
    # A Split of a shape value (folded over the symbol) and of a Constant (sliced with numpy).
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Split", ["shape"], ["lead", "last"], axis=0, split=[2, 1]),
        helper.make_node("Concat", ["lead", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(2, 4))),
        helper.make_node("Split", ["c"], ["c0", "c1"], axis=1, split=[3, 1]),
        helper.make_node("ReduceSum", ["r"], ["rs"], axes=[2], keepdims=1),
        helper.make_node("Add", ["rs", "c1"], ["y"]),
    ]
    model = _model(nodes, [_vi("x", ["batch", 2, 4])], [_vi("y", None), _vi("c0", None)],
                   [("minus1", np.array([-1], np.int64))], opset=11)
    m = check(model, {"x": _x(3, 2, 4)})
    assert "slice(" not in str(m.graph)  # both Splits were done at import


def test_split_of_an_initializer_slices_the_param():
    w = _x(4, 6, seed=7)
    nodes = [
        helper.make_node("Split", ["w"], ["w0", "w1"], axis=1, split=[2, 4]),
        helper.make_node("MatMul", ["x", "w0"], ["a"]),
        helper.make_node("MatMul", ["x", "w1"], ["b"]),
    ]
    model = _model(nodes, [_vi("x", ["batch", 4])], [_vi("a", None), _vi("b", None)], [("w", w)], opset=11)
    m = check(model, {"x": _x(3, 4)})
    assert m.params["w"].shape == (4, 6)  # one param, sliced at run time
    assert str(m.graph).count("slice(") == 2


@pytest.mark.parametrize("kw,match", [
    (dict(opset=11, axis=1, split=[2, 3]), "sums to 5, not the axis size 6"),
    (dict(opset=11, axis=1, split=[2, 2, 2]), "3 entries for 2 output"),
    (dict(opset=13, axis=0), "size 3 into 2 equal chunks"),
    (dict(opset=18, axis=1, num_outputs=3), "num_outputs 3 but the node has 2"),
    (dict(opset=11, axis=2), "axis 2 out of range"),
])
def test_bad_split_names_the_node(kw, match):
    model = _split([3, 6], n_out=2, **kw)
    with pytest.raises((rlx.ShapeError, rlx.ModelFormatError), match=match) as e:
        rlx.onnx.load(model)
    assert "'the_split' (Split)" in str(e.value)


def test_equal_split_of_a_symbolic_axis_is_unsupported():
    model = _split(["n"], n_out=2, opset=13)
    with pytest.raises(rlx.UnsupportedOpError, match="'the_split'.*known only at run time"):
        rlx.onnx.load(model)


# -- Tile ------------------------------------------------------------------------------------


def _tile(x_shape, reps, opset=13):
    node = helper.make_node("Tile", ["x", "r"], ["y"], name="the_tile")
    return _model([node], [_vi("x", x_shape)], [_vi("y", None)], [("r", np.array(reps, np.int64))], opset)


@pytest.mark.parametrize("shape,reps", [
    ((2, 3), [2, 3]),
    ((2, 3), [1, 1]),
    ((3,), [4]),
    ((2, 1, 3), [1, 5, 2]),
    ((2, 3), [0, 2]),
])
def test_tile_matches_onnxruntime(shape, reps):
    check(_tile(shape, reps), {"x": _x(*shape)})


def test_tile_of_a_symbolic_batch():
    model = _tile(["batch", 3], [3, 2])
    for b in (1, 4):
        check(model, {"x": _x(b, 3, seed=b)})


def test_tile_of_values_known_at_import_is_folded():
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([[1.0, -2.0]], np.float32))),
        helper.make_node("Tile", ["c", "r"], ["ct"]),
        helper.make_node("Add", ["x", "ct"], ["y"]),
        # A shape value tiled: [batch, 4] -> [batch, 4, batch, 4], then back to x's shape.
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Tile", ["shape", "two"], ["shape2"]),
        helper.make_node("Slice", ["shape2", "zero", "two"], ["back"]),
        helper.make_node("Reshape", ["y", "back"], ["z"]),
    ]
    model = _model(nodes, [_vi("x", ["batch", 4])], [_vi("z", None)],
                   [("r", np.array([1, 2], np.int64)), ("two", np.array([2], np.int64)), ("zero", np.array([0], np.int64))])
    check(model, {"x": _x(3, 4)})


def test_bad_tile_names_the_node():
    with pytest.raises(rlx.ShapeError, match="'the_tile' \\(Tile\\).*2 entries for an input of rank 1"):
        rlx.onnx.load(_tile([3], [2, 2]))
    with pytest.raises(rlx.ShapeError, match="'the_tile' \\(Tile\\).*negative"):
        rlx.onnx.load(_tile([3], [-1]))
    node = helper.make_node("Tile", ["x", "r"], ["y"], name="the_tile")
    model = _model([node], [_vi("x", [3]), _vi("r", [1], TensorProto.INT64)], [_vi("y", None)])
    with pytest.raises(rlx.UnsupportedOpError, match="'the_tile' \\(Tile\\).*known at import"):
        rlx.onnx.load(model)


# -- float16 / float64 -----------------------------------------------------------------------


def _mixed_precision_model(w, b):
    """x @ Cast(w) + Cast(b), with w and b stored as initializers of their own dtypes."""
    nodes = [
        helper.make_node("Cast", ["w"], ["w32"], to=F),
        helper.make_node("Cast", ["b"], ["b32"], to=F),
        helper.make_node("MatMul", ["x", "w32"], ["xw"]),
        helper.make_node("Add", ["xw", "b32"], ["y"]),
    ]
    return _model(nodes, [_vi("x", ["batch", w.shape[0]])], [_vi("y", None)], [("w", w), ("b", b)])


def test_float64_and_float16_initializers_are_converted_once():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 5))  # float64
    b = rng.standard_normal(5).astype(np.float16)
    m = check(_mixed_precision_model(w, b), {"x": _x(3, 8)}, rtol=1e-5, atol=1e-5)
    assert m.params["w"].dtype == np.float32 and m.params["b"].dtype == np.float32
    np.testing.assert_array_equal(m.params["w"], w.astype(np.float32))
    notes = " | ".join(m.notes)
    assert "1 float64 initializer(s) converted to float32 at import" in notes and "'w'" in notes
    assert "1 float16 initializer(s) converted to float32 at import" in notes and "'b'" in notes


def test_float64_initializer_outside_float32_range_is_a_dtype_error():
    w = np.full((4, 2), 1e300)
    with pytest.raises(rlx.DTypeError, match="initializer 'w'.*outside float32's range"):
        rlx.onnx.load(_mixed_precision_model(w, np.zeros(2, np.float16)))


@pytest.mark.parametrize("elem,name", [(TensorProto.STRING, "STRING"), (TensorProto.COMPLEX64, "COMPLEX64")])
def test_input_of_a_type_rlx_does_not_convert_is_a_dtype_error(elem, name):
    # float16 / float64 / 8-bit float / narrow and sub-byte int inputs are converted
    # (tests/test_onnx_dtypes.py); these are not.
    nodes = [helper.make_node("Cast", ["x"], ["x32"], to=F), helper.make_node("Relu", ["x32"], ["y"])]
    model = _model(nodes, [_vi("x", [2, 3], elem)], [_vi("y", None)])
    with pytest.raises(rlx.DTypeError, match=f"input 'x': ONNX type {name} is not supported"):
        rlx.onnx.load(model)


def test_external_float16_initializer_is_converted(tmp_path):
    w = np.arange(12, dtype=np.float16).reshape(4, 3)
    t = numpy_helper.from_array(w, "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "w.bin"), ("offset", "0"), ("length", str(w.nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    (tmp_path / "w.bin").write_bytes(w.tobytes())
    nodes = [helper.make_node("Cast", ["w"], ["w32"], to=F), helper.make_node("MatMul", ["x", "w32"], ["y"])]
    g = helper.make_graph(nodes, "ext", [_vi("x", ["batch", 4])], [_vi("y", None)], initializer=[t])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    m = rlx.onnx.load(path)
    assert m.params["w"].dtype == np.float32
    x = _x(2, 4)
    np.testing.assert_allclose(m.run({"x": x})["y"], x @ w.astype(np.float32), rtol=1e-5)
