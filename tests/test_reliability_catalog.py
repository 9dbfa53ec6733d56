"""The rows of /work/shared/RELIABILITY.md (sections A, B, C and E) that no other test covered,
as tables: a bad input -> the exact exception type and a message fragment -> a valid call that
must still give a bit-identical result. docs/reliability.md maps every catalog row to its tests.

Cases that could kill the process (10^5-node chains, SIGBUS on a truncated map) run in a child
process. Behaviour that disagrees with the catalog is kept as ``xfail(strict=True)`` with the
reason; when the behaviour is fixed the test XPASSes, fails, and the marker must go.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import rlx
from rlx import safetensors as st
from conftest import MLP_IN, MLP_SHAPES, layer_norm_ref, mlp_graph, mlp_ref, softmax_ref, weights
from test_binding import misaligned
from test_ops import UNARY, attention_ref, rms_norm_ref
from test_reliability_safetensors import write as write_safetensors

try:
    import onnx
except ImportError:  # pragma: no cover
    onnx = None
if onnx is not None:
    from onnx import TensorProto

    from test_reliability_onnx import baseline, good, model, node, still_works, vi  # noqa: F401 (baseline is a fixture)
    from test_reliability_onnx import X as ONNX_X

needs_onnx = pytest.mark.skipif(onnx is None, reason="onnx is not installed")

# numpy warns about the float64 references on NaN / Inf.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

TOL = dict(rtol=2e-4, atol=2e-5)
X = np.random.default_rng(7).standard_normal((3, MLP_IN)).astype(np.float32)


def in_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (a crash or stack overflow kills only the child)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)


def outputs_of(exe, **inputs):
    return {k: v.copy() for k, v in exe.run(**inputs).items()}


# == A. Building and specializing graphs ========================================================


def _a_graph():
    g = rlx.Graph("a", dims={"n": (1, 8), "m": (1, 8)})
    x = g.input("x", ("n", 4))
    g.output("y", g.relu(x))
    return g, x


A_XS = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)

# (id, build(g, x), exception, message fragment)
BUILD_MISTAKES = [
    ("matmul K", lambda g, x: g.matmul(x, g.param("w", (5, 3))), rlx.ShapeError, r"matmul \[n, 4\] @ \[5, 3\]: inner dims 4 and 5 differ"),
    ("linear K", lambda g, x: g.linear(x, g.param("w", (5, 3))), rlx.ShapeError, r"linear \[n, 4\] @ \[5, 3\]: in-features 4 and 5 differ"),
    ("broadcast", lambda g, x: g.add(x, g.input("b", (3,))), rlx.ShapeError, r"add: shapes \[n, 4\] and \[3\] do not broadcast \(dim 1: 4 vs 3\)"),
    ("broadcast n vs m", lambda g, x: g.mul(x, g.input("b", ("m", 4))), rlx.ShapeError, r"mul: shapes \[n, 4\] and \[m, 4\] do not broadcast \(dim 0: n vs m\)"),
    ("reshape count", lambda g, x: g.reshape(x, (5,)), rlx.ShapeError, r"reshape \[n, 4\] -> \[5\]: element counts 4\*n and 5 are not provably equal"),
    ("reshape n to m", lambda g, x: g.reshape(x, ("m", 4)), rlx.ShapeError, r"reshape \[n, 4\] -> \[m, 4\]: element counts 4\*n and 4\*m"),
    ("concat dims", lambda g, x: g.concat([x, g.input("c", ("n", 3))], axis=0), rlx.ShapeError, r"concat axis 0: operand 1 \[n, 3\] does not match \[n, 4\]"),
    ("concat axis", lambda g, x: g.concat([x, x], axis=5), rlx.ShapeError, r"concat: axis 5 is out of range for rank 2 shape \[n, 4\]"),
    ("dtype add f32+i64", lambda g, x: g.add(x, g.input("i", ("n", 4), "int64")), rlx.DTypeError, r"add operand 1: expected f32 like operand 0, got i64\[n, 4\] \(no implicit promotion\)"),
    ("dtype pow f32^i32", lambda g, x: g.pow(x, g.input("i", ("n", 4), "int32")), rlx.DTypeError, "pow operand 1: expected f32 like operand 0, got i32"),
    ("dtype matmul i64", lambda g, x: g.matmul(g.input("i", (2, 2), "int64"), g.input("j", (2, 2), "int64")), rlx.DTypeError, r"matmul operand 0: expected f32, got i64\[2, 2\]"),
    ("dtype linear i64 weight", lambda g, x: g.linear(x, g.param("w", (4, 2), "int64")), rlx.DTypeError, r"linear operand 1: expected f32, got i64\[4, 2\]"),
    ("dtype where f32 cond", lambda g, x: g.where(x, x, x), rlx.DTypeError, r"where condition: expected bool, got f32\[n, 4\]"),
    ("dtype where f32/i32", lambda g, x: g.where(g.gt(x, x), x, g.input("i", ("n", 4), "int32")), rlx.DTypeError, "where operand 1: expected f32 like operand 0, got i32"),
    ("dtype layer_norm i64 gamma", lambda g, x: g.layer_norm(x, g.param("gm", (4,), "int64"), g.param("bt", (4,))), rlx.DTypeError, r"layer_norm operand 1: expected f32, got i64\[4\]"),
    ("dtype attention i64", lambda g, x: g.attention(*(g.input(f"q{i}", (1, 1, 2, 4), "int64") for i in range(3))), rlx.DTypeError, "attention operand 0: expected f32, got i64"),
    ("duplicate output", lambda g, x: g.output("y", g.neg(x)), rlx.GraphError, "duplicate output name `y`"),
    ("undeclared symbol", lambda g, x: g.input("z", ("k", 4)), rlx.GraphError, "input `z`: symbol `k` is not declared"),
]


@pytest.fixture(scope="module")
def a_baseline():
    g, _ = _a_graph()
    return rlx.ModelCompilePipeline(g).get_or_compile(n=3, m=2).run(x=A_XS)["y"]


@pytest.mark.parametrize("case", BUILD_MISTAKES, ids=[c[0] for c in BUILD_MISTAKES])
def test_build_mistakes_are_typed_and_the_graph_still_compiles(a_baseline, case):
    _, build, exc, fragment = case
    g, x = _a_graph()
    with pytest.raises(exc, match=fragment):
        build(g, x)
    assert g.outputs == ["y"]
    # Operands made before the failing call stay in the graph (unused): feed and bind zeros.
    pipe = rlx.ModelCompilePipeline(g)
    m = pipe.manifest_for(n=3, m=2)
    pipe.bind_params({e.name: np.zeros(e.shape, e.dtype) for e in m.params})
    feed = {e.name: np.zeros(e.shape, e.dtype) for e in m.inputs}
    out = pipe.get_or_compile(n=3, m=2).run({**feed, "x": A_XS})
    assert list(out) == ["y"]
    np.testing.assert_array_equal(out["y"], a_baseline)


def _reduce(op, axis):
    return lambda g, a: getattr(g, op)(a, axes=axis)


def _ones(n):
    return np.ones(n, np.float32)


# (id, build(g, *inputs), input shapes (symbol "z" is bound to 0), numpy reference or None to
# use the explicit `want`, want)
ZERO_SIZED = [
    ("matmul M=0", lambda g, a, b: g.matmul(a, b), [(0, 4), (4, 3)], lambda a, b: a @ b),
    ("matmul K=0", lambda g, a, b: g.matmul(a, b), [(2, 0), (0, 3)], lambda a, b: a @ b),
    ("matmul N=0", lambda g, a, b: g.matmul(a, b), [(2, 4), (4, 0)], lambda a, b: a @ b),
    ("matmul 0x0x0", lambda g, a, b: g.matmul(a, b), [(0, 0), (0, 0)], lambda a, b: a @ b),
    ("batched matmul B=0", lambda g, a, b: g.matmul(a, b), [(0, 2, 4), (0, 4, 3)], lambda a, b: a @ b),
    ("matmul symbolic M=0", lambda g, a, b: g.matmul(a, b), [("z", 4), (4, 3)], lambda a, b: a @ b),
    ("linear+bias+gelu M=0", lambda g, a: g.linear(a, g.constant(np.ones((4, 3), np.float32)), g.constant(_ones(3)), activation="gelu"),
     [("z", 4)], lambda a: np.zeros((0, 3))),
    ("linear+bias K=0", lambda g, a: g.linear(a, g.constant(np.ones((0, 3), np.float32)), g.constant(_ones(3))), [(2, 0)],
     lambda a: np.ones((2, 3))),
    ("softmax rows=0", lambda g, a: g.softmax(a), [(0, 4)], softmax_ref),
    ("softmax axis=0 of (3, 0)", lambda g, a: g.softmax(a, axis=0), [(3, 0)], lambda a: np.zeros((3, 0))),
    ("softmax over an empty axis", lambda g, a: g.softmax(a), [(3, 0)], lambda a: np.zeros((3, 0))),
    ("reduce_sum over an empty axis", _reduce("reduce_sum", -1), [(3, 0)], lambda a: a.sum(-1)),
    ("reduce_mean over an empty axis is NaN", _reduce("reduce_mean", -1), [(3, 0)], lambda a: np.full(3, np.nan)),
    ("reduce_max over an empty axis is -inf", _reduce("reduce_max", -1), [(3, 0)], lambda a: np.full(3, -np.inf)),
    ("reduce_sum all of (0, 3)", lambda g, a: g.reduce_sum(a), [(0, 3)], lambda a: np.array(0.0)),
    ("reduce_max rows=0", _reduce("reduce_max", -1), [("z", 4)], lambda a: np.zeros(0)),
    ("layer_norm rows=0", lambda g, a: g.layer_norm(a, g.constant(_ones(4)), g.constant(_ones(4))), [("z", 4)], lambda a: np.zeros((0, 4))),
    ("layer_norm width=0", lambda g, a: g.layer_norm(a, g.constant(_ones(0)), g.constant(_ones(0))), [(3, 0)], lambda a: np.zeros((3, 0))),
    ("rms_norm width=0", lambda g, a: g.rms_norm(a, g.constant(_ones(0))), [(3, 0)], lambda a: np.zeros((3, 0))),
    ("attention queries=0", lambda g, q, k, v: g.attention(q, k, v), [(1, 2, 0, 4), (1, 2, 3, 4), (1, 2, 3, 4)], lambda q, k, v: np.zeros((1, 2, 0, 4))),
    ("attention batch=0 causal", lambda g, q, k, v: g.attention(q, k, v, causal=True), [("z", 2, 3, 4)] * 3, lambda q, k, v: np.zeros((0, 2, 3, 4))),
    ("attention head_dim=0", lambda g, q, k, v: g.attention(q, k, v), [(1, 2, 3, 0)] * 3, lambda q, k, v: np.zeros((1, 2, 3, 0))),
    ("transpose (0, 3)", lambda g, a: g.transpose(a, (1, 0)), [(0, 3)], lambda a: a.T),
    ("reshape (0, 3) -> (3, 0)", lambda g, a: g.reshape(a, (3, 0)), [(0, 3)], lambda a: a.reshape(3, 0)),
]


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
@pytest.mark.parametrize("case", ZERO_SIZED, ids=[c[0] for c in ZERO_SIZED])
def test_zero_sized_dims_run(case, optimize):
    _, build, shapes, ref = case
    g = rlx.Graph("zero", dims={"z": (0, 8)})
    ins = [g.input(f"x{i}", s) for i, s in enumerate(shapes)]
    g.output("y", build(g, *ins))
    exe = rlx.ModelCompilePipeline(g, optimize=optimize).get_or_compile(z=0)
    arrays = {f"x{i}": np.ones([0 if d == "z" else d for d in s], np.float32) for i, s in enumerate(shapes)}
    want = np.asarray(ref(*[a.astype(np.float64) for a in arrays.values()]))
    got = exe.run(arrays)["y"]
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(exe.run(arrays)["y"], got)


_CHAINS = {
    "graph api, tanh/add": """
        import numpy as np, rlx
        g = rlx.Graph("chain", dims={"b": (1, 8)})
        v = g.input("x", ("b", 4))
        for i in range(N):
            v = g.tanh(v) if i % 2 == 0 else g.add(v, v)
        g.output("y", v)
        assert len(g) == N + 1 and str(g).startswith("hir @chain")
        g.verify()
        x = np.full((2, 4), 0.1, np.float32)
        ref = x.copy()
        for i in range(N):
            ref = np.tanh(ref) if i % 2 == 0 else ref + ref
        for optimize in (True, False):
            pipe = rlx.ModelCompilePipeline(g, optimize=optimize)
            exe = pipe.get_or_compile(b=2)
            assert pipe.report and pipe.report_data
            np.testing.assert_allclose(exe.run(x=x)["y"], ref, rtol=1e-4)
            del exe, pipe
        print("ok")
    """,
    "graph api, reshape/transpose/neg": """
        import numpy as np, rlx
        g = rlx.Graph("moves", dims={"b": (1, 8)})
        v = g.input("x", ("b", 4, 2))
        for i in range(N):
            k = i % 4
            v = g.transpose(v, (0, 2, 1)) if k == 0 else g.reshape(v, ("b", -1)) if k == 1 else g.reshape(v, ("b", 4, 2)) if k == 2 else g.neg(v)
        g.output("y", v)
        x = np.arange(24, dtype=np.float32).reshape(3, 4, 2)
        ref = x
        for i in range(N):
            k = i % 4
            ref = ref.transpose(0, 2, 1) if k == 0 else ref.reshape(3, -1) if k == 1 else ref.reshape(3, 4, 2) if k == 2 else -ref
        pipe = rlx.ModelCompilePipeline(g)
        assert len(str(pipe.specialize(b=3))) > N
        np.testing.assert_array_equal(pipe.get_or_compile(b=3).run(x=x)["y"], ref)
        del pipe, g, v
        print("ok")
    """,
    "onnx import": """
        import numpy as np, rlx, rlx.onnx
        from onnx import TensorProto, helper
        names = ["x"] + [f"t{i}" for i in range(1, N)] + ["y"]
        nodes = [helper.make_node("Relu" if i % 2 else "Neg", [names[i]], [names[i + 1]], name=f"n{i}") for i in range(N)]
        g = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        om = rlx.onnx.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
        x = np.array([[-0.5, 0.5, 1.0, -2.0]], np.float32)
        ref = x
        for i in range(N):
            ref = np.maximum(ref, 0) if i % 2 else -ref
        np.testing.assert_array_equal(om.run({"x": x})["y"], ref)
        print("ok")
    """,
}


@pytest.mark.parametrize("kind", list(_CHAINS))
def test_hundred_thousand_node_chains_from_python(kind):
    """10^5 nodes built from Python, verified, printed, compiled both ways, run and dropped: the
    passes (and the drop) are iterative; a recursion would overflow the child's stack."""
    if kind == "onnx import" and onnx is None:
        pytest.skip("onnx is not installed")
    out = in_child("N = 100_000\n" + textwrap.dedent(_CHAINS[kind]))
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.strip() == "ok"


# == B. Binding parameters zero-copy from numpy =================================================


def _param_variants(w):
    """Arrays that cannot be borrowed as `w1` beyond the ones test_binding.py tries."""
    return {
        "zero-stride (broadcast_to)": (np.broadcast_to(w[:1], w.shape), rlx.BindingError, r"param `w1` is not C-contiguous \(shape \[24, 32\], strides \[0, 4\]\)"),
        "reversed rows": (w[::-1].copy()[::-1], rlx.BindingError, r"param `w1` is negatively strided \(strides \[-128, 4\]"),
        "float16": (w.astype(np.float16), rlx.DTypeError, "param `w1`: expected float32, got float16; rlx never casts silently"),
        "complex64": (w.astype(np.complex64), rlx.DTypeError, "param `w1`: expected float32, got complex64"),
        "structured": (np.zeros(w.shape, "f4,f4"), rlx.DTypeError, r"param `w1`: expected float32, got \[\('f0'"),
        "bytes": (w.tobytes(), rlx.DTypeError, "param `w1`: expected a numpy.ndarray of float32, got bytes"),
        "memoryview": (memoryview(w), rlx.DTypeError, "param `w1`: expected a numpy.ndarray of float32, got memoryview"),
        "bool bytes 2": (np.full(w.shape, 2, np.uint8).view(bool), rlx.DTypeError, "param `w1`: expected float32, got bool"),
    }


@pytest.mark.parametrize("kind", list(_param_variants(np.zeros((24, 32), np.float32))))
def test_more_unborrowable_params(mlp, kind):
    pipe, params = mlp
    exe = pipe.get_or_compile(batch=3)
    good = exe.run(x=X)["probs"]
    arr, exc, fragment = _param_variants(params["w1"])[kind]
    for target in (pipe, exe):
        with pytest.raises(exc, match=fragment):
            target.set_param("w1", arr)
    assert exe.param_data_ptr("w1") == params["w1"].ctypes.data  # the old binding stays
    np.testing.assert_array_equal(exe.run(x=X)["probs"], good)


def _write_mlp_safetensors(path, params):
    header, blobs, off = {}, [], 0
    for name, a in params.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    return write_safetensors(path, json.dumps(header).encode(), b"".join(blobs))


def _lifetime_case(kind, params, tmp_path):
    """Binds the MLP's params one way, drops every Python reference this function made, and
    returns the executable."""
    mine = {k: v.copy() for k, v in params.items()}
    if kind == "del + gc after bind_params(copy=True)":
        pipe = rlx.ModelCompilePipeline(mlp_graph())
        pipe.bind_params(mine, copy=True)
    elif kind == "del + gc after CompiledGraph.set_param":
        pipe = rlx.ModelCompilePipeline(mlp_graph())
        exe = pipe.get_or_compile(batch=3)
        for k, v in mine.items():
            exe.set_param(k, v)
        del exe
    elif kind == "pipeline and graph deleted, executable kept":
        g = mlp_graph()
        pipe = rlx.ModelCompilePipeline(g)
        del g
        pipe.bind_params(mine)
    elif kind.startswith("safetensors"):
        t = st.load(_write_mlp_safetensors(tmp_path / "mlp.safetensors", params), mode=kind.split()[1])
        pipe = rlx.ModelCompilePipeline(mlp_graph())
        pipe.bind_params(dict(t))
        del t
    exe = pipe.get_or_compile(batch=3)
    del pipe, mine
    return exe


LIFETIMES = ["del + gc after bind_params(copy=True)", "del + gc after CompiledGraph.set_param",
             "pipeline and graph deleted, executable kept", "safetensors mmap object deleted after binding",
             "safetensors copy object deleted after binding"]


@pytest.mark.parametrize("kind", LIFETIMES)
def test_bound_memory_outlives_every_python_reference(mlp, kind, tmp_path):
    pipe, params = mlp
    good = pipe.get_or_compile(batch=3).run(x=X)["probs"]
    exe = _lifetime_case(kind, params, tmp_path)
    gc.collect()
    np.testing.assert_array_equal(exe.run(x=X)["probs"], good)
    np.testing.assert_array_equal(exe.run(x=X)["probs"], good)


@pytest.mark.parametrize("prepack", [True, False], ids=["prepack", "noprepack"])
@pytest.mark.parametrize("change", ["shape", "dtype"])
def test_shape_or_dtype_changed_in_place_after_binding_is_a_binding_error(rng, change, prepack):
    pipe = rlx.ModelCompilePipeline(mlp_graph(), prepack=prepack)
    params = weights(rng, MLP_SHAPES)
    pipe.bind_params(params)
    exe = pipe.get_or_compile(batch=3)
    good = exe.run(x=X)["probs"]
    w1 = params["w1"]
    try:
        if change == "shape":
            w1.shape = MLP_SHAPES["w1"][::-1]
        else:
            w1.dtype = np.int32
        with pytest.raises(rlx.BindingError, match="w1"):
            exe.run(x=X)
    finally:
        w1.dtype, w1.shape = np.float32, MLP_SHAPES["w1"]
    np.testing.assert_array_equal(exe.run(x=X)["probs"], good)


# == C. Running ================================================================================


def _input_variants(x):
    ro = x.copy()
    ro.flags.writeable = False
    return {
        "reversed rows": (x[::-1].copy()[::-1], rlx.BindingError, r"input `x` is negatively strided \(strides \[-96, 4\].*np.ascontiguousarray"),
        "reversed columns": (x[:, ::-1].copy()[:, ::-1], rlx.BindingError, r"input `x` is negatively strided \(strides \[96, -4\]"),
        "misaligned": (misaligned(x), rlx.BindingError, r"input `x` is misaligned .* not a multiple of 4 bytes"),
        "zero-stride (broadcast_to)": (np.broadcast_to(x[:1], x.shape), rlx.BindingError, r"input `x` is not C-contiguous \(shape \[3, 24\], strides \[0, 4\]\)"),
        "object": (x.astype(object), rlx.DTypeError, "input `x`: expected float32, got object; rlx never casts silently"),
        "float16": (x.astype(np.float16), rlx.DTypeError, "input `x`: expected float32, got float16"),
        "complex64": (x.astype(np.complex64), rlx.DTypeError, "input `x`: expected float32, got complex64"),
        "structured": (np.zeros(x.shape, "f4,f4"), rlx.DTypeError, r"input `x`: expected float32, got \[\('f0'"),
        "memoryview": (memoryview(x), rlx.DTypeError, "input `x`: expected a numpy.ndarray of float32, got memoryview"),
        "read-only (accepted)": (ro, None, None),
    }


@pytest.mark.parametrize("kind", list(_input_variants(X)))
def test_input_layouts_and_dtypes(mlp, kind):
    pipe, params = mlp
    exe = pipe.get_or_compile(batch=3)
    good = exe.run(x=X)["probs"]
    arr, exc, fragment = _input_variants(X)[kind]
    if exc is None:
        np.testing.assert_array_equal(exe.run(x=arr)["probs"], good)
    else:
        with pytest.raises(exc, match=fragment):
            exe.run(x=arr)
    np.testing.assert_array_equal(exe.run(x=X)["probs"], good)
    np.testing.assert_allclose(good, mlp_ref(X, params), **TOL)


# -- NaN / Inf / huge / tiny through every math function ----------------------------------------

SPECIAL = {
    "nan": [np.nan, -np.nan],
    "+inf": [np.inf],
    "-inf": [-np.inf],
    "huge": [88.5, 88.72, 89.0, 100.0, -87.5, -88.0, -104.0, 20.0, -20.0, 1e30, -1e30, 3e38, -3e38],
    "tiny": [1e-30, -1e-30, 1e-38, 1e-40, -1e-40, 1e-45, -0.0, 0.0],
}


def _f32_reference(fn, x):
    with np.errstate(all="ignore"):
        return np.asarray(fn(x.astype(np.float64))).astype(np.float32)


def assert_ieee_close(got, want, what=""):
    """NaN where the reference is NaN, the same infinities, finite values close (an absolute
    1e-37 admits flushing results below f32's normal range to 0)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"NaN positions {what}")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"infinities {what}")
    np.testing.assert_array_equal(np.isinf(got), inf, err_msg=f"infinities {what}")
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=2e-5, atol=1e-37, err_msg=what)


@pytest.mark.parametrize("cls", list(SPECIAL))
@pytest.mark.parametrize("op", sorted(UNARY))
def test_special_values_through_unary_math(op, cls):
    x = np.array(SPECIAL[cls], np.float32)
    normal = np.linspace(0.1, 3.0, 7, dtype=np.float32)
    want = _f32_reference(UNARY[op][0], x)
    for optimize in (True, False):
        g = rlx.Graph(op, dims={"n": (1, 64)})
        g.output("y", getattr(g, op)(g.input("x", ("n",))))
        pipe = rlx.ModelCompilePipeline(g, optimize=optimize)
        before = pipe.get_or_compile(n=normal.size).run(x=normal)["y"]
        assert_ieee_close(pipe.get_or_compile(n=x.size).run(x=x)["y"], want, f"{op} on {cls}, optimize={optimize}")
        np.testing.assert_array_equal(pipe.get_or_compile(n=normal.size).run(x=normal)["y"], before)


_EXP_EDGE = np.array([88.0, 88.5, 88.7, 88.72], np.float32)  # all below ln(FLT_MAX) = 88.7228


@pytest.mark.parametrize("form", ["exp", "exp*0.5 (fused chain)"])
@pytest.mark.parametrize("isa", rlx.available_isas())
def test_exp_near_the_f32_limit_is_finite(isa, form):
    """exp(x) is finite up to ln(FLT_MAX) = 88.7228 on every ISA, fused or not (it used to be
    +inf above 88.0)."""
    g = rlx.Graph("e")
    y = g.exp(g.input("x", (4,)))
    half = form != "exp"
    g.output("y", g.mul(y, g.scalar(0.5)) if half else y)
    got = rlx.ModelCompilePipeline(g, isa=isa).get_or_compile().run(x=_EXP_EDGE)["y"]
    want = (np.exp(_EXP_EDGE.astype(np.float64)) * (0.5 if half else 1.0)).astype(np.float32)
    assert np.isfinite(got).all(), got
    np.testing.assert_allclose(got, want, rtol=2e-5)


ROWS = {
    "nan": [[np.nan, 0.0, 1.0, 2.0]],
    "+inf": [[np.inf, 0.0, 1.0, 2.0], [np.inf, np.inf, 0.0, 0.0]],
    "-inf": [[-np.inf, 0.0, 1.0, 2.0], [-np.inf] * 4],
    "tiny": [[1e-40, 0.0, 0.0, -1e-40], [1e-30, 2e-30, 3e-30, 4e-30]],
}
_ONES4 = np.ones(4, np.float32)
_HALF = np.full((4, 4), 0.5, np.float32)

# (id, build(g, x), float64 reference of x [rows, 4])
FUSED = [
    ("softmax", lambda g, x: g.softmax(x), softmax_ref),
    ("layer_norm", lambda g, x: g.layer_norm(x, g.constant(_ONES4), g.constant(_ONES4 * 0.5)), lambda x: layer_norm_ref(x, 1.0, 0.5)),
    ("rms_norm", lambda g, x: g.rms_norm(x, g.constant(_ONES4)), lambda x: rms_norm_ref(x, 1.0, 1e-6)),
    ("linear+bias+gelu epilogue", lambda g, x: g.linear(x, g.constant(_HALF), g.constant(_ONES4), activation="gelu"),
     lambda x: UNARY["gelu"][0](x @ _HALF + 1.0)),
    ("linear+relu epilogue", lambda g, x: g.linear(x, g.constant(_HALF), activation="relu"), lambda x: np.maximum(x @ _HALF, 0.0)),
    ("fused chain tanh(exp(x)*2+1)", lambda g, x: g.tanh(g.add(g.mul(g.exp(x), g.scalar(2.0)), g.scalar(1.0))),
     lambda x: np.tanh(np.exp(x) * 2 + 1)),
    ("fused chain sigmoid(x)*x-1", lambda g, x: g.sub(g.mul(g.sigmoid(x), x), g.scalar(1.0)), lambda x: x / (1 + np.exp(-x)) - 1),
    ("maximum(x, 0)", lambda g, x: g.maximum(x, g.scalar(0.0)), lambda x: np.maximum(x, 0.0)),
    ("reduce_max", lambda g, x: g.reduce_max(x, axes=-1), lambda x: np.max(x, -1)),
    ("reduce_mean", lambda g, x: g.reduce_mean(x, axes=-1), lambda x: np.mean(x, -1)),
    ("div by zero", lambda g, x: g.div(x, g.constant(np.array([0.0, -0.0, 0.0, 1.0], np.float32))), lambda x: x / np.array([0.0, -0.0, 0.0, 1.0])),
    ("attention (x as q, k and v)", lambda g, x: g.attention(*[g.reshape(x, (1, 1, -1, 4))] * 3),
     lambda x: attention_ref(*[x.reshape(1, 1, -1, 4)] * 3)),
]


@pytest.mark.parametrize("cls", list(ROWS))
@pytest.mark.parametrize("case", FUSED, ids=[c[0] for c in FUSED])
def test_special_values_through_fused_kernels(case, cls):
    _, build, ref = case
    x = np.array(ROWS[cls], np.float32)
    normal = np.arange(8, dtype=np.float32).reshape(2, 4) / 4
    want = _f32_reference(ref, x)
    for optimize in (True, False):
        g = rlx.Graph("fused", dims={"r": (1, 8)})
        g.output("y", build(g, g.input("x", ("r", 4))))
        pipe = rlx.ModelCompilePipeline(g, optimize=optimize)
        before = pipe.get_or_compile(r=2).run(x=normal)["y"]
        assert_ieee_close(pipe.get_or_compile(r=x.shape[0]).run(x=x)["y"], want, f"{cls}, optimize={optimize}")
        np.testing.assert_array_equal(pipe.get_or_compile(r=2).run(x=normal)["y"], before)


@pytest.mark.parametrize("case", [c for c in FUSED if c[0] in ("softmax", "layer_norm", "rms_norm", "linear+bias+gelu epilogue")],
                         ids=lambda c: c[0])
def test_huge_rows_through_norms_do_not_crash_and_are_deterministic(case):
    """Rows whose f32 sum or sum of squares overflows: no crash, no UB, the same bits twice
    (values are what f32 arithmetic gives, e.g. layer_norm of [3e38, 0, 0, 0] is 0, not the
    float64 answer; see docs/reliability.md)."""
    _, build, _ = case
    x = np.array([[3e38, 0, 0, 0], [-3e38, 0, 0, 0], [3e38] * 4, [1e20, -1e20, 1e20, -1e20]], np.float32)
    g = rlx.Graph("huge")
    g.output("y", build(g, g.input("x", (4, 4))))
    exe = rlx.ModelCompilePipeline(g).get_or_compile()
    first = exe.run(x=x)["y"]
    assert first.shape == (4, 4) and first.dtype == np.float32
    np.testing.assert_array_equal(exe.run(x=x)["y"], first)


@pytest.mark.parametrize("to", ["int32", "int64"])
def test_nan_and_inf_cast_to_int_saturate(to):
    """No float->int conversion that is UB on NaN / out-of-range values: NaN -> 0, +-inf and
    out-of-range values saturate (Rust `as`)."""
    info = np.iinfo(to)
    g = rlx.Graph("cast")
    g.output("y", g.cast(g.input("x", (7,)), to))
    exe = rlx.ModelCompilePipeline(g).get_or_compile()
    x = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 2.9, -2.9], np.float32)
    np.testing.assert_array_equal(exe.run(x=x)["y"], np.array([0, info.max, info.min, info.max, info.min, 2, -2], to))


# -- gather ----------------------------------------------------------------------------------

_TABLE = np.arange(20, dtype=np.float32).reshape(5, 4)

# (id, index dtype, axis, index shape, bad value, message fragment)
GATHER_OOB = [
    ("int32 axis 0", "int32", 0, (2,), 5, "gather index 5 at position 1 is out of range for an axis of size 5"),
    ("int32 axis 1", "int32", 1, (2,), 4, "gather index 4 at position 1 is out of range for an axis of size 4"),
    ("int32 axis 1 negative", "int32", 1, (2,), -5, "gather index -5 at position 1 is out of range for an axis of size 4"),
    ("int32 min", "int32", 0, (2,), np.iinfo(np.int32).min, "gather index -2147483648 at position 1"),
    ("int64 2-D indices", "int64", 0, (2, 2), 7, "gather index 7 at position 3 is out of range for an axis of size 5"),
    ("int64 max", "int64", 0, (2,), np.iinfo(np.int64).max, "gather index 9223372036854775807 at position 1"),
    ("int64 min axis 1", "int64", 1, (2,), np.iinfo(np.int64).min, "gather index -9223372036854775808 at position 1"),
]


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
@pytest.mark.parametrize("case", GATHER_OOB, ids=[c[0] for c in GATHER_OOB])
def test_gather_out_of_range_is_an_index_error(case, optimize):
    _, itype, axis, ishape, bad, fragment = case
    g = rlx.Graph("g")
    g.output("y", g.gather(g.param("t", _TABLE.shape), g.input("i", ishape, itype), axis=axis))
    pipe = rlx.ModelCompilePipeline(g, optimize=optimize)
    pipe.bind_params({"t": _TABLE})
    exe = pipe.get_or_compile()
    ok = np.zeros(ishape, itype)
    ok.flat[-1] = -1
    good = exe.run(i=ok)["y"]
    np.testing.assert_array_equal(good, np.take(_TABLE, ok, axis=axis))
    idx = ok.copy()
    idx.flat[-1] = bad
    with pytest.raises(IndexError, match=fragment):
        exe.run(i=idx)
    np.testing.assert_array_equal(exe.run(i=ok)["y"], good)


@needs_onnx
def test_onnx_gather_out_of_range_at_run_is_an_index_error():
    m = model([node("Gather", ["t", "i"], name="g", axis=0)], [("t", _TABLE)], inputs=[vi("i", ["n"], TensorProto.INT64)])
    om = rlx.onnx.load(m)
    good = om.run({"i": np.array([0, 4, -1])})["y"]
    np.testing.assert_array_equal(good, _TABLE[[0, 4, -1]])
    with pytest.raises(IndexError, match="gather index 5 at position 1 is out of range for an axis of size 5"):
        om.run({"i": np.array([0, 5, 1])})
    np.testing.assert_array_equal(om.run({"i": np.array([0, 4, -1])})["y"], good)


# -- outputs of one run are not overwritten by the next ----------------------------------------


def _outputs_graph():
    g = rlx.Graph("outs", dims={"n": (1, 8)})
    x, w = g.input("x", ("n", 4)), g.param("w", (4, 4))
    r = g.relu(x)
    for name, v in [("input itself", x), ("param itself", w), ("param reshaped", g.reshape(w, (16,))),
                    ("param transposed", g.transpose(w, (1, 0))), ("same value 1", r), ("same value 2", r),
                    ("slice of input", g.slice(x, 0, 0, 1)), ("constant", g.constant(np.arange(4, dtype=np.float32))),
                    ("linear", g.linear(x, w))]:
        g.output(name, v)
    return g


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
@pytest.mark.parametrize("prepack", [True, False], ids=["prepack", "noprepack"])
def test_outputs_are_private_to_their_run(prepack, optimize):
    """Every output kind (an input or param passed through, a view of one, two outputs of one
    value, a constant) is a fresh array: writing into it, or running again, changes nothing
    else."""
    pipe = rlx.ModelCompilePipeline(_outputs_graph(), prepack=prepack, optimize=optimize)
    w = np.arange(16, dtype=np.float32).reshape(4, 4)
    w_copy, x = w.copy(), np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    x_copy = x.copy()
    pipe.bind_params({"w": w})
    exe = pipe.get_or_compile(n=2)
    first = exe.run(x=x)
    kept = {k: v.copy() for k, v in first.items()}
    for name, v in first.items():
        assert not np.shares_memory(v, x) and not np.shares_memory(v, w), name
    assert not np.shares_memory(first["same value 1"], first["same value 2"])
    second = exe.run(x=x * 3)
    for name in first:
        assert not np.shares_memory(first[name], second[name]), name
        np.testing.assert_array_equal(first[name], kept[name], err_msg=name)
        first[name][...] = -7  # the caller owns it
    third = exe.run(x=x)
    for name in kept:
        np.testing.assert_array_equal(third[name], kept[name], err_msg=name)
    np.testing.assert_array_equal(w, w_copy)
    np.testing.assert_array_equal(x, x_copy)


# -- a borrowed array cannot be resized while a run reads it ------------------------------------


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
@pytest.mark.heavy
def test_borrowed_arrays_cannot_be_resized_during_a_run():
    """While a run reads its input and params with the GIL released, the main thread still runs
    Python signal handlers (it polls for them every few tens of ms); a handler that resizes the
    input or a bound param (refcheck=False) is refused by numpy (rlx holds a buffer export), and
    the run's result is unchanged."""
    layers, n = 24, 4096
    g = rlx.Graph("long", dims={"n": (1, n)})
    h = g.input("x", ("n", 512))
    for i in range(layers):
        h = g.linear(h, g.param(f"w{i}", (512, 512)), activation="relu")
    g.output("y", h)
    pipe = rlx.ModelCompilePipeline(g)
    w = np.eye(512, dtype=np.float32)
    pipe.bind_params({f"w{i}": w for i in range(layers)})
    exe = pipe.get_or_compile(n=n)
    want = exe.run(x=np.ones((n, 512), np.float32))["y"]
    for _ in range(5):
        x, seen = np.ones((n, 512), np.float32), {}

        def resize_both(signum, frame):
            seen["at"] = time.monotonic()
            for name, arr in (("input", x), ("param", w)):
                try:
                    arr.resize((arr.shape[0] * 2, arr.shape[1]), refcheck=False)
                    seen[name] = "resized"
                except ValueError as e:
                    seen[name] = str(e)

        old = signal.signal(signal.SIGALRM, resize_both)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.005)  # runs at the run's first signal poll
            started = time.monotonic()
            got = exe.run(x=x)["y"]
            ended = time.monotonic()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        if started < seen.get("at", 0) < started + 0.75 * (ended - started):
            break  # the handler ran well inside the run, not at its end
    else:
        pytest.skip("the handler never ran well inside a run (machine too fast or too loaded)")
    assert seen["input"].startswith("cannot resize") and seen["param"].startswith("cannot resize"), seen
    assert x.shape == (n, 512) and w.shape == (512, 512)
    np.testing.assert_array_equal(got, want)
    x.resize((2 * n, 512), refcheck=False)  # released when the run ended


# -- bool bytes re-validated, compiled artifacts and foreign pipelines --------------------------


def _bool_graph():
    g = rlx.Graph("bools")
    x, m = g.input("x", (8,)), g.param("m", (8,), "bool")
    c = g.input("c", (8,), "bool")
    g.output("y", g.where(m, x, g.neg(x)))
    g.output("z", g.where(c, x, g.scalar(0.0)))
    return g


@pytest.mark.parametrize("prepack", [True, False], ids=["prepack", "noprepack"])
@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
def test_bool_bytes_other_than_0_and_1_are_refused_every_run(optimize, prepack):
    pipe = rlx.ModelCompilePipeline(_bool_graph(), optimize=optimize, prepack=prepack)
    m = np.array([1, 0, 1, 0, 1, 0, 1, 0], bool)
    pipe.bind_params({"m": m})
    exe = pipe.get_or_compile()
    x, c = np.arange(8, dtype=np.float32), ~m
    good = outputs_of(exe, x=x, c=c)
    bad_c = np.array([0, 1, 2, 255, 0, 1, 3, 128], np.uint8).view(bool)
    with pytest.raises(rlx.DTypeError, match="input `c`: bool array holds bytes other than 0 and 1"):
        exe.run(x=x, c=bad_c)
    m.view(np.uint8)[1] = 2  # written through another view after binding
    with pytest.raises(rlx.DTypeError, match="param `m`: the bound bool array now holds bytes other than 0 and 1"):
        exe.run(x=x, c=c)
    m.view(np.uint8)[1] = 0
    for name, v in exe.run(x=x, c=c).items():
        np.testing.assert_array_equal(v, good[name])


def _linear_pipeline(hidden=4, relu=False, table_dtype=None):
    g = rlx.Graph("p", dims={"batch": (1, 64)})
    if table_dtype is not None:
        g.output("y", g.gather(g.param("w", (5, hidden), table_dtype), g.input("i", ("batch",), "int64")))
        arr = np.ones((5, hidden), table_dtype)
    else:
        h = g.linear(g.input("x", ("batch", 8)), g.param("w", (8, hidden)))
        g.output("y", g.relu(h) if relu else h)
        arr = np.ones((8, hidden), np.float32)
    pipe = rlx.ModelCompilePipeline(g)
    pipe.bind_params({"w": arr})
    return pipe


def test_specialized_planned_for_other_param_dtypes_is_a_binding_error():
    f32, i64 = _linear_pipeline(table_dtype="float32"), _linear_pipeline(table_dtype="int64")
    # Another graph (its param dtype differs): refused as a foreign template before the params
    # are compared (the param check is the Rust CompiledGraph::new test's).
    with pytest.raises(rlx.BindingError, match=r"another template|planned for params \[w f32"):
        i64.compile_lir(f32.specialize(batch=2))
    out = i64.compile_lir(i64.specialize(batch=2)).run(i=np.array([0, 4]))["y"]
    np.testing.assert_array_equal(out, np.ones((2, 4), np.int64))


def test_specialized_from_a_pipeline_over_another_graph_is_refused():
    plain, with_relu = _linear_pipeline(), _linear_pipeline(relu=True)
    x = np.full((2, 8), -1.0, np.float32)
    good = with_relu.get_or_compile(batch=2).run(x=x)["y"]
    with pytest.raises(rlx.BindingError, match="pipeline it came from"):
        with_relu.compile_lir(plain.specialize(batch=2))
    np.testing.assert_array_equal(with_relu.get_or_compile(batch=2).run(x=x)["y"], good)


# == E. Model files ==============================================================================


W_ST = np.arange(4096, dtype=np.float32).reshape(64, 64)


def _weights_file(path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [64, 64], "data_offsets": [0, W_ST.nbytes]}}).encode()
    return write_safetensors(path, header, W_ST.tobytes())


def _bind_and_run(w):
    g = rlx.Graph("lin", dims={"batch": (1, 8)})
    g.output("y", g.linear(g.input("x", ("batch", 64)), g.param("w", (64, 64))))
    pipe = rlx.ModelCompilePipeline(g)
    pipe.bind_params({"w": w})
    return pipe.get_or_compile(batch=2).run(x=np.ones((2, 64), np.float32))["y"]


def test_copy_mode_survives_the_file_being_truncated(tmp_path):
    path = _weights_file(tmp_path / "w.safetensors")
    good = _bind_and_run(st.load(path, mode="mmap")["w"])
    t = st.load(path, mode="copy")
    os.truncate(path, 0)
    np.testing.assert_array_equal(t["w"], W_ST)
    np.testing.assert_array_equal(_bind_and_run(t["w"]), good)


@pytest.mark.skipif(not hasattr(signal, "SIGBUS"), reason="posix SIGBUS")
def test_mmap_mode_truncated_while_mapped_dies_with_sigbus_as_documented(tmp_path):
    """The documented caveat (module doc of rlx.safetensors): a child process maps the file,
    truncates it, reads the tensor, and is killed by SIGBUS; the parent carries on."""
    assert "SIGBUS" in st.__doc__ and 'mode="copy"' in st.__doc__
    path = _weights_file(tmp_path / "w.safetensors")
    out = in_child(f"""
        import os
        from rlx import safetensors as st
        t = st.load({path!r}, mode="mmap")
        os.truncate({path!r}, 0)
        print(float(t["w"].sum()))
    """)
    assert out.returncode == -signal.SIGBUS, (out.returncode, out.stderr[-500:])
    _weights_file(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(st.load(path)["w"], W_ST)


@pytest.mark.parametrize("mode", ["mmap", "copy"])
def test_file_shrinking_during_load_is_a_model_format_error(tmp_path, monkeypatch, mode):
    path = _weights_file(tmp_path / "w.safetensors")
    full = os.path.getsize(path)
    os.truncate(path, full - 100)  # as if another process truncated it after the size was read
    with monkeypatch.context() as m:
        m.setattr(st.os.path, "getsize", lambda p: full)
        with pytest.raises(rlx.ModelFormatError):
            st.load(path, mode=mode)
    _weights_file(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(st.load(path, mode=mode)["w"], W_ST)


if onnx is not None:
    # (id, nodes, graph outputs, exception, message fragment)
    ONNX_STRUCTURE = [
        ("cycle", [node("Relu", ["b"], ["a"], name="r1"), node("Neg", ["a"], ["b"], name="n1"), node("Relu", ["a"], name="r2")], ("y",),
         rlx.GraphError, r"ONNX node 'r1' \(Relu\): ONNX value 'b' is used before it is defined"),
        ("self loop", [node("Relu", ["a"], ["a"], name="r1"), node("Relu", ["a"], name="r2")], ("y",),
         rlx.GraphError, r"ONNX node 'r1' \(Relu\): ONNX value 'a' is used before it is defined"),
        ("unknown value name", [node("Add", ["x", "nope"], name="add0")], ("y",),
         rlx.GraphError, r"ONNX node 'add0' \(Add\): ONNX value 'nope' is used before it is defined"),
        ("graph output never produced", [node("Relu", ["x"], ["t"])], ("zzz",), rlx.GraphError, "ONNX value 'zzz' is used before it is defined"),
        ("duplicate graph outputs", [node("Relu", ["x"])], ("y", "y"), rlx.GraphError, "duplicate output name `y`"),
    ]
else:  # pragma: no cover
    ONNX_STRUCTURE = []


@needs_onnx
@pytest.mark.parametrize("case", ONNX_STRUCTURE, ids=[c[0] for c in ONNX_STRUCTURE])
def test_onnx_graph_structure_errors(baseline, case):
    _, nodes, outputs, exc, fragment = case
    with pytest.raises(exc, match=fragment):
        rlx.onnx.load(model(nodes, outputs=outputs))
    still_works(baseline)
    np.testing.assert_array_equal(rlx.onnx.load(good()).run({"x": ONNX_X})["y"], baseline)
