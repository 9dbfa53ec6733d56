"""One-node ONNX models built with onnx.helper, run by rlx and by an oracle (ONNX Runtime, or
the onnx reference evaluator that generates the backend tests' expected outputs)."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import rlx
import rlx.onnx

F, I64, I32, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL


def vi(name: str, elem: int, shape: Any) -> Any:
    return helper.make_tensor_value_info(name, elem, shape)


def single(op: str, inputs: Sequence[Any], out_elem: int, inits: Dict[str, np.ndarray] = {},
           opset: int = 21, name: str = "the_node", n_out: int = 1, **attrs: Any) -> onnx.ModelProto:
    """A model of one ``op`` node: ``inputs`` are (name, elem, shape) graph inputs or names of
    ``inits`` (initializers), "" for an absent optional input."""
    names, gin = [], []
    for i in inputs:
        if isinstance(i, tuple):
            gin.append(vi(*i))
            names.append(i[0])
        else:
            names.append(i)
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, name=name, **attrs)
    graph = helper.make_graph([node], "g", gin, [vi(o, out_elem, None) for o in outs],
                              initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def oracle(model: onnx.ModelProto, feeds: Dict[str, np.ndarray], which: str = "ort") -> list:
    if which == "ref":
        from onnx.reference import ReferenceEvaluator

        return list(ReferenceEvaluator(model).run(None, feeds))
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check(model: onnx.ModelProto, feeds: Dict[str, np.ndarray], which: str = "ort",
          rtol: float = 1e-5, atol: float = 1e-6, exact: bool = False) -> list:
    """rlx's outputs against the oracle's: same shapes and dtypes, equal (``exact``: bit for
    bit, NaNs in the same places, signed zeros alike) or within tolerances."""
    return compare(rlx.onnx.load(model), model, feeds, which, rtol, atol, exact)


def check_loaded(model: onnx.ModelProto, feeds: Dict[str, np.ndarray], which: str = "ort",
                 rtol: float = 1e-5, atol: float = 1e-6) -> Any:
    """As ``check``, returning the loaded ``OnnxModel`` (for tests that inspect it)."""
    m = rlx.onnx.load(model)
    compare(m, model, feeds, which, rtol, atol)
    return m


def compare(m: Any, model: onnx.ModelProto, feeds: Dict[str, np.ndarray], which: str = "ort",
            rtol: float = 1e-5, atol: float = 1e-6, exact: bool = False) -> list:
    """The loaded model ``m``'s outputs against the oracle's on ``model``."""
    want = oracle(model, feeds, which)
    out = m.run(feeds)
    got = [out[n] for n in m.outputs]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        if exact:
            np.testing.assert_array_equal(g, w)
            if g.dtype.kind == "f":
                assert np.array_equal(np.signbit(g), np.signbit(w)), "signed zeros differ"
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


def run(model: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> list:
    m = rlx.onnx.load(model)
    out = m.run(feeds)
    return [out[n] for n in m.outputs]
