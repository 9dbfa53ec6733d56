"""Seconds-fast smoke test: build, compile, bind, run, compare with numpy."""

import numpy as np

import rlx


def test_tiny_graph_matches_numpy():
    g = rlx.Graph("tiny", dims={"n": (1, 16)})
    x = g.input("x", ("n", 3))
    y = g.relu(g.add(g.linear(x, g.param("w", (3, 2))), g.param("b", (2,))))
    g.output("y", y)
    pipe = rlx.ModelCompilePipeline(g)
    w = np.array([[1.0, -1.0], [2.0, 0.5], [-3.0, 1.0]], np.float32)
    b = np.array([0.5, -0.25], np.float32)
    pipe.bind_params({"w": w, "b": b})
    xs = np.arange(12, dtype=np.float32).reshape(4, 3) - 5.0
    out = pipe.get_or_compile(n=4).run(x=xs)
    assert list(out) == ["y"]
    assert out["y"].dtype == np.float32 and out["y"].shape == (4, 2)
    np.testing.assert_allclose(out["y"], np.maximum(xs @ w + b, 0.0), rtol=1e-6)


def test_package_exports():
    assert issubclass(rlx.ShapeError, rlx.RlxError)
    assert rlx.__version__
