"""rlx.onnx on malformed models and feeds (root cause 9): node arity, single assignment,
inputs that shadow initializers, unknown feed names, sizes folded at import, missing attributes,
bad ``dims=``. Each is a typed rlx error naming the node or value; after each, a valid model
still imports and gives the same result."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

X = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
W = np.array([0.5, -1.0, 2.0, 1.5], np.float32)
W2 = np.array([1.0, 1.0, -1.0, 0.0], np.float32)


def vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def node(op, ins, outs=("y",), name=None, **attrs):
    return helper.make_node(op, list(ins), list(outs), name=name or op.lower(), **attrs)


def i64(*v):
    return np.array(v, np.int64)


def model(nodes, inits=(), inputs=None, outputs=("y",), ir=8):
    """``inits`` is a list of (name, array) pairs, so a test can repeat a name."""
    g = helper.make_graph(
        nodes, "t", inputs if inputs is not None else [vi("x", ["batch", 4])], [vi(o, None) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = ir
    return m


def external_tensor(location):
    t = numpy_helper.from_array(np.zeros(4, np.float32), "v")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    return t


def good():
    """y = relu(x * w)."""
    return model([node("Mul", ["x", "w"], ["t"]), node("Relu", ["t"])], [("w", W)])


@pytest.fixture(scope="module")
def baseline():
    y = rlx.onnx.load(good()).run({"x": X})["y"]
    np.testing.assert_allclose(y, np.maximum(X * W, 0))
    return y


def still_works(baseline):
    np.testing.assert_array_equal(rlx.onnx.load(good()).run({"x": X})["y"], baseline)


# (id, nodes, initializers, exception, message fragment); RLX_MEMORY_LIMIT is 1 MiB for these.
LOAD_MISTAKES = [
    ("Add with one input", [node("Add", ["x"], name="add1")], [], rlx.GraphError, r"'add1' \(Add\): has 1 input\(s\), the op takes 2"),
    ("Relu with two inputs", [node("Relu", ["x", "x"], name="r")], [], rlx.GraphError, r"'r' \(Relu\): has 2 input\(s\)"),
    ("Relu with two outputs", [node("Relu", ["x"], ["y", "z"], name="r")], [], rlx.GraphError, r"'r' \(Relu\): has 2 output\(s\)"),
    ("required input empty", [node("Add", ["x", ""], name="a")], [], rlx.GraphError, r"'a' \(Add\): input #1 \(B\) is empty"),
    ("two nodes write y", [node("Relu", ["x"], name="r1"), node("Neg", ["x"], name="r2")], [], rlx.GraphError,
     r"'y' is assigned twice, by node 'r1' \(Relu\) and by node 'r2' \(Neg\)"),
    ("a node writes an input", [node("Relu", ["x"], ["x"], name="r"), node("Neg", ["x"])], [], rlx.GraphError,
     r"'x' is assigned twice, by a graph input and by node 'r'"),
    ("a node writes an initializer", [node("Relu", ["x"], ["w"], name="r"), node("Mul", ["x", "w"])], [("w", W)],
     rlx.GraphError, r"'w' is assigned twice, by an initializer and by node 'r'"),
    ("initializer twice", [node("Mul", ["x", "w"])], [("w", W), ("w", W2)], rlx.ModelFormatError, "initializer 'w' is defined twice"),
    ("used before defined", [node("Relu", ["t"]), node("Neg", ["x"], ["t"])], [], rlx.GraphError, "'t' is used before it is defined"),
    ("Cast without to", [node("Cast", ["x"], name="c")], [], rlx.ModelFormatError, r"'c' \(Cast\): missing required attribute\(s\) \['to'\]"),
    ("Concat axis is a float", [node("Concat", ["x", "x"], name="c", axis=1.0)], [], rlx.ModelFormatError, "'c' \\(Concat\\): attribute 'axis' is FLOAT"),
    ("Constant without value", [node("Constant", [], name="k")], [], rlx.ModelFormatError, r"'k' \(Constant\): Constant has no value"),
    ("Constant with external data", [node("Constant", [], name="k", value=external_tensor("w.bin"))], [], rlx.ModelFormatError,
     r"'k' \(Constant\): Constant value: external data in an attribute tensor is not supported"),
    ("ConstantOfShape value of 2", [node("ConstantOfShape", ["s"], name="cs", value=numpy_helper.from_array(i64(1, 2)))],
     [("s", i64(3))], rlx.ModelFormatError, r"'cs' \(ConstantOfShape\): ConstantOfShape value has 2 elements"),
    ("Range delta 0", [node("Range", ["a", "b", "c"], name="rg")], [("a", np.int64(0)), ("b", np.int64(9)), ("c", np.int64(0))],
     rlx.ShapeError, r"'rg' \(Range\): Range delta is 0"),
    ("Range start not a scalar", [node("Range", ["a", "b", "c"], name="rg")], [("a", i64(0, 1)), ("b", np.int64(9)), ("c", np.int64(1))],
     rlx.ShapeError, "'rg' \\(Range\\): Range start must be a scalar"),
    ("Gather index out of range", [node("Gather", ["s", "i"], name="g")], [("s", i64(2, 3)), ("i", np.int64(5))],
     rlx.ShapeError, r"'g' \(Gather\): Gather indices \[5\] out of range for axis 0 of size 2"),
    ("integer Div by zero", [node("Div", ["s", "z"], name="d")], [("s", i64(2, 3)), ("z", np.int64(0))], rlx.ShapeError, "'d' \\(Div\\): integer division of 2 by zero"),
    ("Transpose bad perm", [node("Transpose", ["x"], name="t", perm=[0, 0])], [], rlx.ShapeError, r"'t' \(Transpose\): Transpose perm \[0, 0\]"),
    ("Slice step 0", [node("Slice", ["s", "a", "b", "ax", "st"], name="sl")], [("s", i64(1, 2, 3)), ("a", i64(0)), ("b", i64(3)), ("ax", i64(0)), ("st", i64(0))],
     rlx.ShapeError, r"'sl' \(Slice\): Slice step 0"),
    ("Reshape with two -1", [node("Reshape", ["x", "s"], name="rs")], [("s", i64(-1, -1))], rlx.ShapeError, "'rs' \\(Reshape\\): .*more than one -1"),
    ("Reshape 0 past the rank", [node("Reshape", ["x", "s"], name="rs")], [("s", i64(0, 0, 0))], rlx.ShapeError, "'rs' \\(Reshape\\): .*copies a dim"),
    ("Reshape folded count", [node("Reshape", ["s", "t"], name="rs")], [("s", i64(1, 2, 3)), ("t", i64(4))], rlx.ShapeError, r"'rs' \(Reshape\): cannot reshape \[3\]"),
    ("Gemm rank-1 B", [node("Gemm", ["x", "w"], name="gm")], [("w", W)], rlx.ShapeError, r"'gm' \(Gemm\): Gemm takes rank-2"),
    ("ConstantOfShape negative", [node("ConstantOfShape", ["s"], name="cs")], [("s", i64(-3))], rlx.ShapeError, r"'cs' \(ConstantOfShape\): the result \[-3\] has a negative dim"),
    ("ConstantOfShape 2**62", [node("ConstantOfShape", ["s"], name="cs")], [("s", i64(2**62))], rlx.ShapeError, r"'cs' \(ConstantOfShape\): .* too large"),
    ("ConstantOfShape 0 x huge", [node("ConstantOfShape", ["s"], name="cs")], [("s", i64(0, 2**40, 2**40))], rlx.ShapeError, "'cs' .* too large"),
    ("ConstantOfShape over budget", [node("ConstantOfShape", ["s"], name="cs", value=numpy_helper.from_array(i64(1)))], [("s", i64(2**29))],
     MemoryError, r"'cs' \(ConstantOfShape\): the result \[536870912\] needs 4294967296 bytes at import, over the 1048576-byte budget"),
    ("Expand over budget", [node("Expand", ["o", "s"], name="ex")], [("o", i64(1)), ("s", i64(2**16, 2**16))], MemoryError, r"'ex' \(Expand\): the result \[65536, 65536\]"),
    ("Range over budget", [node("Range", ["a", "b", "c"], name="rg")], [("a", np.int64(0)), ("b", np.int64(2**40)), ("c", np.int64(1))],
     MemoryError, r"'rg' \(Range\): the result \[1099511627776\]"),
    ("broadcast over budget", [node("Add", ["a", "b"], name="bc")], [("a", np.zeros((4096, 1), np.int64)), ("b", np.zeros((1, 4096), np.int64))],
     MemoryError, r"'bc' \(Add\): the result \[4096, 4096\] needs 134217728 bytes"),
    ("Where shapes do not broadcast", [node("Where", ["c", "a", "b"], name="wh")], [("c", np.ones(2, bool)), ("a", i64(1, 2, 3)), ("b", i64(1))],
     rlx.ShapeError, r"'wh' \(Where\): Where: shapes \[2\] and \[3\] and \[1\] do not broadcast"),
]


@pytest.mark.parametrize("case", LOAD_MISTAKES, ids=[c[0] for c in LOAD_MISTAKES])
def test_malformed_models_are_typed_errors(monkeypatch, baseline, case):
    _, nodes, inits, exc, fragment = case
    monkeypatch.setenv("RLX_MEMORY_LIMIT", str(2**20))
    with pytest.raises(exc, match=fragment):
        rlx.onnx.load(model(nodes, inits))
    still_works(baseline)


def test_symbolic_range_table_is_checked_against_the_budget(monkeypatch, baseline):
    """Range(0, seq, 1) becomes a table up to seq's upper bound, which the caller sets."""
    nodes = [node("Shape", ["ids"], ["sh"]), node("Gather", ["sh", "one"], ["n"], axis=0), node("Range", ["zero", "n", "one"], name="rg")]
    m = model(nodes, [("zero", np.int64(0)), ("one", np.int64(1))], inputs=[vi("ids", ["batch", "seq"], TensorProto.INT64)])
    monkeypatch.setenv("RLX_MEMORY_LIMIT", str(2**20))
    with pytest.raises(MemoryError, match=r"'rg' \(Range\): the table up to seq's upper bound \[1099511627776\]"):
        rlx.onnx.load(m, dims={"seq": (1, 2**40)})
    assert rlx.onnx.load(m, dims={"seq": (1, 64)}).run({"ids": np.zeros((2, 5), np.int64)})["y"].tolist() == list(range(5))
    still_works(baseline)


def test_tiny_file_asking_for_4_gib_fails_before_allocating(tmp_path, monkeypatch, baseline):
    m = model([node("ConstantOfShape", ["s"], name="cs", value=numpy_helper.from_array(i64(1)))], [("s", i64(2**29))], inputs=[])
    path = tmp_path / "cos.onnx"
    path.write_bytes(m.SerializeToString())
    assert path.stat().st_size < 200
    monkeypatch.setenv("RLX_MEMORY_LIMIT", str(2**30))
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match="'cs' .* 4294967296 bytes .* 1073741824-byte budget"):
            rlx.onnx.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**24
    still_works(baseline)


@pytest.mark.parametrize("limit", ["lots", "-1", "1.5e9", "", "0x100"])
def test_malformed_memory_limit_is_an_error(monkeypatch, baseline, limit):
    monkeypatch.setenv("RLX_MEMORY_LIMIT", limit)
    with pytest.raises(rlx.RlxError, match=f"'cs' .*RLX_MEMORY_LIMIT={limit!r} is not a byte count"):
        rlx.onnx.load(model([node("ConstantOfShape", ["s"], name="cs")], [("s", i64(4))]))
    monkeypatch.delenv("RLX_MEMORY_LIMIT")
    still_works(baseline)


@pytest.mark.parametrize("arg", [123, None, [good()]])
def test_model_argument_of_wrong_type(baseline, arg):
    with pytest.raises(rlx.ModelFormatError, match="ONNX model must be a path or an onnx.ModelProto"):
        rlx.onnx.load(arg)
    still_works(baseline)


def _external(tmp_path, dims):
    t = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    t.ClearField("raw_data")
    del t.dims[:]
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "w.bin"
    (tmp_path / "w.bin").write_bytes(bytes(16))
    path = tmp_path / "m.onnx"
    path.write_bytes(model([node("Mul", ["x", "w"])], inputs=[vi("x", [4])]).SerializeToString())
    m = onnx.load(str(path))
    m.graph.initializer.append(t)
    path.write_bytes(m.SerializeToString())
    return path


@pytest.mark.parametrize("dims", [[-4], [2**40, 2**40], [0, 2**62], [4, 2**62]])
def test_huge_external_data_dims_are_model_format_errors(tmp_path, baseline, dims):
    with pytest.raises(rlx.ModelFormatError, match="initializer 'w': external data shape .* is negative or too large"):
        rlx.onnx.load(_external(tmp_path, dims))
    assert rlx.onnx.load(_external(tmp_path, [4])).run({"x": W})["y"].tolist() == [0.0] * 4
    still_works(baseline)


BAD_DIMS = [
    ({"batch": (5, 1)}, r"dims\['batch'\] = \(5, 1\)"),
    ({"batch": (-1, 3)}, r"dims\['batch'\]"),
    ({"batch": (1.5, 3)}, r"dims\['batch'\]"),
    ({"batch": (True, 3)}, r"dims\['batch'\]"),
    ({"batch": 4}, r"dims\['batch'\] = 4"),
    ({"batch": (1, 2, 3)}, r"dims\['batch'\]"),
    ({"batch": (1, 2**70)}, r"dims\['batch'\]"),
    ({"btach": (1, 4)}, r"unknown symbol\(s\) \['btach'\].*did you mean 'batch'"),
    ([("batch", (1, 4))], "dims must be a dict"),
]


@pytest.mark.parametrize("dims,fragment", BAD_DIMS, ids=[repr(d) for d, _ in BAD_DIMS])
def test_bad_dims_are_binding_errors(baseline, dims, fragment):
    with pytest.raises(rlx.BindingError, match=fragment):
        rlx.onnx.load(good(), dims=dims)
    assert rlx.onnx.load(good(), dims={"batch": (1, 8)}).symbols == {"batch": (1, 8)}
    still_works(baseline)


BAD_FEEDS = [
    ({"x": X, "z": X}, r"unknown input\(s\) \['z'\]"),
    ({"xx": X}, r"unknown input\(s\) \['xx'\].*did you mean 'x'.*missing input\(s\) \['x'\]"),
    ({"x": X, "w": W2}, r"unknown input\(s\) \['w'\]"),
    ({}, r"missing input\(s\) \['x'\]"),
    ([X], "inputs must be a dict"),
]


@pytest.mark.parametrize("feed,fragment", BAD_FEEDS, ids=["unknown", "misspelt", "param name", "empty", "list"])
def test_feeds_that_are_not_inputs_are_binding_errors(baseline, feed, fragment):
    om = rlx.onnx.load(good())
    with pytest.raises(rlx.BindingError, match=fragment):
        om.run(feed)
    np.testing.assert_array_equal(om.run({"x": X})["y"], baseline)
    still_works(baseline)


def test_binding_rejects_unknown_names(baseline):
    om = rlx.onnx.load(good())
    with pytest.raises(rlx.BindingError, match=r"unknown input\(s\) \['z'\]"):
        om.binding({"x": X, "z": X})
    assert om.binding({"x": X}) == {"batch": 2}


@pytest.mark.parametrize("ir", [3, 8])
def test_input_that_shadows_an_initializer(baseline, ir):
    """The initializer is the value; feeding the input is an error, never ignored; constants=
    gives it another value."""
    m = model([node("Mul", ["x", "w"], ["t"]), node("Relu", ["t"])], [("w", W)], inputs=[vi("x", ["batch", 4]), vi("w", [4])], ir=ir)
    om = rlx.onnx.load(m)
    assert om.inputs == ["x"] and om.shadowed == ["w"]
    with pytest.raises(rlx.BindingError, match=r"\['w'\] are initializers, compiled into the graph: pass constants="):
        om.run({"x": X, "w": W2})
    np.testing.assert_array_equal(om.run({"x": X})["y"], baseline)
    other = rlx.onnx.load(m, constants={"w": W2})
    np.testing.assert_allclose(other.run({"x": X})["y"], np.maximum(X * W2, 0))
    with pytest.raises(rlx.BindingError, match=r"\['w'\] were frozen at import by constants="):
        other.run({"x": X, "w": W})
    with pytest.raises(rlx.BindingError, match=r"constants names \['v'\] are not graph inputs"):
        rlx.onnx.load(m, constants={"v": W2})
    still_works(baseline)
