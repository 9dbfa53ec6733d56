"""Property-based fuzzing (hypothesis) of rlx's Python front: random `rlx.Graph` builder programs,
specialized with random bindings, random params bound, run on random inputs.

The property, for every step (building, `ModelCompilePipeline`, `specialize` / `get_or_compile`,
`bind_params` / `set_param`, `run`): it succeeds, or it raises an rlx error (`rlx.RlxError` and
its subclasses) or `MemoryError` (over the memory budget). A gather index out of range is the
builtin `IndexError` (documented in RELIABILITY.md, C), accepted from `run` only. Anything else
fails: pyo3's `PanicException` (a Rust panic; it derives from `BaseException`), `SystemError`,
a raw `TypeError` / `ValueError` / `IndexError` / `KeyError` / `OverflowError`. A crash kills the
process (pytest's faulthandler prints the stack); a hang is stopped by a watchdog after
`RLX_FUZZ_TIMEOUT` seconds (default 60) in one example, which dumps every thread's stack and exits.

Strategies draw the dims (declared symbols with valid, empty, negative, huge and ill-typed bounds;
shapes with ints, 0, huge, negative, bools, floats, symbols, expressions and junk), dtypes (rlx,
numpy and invalid names and objects), every builder op with well-formed arguments most of the
time and wild ones otherwise (axes, perms, slice bounds, reshape targets, constants, activations
and op names), bindings in and out of bounds (and of wrong types, missing or unknown), params
(right, wrong shape or dtype, big-endian, non-contiguous, negatively strided, Fortran-ordered,
misaligned, bool bytes other than 0/1, lists, scalars, copy=True) and inputs (NaN, +-Inf,
denormals, empty arrays, wrong shapes, dtypes and layouts, missing and unknown names). Runs that
succeed are repeated: the second run must give bit-identical outputs and must not change the
arrays the first returned. Two more properties: random valid graphs compiled by two pipelines
give bit-identical outputs, and elementwise chains match a float64 numpy reference.

Budget: the hypothesis profile "rlx-fuzz" (registered here) runs, by default (CI), 1000 random
programs, 400 determinism and 400 numpy-reference examples (about 12 s on 2 cores; with
tests/test_fuzz_formats.py about 20 s). `RLX_FUZZ_EXAMPLES=N` runs N examples in every test
(e.g. `RLX_FUZZ_EXAMPLES=2000`, about 40 s for this file). `RLX_FUZZ_TIMEOUT` (seconds,
default 60) bounds one example; `RLX_FUZZ_VERBOSE=1` puts error messages in the statistics.
The seed is random each run (derandomize=False); a failure prints the seed and a
`@reproduce_failure` blob. No example database is written. Count the examples with::

    pytest tests/test_fuzz_graph.py --hypothesis-show-statistics

Known rlx bugs could be tolerated by name in `fuzz_support.KNOWN` (empty: the bugs this fuzzer
found are fixed, with regression tests at the end of this file); any other raw exception fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import event, given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rlx  # noqa: E402
from fuzz_support import _bounded_memory_and_time, attempt, budget, watchdog  # noqa: E402,F401 (fixture)

# numpy warns when rlx converts on request (constant(dtype=...), set_param(copy=True)) and when
# the harness makes wrong-dtype arrays from NaN / Inf; both are meant.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:Casting complex values to real:Warning")

# -- strategies: names, dims, shapes, dtypes ---------------------------------------------------

SYMBOLS = ["n", "m", "batch", "seq"]
WEIRD_NAMES = ["", " ", "a b", "n*m", "1x", "é", "x" * 200, "\x00", "batch"]

bound_strategy = st.one_of(
    st.integers(0, 3).flatmap(lambda lo: st.tuples(st.just(lo), st.integers(lo, lo + 6))),
    st.sampled_from([(1, 4096), (0, 2**31), (0, 2**62), (1, 2**63 - 1), (0, 0), (7, 7)]),
    st.sampled_from([(5, 1), (-1, 3), (-(2**63), 0), (0, 2**63), (0, 2**70), (1.5, 3), ("1", 3), (True, 3),
                     None, 4, (1, 2, 3), (1,), [1, 3], (np.int64(1), np.int64(5)), (1, np.float32(3))]),
)

_GOOD_DTYPES = [None, "float32", "f32", "int64", "i64", "int32", "i32", "bool", np.float32, np.int64, np.int32,
                np.bool_, bool, int, np.dtype("float32"), np.dtype(">f4")]
_BAD_DTYPES = ["float16", "float64", "", "F32", "uint8", "complex64", "nonsense", 3, 2.5, object, float,
               np.float64, np.dtype("f4,f4"), [("a", "f4")], b"float32", "S3"]
dtype_strategy = st.one_of(st.sampled_from(_GOOD_DTYPES[:8]), st.sampled_from(_GOOD_DTYPES), st.sampled_from(_BAD_DTYPES))

_WILD_DIMS = [-1, -5, 2**31, 2**40, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63), 1.0, 2.5, math.nan, True, False, None, "",
              "(", "n/2", "n-", "-n", "1e3", "zz", "9" * 30, "n*n*n*n*n*n*n*n", "4611686018427387904*4", b"n",
              np.int64(3), np.int32(2), np.float32(2), [2], (1,)]


def dim_strategy(symbols):
    parts = [st.integers(0, 5), st.integers(1, 4)]
    if symbols:
        sym = st.sampled_from(symbols)
        parts += [sym, sym, st.builds(lambda a, b, op: f"{a}{op}{b}", sym, st.one_of(sym, st.integers(1, 3).map(str)),
                                      st.sampled_from(["*", "+", "-"])),
                  st.builds(lambda k, a: f"{k}*{a}", st.integers(2, 3), sym)]
    return st.one_of(st.one_of(*parts), st.one_of(*parts), st.one_of(*parts), st.sampled_from(_WILD_DIMS))


def shape_strategy(symbols, max_rank=4):
    dims = st.lists(dim_strategy(symbols), max_size=max_rank)
    return st.one_of(dims.map(tuple), dims.map(tuple), dims,
                     st.sampled_from(["n", 3, None, {"a": 1}, np.array([2, 3]), range(2), (2.0, 3)]))


def _small(shape) -> bool:
    """A shape the harness may allocate: ints >= 0, at most 1e6 elements counting zero dims as 1
    (numpy cannot describe [0, 2**62] at all)."""
    return all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape) and (
        np.prod([max(d, 1) for d in shape], dtype=np.float64) <= 1e6)


def static_shape(max_rank=3, max_dim=5):
    return st.lists(st.integers(0, max_dim), min_size=1, max_size=max_rank).map(tuple)


# -- strategies: arrays ------------------------------------------------------------------------

_SPECIALS_F32 = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.4e38, -3.4e38, 1e-45, -1e-45, 1.0, -1.0, 88.7, -104.0],
                         np.float32)
_INT_EXTREMES = [np.iinfo(np.int64).min, np.iinfo(np.int64).max, -1, 0, 1, 2**31, -(2**31)]


def values(draw, shape, dtype, finite=False):
    """A C-contiguous array of `shape` and `dtype` with reproducible contents."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="rng seed"))
    n = int(np.prod(shape, dtype=np.int64))
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        a = rng.standard_normal(n).astype(np.float32) * np.float32(draw(st.sampled_from([1.0, 4.0, 1e3]), label="scale"))
        if not finite and n and draw(st.booleans(), label="specials"):
            idx = rng.integers(0, n, size=max(1, n // 4))
            a[idx] = rng.choice(_SPECIALS_F32, size=idx.size)
    elif dtype.kind == "i":
        a = rng.integers(-3, 7, n).astype(dtype)
        if not finite and n and draw(st.booleans(), label="int extremes"):
            a[rng.integers(0, n)] = dtype.type(np.clip(rng.choice(_INT_EXTREMES), np.iinfo(dtype).min, np.iinfo(dtype).max))
    elif dtype == np.bool_:
        a = rng.integers(0, 2, n).astype(bool)
    else:
        a = rng.standard_normal(n).astype(dtype)
    return a.reshape(shape)


_ARRAY_MUTATIONS = ["float64", "float16", "int8", "uint8", "big-endian", "object", "complex", "bool-bytes", "extra dim",
                    "missing dim", "dim+1", "empty", "0-d", "non-contiguous", "reversed", "fortran", "misaligned",
                    "read-only", "list", "scalar", "None", "str", "masked", "matrix-like 2d"]


def mutated(draw, a: np.ndarray):
    """A mistake made from `a` (a valid array): (array, name of the mutation)."""
    kind = draw(st.sampled_from(_ARRAY_MUTATIONS), label="mutation")
    shape = a.shape
    if kind in ("float64", "float16", "int8", "uint8", "complex"):
        return a.astype({"complex": np.complex64}.get(kind, kind)), kind
    if kind == "big-endian":
        return a.astype(a.dtype.newbyteorder(">")), kind
    if kind == "object":
        return a.astype(object), kind
    if kind == "bool-bytes":
        raw = np.full(shape, 2, np.uint8)
        return raw.view(bool), kind
    if kind == "extra dim":
        return a[..., None], kind
    if kind == "missing dim":
        if a.ndim >= 2:
            return np.zeros(shape[:-1], a.dtype), kind
        return (np.array(a.reshape(-1)[0]) if a.size else np.zeros((), a.dtype)) if a.ndim == 1 else a.reshape(1), kind
    if kind == "dim+1":
        return (np.concatenate([a, a[..., :1] if a.shape[-1] else np.zeros(shape[:-1] + (1,), a.dtype)], axis=-1)
                if a.ndim else a.reshape(1)), kind
    if kind == "empty":
        return np.zeros((0,) + shape[1:], a.dtype), kind
    if kind == "0-d":
        return np.array(a.reshape(-1)[0] if a.size else 0, a.dtype), kind
    if kind == "non-contiguous":
        if a.ndim == 0:
            return a, kind
        big = np.repeat(a, 2, axis=-1)
        return big[..., ::2], kind
    if kind == "reversed":
        return a[::-1] if a.ndim else a, kind
    if kind == "fortran":
        return np.asfortranarray(a), kind
    if kind == "misaligned":
        buf = np.zeros(a.nbytes + a.itemsize + 1, np.uint8)
        m = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(shape)
        return m, kind
    if kind == "read-only":
        b = a.copy()
        b.flags.writeable = False
        return b, kind
    if kind == "list":
        return a.tolist(), kind
    if kind == "scalar":
        return (a.reshape(-1)[0] if a.size else a.dtype.type(0)), kind
    if kind == "None":
        return None, kind
    if kind == "str":
        return "x", kind
    if kind == "masked":
        return np.ma.masked_array(a, mask=np.zeros(shape, bool)), kind
    return a.reshape(a.size, 1) if a.ndim != 2 else a.T.copy(), kind


# -- the builder fuzzer ------------------------------------------------------------------------

_UNARY = ["relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "exp", "neg", "log", "sqrt", "rsqrt", "abs", "erf"]
_BINARY = ["add", "sub", "mul", "div", "maximum", "minimum", "max", "min", "pow"]
_COMPARE = ["eq", "ne", "lt", "le", "gt", "ge"]
_REDUCE = ["reduce_sum", "reduce_mean", "reduce_max"]
_BAD_OPS = ["nope", "", "RELU", "softmax", "reduce_min", "add ", "é", "max"]
_OPS = ["unary", "binary", "compare", "where", "matmul", "linear", "softmax", "layer_norm", "rms_norm", "reshape",
        "transpose", "concat", "slice", "gather", "cast", "reduce", "attention", "constant", "scalar", "output",
        "conv", "pool", "lrn"]
# Window arguments a mistaken caller passes: zero or negative sizes, overflowing ones, non-ints.
_WILD_WINDOW = [0, -1, -(2**63), 2**40, 2**63 - 1, 2**63, 1.5, None, "2", True]

_OTHER = rlx.Graph("other")
_OTHER_VALUE = _OTHER.input("q", (2,))


class GraphFuzzer:
    def __init__(self, data, tame: bool = False):
        self.data = data
        self.tame = tame  # well-formed arguments only (for the determinism property)
        # How often a decision goes wild: never, as drawn (1), or a quarter as often (4).
        self.rarity = 0 if tame else data.draw(st.sampled_from([0, 1, 4, 4]), label="rarity of mistakes")
        self.vals: list = []
        self.leaves: dict = {}  # name -> (kind, declared shape, dtype) of inputs and params that were made
        self.n_names = 0
        self.has_gather = False  # a run may then raise the documented IndexError
        self.ops_ok: set = set()  # kinds of op that made a value
        self.symbols: list = []
        self.g = None

    def draw(self, strategy, label=None):
        return self.data.draw(strategy, label=label)

    def wild(self, p: int = 5) -> bool:
        """True with probability 1/(p * rarity) (never when rarity is 0)."""
        # The middle value: hypothesis favours the ends of a range (and shrinks towards 0, so a
        # shrunk example keeps only the mistakes it needs).
        k = p * self.rarity
        return bool(k) and self.draw(st.integers(0, k - 1), label="wild?") == k // 2

    def name(self, prefix: str) -> str:
        if self.wild(8):
            return self.draw(st.one_of(st.sampled_from(WEIRD_NAMES + ["x1", "p1"]), st.text(max_size=5)), label="name")
        self.n_names += 1
        return f"{prefix}{self.n_names}"

    def pick(self, label="value"):
        if self.wild(200):
            return _OTHER_VALUE
        if self.draw(st.booleans(), label=f"{label}: recent?"):
            return self.vals[-1]
        return self.vals[self.draw(st.integers(0, len(self.vals) - 1), label=label)]

    def axis(self, v, label="axis"):
        r = len(v.shape)
        if self.wild(6):
            return self.draw(st.sampled_from([r, -r - 1, 2**40, -(2**40), 2**63 - 1, -(2**63)] + [2**63, 2**70] * self.wild(3)), label=label)
        return self.draw(st.integers(-r, r - 1), label=label) if r else 0

    # builders

    def graph(self):
        if not self.wild(3):
            dims = {s: self.draw(st.integers(0, 3).flatmap(lambda lo: st.tuples(st.just(lo), st.integers(max(lo, 1), lo + 6))), label=f"bounds {s}")
                    for s in self.draw(st.lists(st.sampled_from(SYMBOLS), max_size=2, unique=True), label="symbols")}
        else:
            dims = self.draw(st.one_of(
                st.dictionaries(st.sampled_from(SYMBOLS), bound_strategy, max_size=3),
                st.dictionaries(st.one_of(st.sampled_from(WEIRD_NAMES), st.integers(), st.none()), bound_strategy, max_size=2),
                st.sampled_from([None, {}]),
            ), label="Graph dims")
        ok, g = attempt("Graph", rlx.Graph, "fuzz", dims=dims)
        if not ok:
            g = rlx.Graph("fuzz")
        self.g = g
        for _ in range(self.draw(st.integers(1, 2), label="Graph.dim calls") if self.wild(3) else 0):
            name = self.draw(st.one_of(st.sampled_from(SYMBOLS), st.sampled_from(WEIRD_NAMES)), label="dim name")
            lo = self.draw(st.sampled_from([0, 1, 2, -1, 2**62, 2**63 - 1, -(2**63)] + [2**63] * self.wild(4)), label="dim min")
            hi = self.draw(st.sampled_from([1, 4, 8, 0, -1, 2**62, 2**63 - 1] + [2**63, 2**70] * self.wild(4)), label="dim max")
            attempt("Graph.dim", g.dim, name, lo, hi)
        ok, dims = attempt("Graph.dims", lambda: g.dims)
        self.symbols = sorted(dims) if ok else []
        return g

    def make(self, kind: str, name, shape, dtype=None):
        """g.input / g.param, recorded for binding and feeding; the Value or None."""
        ok, v = attempt(f"Graph.{kind}", getattr(self.g, kind), name, shape, dtype)
        if not ok:
            return None
        self.leaves.setdefault(name, (kind, v.shape, v.dtype))
        return v

    def leaf(self, kind: str):
        if kind == "input":
            shape = (self.draw(st.lists(st.one_of(st.integers(1, 4), st.sampled_from(self.symbols or [2])), min_size=1, max_size=3).map(tuple), label="input shape")
                     if not self.wild(3) else self.draw(shape_strategy(self.symbols), label="input shape"))
        else:
            shape = self.draw(static_shape(), label="param shape") if not self.wild(4) else self.draw(shape_strategy(self.symbols), label="param shape")
        dtype = self.draw(st.sampled_from([None] * 5 + ["float32"] * 5 + ["int64", "int32", "bool"]) if not self.wild(4)
                          else dtype_strategy, label=f"{kind} dtype")
        v = self.make(kind, self.name("x" if kind == "input" else "p"), shape, dtype)
        if v is not None:
            self.vals.append(v)
        return v

    def like(self, v, label="operand"):
        """A second operand for v: v itself, another value, or a new param / constant that broadcasts."""
        how = self.draw(st.sampled_from(["same", "same", "other", "param", "constant", "scalar"]), label=label)
        if how == "same":
            return v
        if how == "other":
            return self.pick(label)
        last = v.shape[-1] if v.shape else 1
        shape = (last,) if isinstance(last, int) and 0 <= last <= 64 else (1,)
        if how == "param":
            return self.make("param", self.name("p"), shape, v.dtype) or v
        if how == "constant":
            data = values(self.draw, shape, v.dtype, finite=self.tame)
            ok, c = attempt("constant", self.g.constant, data)
            return c if ok else v
        ok, c = attempt("scalar", self.g.scalar, self.draw(st.floats(-4, 4, width=32), label="scalar"))
        return c if ok else v

    def weight(self, x, transpose_w=False):
        k = x.shape[-1] if x.shape else 1
        k = k if isinstance(k, int) and 0 <= k <= 64 and not self.wild(6) else self.draw(st.integers(0, 5), label="k")
        n = self.draw(st.integers(0 if self.wild(4) else 1, 5), label="out features")
        return self.make("param", self.name("w"), (n, k) if transpose_w else (k, n)), n

    def image(self, x):
        """x, or mostly where x is not one, a new input [batch, c, spatial..] of static channels."""
        if len(x.shape) >= 3 or self.wild(3) or not self.draw(st.integers(0, 3), label="new image?"):
            return x
        batch = self.draw(st.sampled_from(self.symbols + [1, 2]), label="image batch")
        spatial = self.draw(st.lists(st.integers(1, 6), min_size=1, max_size=2), label="image size")
        v = self.make("input", self.name("img"), (batch, self.draw(st.integers(1, 4), label="channels"), *spatial), "float32")
        if v is None:
            return x
        self.vals.append(v)
        return v

    def window(self, x):
        """Kernel, strides, pads and dilations over x's spatial axes (those after [batch, c]):
        fitting ones, or wild values and lengths."""
        spatial = list(x.shape[2:])
        n = len(spatial)
        fit = [d if isinstance(d, int) and d >= 1 else 1 for d in spatial]
        kernel = [self.draw(st.integers(1, min(f, 3)), label="kernel") for f in fit]
        strides = self.draw(st.none() | st.just([self.draw(st.integers(1, 3), label="stride")] * n), label="strides")
        pads = self.draw(st.none() | st.just([min(k - 1, 1) for k in kernel] * 2), label="pads")
        dilations = None
        if self.wild(2):
            which = self.draw(st.sampled_from(["kernel", "strides", "pads", "dilations", "length"]), label="wild window")
            bad = self.draw(st.sampled_from(_WILD_WINDOW), label="wild window value")
            if which == "length":
                kernel = kernel + [1]
            elif which == "kernel":
                kernel = [bad] * max(n, 1)
            elif which == "strides":
                strides = [bad] * n
            elif which == "pads":
                pads = [bad] * (2 * n)
            else:
                dilations = [bad] * n
        return kernel, strides, pads, dilations

    def conv(self, x):
        """A convolution of x with a param weight [m, c / groups, kernel..] (a bias, groups)."""
        c = x.shape[1] if len(x.shape) >= 2 else 1
        c = c if isinstance(c, int) and 1 <= c <= 16 else 1
        groups = self.draw(st.sampled_from([1, 1, c]), label="groups") if not self.wild(4) else self.draw(
            st.sampled_from([0, -1, 3, c + 1, 2**63, 2**64]), label="groups")
        g_ok = isinstance(groups, int) and groups >= 1
        m = self.draw(st.integers(1, 4), label="out channels") * (groups if g_ok and groups <= 16 else 1)
        kernel, strides, pads, dilations = self.window(x)
        wshape = (m, c // groups if g_ok and c % groups == 0 else c) + tuple(kernel if all(isinstance(k, int) and 0 <= k < 64 for k in kernel) else ())
        w = self.make("param", self.name("w"), wshape if not self.wild(6) else self.draw(static_shape(), label="weight shape"))
        b = None
        if w is not None and self.draw(st.booleans(), label="conv bias"):
            b = self.make("param", self.name("b"), (m,) if not self.wild(6) else self.draw(static_shape(), label="bias shape"))
        if w is None:
            return False, None
        return attempt("conv", self.g.conv, x, w, b, strides, pads, dilations, groups)

    def op(self):
        g = self.g
        op = self.draw(st.sampled_from(_OPS if not self.tame else [o for o in _OPS if o != "output"]), label="op") if not self.wild(100) else "other-graph"
        x = self.pick("x")
        out = None
        if op == "unary":
            name = self.draw(st.sampled_from(_UNARY if not self.wild(10) else _BAD_OPS), label="unary op")
            via = self.draw(st.booleans(), label="via unary()")
            fn = (lambda: g.unary(name, x)) if via or name not in _UNARY else (lambda: getattr(g, name)(x))
            ok, out = attempt("unary", fn)
        elif op == "binary":
            name = self.draw(st.sampled_from(_BINARY if not self.wild(10) else _BAD_OPS), label="binary op")
            y = self.like(x)
            if name in _BINARY and self.draw(st.booleans(), label="method"):
                ok, out = attempt("binary", getattr(g, name), x, y)
            else:
                ok, out = attempt("binary", g.binary, {"maximum": "max", "minimum": "min"}.get(name, name), x, y)
        elif op == "compare":
            name = self.draw(st.sampled_from(_COMPARE if not self.wild(10) else _BAD_OPS), label="compare op")
            ok, out = attempt("compare", g.compare, name, x, self.like(x))
        elif op == "where":
            c_ok, cond = attempt("compare", g.gt, x, self.like(x))
            cond = cond if c_ok and not self.wild(6) else self.pick("cond")
            ok, out = attempt("where", g.where, cond, x, self.like(x))
        elif op == "matmul":
            w = self.weight(x)[0] if self.draw(st.booleans(), label="matmul with param") else self.pick("b")
            ok, out = attempt("matmul", g.matmul, x, w) if w is not None else (False, None)
        elif op == "linear":
            t = self.draw(st.booleans(), label="transpose_w")
            w, n_out = self.weight(x, t)
            b = None
            if w is not None and self.draw(st.booleans(), label="bias"):
                b = self.make("param", self.name("b"), (n_out,) if not self.wild(6) else self.draw(static_shape(), label="bias shape"))
            act = self.draw(st.one_of(st.none(), st.sampled_from(_UNARY), st.sampled_from(_BAD_OPS)) if self.wild(3)
                            else st.one_of(st.none(), st.sampled_from(["relu", "gelu", "tanh", "sigmoid"])), label="activation")
            ok, out = attempt("linear", g.linear, x, w, b, activation=act, transpose_w=t) if w is not None else (False, None)
        elif op == "softmax":
            ok, out = attempt("softmax", g.softmax, x, axis=self.axis(x))
        elif op in ("layer_norm", "rms_norm"):
            gamma = self.like(x, "gamma")
            eps = self.draw(st.sampled_from([1e-5, 1e-6, 0.0]) if not self.wild(3) else
                            st.one_of(st.sampled_from([1e-5, 0.0, -1.0, math.nan, math.inf, 1e30, 1e-45]), st.floats(width=32)), label="eps")
            if op == "layer_norm":
                ok, out = attempt("layer_norm", g.layer_norm, x, gamma, self.like(x, "beta"), eps=eps)
            else:
                ok, out = attempt("rms_norm", g.rms_norm, x, gamma, eps=eps)
        elif op == "reshape":
            how = self.draw(st.sampled_from(["flatten", "lead", "split", "same", "random"]), label="reshape")
            s = tuple(x.shape)
            target = {"flatten": (-1,), "lead": s[:1] + (-1,), "same": s,
                      "split": (s[:-1] + (1, -1)) if s else (1,)}.get(how)
            if target is None or self.wild(8):
                target = self.draw(shape_strategy(self.symbols), label="reshape target")
            ok, out = attempt("reshape", g.reshape, x, target)
        elif op == "transpose":
            r = len(x.shape)
            perm = (self.draw(st.permutations(list(range(r))), label="perm") if not self.wild(5) else
                    self.draw(st.lists(st.sampled_from([0, 1, -1, r, -r - 1, 2**40, -(2**63), 2**63, 2**70]), max_size=r + 1), label="perm"))
            if self.draw(st.booleans(), label="negative axes"):
                perm = [p - r for p in perm] if all(isinstance(p, int) and 0 <= p < r for p in perm) else perm
            ok, out = attempt("transpose", g.transpose, x, perm)
        elif op == "concat":
            parts = [x] + [self.like(x, "concat part") for _ in range(self.draw(st.integers(0, 2), label="concat parts"))]
            if self.wild(10):
                parts = []
            ok, out = attempt("concat", g.concat, parts, axis=self.axis(x))
        elif op == "slice":
            bound = st.one_of(st.integers(-4, 5), st.sampled_from(self.symbols or [3]),
                              st.sampled_from([f"{s}-1" for s in self.symbols] or [1]))
            if self.wild(3):
                bound = st.one_of(bound, st.sampled_from([2**40, -(2**40), 2**63 - 1, -(2**63), 2**63, 1.5, True, None, "", "zz", "n*"]))
            start = self.draw(bound, label="slice start")
            end = self.draw(st.one_of(st.none(), bound), label="slice end")
            ok, out = attempt("slice", g.slice, x, self.axis(x), start, end)
        elif op == "gather":
            how = self.draw(st.sampled_from(["input", "constant", "value"]), label="indices")
            idx = None
            if how == "input":
                idx = self.make("input", self.name("i"),
                                self.draw(st.lists(st.one_of(st.integers(0, 4), st.sampled_from(self.symbols or [2])), max_size=2).map(tuple), label="indices shape"),
                                self.draw(st.sampled_from(["int64", "int32", "float32", "bool"]), label="indices dtype"))
                ok = idx is not None
            elif how == "constant":
                data = self.draw(st.lists(st.integers(-5, 6) | st.sampled_from(_INT_EXTREMES), max_size=4), label="index constant")
                ok, idx = attempt("constant", g.constant, np.array(data, self.draw(st.sampled_from([np.int64, np.int32]), label="index dtype")) if all(
                    -(2**31) <= d < 2**31 for d in data) else np.array(data, np.int64))
            else:
                ok, idx = True, self.pick("indices")
            ok, out = attempt("gather", g.gather, x, idx, axis=self.axis(x)) if ok else (False, None)
            self.has_gather |= ok
        elif op == "conv":
            ok, out = self.conv(self.image(x))
        elif op == "pool":
            x = self.image(x)
            kernel, strides, pads, dilations = self.window(x)
            if self.draw(st.booleans(), label="max pool"):
                ok, out = attempt("max_pool", g.max_pool, x, kernel, strides, pads, dilations,
                                  ceil_mode=self.draw(st.booleans(), label="ceil_mode"))
            else:
                ok, out = attempt("avg_pool", g.avg_pool, x, kernel, strides, pads,
                                  ceil_mode=self.draw(st.booleans(), label="ceil_mode"),
                                  count_include_pad=self.draw(st.booleans(), label="count_include_pad"), dilations=dilations)
        elif op == "lrn":
            size = self.draw(st.integers(1, 5) if not self.wild(4) else st.sampled_from(_WILD_WINDOW), label="lrn size")
            alpha = self.draw(st.sampled_from([1e-4, 0.5]) if not self.wild(4) else st.sampled_from([math.nan, math.inf, -1.0]), label="alpha")
            ok, out = attempt("lrn", g.lrn, x, size, alpha=alpha)
        elif op == "cast":
            ok, out = attempt("cast", g.cast, x, self.draw(dtype_strategy if self.wild(2) else st.sampled_from(["float32", "int64", "int32", "bool"]), label="cast to"))
        elif op == "reduce":
            name = self.draw(st.sampled_from(_REDUCE if not self.wild(10) else _BAD_OPS), label="reduce op")
            r = len(x.shape)
            axes = self.draw(st.one_of(st.none(), st.integers(-r, r - 1) if r else st.none(),
                                       st.lists(st.integers(-r, r - 1), min_size=1, max_size=r, unique=True) if r else st.none()), label="axes")
            if self.wild(5):
                axes = self.draw(st.sampled_from([(), [], "0", 1.0, True, [0, 0], [0, -r] if r else [0, 0], {0: 1}, [None], 2**70, [2**63], r, -r - 1]), label="axes")
            keep = self.draw(st.booleans(), label="keep_dim")
            if name in _REDUCE and self.draw(st.booleans(), label="method"):
                ok, out = attempt("reduce", getattr(g, name), x, axes=axes, keep_dim=keep)
            else:
                ok, out = attempt("reduce", g.reduce, name, x, axes=axes, keep_dim=keep)
        elif op == "attention":
            if self.draw(st.booleans(), label="fresh q/k/v"):
                b = self.draw(st.sampled_from([1, 2] + self.symbols), label="attn batch")
                s = self.draw(st.sampled_from([1, 3] + self.symbols), label="attn seq")
                shape = (b, self.draw(st.integers(1, 2), label="heads"), s, self.draw(st.integers(0, 4), label="head dim"))
                q, k, v = (self.make("input", self.name("a"), shape) for _ in range(3))
                if q is None or k is None or v is None:
                    return
                mask = None
                if self.draw(st.booleans(), label="mask"):
                    mask = self.make("input", self.name("mask"), (b, s),
                                     self.draw(st.sampled_from(["float32", "bool", "int64", "int32"]), label="mask dtype"))
            else:
                q, k, v = x, self.pick("k"), self.pick("v")
                mask = self.pick("mask") if self.draw(st.booleans(), label="mask") else None
            scale = self.draw(st.one_of(st.none(), st.sampled_from([0.5, 0.0, -1.0, math.nan, math.inf, 1e30])), label="scale")
            ok, out = attempt("attention", g.attention, q, k, v, mask=mask, scale=scale, causal=self.draw(st.booleans(), label="causal"))
        elif op == "constant":
            value = self.draw(st.one_of(
                st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
                st.lists(st.lists(st.integers(-3, 3), max_size=3), max_size=3),  # ragged sometimes
                st.sampled_from([0, 1.5, True, 2**70, -(2**63), None, "abc", b"ab", {"a": 1}, [None], [1, "a"], [],
                                 np.zeros((0, 3), np.float32), np.float32(2), np.int64(-1), np.zeros(3, np.float16),
                                 np.zeros(2, np.float64), np.zeros(2, np.uint8), np.array([object()]), np.zeros(2, np.complex64),
                                 np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2], np.zeros(2, ">i8")]),
            ), label="constant value")
            dtype = self.draw(st.one_of(st.none(), dtype_strategy), label="constant dtype")
            ok, out = attempt("constant", g.constant, value, dtype=dtype)
        elif op == "scalar":
            value = self.draw(st.floats(), label="scalar")
            if self.wild(4):
                value = self.draw(st.sampled_from([10**400, 2**63, -(2**70), 0, True, np.float64(1e300), np.int64(-1)]), label="scalar")
            ok, out = attempt("scalar", g.scalar, value)
        elif op == "output":
            ok, _ = attempt("output", g.output, self.name("o") if not self.wild(4) else self.draw(st.sampled_from(["o1", "", "x1", "o1"]), label="output name"), x)
        elif op == "other-graph":
            ok, out = attempt("binary", g.add, x, _OTHER_VALUE)
        if out is not None and isinstance(out, rlx.Value):
            self.vals.append(out)
            self.ops_ok.add(op)

    def build(self):
        self.graph()
        for _ in range(self.draw(st.integers(1, 3), label="inputs")):
            self.leaf("input")
        for _ in range(self.draw(st.integers(0, 2), label="params")):
            self.leaf("param")
        if not self.vals:
            v = self.make("input", self.name("x"), (2,))
            if v is None:
                return None
            self.vals.append(v)
        for _ in range(self.draw(st.integers(0, 8), label="ops")):
            self.op()
        outs = self.draw(st.integers(0 if self.wild(8) else 1, 3), label="outputs")
        for i in range(outs):
            v = self.vals[-1 - i] if i < len(self.vals) else self.vals[0]
            attempt("output", self.g.output, f"out{i}", v)
        for step, fn in [("Graph.verify", self.g.verify), ("str", lambda: str(self.g)), ("repr", lambda: repr(self.g)),
                         ("len", lambda: len(self.g)), ("names", lambda: (self.g.inputs, self.g.params, self.g.outputs))]:
            attempt(step, fn)
        return self.g

    # compile, bind, run

    def binding(self, dims):
        b = {}
        for s, (lo, hi) in dims.items():
            if not self.wild(5):
                b[s] = self.draw(st.integers(lo, min(hi, lo + 4)), label=f"bind {s}")
            else:
                b[s] = self.draw(st.sampled_from([lo - 1, hi + 1, -1, 2**40, 2**62, 2**63 - 1, 2**63, 2**70, 1.5, True, "3", None,
                                                  np.int64(max(lo, 1)), np.float32(2), np.uint64(2**63)]), label=f"bind {s}")
        if self.wild(8):
            if b and self.draw(st.booleans(), label="drop a symbol"):
                b.pop(next(iter(b)))
            else:
                b[self.draw(st.sampled_from(["zz", "n", "", "batch "]), label="extra symbol")] = 2
        return b

    def array_for(self, shape, dtype, finite=False):
        if not _small(shape):
            return np.zeros(1, np.float32), "stand-in for a shape too big to allocate"
        a = values(self.draw, shape, dtype, finite=finite)
        return mutated(self.draw, a) if self.wild(3) else (a, None)

    def bind(self, target):
        """Binds every param of the graph on `target` (a pipeline or a compiled graph)."""
        params = {}
        for name, (kind, shape, dtype) in self.leaves.items():
            if kind != "param" or not all(isinstance(d, int) for d in shape):
                continue
            params[name], mutation = self.array_for(shape, dtype)
            if mutation:
                event(f"param mutation: {mutation}")
        if self.wild(10):
            params[self.draw(st.sampled_from(["nope", "", "p"]), label="unknown param")] = np.zeros(2, np.float32)
        copy = self.draw(st.booleans(), label="copy")
        if self.draw(st.booleans(), label="bind one by one"):
            for name, arr in params.items():
                attempt("set_param", target.set_param, name, arr, copy=copy)
        else:
            attempt("bind_params", target.bind_params, params, copy=copy) if hasattr(target, "bind_params") else None
        return params

    def feed(self, exe):
        ok, manifest = attempt("manifest", lambda: exe.manifest)
        if not ok:
            return None, False
        feed, clean = {}, True
        for entry in manifest.inputs:
            shape = tuple(entry.shape)
            finite = self.tame and self.draw(st.booleans(), label="finite")
            feed[entry.name], mutation = self.array_for(shape, entry.dtype, finite=finite)
            if mutation:
                event(f"input mutation: {mutation}")
                clean = False
        if self.wild(8):
            how = self.draw(st.sampled_from(["drop", "extra", "non-str key", "not a dict"]), label="feed mistake")
            clean = False
            if how == "drop" and feed:
                feed.pop(next(iter(feed)))
            elif how == "extra":
                feed["zz"] = np.zeros(1, np.float32)
            elif how == "non-str key":
                feed[1] = np.zeros(1, np.float32)
            else:
                feed = list(feed.values())
        return feed, clean


def pipeline_options(data) -> dict:
    """Valid ModelCompilePipeline options: every ISA this CPU runs, with and without the
    optimizer and prepacking (each selects other kernels)."""
    isa = data.draw(st.sampled_from([None, *rlx.available_isas()]), label="isa")
    event(f"isa {isa or rlx.cpu_isa()}")
    return dict(isa=isa, optimize=data.draw(st.booleans(), label="optimize"), prepack=data.draw(st.booleans(), label="prepack"),
                capacity=data.draw(st.sampled_from([1, 2, 8]), label="capacity"))


def check_run_twice(exe, feed, gather: bool, step="run"):
    """Runs; if that works, a second run gives bit-identical outputs and leaves the first intact.
    A gather index out of range is the builtin IndexError (documented), so only with a gather."""
    allow = (IndexError,) if gather else ()
    ok, first = attempt(step, exe.run, feed, allow=allow)
    if not ok:
        return None
    assert isinstance(first, dict), type(first)
    kept = {k: np.array(v, copy=True) for k, v in first.items()}
    ok, second = attempt(step, exe.run, feed, allow=allow)
    assert ok, f"the second run of the same inputs failed: {second!r}"
    assert sorted(first) == sorted(second)
    for k in first:
        assert first[k].tobytes() == kept[k].tobytes(), f"output {k} of the first run changed in the second"
        assert second[k].dtype == kept[k].dtype and second[k].shape == kept[k].shape, k
        assert second[k].tobytes() == kept[k].tobytes(), f"output {k}: two runs of the same inputs differ"
    event("run: ok (twice, bit-identical)")
    return kept


@budget(1.0)
@given(st.data())
def test_random_graph_programs_fail_only_with_rlx_errors(data):
    watchdog()
    fz = GraphFuzzer(data)
    g = fz.build()
    if g is None:
        return
    note(str(g) if len(str(g)) < 4000 else str(g)[:4000])
    kwargs = pipeline_options(data)
    if fz.wild(4):
        kwargs.update(capacity=fz.draw(st.sampled_from([0, -1, 2**70]), label="capacity"))
    if fz.wild(8):
        kwargs.update(isa=fz.draw(st.sampled_from(["zzz", "", "AVX2"]), label="isa"))
    ok, pipe = attempt("ModelCompilePipeline", rlx.ModelCompilePipeline, g, **kwargs)
    if not ok:
        return
    bind_first = fz.draw(st.booleans(), label="bind before compiling")
    if bind_first:
        fz.bind(pipe)
    binding = fz.binding(g.dims)
    note(f"binding {binding!r}")
    how = fz.draw(st.sampled_from(["get_or_compile", "kwargs", "specialize", "manifest_for"]), label="compile via")
    if how == "get_or_compile":
        ok, exe = attempt("get_or_compile", pipe.get_or_compile, binding)
    elif how == "kwargs":
        ok, exe = (attempt("get_or_compile", pipe.get_or_compile, **binding) if all(isinstance(k, str) for k in binding)
                   else attempt("get_or_compile", pipe.get_or_compile, binding))
    elif how == "specialize":
        ok, spec = attempt("specialize", pipe.specialize, binding)
        if ok:
            attempt("report", lambda: (spec.report, spec.report_data, spec.manifest, spec.binding))
        ok, exe = attempt("compile_lir", pipe.compile_lir, spec) if ok else (False, None)
    else:
        attempt("manifest_for", pipe.manifest_for, binding)
        ok, exe = attempt("get_or_compile", pipe.get_or_compile, binding)
    attempt("pipeline info", lambda: (pipe.stats, pipe.report, len(pipe), binding in pipe if isinstance(binding, dict) else None))
    if not ok:
        return
    event("compiled")
    attempt("CompiledGraph info", lambda: (str(exe), repr(exe), exe.missing_params, exe.binding))
    if not bind_first or fz.wild(4):
        fz.bind(exe if fz.draw(st.booleans(), label="bind on the compiled graph") else pipe)
    feed, clean = fz.feed(exe)
    if feed is None:
        return
    out = check_run_twice(exe, feed, fz.has_gather)
    if out is not None:
        for op in sorted(fz.ops_ok):
            event(f"ran a graph with {op}")
        if not clean:
            event("run: ok with a mutated feed")


# -- same graph, two pipelines: bit-identical --------------------------------------------------

@budget(0.4)
@given(st.data())
def test_random_valid_graphs_are_deterministic_across_pipelines(data):
    watchdog()
    fz = GraphFuzzer(data, tame=True)
    g = fz.build()
    if g is None or not g.outputs:
        return
    binding = fz.binding(g.dims)
    params = {}
    for name, (kind, shape, dtype) in fz.leaves.items():
        if kind == "param" and all(isinstance(d, int) for d in shape):
            params[name] = values(fz.draw, shape, dtype)
    results = []
    options = pipeline_options(data)
    for i in range(2):
        ok, pipe = attempt("ModelCompilePipeline", rlx.ModelCompilePipeline, g, **dict(options, capacity=1 + i))
        if not ok:
            return
        ok, _ = attempt("bind_params", pipe.bind_params, params)
        ok, exe = attempt("get_or_compile", pipe.get_or_compile, binding) if ok else (False, None)
        if not ok:
            event("tame graph did not compile")
            return
        if i == 0:
            feed, _ = fz.feed(exe)
        out = check_run_twice(exe, feed, fz.has_gather)
        if out is None:
            return
        results.append(out)
    for op in sorted(fz.ops_ok):
        event(f"ran a graph with {op}")
    assert sorted(results[0]) == sorted(results[1])
    for k in results[0]:
        a, b = results[0][k], results[1][k]
        assert a.dtype == b.dtype and a.shape == b.shape, k
        assert a.tobytes() == b.tobytes(), f"output {k} differs between two pipelines of the same graph"
    event("two pipelines: bit-identical")


# -- elementwise chains against numpy ----------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])
_REF_UNARY = {
    "relu": lambda x: np.maximum(x, 0),
    "abs": np.abs,
    "neg": np.negative,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "erf": _erf,
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
}
_REF_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum, "minimum": np.minimum}


@budget(0.4)
@given(st.data())
def test_elementwise_chains_match_numpy(data):
    watchdog()
    n, k = data.draw(st.integers(0, 5), label="n"), data.draw(st.integers(1, 9), label="k")
    g = rlx.Graph("chain", dims={"n": (0, 8)})
    x = g.input("x", ("n", k))
    p = g.param("p", (k,))
    xs = values(data.draw, (n, k), np.float32, finite=True)
    ps = values(data.draw, (k,), np.float32, finite=True)
    vals = [(x, xs.astype(np.float64))]
    bad = [np.zeros(xs.shape, bool)]
    steps = data.draw(st.lists(st.one_of(st.tuples(st.just("u"), st.sampled_from(sorted(_REF_UNARY)), st.integers(0, 9)),
                                         st.tuples(st.sampled_from(["b", "bp"]), st.sampled_from(sorted(_REF_BINARY)), st.integers(0, 9))),
                               min_size=1, max_size=6), label="chain")
    for kind, name, pick in steps:
        i = len(vals) - 1 - pick % len(vals)
        (v, r), m = vals[i], bad[i]
        if kind == "u":
            out, ref = g.unary(name, v), _REF_UNARY[name](r)
        else:
            (w, rw), mw = ((p, ps.astype(np.float64)), np.zeros(ps.shape, bool)) if kind == "bp" else (vals[-1], bad[-1])
            out = g.binary({"maximum": "max", "minimum": "min"}[name] if name in ("maximum", "minimum") else name, v, w)
            ref = _REF_BINARY[name](r, rw)
            m = m | mw
        # Where float32 overflows (or nearly), rlx and a float64 reference may rightly disagree.
        with np.errstate(all="ignore"):
            m = m | ~np.isfinite(ref.astype(np.float32)) | (np.abs(ref) > 1e30)
        vals.append((out, ref))
        bad.append(m)
    g.output("y", vals[-1][0])
    pipe = rlx.ModelCompilePipeline(g, **pipeline_options(data))
    pipe.bind_params({"p": ps})
    y = pipe.get_or_compile(n=n).run(x=xs)["y"]
    ref, m = vals[-1][1], np.broadcast_to(bad[-1], vals[-1][1].shape)
    assert y.shape == ref.shape and y.dtype == np.float32
    scale = max([1.0] + [float(np.max(np.abs(r[np.isfinite(r)]), initial=0.0)) for _, r in vals])
    ok = ~m & (np.abs(ref) < 1e6)
    np.testing.assert_allclose(y[ok], ref[ok], rtol=2e-3, atol=1e-5 * scale, err_msg=f"chain {steps}")


# -- regression tests for bugs the fuzzer found ------------------------------------------------

def _g():
    g = rlx.Graph("g", dims={"n": (1, 8)})
    return g, g.input("x", ("n", 4))


TYPED_OVERFLOW = [
    ("softmax axis 2**63", lambda g, x: g.softmax(x, axis=2**63)),
    ("concat axis 2**63", lambda g, x: g.concat([x], axis=2**63)),
    ("slice axis -2**70", lambda g, x: g.slice(x, -(2**70), 0)),
    ("gather axis 2**63", lambda g, x: g.gather(x, g.constant(np.array([0], np.int64)), axis=2**63)),
    ("transpose perm 2**63", lambda g, x: g.transpose(x, (2**63, 0))),
    ("Graph.dim max 2**63", lambda g, x: g.dim("m", 0, 2**63)),
    ("scalar 10**400", lambda g, x: g.scalar(10**400)),
    ("scalar 1e300 (beyond float32)", lambda g, x: g.scalar(1e300)),
    ("layer_norm eps -1e39", lambda g, x: g.layer_norm(x, x, x, eps=-1e39)),
    ("softmax axis True", lambda g, x: g.softmax(x, axis=True)),
    ("concat axis 1.0", lambda g, x: g.concat([x], axis=1.0)),
    ("capacity -1", lambda g, x: rlx.ModelCompilePipeline(g, capacity=-1)),
]


@pytest.mark.parametrize("call", TYPED_OVERFLOW, ids=[c[0] for c in TYPED_OVERFLOW])
def test_out_of_range_ints_in_typed_arguments(call):
    g, x = _g()
    with pytest.raises(rlx.RlxError):
        call[1](g, x)


@pytest.mark.parametrize("shape", [(0, 2**62), (0, 2**40, 2**40)])
def test_empty_output_numpy_cannot_describe(shape):
    g = rlx.Graph("g")
    y = g.reshape(g.constant(np.zeros(0, np.float32)), shape)
    g.output("y", y)
    with pytest.raises(rlx.ShapeError):
        rlx.ModelCompilePipeline(g).get_or_compile().run()


def test_symbolic_slice_with_end_before_start_is_a_build_error():
    g = rlx.Graph("g", dims={"n": (0, 8)})
    x = g.input("x", ("n",))
    with pytest.raises(rlx.ShapeError):
        g.slice(x, 0, "n", "n-1")
