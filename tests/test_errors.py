"""The exception hierarchy, and typed errors (never a crash or PanicException) for mistakes at
run time; after each, the process is alive and the next valid call gives the same result."""

import numpy as np
import pytest

import rlx
from conftest import MLP_IN, mlp_ref

SUBCLASSES = ["GraphError", "ShapeError", "DTypeError", "BindingError", "CompileError",
              "UnsupportedOpError", "ModelFormatError", "CacheError"]


@pytest.mark.parametrize("name", SUBCLASSES)
def test_hierarchy(name):
    cls = getattr(rlx, name)
    assert issubclass(cls, rlx.RlxError) and issubclass(rlx.RlxError, Exception)
    assert cls.__module__ == "rlx"
    assert issubclass(cls, ValueError) == (name in {"ShapeError", "DTypeError", "BindingError"})


X = np.ones((3, MLP_IN), np.float32)

RUN_MISTAKES = [
    ("missing input", {}, rlx.BindingError, r'missing input\(s\) \["x"\]'),
    ("unknown input", {"x": X, "y": X}, rlx.BindingError, "unknown input `y`"),
    ("misspelt input", {"xx": X}, rlx.BindingError, "unknown input `xx`.*did you mean `x`"),
    ("float64", {"x": X.astype(np.float64)}, rlx.DTypeError, "input `x`: expected float32, got float64"),
    ("int input", {"x": X.astype(np.int64)}, rlx.DTypeError, "got int64"),
    ("big-endian", {"x": X.astype(">f4")}, rlx.DTypeError, ">f4"),
    ("list", {"x": X.tolist()}, rlx.DTypeError, "numpy.ndarray"),
    ("wrong dim", {"x": np.ones((3, MLP_IN + 1), np.float32)}, rlx.ShapeError, f"input `x` dim 1: got {MLP_IN + 1}, expected {MLP_IN}"),
    ("wrong rank", {"x": np.ones((3, MLP_IN, 1), np.float32)}, rlx.ShapeError, "rank"),
    ("wrong batch", {"x": np.ones((4, MLP_IN), np.float32)}, rlx.ShapeError, "dim 0: got 4, expected 3"),
    ("fortran", {"x": np.asfortranarray(np.ones((3, MLP_IN), np.float32))}, rlx.BindingError, "ascontiguousarray"),
    ("strided", {"x": np.ones((3, 2 * MLP_IN), np.float32)[:, ::2]}, rlx.BindingError, "C-contiguous"),
]


@pytest.mark.parametrize("case", RUN_MISTAKES, ids=[c[0] for c in RUN_MISTAKES])
def test_run_mistakes_are_typed_and_recoverable(mlp, case):
    pipe, params = mlp
    _, inputs, exc, fragment = case
    exe = pipe.get_or_compile(batch=3)
    good = exe.run(x=X)["probs"]
    with pytest.raises(exc, match=fragment):
        exe.run(inputs)
    np.testing.assert_array_equal(exe.run(x=X)["probs"], good)
    np.testing.assert_allclose(good, mlp_ref(X, params), rtol=2e-4, atol=2e-5)


def test_input_given_twice(mlp):
    exe = mlp[0].get_or_compile(batch=3)
    with pytest.raises(rlx.BindingError, match="given twice"):
        exe.run({"x": X}, x=X)
    with pytest.raises(rlx.BindingError, match="dict"):
        exe.run([X])


BINDING_MISTAKES = [
    ({"batch": 0}, "outside its bounds"),
    ({"batch": 5000}, "outside its bounds"),
    ({"batch": -1}, "outside its bounds"),
    ({"batch": 2.0}, "dim `batch`: expected an int"),
    ({"batch": True}, "dim `batch`: expected an int"),
    ({"batch": "3"}, "dim `batch`: expected an int"),
    ({}, r'\["batch"\] are not bound'),
    ({"batch": 2, "seq": 4}, r'unknown symbol\(s\) \["seq"\]'),
]


@pytest.mark.parametrize("binding, fragment", BINDING_MISTAKES)
def test_binding_mistakes(mlp, binding, fragment):
    pipe, _ = mlp
    for call in (pipe.get_or_compile, pipe.specialize, pipe.manifest_for):
        with pytest.raises(rlx.BindingError, match=fragment):
            call(binding)
    assert len(pipe) == 0
    assert pipe.get_or_compile(batch=2).binding == {"batch": 2}
    assert pipe.get_or_compile({"batch": np.int64(2)}).binding == {"batch": 2}


def test_binding_must_be_a_dict(mlp):
    with pytest.raises(rlx.BindingError, match="dict"):
        mlp[0].get_or_compile([("batch", 2)])


def test_empty_graph_fails_to_compile_cleanly():
    g = rlx.Graph("empty")
    g.input("x", (2,))
    with pytest.raises(rlx.RlxError):
        rlx.ModelCompilePipeline(g).get_or_compile()


def _huge_pipeline():
    g = rlx.Graph("huge", dims={"n": (0, 2**62)})
    g.output("y", g.relu(g.input("x", ("n", "n"))))
    return rlx.ModelCompilePipeline(g)


def test_huge_sizes_fail_before_allocating():
    with pytest.raises(rlx.ShapeError, match="overflow"):
        _huge_pipeline().get_or_compile(n=2**40)


def test_every_mistake_is_an_exception_not_a_panic(mlp):
    """PanicException derives from BaseException: `except Exception` would miss it."""
    pipe, params = mlp
    exe = pipe.get_or_compile(batch=3)
    mistakes = [
        lambda: exe.run(x=None),
        lambda: exe.run(x=np.float32(1.0)),
        lambda: exe.run(x=np.zeros((0, MLP_IN), np.float32)),
        lambda: exe.run(x=np.ones((3, MLP_IN), np.float16)),
        lambda: exe.run(x=np.ones((3, MLP_IN), bool)),
        lambda: exe.set_param("w1", None),
        lambda: exe.set_param("w1", np.ones(3, np.float32), copy=True),
        lambda: pipe.bind_params({1: params["w1"]}),
        lambda: pipe.get_or_compile({"batch": 2**70}),
        lambda: pipe.get_or_compile({1: 2}),
        lambda: _huge_pipeline().get_or_compile(n=2**40),  # n*n overflows
    ]
    for i, bad in enumerate(mistakes):
        try:
            bad()
        except Exception as e:  # noqa: PERF203
            assert isinstance(e, (rlx.RlxError, TypeError, MemoryError)), (i, e)
        except BaseException as e:  # pragma: no cover
            pytest.fail(f"mistake {i} raised {type(e).__name__}: {e}")
        else:
            pytest.fail(f"mistake {i} raised nothing")
    np.testing.assert_allclose(exe.run(x=X)["probs"], mlp_ref(X, params), rtol=2e-4, atol=2e-5)


def test_variant_over_the_memory_budget_is_memory_error():
    g = rlx.Graph("huge", dims={"n": (1, 1 << 31)})
    x = g.input("x", ("n", "n"))
    g.output("y", g.tanh(g.exp(x)))
    pipe = rlx.ModelCompilePipeline(g)
    with pytest.raises(MemoryError, match="budget"):
        pipe.get_or_compile(n=1_000_000)
    out = pipe.get_or_compile(n=3).run(x=np.zeros((3, 3), np.float32))["y"]
    assert out.shape == (3, 3)


def _run_with_memory_limit(value: str) -> "subprocess.CompletedProcess[str]":
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, rlx\n"
        "g = rlx.Graph('g', dims={'n': (1, 64)})\n"
        "g.output('y', g.exp(g.input('x', ('n',))))\n"
        "try:\n"
        "    rlx.ModelCompilePipeline(g).get_or_compile(n=4)\n"
        "    print('compiled')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, RLX_MEMORY_LIMIT=value),
                          capture_output=True, text=True)


@pytest.mark.parametrize("value", ["lots", "-5", "1e9", ""])
def test_a_malformed_memory_limit_is_an_error_not_ignored(value):
    out = _run_with_memory_limit(value)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("CompileError") and "RLX_MEMORY_LIMIT" in out.stdout, out.stdout


def test_a_well_formed_memory_limit_is_applied():
    assert _run_with_memory_limit("1000000").stdout.strip() == "compiled"
    # 4 floats of output do not fit in 8 bytes.
    assert _run_with_memory_limit("8").stdout.startswith("MemoryError")


def test_a_specialized_graph_only_compiles_against_its_own_pipeline():
    """A Specialized planned for one graph's params, compiled by a pipeline whose params have
    the same names but other shapes, would read the smaller arrays with the bigger sizes."""

    def pipeline(hidden):
        g = rlx.Graph("p", dims={"batch": (1, 64)})
        g.output("y", g.linear(g.input("x", ("batch", 8)), g.param("w", (8, hidden))))
        pipe = rlx.ModelCompilePipeline(g)
        pipe.bind_params({"w": np.ones((8, hidden), np.float32)})
        return pipe

    big, small = pipeline(4096), pipeline(4)
    spec = big.specialize(batch=2)
    with pytest.raises(rlx.BindingError, match="another template|planned for params"):
        small.compile_lir(spec)
    out = small.compile_lir(small.specialize(batch=2)).run(x=np.ones((2, 8), np.float32))["y"]
    np.testing.assert_array_equal(out, np.full((2, 4), 8.0, np.float32))


def test_user_mistakes_are_not_reported_as_rlx_bugs(tmp_path):
    """Each used to surface as 'HIR verifier ... an rlx bug', NaN, or an empty graph."""
    g = rlx.Graph("empty")
    g.input("x", (2,))
    with pytest.raises(rlx.GraphError, match="`empty` has no outputs") as e:
        rlx.ModelCompilePipeline(g).get_or_compile()
    assert "rlx bug" not in str(e.value)

    g = rlx.Graph("s", dims={"n": (1, 8)})
    x = g.input("x", ("n",))
    with pytest.raises(rlx.GraphError, match="symbol `m`, which the graph does not declare"):
        g.slice(x, 0, 0, "m")
    g.output("y", g.slice(x, 0, 0, "n"))  # the graph is still usable
    np.testing.assert_array_equal(rlx.ModelCompilePipeline(g).get_or_compile(n=3).run(x=np.arange(3, dtype=np.float32))["y"], [0, 1, 2])

    for bad in (None, [1.0, None], "abc", {"a": 1}):
        with pytest.raises(rlx.DTypeError, match="constant: expected numbers"):
            rlx.Graph("c").constant(bad)
    assert rlx.Graph("c").constant([1.0, 2.0]).shape == (2,)

    from rlx import onnx as rlx_onnx

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(rlx.ModelFormatError, match="the file is empty"):
        rlx_onnx.load(str(empty))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x00\x00")
    with pytest.raises(rlx.ModelFormatError):
        rlx_onnx.load(str(junk))


def test_size_arithmetic_that_overflows_is_a_shape_error_not_a_panic_or_a_wrap():
    g = rlx.Graph("h", dims={"n": (1, 2**62)})
    x = g.input("x", ("n", 4))
    with pytest.raises(rlx.ShapeError, match="overflow"):
        g.input("y", ("4611686018427387904*4",))
    with pytest.raises(rlx.ShapeError, match="overflow"):
        g.reshape(x, (2**40, 2**40))
    flat = g.reshape(x, (-1,))  # 4*n is fine symbolically...
    g.output("y", flat)
    pipe = rlx.ModelCompilePipeline(g)
    with pytest.raises(rlx.RlxError, match="overflow|budget|bound"):
        pipe.get_or_compile(n=2**62)  # ...but not for this n
    out = pipe.get_or_compile(n=2).run(x=np.ones((2, 4), np.float32))["y"]
    np.testing.assert_array_equal(out, np.ones(8, np.float32))


def test_kernel_scratch_counts_in_the_memory_budget():
    """Attention's score blocks and packed keys are per-run memory beside the arena: a variant
    whose arena fits the budget but whose scratch does not is refused at compile."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, rlx\n"
        "g = rlx.Graph('att', dims={'s': (1, 1 << 17)})\n"
        "q = g.input('q', (1, 1, 's', 8))\n"
        "g.output('y', g.attention(q, q, q))\n"
        "pipe = rlx.ModelCompilePipeline(g)\n"
        "try:\n"
        "    pipe.get_or_compile(s=1 << 16)\n"
        "    print('compiled')\n"
        "except MemoryError as e:\n"
        "    print('MemoryError', e)\n"
        "x = np.ones((1, 1, 64, 8), np.float32)\n"
        "print('small', float(pipe.get_or_compile(s=64).run(q=x)['y'].sum()))\n"
    )
    env = dict(os.environ, RLX_MEMORY_LIMIT=str(24 << 20))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    # arena + output: ~8 MiB; scores: 64 x 65536 floats per thread = 16 MiB each.
    assert first.startswith("MemoryError") and "kernel scratch" in first, first
    assert second == f"small {64 * 8:.1f}", second


def test_verify_of_a_graph_without_outputs_is_a_user_mistake():
    g = rlx.Graph("empty")
    g.input("x", (2,))
    with pytest.raises(rlx.GraphError, match="`empty` has no outputs") as e:
        g.verify()
    assert "rlx bug" not in str(e.value)
    g.output("y", g.relu(g.input("z", (2,))))
    g.verify()
