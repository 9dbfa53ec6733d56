"""Every rlx.Graph op against its numpy equivalent, optimized and unoptimized, over parametrized
shapes (zero-sized and broadcast ones), dtypes, and symbolic dims specialized to a few variants."""

import math

import numpy as np
import pytest

import rlx
from conftest import gelu_ref, layer_norm_ref, softmax_ref

F32, I64, I32, BOOL = np.float32, np.int64, np.int32, np.bool_
_erf = np.vectorize(math.erf, otypes=[np.float64])


def run_variants(g, variants, params=None):
    """Runs `g` optimized and unoptimized for each `(binding, inputs, expected)` variant, one
    pipeline per mode so the variants share a template. Float outputs are compared with a
    tolerance, int and bool outputs exactly; dtypes and shapes always exactly."""
    for optimize in (True, False):
        pipe = rlx.ModelCompilePipeline(g, optimize=optimize)
        if params:
            pipe.bind_params(params)
        for binding, inputs, expected in variants:
            out = pipe.get_or_compile(binding).run(**inputs)
            for name, want in expected.items():
                got, want = out[name], np.asarray(want)
                where = f"output {name!r}, optimize={optimize}, binding={binding}"
                assert got.shape == want.shape, where
                if want.dtype == np.float64:
                    assert got.dtype == F32, where
                    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=where)
                else:
                    assert got.dtype == want.dtype, where
                    np.testing.assert_array_equal(got, want, err_msg=where)


def check(g, inputs, expected, params=None):
    run_variants(g, [({}, inputs, expected)], params)


def rand(rng, shape, dtype, lo=-3, hi=3):
    """Random values of `dtype`: normal floats, ints in [lo, hi], or bools."""
    if dtype == F32:
        x = rng.standard_normal(shape).astype(F32)
    elif dtype == BOOL:
        x = rng.random(shape) < 0.5
    else:
        x = rng.integers(lo, hi + 1, shape).astype(dtype)
    return np.asarray(x)  # shape () gives numpy scalars; inputs must be arrays


def ref64(x):
    """A float32 array as float64 (so `run_variants` compares it with a tolerance)."""
    return np.asarray(x, np.float64)


def name(dtype):
    return np.dtype(dtype).name


# -- unary ------------------------------------------------------------------------------------


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# op -> (numpy reference on float64, whether the input must be positive)
UNARY = {
    "neg": (np.negative, False),
    "abs": (np.abs, False),
    "exp": (np.exp, False),
    "log": (np.log, True),
    "sqrt": (np.sqrt, True),
    "rsqrt": (lambda x: 1.0 / np.sqrt(x), True),
    "erf": (_erf, False),
    "tanh": (np.tanh, False),
    "sigmoid": (_sigmoid, False),
    "silu": (lambda x: x * _sigmoid(x), False),
    "relu": (lambda x: np.maximum(x, 0.0), False),
    "gelu": (gelu_ref, False),
    "gelu_tanh": (_gelu_tanh, False),
}
SHAPES = [(), (0,), (7,), (3, 0), (2, 3, 5), (4, 33)]


def _unary_input(rng, op, shape):
    x = rand(rng, shape, F32) * F32(3)
    return np.asarray(np.abs(x) + F32(0.05) if UNARY[op][1] else x)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(rng, op, shape):
    x = _unary_input(rng, op, shape)
    for via_name in (False, True):
        g = rlx.Graph(op)
        xv = g.input("x", shape)
        g.output("y", g.unary(op, xv) if via_name else getattr(g, op)(xv))
        check(g, {"x": x}, {"y": UNARY[op][0](ref64(x))})


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_symbolic(rng, op):
    g = rlx.Graph(op, dims={"n": (1, 64)})
    g.output("y", getattr(g, op)(g.input("x", ("n", 5))))
    variants = []
    for n in (1, 3, 17):
        x = _unary_input(rng, op, (n, 5))
        variants.append(({"n": n}, {"x": x}, {"y": UNARY[op][0](ref64(x))}))
    run_variants(g, variants)


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
@pytest.mark.parametrize("op", ["neg", "abs", "exp", "relu"])
def test_unary_needs_float32(op, dtype):
    g = rlx.Graph("u")
    with pytest.raises(rlx.DTypeError, match="expected f32"):
        getattr(g, op)(g.input("x", (3,), dtype))


def test_unknown_unary_is_unsupported():
    g = rlx.Graph("u")
    with pytest.raises(rlx.UnsupportedOpError, match="softplus"):
        g.unary("softplus", g.input("x", (3,)))


# -- binary -----------------------------------------------------------------------------------

SHAPE_PAIRS = [
    ((5,), (5,)),
    ((2, 3), (3,)),
    ((2, 1, 4), (3, 1)),
    ((1,), (2, 3)),
    ((), (4,)),
    ((0, 3), (1, 3)),
    ((2, 0), (2, 1)),
]


def _trunc_div(a, b):
    """Integer division as rlx defines it: rounds toward zero, and x / 0 is 0."""
    safe = np.where(b == 0, 1, b)
    q = np.trunc(a.astype(np.float64) / safe).astype(a.dtype)
    return np.where(b == 0, 0, q).astype(a.dtype)


def _binary_inputs(rng, op, dtype, sa, sb):
    if dtype == F32:
        a, b = rand(rng, sa, F32), rand(rng, sb, F32)
        if op == "pow":
            a = np.asarray(np.abs(a) + F32(0.5))
            b = np.asarray(rng.uniform(-2, 2, sb).astype(F32))
        if op == "div":  # divisors away from zero
            b = np.where(np.abs(b) < 0.25, F32(0.5), b).astype(F32)
        return a, b
    if op == "pow":
        return rand(rng, sa, dtype, -9, 9), rand(rng, sb, dtype, 0, 5)
    return rand(rng, sa, dtype, -50, 50), rand(rng, sb, dtype, -50, 50)


def _binary_ref(op, a, b):
    if a.dtype == F32:
        a, b = ref64(a), ref64(b)
    if op == "div" and a.dtype != np.float64:
        return _trunc_div(*np.broadcast_arrays(a, b))
    fn = {
        "add": np.add,
        "sub": np.subtract,
        "mul": np.multiply,
        "div": np.divide,
        "pow": np.power,
        "max": np.maximum,
        "min": np.minimum,
    }[op]
    return fn(a, b)


@pytest.mark.parametrize("sa,sb", SHAPE_PAIRS, ids=str)
@pytest.mark.parametrize("dtype", [F32, I64, I32], ids=name)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "max", "min"])
def test_binary(rng, op, dtype, sa, sb):
    a, b = _binary_inputs(rng, op, dtype, sa, sb)
    g = rlx.Graph(op)
    av, bv = g.input("a", sa, a.dtype), g.input("b", sb, b.dtype)
    method = {"max": "maximum", "min": "minimum"}.get(op, op)
    g.output("y", getattr(g, method)(av, bv))
    g.output("z", g.binary(op, av, bv))
    want = _binary_ref(op, a, b)
    check(g, {"a": a, "b": b}, {"y": want, "z": want})


@pytest.mark.parametrize("dtype", [I64, I32], ids=name)
def test_int_arithmetic_wraps_and_divides_by_zero_to_zero(dtype):
    info = np.iinfo(dtype)
    a = np.array([info.max, info.min, info.min, 7, -7, 5, 0, 3], dtype)
    b = np.array([1, -1, 1, 2, 2, 0, 0, 40], dtype)
    e = np.abs(b)  # numpy refuses negative integer exponents
    g = rlx.Graph("wrap")
    av, bv = g.input("a", (8,), a.dtype), g.input("b", (8,), b.dtype)
    for op in ("add", "sub", "mul", "div"):
        g.output(op, g.binary(op, av, bv))
    g.output("pow", g.pow(av, g.input("e", (8,), e.dtype)))
    with np.errstate(over="ignore"):
        want = {
            "add": a + b,
            "sub": a - b,
            "mul": a * b,
            # Truncating division; MIN / -1 wraps to MIN; x / 0 is 0 (numpy would warn).
            "div": np.array([info.max, info.min, info.min, 3, -3, 0, 0, 0], dtype),
            "pow": a**e,  # numpy's integer power wraps too (3**40 here); 0**0 is 1
        }
    check(g, {"a": a, "b": b, "e": e}, want)


def test_binary_refuses_mixed_dtypes_and_bool():
    g = rlx.Graph("mixed")
    i, f = g.input("i", (2,), "int32"), g.input("f", (2,))
    with pytest.raises(rlx.DTypeError, match="no implicit promotion"):
        g.add(i, f)
    with pytest.raises(rlx.DTypeError, match="bool"):
        g.mul(g.input("b", (2,), "bool"), g.input("c", (2,), "bool"))
    with pytest.raises(rlx.UnsupportedOpError, match="mod"):
        g.binary("mod", f, f)


def test_binary_broadcast_mismatch_is_a_shape_error():
    g = rlx.Graph("bc")
    with pytest.raises(rlx.ShapeError):
        g.add(g.input("a", (2, 3)), g.input("b", (4,)))


def test_binary_symbolic_broadcast(rng):
    g = rlx.Graph("bc", dims={"b": (1, 16), "s": (1, 32)})
    x, row = g.input("x", ("b", "s", 4)), g.input("row", ("s", 1))
    g.output("y", g.sub(x, row))
    g.output("z", g.pow(g.abs(x), g.constant([0.5, 1.0, 2.0, 3.0])))
    variants = []
    for b, s in ((1, 1), (2, 5), (3, 8)):
        xv, rv = rand(rng, (b, s, 4), F32), rand(rng, (s, 1), F32)
        want = {"y": ref64(xv) - rv, "z": np.abs(ref64(xv)) ** np.array([0.5, 1.0, 2.0, 3.0])}
        variants.append(({"b": b, "s": s}, {"x": xv, "row": rv}, want))
    run_variants(g, variants)


# -- compare and where -------------------------------------------------------------------------

COMPARE = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal}


def _few_values(rng, shape, dtype):
    """Values from a small set, so that ties (eq, le, ge) actually happen."""
    if dtype == BOOL:
        return np.asarray(rng.random(shape) < 0.5)
    return np.asarray(rng.choice(np.array([-1, 0, 1, 2], dtype), shape))


@pytest.mark.parametrize("sa,sb", SHAPE_PAIRS, ids=str)
@pytest.mark.parametrize("dtype", [F32, I64, I32, BOOL], ids=name)
@pytest.mark.parametrize("op", sorted(COMPARE))
def test_compare(rng, op, dtype, sa, sb):
    a, b = _few_values(rng, sa, dtype), _few_values(rng, sb, dtype)
    g = rlx.Graph(op)
    av, bv = g.input("a", sa, a.dtype), g.input("b", sb, b.dtype)
    y = getattr(g, op)(av, bv)
    assert y.dtype == "bool"
    g.output("y", y)
    g.output("z", g.compare(op, av, bv))
    want = COMPARE[op](a, b)
    check(g, {"a": a, "b": b}, {"y": want, "z": want})


def test_compare_errors():
    g = rlx.Graph("cmp")
    f, i = g.input("f", (2,)), g.input("i", (2,), "int64")
    with pytest.raises(rlx.DTypeError, match="no implicit promotion"):
        g.lt(i, f)
    with pytest.raises(rlx.UnsupportedOpError, match="between"):
        g.compare("between", f, f)


WHERE_SHAPES = [
    ((4,), (4,), (4,)),
    ((2, 3), (3,), (1,)),
    ((2, 1), (1, 5), (2, 5)),
    ((), (3,), (2, 3)),
    ((0, 3), (3,), (1, 3)),
]


@pytest.mark.parametrize("sc,sa,sb", WHERE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [F32, I64, I32, BOOL], ids=name)
def test_where(rng, dtype, sc, sa, sb):
    c, a, b = rand(rng, sc, BOOL), rand(rng, sa, dtype), rand(rng, sb, dtype)
    g = rlx.Graph("where")
    g.output("y", g.where(g.input("c", sc, "bool"), g.input("a", sa, a.dtype), g.input("b", sb, b.dtype)))
    check(g, {"c": c, "a": a, "b": b}, {"y": np.where(c, a, b)})


def test_where_from_compare_symbolic(rng):
    # relu written by hand: where(x > 0, x, 0 * x), on 3 variants.
    g = rlx.Graph("w", dims={"n": (1, 64)})
    x = g.input("x", ("n", 3))
    zero = g.scalar(0.0)
    g.output("y", g.where(g.gt(x, zero), x, g.mul(x, zero)))
    variants = []
    for n in (1, 4, 9):
        xv = rand(rng, (n, 3), F32)
        variants.append(({"n": n}, {"x": xv}, {"y": np.where(xv > 0, ref64(xv), 0.0)}))
    run_variants(g, variants)


def test_where_needs_a_bool_condition():
    g = rlx.Graph("w")
    x = g.input("x", (3,))
    with pytest.raises(rlx.DTypeError):
        g.where(x, x, x)


# -- reductions -------------------------------------------------------------------------------

REDUCE_CASES = [
    ((5,), None),
    ((2, 3, 4), None),
    ((2, 3, 4), 0),
    ((2, 3, 4), -1),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), [2, 1]),
    ((3, 0), 0),  # reduces a non-empty axis of an empty tensor: empty output
    ((0, 4), 1),
]


def _reduce_ref(op, x, axes, keep):
    axis = tuple(axes) if isinstance(axes, list) else axes
    if op == "reduce_sum":
        return np.sum(x if x.dtype != F32 else ref64(x), axis=axis, keepdims=keep, dtype=None if x.dtype == F32 else x.dtype)
    if op == "reduce_mean":
        return np.mean(ref64(x), axis=axis, keepdims=keep)
    return np.max(x if x.dtype != F32 else ref64(x), axis=axis, keepdims=keep)


@pytest.mark.parametrize("keep_dim", [False, True])
@pytest.mark.parametrize("shape,axes", REDUCE_CASES, ids=str)
@pytest.mark.parametrize(
    "op,dtype",
    [("reduce_sum", F32), ("reduce_mean", F32), ("reduce_max", F32), ("reduce_sum", I64), ("reduce_sum", I32), ("reduce_max", I64), ("reduce_max", I32)],
    ids=lambda v: v if isinstance(v, str) else name(v),
)
def test_reduce(rng, op, dtype, shape, axes, keep_dim):
    x = rand(rng, shape, dtype, -1000, 1000)
    g = rlx.Graph(op)
    xv = g.input("x", shape, x.dtype)
    g.output("y", getattr(g, op)(xv, axes=axes, keep_dim=keep_dim))
    g.output("z", g.reduce(op, xv, axes, keep_dim))
    want = _reduce_ref(op, x, axes, keep_dim)
    check(g, {"x": x}, {"y": want, "z": want})


@pytest.mark.parametrize("dtype", [I64, I32], ids=name)
def test_int_sum_wraps(dtype):
    big = np.iinfo(dtype).max
    g = rlx.Graph("s")
    g.output("y", g.reduce_sum(g.input("x", (3,), dtype)))
    x = np.array([big, big, 3], dtype)
    check(g, {"x": x}, {"y": np.array(np.sum(x, dtype=dtype))})


def test_sum_over_an_empty_axis_is_zero():
    g = rlx.Graph("e")
    g.output("y", g.reduce_sum(g.input("x", (0, 3)), axes=0))
    check(g, {"x": np.zeros((0, 3), F32)}, {"y": np.zeros(3)})


def test_reduce_symbolic(rng):
    g = rlx.Graph("r", dims={"b": (1, 8), "s": (1, 64)})
    x = g.input("x", ("b", "s", 6))
    y = g.reduce_mean(x, axes=1, keep_dim=True)
    assert y.shape == ("b", 1, 6)
    g.output("mean", y)
    g.output("max", g.reduce_max(x, axes=(0, 1)))
    g.output("sum", g.reduce_sum(x))
    variants = []
    for b, s in ((1, 1), (2, 7), (3, 40)):
        xv = rand(rng, (b, s, 6), F32)
        x64 = ref64(xv)
        want = {"mean": x64.mean(1, keepdims=True), "max": x64.max((0, 1)), "sum": np.array(x64.sum())}
        variants.append(({"b": b, "s": s}, {"x": xv}, want))
    run_variants(g, variants)


def test_reduce_errors():
    g = rlx.Graph("r")
    x, i = g.input("x", (2, 3)), g.input("i", (2, 3), "int32")
    with pytest.raises(rlx.ShapeError, match="ambiguous"):
        g.reduce_sum(x, axes=())
    with pytest.raises(rlx.ShapeError):
        g.reduce_sum(x, axes=2)
    with pytest.raises(rlx.GraphError, match="repeated"):
        g.reduce_max(x, axes=(1, -1))
    with pytest.raises(rlx.ShapeError, match="axes"):
        g.reduce_sum(x, axes="0")
    with pytest.raises(rlx.DTypeError, match="reduce_mean"):
        g.reduce_mean(i)
    with pytest.raises(rlx.UnsupportedOpError, match="reduce_prod"):
        g.reduce("reduce_prod", x)


# -- norms and softmax -----------------------------------------------------------------------


def rms_norm_ref(x, gamma, eps):
    x = ref64(x)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * gamma


@pytest.mark.parametrize("shape", [(4,), (3, 8), (2, 3, 16), (0, 8), (2, 384)], ids=str)
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_rms_norm(rng, shape, eps):
    x, gamma = rand(rng, shape, F32), rand(rng, shape[-1:], F32)
    g = rlx.Graph("rms")
    g.output("y", g.rms_norm(g.input("x", shape), g.param("gamma", shape[-1:]), eps=eps))
    check(g, {"x": x}, {"y": rms_norm_ref(x, gamma, eps)}, params={"gamma": gamma})


def test_rms_norm_default_eps_and_symbolic(rng):
    g = rlx.Graph("rms", dims={"t": (1, 128)})
    g.output("y", g.rms_norm(g.input("x", ("t", 32)), g.constant(np.linspace(0.5, 1.5, 32, dtype=F32))))
    gamma = np.linspace(0.5, 1.5, 32, dtype=F32)
    variants = []
    for t in (1, 5, 100):
        x = rand(rng, (t, 32), F32) * F32(1e-3)  # small, so that eps=1e-6 matters
        variants.append(({"t": t}, {"x": x}, {"y": rms_norm_ref(x, gamma, 1e-6)}))
    run_variants(g, variants)


@pytest.mark.parametrize("shape,axis", [((5,), -1), ((3, 7), 0), ((3, 7), 1), ((2, 3, 4), 1), ((0, 4), -1), ((4, 0, 3), 2)], ids=str)
def test_softmax(rng, shape, axis):
    x = rand(rng, shape, F32) * 4
    g = rlx.Graph("sm")
    g.output("y", g.softmax(g.input("x", shape), axis=axis))
    check(g, {"x": x}, {"y": softmax_ref(x, axis=axis)})


def test_layer_norm_symbolic(rng):
    g = rlx.Graph("ln", dims={"t": (1, 64)})
    gamma, beta = rand(rng, (24,), F32), rand(rng, (24,), F32)
    g.output("y", g.layer_norm(g.input("x", ("t", 24)), g.constant(gamma), g.constant(beta), eps=1e-5))
    variants = []
    for t in (1, 3, 50):
        x = rand(rng, (t, 24), F32)
        variants.append(({"t": t}, {"x": x}, {"y": layer_norm_ref(x, gamma, beta)}))
    run_variants(g, variants)


# -- concat, slice, gather, cast ---------------------------------------------------------------

CONCAT_CASES = [
    ([(2, 3), (4, 3)], 0),
    ([(2, 3), (2, 1), (2, 5)], 1),
    ([(2, 3), (2, 3)], -1),
    ([(2, 0, 4), (2, 3, 4), (2, 0, 4)], 1),  # zero-sized operands
    ([(0, 3), (0, 3)], 0),
    ([(5,)], 0),
]


@pytest.mark.parametrize("shapes,axis", CONCAT_CASES, ids=str)
@pytest.mark.parametrize("dtype", [F32, I64, I32, BOOL], ids=name)
def test_concat(rng, dtype, shapes, axis):
    xs = [rand(rng, s, dtype) for s in shapes]
    g = rlx.Graph("cat")
    vals = [g.input(f"x{i}", s, dtype) for i, s in enumerate(shapes)]
    g.output("y", g.concat(vals, axis))
    check(g, {f"x{i}": x for i, x in enumerate(xs)}, {"y": np.concatenate(xs, axis)})


def test_concat_symbolic(rng):
    g = rlx.Graph("cat", dims={"s": (1, 32)})
    a, b = g.input("a", ("s", 2)), g.input("b", ("s", 3))
    y = g.concat([a, b], axis=1)
    assert y.shape == ("s", 5)
    g.output("y", y)
    g.output("z", g.concat([a, a, a], axis=0))
    variants = []
    for s in (1, 4, 9):
        av, bv = rand(rng, (s, 2), F32), rand(rng, (s, 3), F32)
        want = {"y": ref64(np.concatenate([av, bv], 1)), "z": ref64(np.concatenate([av] * 3, 0))}
        variants.append(({"s": s}, {"a": av, "b": bv}, want))
    run_variants(g, variants)


def test_concat_errors():
    g, other = rlx.Graph("cat"), rlx.Graph("other")
    a = g.input("a", (2, 3))
    with pytest.raises(rlx.GraphError, match="at least one"):
        g.concat([], 0)
    with pytest.raises(rlx.ShapeError):
        g.concat([a, g.input("b", (3, 3))], axis=1)
    with pytest.raises(rlx.DTypeError):
        g.concat([a, g.input("c", (2, 3), "int32")], axis=0)
    with pytest.raises(rlx.GraphError, match="another graph"):
        g.concat([a, other.input("a", (2, 3))], axis=0)


SLICE_CASES = [
    (0, 1, 3),
    (0, 0, None),
    (0, 2, 2),  # empty
    (1, -3, None),
    (1, 1, -1),
    (-1, 0, 4),
]


@pytest.mark.parametrize("axis,start,end", SLICE_CASES, ids=str)
@pytest.mark.parametrize("dtype", [F32, I64, BOOL], ids=name)
def test_slice(rng, dtype, axis, start, end):
    x = rand(rng, (5, 4), dtype)
    g = rlx.Graph("slice")
    g.output("y", g.slice(g.input("x", (5, 4), dtype), axis, start, end))
    idx = [slice(None)] * 2
    idx[axis] = slice(start, end)
    check(g, {"x": x}, {"y": x[tuple(idx)]})


def test_slice_symbolic_bounds(rng):
    g = rlx.Graph("slice", dims={"seq": (2, 64), "n": (1, 64)})
    x = g.input("x", ("seq", 3))
    head = g.slice(x, 0, 0, "n")
    assert head.shape == ("n", 3)
    g.output("head", head)
    g.output("tail", g.slice(x, 0, 1))  # [1:seq]
    g.output("drop_last", g.slice(x, 0, 0, "seq-1"))
    g.output("last", g.slice(x, 0, -1))
    variants = []
    for seq, n in ((2, 1), (5, 5), (9, 4)):
        xv = rand(rng, (seq, 3), F32)
        want = {"head": xv[:n], "tail": xv[1:], "drop_last": xv[:-1], "last": xv[-1:]}
        variants.append(({"seq": seq, "n": n}, {"x": xv}, {k: ref64(v) for k, v in want.items()}))
    run_variants(g, variants)


def test_slice_symbolic_end_beyond_the_dim_is_a_shape_error():
    g = rlx.Graph("slice", dims={"seq": (1, 64), "n": (1, 64)})
    g.output("y", g.slice(g.input("x", ("seq", 3)), 0, 0, "n"))
    pipe = rlx.ModelCompilePipeline(g)
    with pytest.raises(rlx.ShapeError, match="n = 7 > seq = 5"):
        pipe.specialize(seq=5, n=7)
    with pytest.raises(rlx.ShapeError, match="out of range|>"):
        pipe.get_or_compile(seq=5, n=7)
    assert len(pipe) == 0
    # The pipeline is fine for a binding that fits.
    x = np.ones((5, 3), F32)
    np.testing.assert_array_equal(pipe.get_or_compile(seq=5, n=5).run(x=x)["y"], x)


def test_slice_static_errors():
    g = rlx.Graph("slice")
    x = g.input("x", (4,))
    with pytest.raises(rlx.ShapeError, match="out of range"):
        g.slice(x, 0, 0, 9)
    with pytest.raises(rlx.ShapeError, match="out of range"):
        g.slice(x, 0, 3, 1)
    with pytest.raises(rlx.ShapeError, match="bound"):
        g.slice(x, 0, 1.5)
    with pytest.raises(rlx.ShapeError):
        g.slice(x, 1, 0)


GATHER_CASES = [
    ((6, 4), 0, (3,)),
    ((6, 4), 0, (2, 3)),
    ((6, 4), 1, (5,)),
    ((2, 5, 3), -2, (2, 2)),
    ((6,), 0, ()),
    ((6, 4), 0, (0,)),
    ((6, 0), 0, (3,)),
]


@pytest.mark.parametrize("shape,axis,ishape", GATHER_CASES, ids=str)
@pytest.mark.parametrize("itype", [I64, I32], ids=name)
@pytest.mark.parametrize("dtype", [F32, I64, BOOL], ids=name)
def test_gather(rng, dtype, itype, shape, axis, ishape):
    data = rand(rng, shape, dtype)
    size = shape[axis]
    idx = rng.integers(-size, size, ishape).astype(itype)  # negative counts from the end
    g = rlx.Graph("gather")
    g.output("y", g.gather(g.input("data", shape, dtype), g.input("i", ishape, itype), axis=axis))
    check(g, {"data": data, "i": idx}, {"y": np.take(data, idx, axis=axis)})


def test_embedding_lookup_symbolic(rng):
    table = rand(rng, (50, 8), F32)
    g = rlx.Graph("emb", dims={"b": (1, 8), "s": (1, 32)})
    g.output("y", g.gather(g.param("table", (50, 8)), g.input("ids", ("b", "s"), "int64")))
    variants = []
    for b, s in ((1, 1), (2, 7), (4, 32)):
        ids = rng.integers(0, 50, (b, s))
        variants.append(({"b": b, "s": s}, {"ids": ids}, {"y": ref64(table[ids])}))
    run_variants(g, variants, params={"table": table})


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("bad", [5, -6, 2**40], ids=str)
def test_gather_out_of_range_is_an_index_error_and_the_graph_still_runs(bad, optimize):
    table = np.arange(20, dtype=F32).reshape(5, 4)
    g = rlx.Graph("emb", dims={"n": (1, 16)})
    g.output("y", g.gather(g.param("table", (5, 4)), g.input("i", ("n",), "int64")))
    pipe = rlx.ModelCompilePipeline(g, optimize=optimize)
    pipe.bind_params({"table": table})
    exe = pipe.get_or_compile(n=3)
    with pytest.raises(IndexError, match="out of range"):
        exe.run(i=np.array([0, bad, 1]))
    ok = np.array([4, 0, -1])
    np.testing.assert_array_equal(exe.run(i=ok)["y"], table[ok])
    np.testing.assert_array_equal(pipe.get_or_compile(n=1).run(i=np.array([2]))["y"], table[[2]])


def test_gather_needs_int_indices():
    g = rlx.Graph("gather")
    with pytest.raises(rlx.DTypeError, match="i64 or i32"):
        g.gather(g.input("d", (4,)), g.input("i", (2,)))


CAST_VALUES = {
    F32: np.array([-3.7, -1.0, -0.0, 0.0, 0.4, 2.5, 100.0, 1e6], F32),
    I64: np.array([-(2**31), -7, -1, 0, 1, 3, 2**20, 2**31 - 1], I64),
    I32: np.array([-(2**31), -7, -1, 0, 1, 3, 2**20, 2**31 - 1], I32),
    BOOL: np.array([True, False, True, True, False, False, True, False]),
}


@pytest.mark.parametrize("to", [F32, I64, I32, BOOL], ids=name)
@pytest.mark.parametrize("src", [F32, I64, I32, BOOL], ids=name)
def test_cast(src, to):
    # In-range values only: numpy leaves out-of-range float -> int undefined.
    x = CAST_VALUES[src]
    g = rlx.Graph("cast")
    y = g.cast(g.input("x", (2, 4), src), name(to))
    assert y.dtype == name(to)
    g.output("y", y)
    g.output("z", g.cast(g.input("e", (0, 3), src), to))  # numpy dtypes work too
    want = x.reshape(2, 4).astype(to)
    check(g, {"x": x.reshape(2, 4), "e": np.zeros((0, 3), src)}, {"y": want, "z": np.zeros((0, 3), to)})


def test_cast_unsupported_dtype():
    g = rlx.Graph("cast")
    with pytest.raises(rlx.DTypeError, match="float16"):
        g.cast(g.input("x", (2,)), "float16")


# -- attention -------------------------------------------------------------------------------


def attention_ref(q, k, v, mask=None, scale=None, causal=False):
    q, k, v = ref64(q), ref64(k), ref64(v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = np.where(np.asarray(mask)[:, None, None, :] != 0, s, -np.inf)
    if causal:
        sq, sk = s.shape[-2:]
        s = np.where(np.tril(np.ones((sq, sk), bool)), s, -np.inf)
    return softmax_ref(s) @ v


def _padding_mask(rng, b, sk, dtype):
    """Keeps a random prefix of each row (at least one key)."""
    lens = rng.integers(1, sk + 1, b)
    return (np.arange(sk)[None, :] < lens[:, None]).astype(dtype)


ATTN_SHAPES = [(1, 1, 4, 4, 8), (2, 3, 5, 5, 4), (2, 2, 3, 7, 16), (1, 4, 1, 6, 8)]


@pytest.mark.parametrize("scale", [None, 0.3])
@pytest.mark.parametrize("mask_dtype", [None, F32, I64, I32, BOOL], ids=lambda d: "nomask" if d is None else name(d))
@pytest.mark.parametrize("b,h,sq,sk,d", ATTN_SHAPES, ids=str)
def test_attention(rng, b, h, sq, sk, d, mask_dtype, scale):
    q, k, v = rand(rng, (b, h, sq, d), F32), rand(rng, (b, h, sk, d), F32), rand(rng, (b, h, sk, d), F32)
    g = rlx.Graph("attn")
    ins = {"q": q, "k": k, "v": v}
    mask = None
    if mask_dtype is not None:
        ins["m"] = _padding_mask(rng, b, sk, mask_dtype)
        mask = g.input("m", (b, sk), mask_dtype)
    out = g.attention(g.input("q", q.shape), g.input("k", k.shape), g.input("v", v.shape), mask=mask, scale=scale)
    assert out.shape == (b, h, sq, d)
    g.output("y", out)
    check(g, ins, {"y": attention_ref(q, k, v, ins.get("m"), scale)})


@pytest.mark.parametrize("masked", [False, True])
def test_causal_attention_symbolic(rng, masked):
    g = rlx.Graph("causal", dims={"b": (1, 4), "s": (1, 64)})
    q, k, v = (g.input(n, ("b", 2, "s", 8)) for n in "qkv")
    mask = g.input("m", ("b", "s"), "int64") if masked else None
    g.output("y", g.attention(q, k, v, mask=mask, causal=True))
    variants = []
    for b, s in ((1, 1), (2, 5), (3, 17)):
        ins = {n: rand(rng, (b, 2, s, 8), F32) for n in "qkv"}
        m = None
        if masked:
            # Every query keeps key 0, so no row is fully masked.
            m = ins["m"] = _padding_mask(rng, b, s, I64)
        variants.append(({"b": b, "s": s}, ins, {"y": attention_ref(ins["q"], ins["k"], ins["v"], m, causal=True)}))
    run_variants(g, variants)


def test_attention_shape_errors():
    g = rlx.Graph("attn")
    q = g.input("q", (1, 2, 3, 4))
    with pytest.raises(rlx.ShapeError):
        g.attention(q, g.input("k", (1, 2, 3, 5)), g.input("v", (1, 2, 3, 4)))
    with pytest.raises(rlx.ShapeError):
        g.attention(g.input("q3", (2, 3, 4)), g.input("k3", (2, 3, 4)), g.input("v3", (2, 3, 4)))


# -- constants --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,dtype,want",
    [
        ([1.0, 2.0, 3.0], None, np.array([1.0, 2.0, 3.0], F32)),
        ([[1, 2], [3, 4]], None, np.array([[1, 2], [3, 4]], F32)),  # lists default to float32
        (2.5, None, np.array(2.5, F32)),
        (7, None, np.array(7, F32)),
        ([1, 2], "int64", np.array([1, 2], I64)),
        ([True, False], "bool", np.array([True, False])),
        (np.array([1, 2], I32), None, np.array([1, 2], I32)),  # arrays keep their dtype
        (np.array([[True], [False]]), None, np.array([[True], [False]])),
        (np.int64(3), None, np.array(3, I64)),  # so do numpy scalars
        (np.array([0.5, 1.5]), "float32", np.array([0.5, 1.5], F32)),  # float64, converted on request
        (np.arange(12, dtype=F32).reshape(3, 4)[:, ::2], None, np.array([[0, 2], [4, 6], [8, 10]], F32)),
        (np.zeros((0, 3), I32), None, np.zeros((0, 3), I32)),
    ],
    ids=repr,
)
def test_constant(value, dtype, want):
    g = rlx.Graph("const")
    c = g.constant(value, dtype)
    assert c.dtype == want.dtype.name and c.shape == want.shape
    g.output("c", c)
    check(g, {}, {"c": want})


def test_constant_in_arithmetic(rng):
    g = rlx.Graph("const", dims={"n": (1, 16)})
    x, i = g.input("x", ("n", 3)), g.input("i", ("n",), "int64")
    bias = np.array([0.5, -1.0, 2.0], F32)
    g.output("y", g.mul(g.add(x, g.constant(bias)), g.scalar(2.0)))
    g.output("j", g.add(i, g.constant(np.int64(10))))
    variants = []
    for n in (1, 6):
        xv, iv = rand(rng, (n, 3), F32), rng.integers(-5, 5, n)
        variants.append(({"n": n}, {"x": xv, "i": iv}, {"y": (ref64(xv) + bias) * 2.0, "j": iv + 10}))
    run_variants(g, variants)


def test_scalar_is_a_float32_of_shape_1():
    g = rlx.Graph("s")
    s = g.scalar(0.125)
    assert s.shape == (1,) and s.dtype == "float32"
    g.output("s", s)
    check(g, {}, {"s": np.array([0.125], np.float64)})


@pytest.mark.parametrize(
    "value,dtype,match",
    [
        (np.zeros(3), None, "float64 is not an rlx dtype"),
        (np.zeros(3, np.uint8), None, "uint8 is not an rlx dtype"),
        (np.zeros(3, np.float16), None, "float16"),
        (["a"], None, "expected numbers"),
        ([None], "float32", "expected numbers"),
        ([1.0], "float16", "float16"),
    ],
    ids=repr,
)
def test_constant_dtype_errors(value, dtype, match):
    with pytest.raises(rlx.DTypeError, match=match):
        rlx.Graph("c").constant(value, dtype)


# -- linear -----------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [None, "gelu", "relu"])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_transpose_w_reads_out_in_weights(rng, activation, bias):
    w, b = rand(rng, (6, 5), F32), rand(rng, (6,), F32)  # [out, in], as PyTorch stores it
    g = rlx.Graph("lin", dims={"n": (1, 32)})
    x = g.input("x", ("n", 5))
    bv = g.param("b", (6,)) if bias else None
    y = g.linear(x, g.param("w", (6, 5)), bv, activation=activation, transpose_w=True)
    assert y.shape == ("n", 6)
    g.output("y", y)
    acts = {None: lambda t: t, "gelu": gelu_ref, "relu": lambda t: np.maximum(t, 0.0)}
    params = {"w": w, **({"b": b} if bias else {})}
    variants = []
    for n in (1, 4, 19):
        xv = rand(rng, (n, 5), F32)
        pre = ref64(xv) @ w.T + (b if bias else 0.0)
        variants.append(({"n": n}, {"x": xv}, {"y": acts[activation](pre)}))
    run_variants(g, variants, params=params)
    # Without transpose_w the same [6, 5] weight does not fit an input of width 5.
    with pytest.raises(rlx.ShapeError):
        g.linear(x, g.param("w2", (6, 5)))


def test_a_numpy_scalar_input_is_named_as_such():
    g = rlx.Graph("s")
    g.output("y", g.neg(g.input("x", ())))
    exe = rlx.ModelCompilePipeline(g).get_or_compile()
    with pytest.raises(rlx.DTypeError, match=r"got numpy\.float32; convert with np\.asarray"):
        exe.run(x=np.float32(2.0))
    np.testing.assert_array_equal(exe.run(x=np.asarray(np.float32(2.0)))["y"], np.array(-2.0, F32))


def _rotary_ref(x, offsets, theta):
    """Hugging Face's Llama formula: rotate_half with cos/sin of position x inv_freq."""
    b, h, s, d = x.shape
    inv_freq = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    pos = np.asarray(offsets, np.float64).reshape(-1, 1) + np.arange(s)  # [b or 1, s]
    ang = pos[..., None] * inv_freq  # [b or 1, s, d/2]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None]
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


@pytest.mark.parametrize("offsets,dtype", [([0, 5], "int64"), ([7], "int32"), ([4096, 0], "int64")])
def test_rotary_matches_the_llama_formula(offsets, dtype):
    g = rlx.Graph("rope", dims={"s": (1, 64)})
    x = g.input("x", (2, 4, "s", 16))
    off = g.input("off", (len(offsets),), dtype)
    g.output("y", g.rotary(x, off, theta=10000.0))
    xs = np.random.default_rng(len(offsets)).standard_normal((2, 4, 9, 16)).astype(np.float32)
    got = rlx.ModelCompilePipeline(g).get_or_compile(s=9).run(x=xs, off=np.array(offsets, dtype))["y"]
    np.testing.assert_allclose(got, _rotary_ref(xs.astype(np.float64), offsets, 10000.0), rtol=1e-5, atol=1e-5)


def test_rotary_decode_steps_reuse_one_variant():
    """The position comes from the offset input, not from a compiled dim: one variant serves
    every decode step."""
    g = rlx.Graph("rope1")
    x = g.input("x", (1, 2, 1, 8))
    off = g.input("off", (1,), "int64")
    g.output("y", g.rotary(x, off))
    pipe = rlx.ModelCompilePipeline(g)
    xs = np.random.default_rng(0).standard_normal((1, 2, 1, 8)).astype(np.float32)
    for step in (0, 1, 100, 2047):
        got = pipe.get_or_compile().run(x=xs, off=np.array([step]))["y"]
        np.testing.assert_allclose(got, _rotary_ref(xs.astype(np.float64), [step], 10000.0), rtol=1e-5, atol=1e-5)
    assert pipe.stats["compiles"] == 1


def test_rotary_mistakes_are_typed_errors():
    g = rlx.Graph("bad")
    x5 = g.input("x5", (1, 2, 3, 5))
    x = g.input("x", (2, 2, 3, 4))
    off = g.input("off", (1,), "int64")
    with pytest.raises(rlx.ShapeError, match="even"):
        g.rotary(x5, off)
    with pytest.raises(rlx.DTypeError, match="offset"):
        g.rotary(x, g.input("f", (1,)))
    with pytest.raises(rlx.ShapeError, match="3 values for a batch of 2"):
        g.rotary(x, g.input("o3", (3,), "int64"))
    with pytest.raises(rlx.GraphError, match="theta"):
        g.rotary(x, off, theta=0.5)


def _gqa_ref(q, k, v, causal):
    """Grouped-query attention as Hugging Face's Llama does it: repeat each kv head for its
    group of query heads; a causal query i (of sq) sees keys j <= i + sk - sq (the past)."""
    h, kvh = q.shape[1], k.shape[1]
    k, v = np.repeat(k, h // kvh, axis=1), np.repeat(v, h // kvh, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    sq, sk = q.shape[2], k.shape[2]
    if causal:
        s = np.where(np.arange(sk)[None, :] <= np.arange(sq)[:, None] + sk - sq, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("kv_heads,past,new", [(2, 5, 3), (1, 0, 4), (4, 11, 1)])
def test_grouped_query_attention_over_a_past_matches_numpy(kv_heads, past, new):
    g = rlx.Graph("gqa")
    q = g.input("q", (2, 4, new, 8))
    k = g.input("k", (2, kv_heads, past + new, 8))
    v = g.input("v", (2, kv_heads, past + new, 6))
    g.output("y", g.attention(q, k, v, causal=True))
    rng = np.random.default_rng(past)
    qs, ks, vs = (rng.standard_normal(s).astype(np.float32) for s in
                  [(2, 4, new, 8), (2, kv_heads, past + new, 8), (2, kv_heads, past + new, 6)])
    got = rlx.ModelCompilePipeline(g).get_or_compile().run(q=qs, k=ks, v=vs)["y"]
    want = _gqa_ref(qs.astype(np.float64), ks.astype(np.float64), vs.astype(np.float64), True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(rlx.ShapeError, match="do not divide"):
        g.attention(q, g.input("k3", (2, 3, past + new, 8)), g.input("v3", (2, 3, past + new, 6)))
