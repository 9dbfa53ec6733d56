"""rlx.Graph: building values with symbolic shapes, the printed HIR, and build-time errors."""

import math

import numpy as np
import pytest

import rlx
from conftest import gelu_ref


def test_values_have_symbolic_shapes_and_dtypes():
    g = rlx.Graph("g", dims={"batch": (1, 8), "seq": (1, 16)})
    x = g.input("x", ("batch", "seq", 12))
    assert x.shape == ("batch", "seq", 12) and x.dtype == "float32"
    flat = g.reshape(x, ("batch*seq", 12))
    assert flat.shape == ("batch*seq", 12)
    split = g.reshape(flat, ("batch", -1, 3))  # -1 inferred symbolically
    assert split.shape == ("batch", "4*seq", 3)
    t = g.transpose(split, (2, 0, -2))
    assert t.shape == (3, "batch", "4*seq")
    assert g.dims == {"batch": (1, 8), "seq": (1, 16)}
    assert g.inputs == ["x"] and g.params == [] and len(g) == 4


def test_str_is_the_hir_text():
    g = rlx.Graph("mlp", dims={"batch": (1, 64)})
    x = g.input("x", ("batch", 4))
    h = g.linear(x, g.param("w", (4, 3)), activation="relu")
    g.output("y", g.softmax(h))
    text = str(g)
    assert text.startswith("hir @mlp (batch in [1, 64])")
    for piece in ['input "x" : f32[batch, 4]', 'param "w" : f32[4, 3]', "act=relu", "softmax", 'output "y"']:
        assert piece in text, text
    assert repr(g) == "<rlx.Graph 'mlp': 4 nodes, 1 outputs>"
    assert g.outputs == ["y"]


def test_dtype_names():
    g = rlx.Graph("d")
    assert g.input("a", (2,), dtype="f32").dtype == "float32"
    assert g.input("b", (2,), dtype=np.int64).dtype == "int64"
    assert g.input("c", (2,), dtype="bool").dtype == "bool"
    with pytest.raises(rlx.DTypeError, match="float16"):
        g.input("e", (2,), dtype="float16")


def _run_unary(op, x):
    g = rlx.Graph("u", dims={"n": (1, 64)})
    g.output("y", getattr(g, op)(g.input("x", ("n",))))
    return rlx.ModelCompilePipeline(g).get_or_compile(n=x.size).run(x=x)["y"]


UNARY = {
    "relu": lambda x: np.maximum(x, 0),
    "gelu": gelu_ref,
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "exp": np.exp,
    "neg": np.negative,
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_ops_match_numpy(op):
    x = np.linspace(-4, 4, 33, dtype=np.float32)
    np.testing.assert_allclose(_run_unary(op, x), UNARY[op](x.astype(np.float64)), rtol=1e-5, atol=1e-6)


BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "max": np.maximum,
    "min": np.minimum,
}


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_ops_broadcast_like_numpy(op, rng):
    g = rlx.Graph("b", dims={"n": (1, 64)})
    a, b = g.input("a", ("n", 5)), g.input("b", (1, 5))
    g.output("y", getattr(g, op)(a, b))
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y = rng.uniform(0.5, 2.0, (1, 5)).astype(np.float32)
    out = rlx.ModelCompilePipeline(g).get_or_compile(n=6).run(a=x, b=y)["y"]
    np.testing.assert_allclose(out, BINARY[op](x, y), rtol=1e-6)


def test_layer_norm_and_batched_matmul(rng):
    g = rlx.Graph("ln", dims={"b": (1, 8)})
    x = g.input("x", ("b", 3, 4))
    m = g.matmul(x, g.transpose(x, (0, 2, 1)))  # [b, 3, 3]
    g.output("y", g.layer_norm(m, g.param("gamma", (3,)), g.param("beta", (3,)), eps=1e-3))
    pipe = rlx.ModelCompilePipeline(g)
    gamma, beta = np.array([1.0, 2.0, 0.5], np.float32), np.array([0.0, 1.0, -1.0], np.float32)
    pipe.bind_params({"gamma": gamma, "beta": beta})
    xs = rng.standard_normal((2, 3, 4)).astype(np.float32)
    mm = xs.astype(np.float64) @ xs.transpose(0, 2, 1)
    mu, var = mm.mean(-1, keepdims=True), mm.var(-1, keepdims=True)
    ref = (mm - mu) / np.sqrt(var + 1e-3) * gamma + beta
    np.testing.assert_allclose(pipe.get_or_compile(b=2).run(x=xs)["y"], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "build, exc, fragment",
    [
        (lambda g, x: g.linear(x, g.param("w", (5, 3))), rlx.ShapeError, "linear"),
        (lambda g, x: g.add(x, g.input("y", ("n", 3))), rlx.ShapeError, "add"),
        (lambda g, x: g.reshape(x, (5,)), rlx.ShapeError, "reshape"),
        (lambda g, x: g.reshape(x, (-1, -1)), rlx.ShapeError, "-1"),
        (lambda g, x: g.transpose(x, (0, 0)), rlx.ShapeError, "perm"),
        (lambda g, x: g.transpose(x, (0, 7)), rlx.ShapeError, "perm"),
        (lambda g, x: g.softmax(x, axis=3), rlx.ShapeError, "axis"),
        (lambda g, x: g.input("x", (2,)), rlx.GraphError, "already used"),
        (lambda g, x: g.input("z", ("m", 2)), rlx.GraphError, "`m` is not declared"),
        (lambda g, x: g.param("p", ("n", 2)), rlx.ShapeError, "static"),
        (lambda g, x: g.input("z", (2.5,)), rlx.ShapeError, "float"),
        (lambda g, x: g.input("z", "n"), rlx.ShapeError, "tuple or list"),
        (lambda g, x: g.input("z", ("n+",)), rlx.ShapeError, "cannot parse"),
        (lambda g, x: g.linear(x, g.param("w", (4, 3)), activation="swish"), rlx.UnsupportedOpError, "swish"),
        (lambda g, x: g.binary("pow2", x, x), rlx.UnsupportedOpError, "pow2"),
        (lambda g, x: g.output("o", rlx.Graph("other").input("q", (1,))), rlx.GraphError, "another graph"),
        (lambda g, x: g.dim("n", 1, 9), rlx.GraphError, "already declared"),
        (lambda g, x: g.dim("k", 5, 2), rlx.BindingError, "bounds"),
    ],
)
def test_build_errors_are_typed(build, exc, fragment):
    g = rlx.Graph("e", dims={"n": (1, 8)})
    x = g.input("x", ("n", 4))
    before = str(g)
    with pytest.raises(exc, match=fragment):
        build(g, x)
    # The failed call added nothing that breaks the graph; it still builds on.
    assert str(g).startswith(before.rstrip("}\n"))
    g.output("ok", g.relu(x))
    g.verify()


def test_duplicate_output_name():
    g = rlx.Graph("o")
    x = g.input("x", (2,))
    g.output("y", x)
    with pytest.raises(rlx.GraphError, match="duplicate output"):
        g.output("y", g.relu(x))


def test_graph_bad_dims_argument():
    with pytest.raises(rlx.GraphError, match="bounds"):
        rlx.Graph("g", dims={"n": 5})
