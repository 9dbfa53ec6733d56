"""rlx.onnx.load against ONNX Runtime on small graphs built with onnx.helper."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

H, HEADS = 16, 2
D = H // HEADS


class W:
    """A tiny exporter: names nodes, holds initializers."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def op(self, t, ins, **kw):
        self.n += 1
        out = f"{t.lower()}_{self.n}"
        self.nodes.append(helper.make_node(t, ins, [out], name=f"/{t}_{self.n}", **kw))
        return out

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.array(arr, order="C"), name))
        return name

    def const(self, arr):
        self.n += 1
        return self.init(f"c_{self.n}", np.asarray(arr))

    def dim(self, x, axis):
        # PyTorch style: Shape -> Gather(scalar) -> Unsqueeze.
        g = self.op("Gather", [self.op("Shape", [x]), self.const(np.array(axis, np.int64))], axis=0)
        return self.op("Unsqueeze", [g, self.const(np.array([0], np.int64))])


def attention_model(rng, opset=17):
    w = W()
    wt = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    x = "x"
    # Token embeddings (Gather of a param) plus position embeddings sliced to the symbolic seq.
    emb = w.op("Gather", [w.init("word", wt(50, H)), "ids"], axis=0)
    seq = w.op("Slice", [w.op("Shape", ["ids"]), w.const(np.array([1])), w.const(np.array([2]))])
    pos = w.op("Slice", [w.init("pos", wt(64, H)), w.const(np.array([0])), seq, w.const(np.array([0]))])
    x = w.op("Add", [emb, pos])
    x = w.op("LayerNormalization", [x, w.init("ln0_g", 1 + wt(H)), w.init("ln0_b", wt(H))], axis=-1, epsilon=1e-12)

    def lin(v, name, n_in=H, n_out=H):
        return w.op("Add", [w.op("MatMul", [v, w.init(name + ".w", wt(n_in, n_out))]), w.init(name + ".b", wt(n_out))])

    def heads(v, perm):
        # Reshape target from Shape/Gather/Concat, with H // HEADS computed on shape values.
        hd = w.op("Div", [w.const(np.array([H], np.int64)), w.const(np.array([HEADS], np.int64))])
        shape = w.op("Concat", [w.dim(v, 0), w.dim(v, 1), w.const(np.array([HEADS], np.int64)), hd], axis=0)
        return w.op("Transpose", [w.op("Reshape", [v, shape])], perm=perm)

    q, k, v = heads(lin(x, "q"), [0, 2, 1, 3]), heads(lin(x, "k"), [0, 2, 3, 1]), heads(lin(x, "v"), [0, 2, 1, 3])
    s = w.op("Div", [w.op("MatMul", [q, k]), w.const(np.array(np.sqrt(D), np.float32))])
    # Mask: [b, s] -> [b, 1, 1, s] -> Expand to [b, 1, s, s] via a ConstantOfShape/Where shape.
    m = w.op("Unsqueeze", [w.op("Cast", ["mask"], to=TensorProto.FLOAT), w.const(np.array([1, 2], np.int64))])
    tgt = w.op("Concat", [w.dim("mask", 0), w.const(np.array([1], np.int64)), w.dim("mask", 1), w.dim("mask", 1)], axis=0)
    ones = w.op("ConstantOfShape", [w.op("Shape", [tgt])], value=numpy_helper.from_array(np.array([1], np.int64)))
    tgt = w.op("Where", [w.op("Equal", [tgt, w.op("Mul", [ones, w.const(np.array(-1, np.int64))])]), ones, tgt])
    m = w.op("Expand", [m, tgt])
    bias = w.op("Mul", [w.op("Sub", [w.const(np.array(1.0, np.float32)), m]), w.const(np.array(-1e4, np.float32))])
    p = w.op("Softmax", [w.op("Add", [s, bias])], axis=-1)
    ctx = w.op("Transpose", [w.op("MatMul", [p, v])], perm=[0, 2, 1, 3])
    ctx = w.op("Reshape", [ctx, w.op("Concat", [w.dim(x, 0), w.dim(x, 1), w.const(np.array([-1], np.int64))], axis=0)])
    h = w.op("LayerNormalization", [w.op("Add", [lin(ctx, "o"), x]), w.init("ln1_g", 1 + wt(H)), w.init("ln1_b", wt(H))], axis=-1)
    f = lin(h, "up", H, 4 * H)
    f = w.op("Mul", [w.op("Mul", [f, w.op("Add", [w.op("Erf", [w.op("Div", [f, w.const(np.array(np.sqrt(2), np.float32))])]), w.const(np.array(1.0, np.float32))])]), w.const(np.array(0.5, np.float32))])
    y = w.op("Add", [lin(f, "down", 4 * H, H), h])
    # A Gemm head on the flattened tokens (transB=1, PyTorch's Linear layout).
    flat = w.op("Reshape", [y, w.const(np.array([-1, H], np.int64))])
    logits = w.op("Gemm", [flat, w.init("head.w", wt(3, H)), w.init("head.b", wt(3))], transB=1)
    w.nodes.append(helper.make_node("Identity", [y], ["hidden"]))
    w.nodes.append(helper.make_node("Relu", [logits], ["logits"]))
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("ids", "mask")]
    outs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", H]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])]
    model = helper.make_model(helper.make_graph(w.nodes, "attn", ins, outs, initializer=w.inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def attn():
    model = attention_model(np.random.default_rng(7))
    return model, ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("b,s", [(1, 3), (2, 9), (4, 33)])
def test_attention_block_matches_onnxruntime(attn, b, s):
    model, sess = attn
    om = rlx.onnx.load(model)
    rng = np.random.default_rng(b * 100 + s)
    feed = {"ids": rng.integers(0, 50, (b, s)).astype(np.int64), "mask": np.ones((b, s), np.int64)}
    feed["mask"][0, s // 2 + 1:] = 0
    want = dict(zip(["hidden", "logits"], sess.run(None, feed)))
    got = om.run(feed)
    for n in ("hidden", "logits"):
        assert got[n].shape == want[n].shape
        assert np.abs(got[n] - want[n]).max() <= 1e-4, n


def test_symbols_and_folded_shapes(attn):
    om = rlx.onnx.load(attn[0], dims={"batch": (1, 8)})
    assert om.symbols == {"batch": (1, 8), "seq": (1, 512)}
    assert om.inputs == ["ids", "mask"] and om.outputs == ["hidden", "logits"]
    # Shape tensors are folded, never params; float initializers are params.
    assert not any(n.startswith("c_") and om.params[n].dtype == np.int64 for n in om.params)
    assert "word" in om.params and "head.w" in om.params
    pipe = om.pipeline()
    assert {"batch": 2, "seq": 5} == om.binding({"ids": np.zeros((2, 5), np.int64)})
    assert pipe.manifest_for(batch=2, seq=5).outputs[1].shape == (10, 3)


def test_initializers_bound_zero_copy(attn):
    om = rlx.onnx.load(attn[0])
    pipe = om.pipeline()
    exe = pipe.get_or_compile(batch=1, seq=4)
    for name in ("word", "q.w", "head.w", "ln0_g"):
        arr = om.params[name]
        assert exe.param_data_ptr(name) == arr.ctypes.data, name


def test_unsupported_ops_listed_together():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("NonMaxSuppression", ["a", "a"], ["b"], name="nms0"),
             helper.make_node("Unique", ["b"], ["y"], name="unique0"),
             helper.make_node("Frob", ["x"], ["z"], name="custom0", domain="com.example")]
    model = helper.make_model(helper.make_graph(nodes, "bad", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(rlx.UnsupportedOpError) as e:
        rlx.onnx.load(model)
    msg = str(e.value)
    assert "3 unsupported" in msg
    for frag in ("NonMaxSuppression (domain ai.onnx, opset 17, node 'nms0')", "Unique", "unique0", "Frob (domain com.example, opset 1, node 'custom0')"):
        assert frag in msg
    assert "'ok'" not in msg


def _external_model(tmp_path, location, arr):
    t = numpy_helper.from_array(arr, "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(arr.nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "ext", [x], [y], initializer=[t])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_is_memory_mapped(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    (tmp_path / "w.bin").write_bytes(arr.tobytes())
    om = rlx.onnx.load(_external_model(tmp_path, "w.bin", arr))
    assert isinstance(om.params["w"], np.memmap)
    pipe = om.pipeline()
    x = np.ones((2, 4), np.float32)
    exe = pipe.get_or_compile(batch=2)
    assert exe.param_data_ptr("w") == om.params["w"].ctypes.data
    np.testing.assert_allclose(exe.run(x=x)["y"], x @ arr)


@pytest.mark.parametrize("loc", ["../w.bin", "/etc/passwd", "sub/../../w.bin", "link.bin"])
def test_external_data_escaping_the_model_dir_is_rejected(tmp_path, loc):
    arr = np.zeros((4, 3), np.float32)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "w.bin").write_bytes(arr.tobytes())
    os.symlink(tmp_path / "w.bin", model_dir / "link.bin")
    with pytest.raises(rlx.ModelFormatError, match="escapes|symlink"):
        rlx.onnx.load(_external_model(model_dir, loc, arr))
    # The process is fine and a valid model still loads.
    (model_dir / "ok.bin").write_bytes(arr.tobytes())
    assert "w" in rlx.onnx.load(_external_model(model_dir, "ok.bin", arr)).params


def test_external_data_out_of_range_is_rejected(tmp_path):
    arr = np.zeros((4, 3), np.float32)
    (tmp_path / "w.bin").write_bytes(arr.tobytes()[:20])
    with pytest.raises(rlx.ModelFormatError, match="outside"):
        rlx.onnx.load(_external_model(tmp_path, "w.bin", arr))


def test_bad_files_raise_model_format_error(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(rlx.ModelFormatError):
        rlx.onnx.load(p)
    with pytest.raises(rlx.ModelFormatError, match="no such file"):
        rlx.onnx.load(tmp_path / "missing.onnx")


def test_unsupported_dtype_names_the_input():
    # DOUBLE and the 8-bit floats are converted (tests/test_onnx_dtypes.py); COMPLEX64 is not.
    x = helper.make_tensor_value_info("x", TensorProto.COMPLEX64, [2])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "d", [x],
                                                [helper.make_tensor_value_info("y", TensorProto.COMPLEX64, [2])]))
    with pytest.raises(rlx.DTypeError, match="input 'x'.*COMPLEX64"):
        rlx.onnx.load(model)


def test_range_up_to_a_symbolic_length_matches_onnxruntime():
    """Position ids as some exporters write them: Range(0, Shape(ids)[1], 1) -> Gather."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ort = pytest.importorskip("onnxruntime")
    table = np.random.default_rng(3).standard_normal((64, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["ids"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        helper.make_node("Range", ["zero", "seq", "one"], ["pos"]),
        helper.make_node("Gather", ["table", "pos"], ["emb"], axis=0),
        helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["idsf", "two"], ["ids3"]),
        helper.make_node("Add", ["ids3", "emb"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "range",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array(0, np.int64), "zero"),
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(np.array([2], np.int64), "two"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    m = rlx.onnx.load(model, dims={"batch": (1, 4), "seq": (1, 64)})
    pipe = m.pipeline()
    for b, s in [(1, 5), (3, 64)]:
        ids = np.arange(b * s, dtype=np.int64).reshape(b, s)
        got = pipe.get_or_compile(batch=b, seq=s).run(ids=ids)["y"]
        np.testing.assert_allclose(got, sess.run(["y"], {"ids": ids})[0], rtol=1e-6)
