"""rlx.onnx Mod, ReduceProd and CumProd against ONNX Runtime / the onnx reference, bit for bit
where the result is exact (integers, float Mod), and their errors naming the node."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_case_support import F, I32, I64, check, run, single  # noqa: E402

import rlx  # noqa: E402

RNG = np.random.default_rng(0)
NP = {F: np.float32, I32: np.int32, I64: np.int64}


def _spread_floats(n):
    """float32 values over the whole range (subnormals to near-overflow), both signs."""
    m = RNG.standard_normal(n)
    with np.errstate(over="ignore"):
        return (m * np.exp2(RNG.integers(-150, 128, n).astype(np.float64))).astype(np.float32)


SPECIAL_A = [0, -0.0, np.inf, -np.inf, np.nan, 1, 2**-149, 3e38, -3e38, 1e-45, 5, 5, 7, -7, 0, 3, -3, 1e30, -1e30, 7.5]
SPECIAL_B = [2, 2, 2, 2, 2, 0, 2**-149, 1e-45, 3e-38, 2**-149, np.inf, -np.inf, np.nan, 2.5, 0, -3, 3, 3, 7e-3, -0.5]


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_float_is_exact(fmod):
    # a - b * trunc(a / b) in float32 is wrong by far more than an ulp for large quotients;
    # rlx's Mod equals numpy's (C fmod, and Python's % for fmod=0) bit for bit.
    n = 50000
    a, b = _spread_floats(n), _spread_floats(n)
    a[: len(SPECIAL_A)], b[: len(SPECIAL_B)] = SPECIAL_A, SPECIAL_B
    got, = run(single("Mod", [("a", F, [n]), ("b", F, [n])], F, fmod=fmod), {"a": a, "b": b})
    with np.errstate(all="ignore"):
        want = np.fmod(a, b) if fmod else np.mod(a, b)
    np.testing.assert_array_equal(got, want)
    same_sign = np.signbit(got) == np.signbit(want)
    assert same_sign[~np.isnan(want)].all()


@pytest.mark.parametrize("elem", [I32, I64])
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_int_matches_ort(elem, fmod):
    dt = NP[elem]
    info = np.iinfo(dt)
    a = np.concatenate([RNG.integers(-1000, 1000, 200), [info.min, info.max, -7, 7, -7, 7, 0, 5]]).astype(dt)
    b = np.concatenate([RNG.integers(1, 50, 200) * RNG.choice([-1, 1], 200), [-1, 3, 2, -2, -2, 2, -3, info.min]]).astype(dt)
    check(single("Mod", [("a", elem, [208]), ("b", elem, [208])], elem, fmod=fmod), {"a": a, "b": b}, exact=True)


def test_mod_broadcasts_and_float_matches_ort():
    a = (RNG.standard_normal((3, 4)) * 10).astype(np.float32)
    b = np.array([1.5, -2.25, 3.0, -0.75], np.float32)
    check(single("Mod", [("a", F, [3, 4]), ("b", F, [4])], F, fmod=1), {"a": a, "b": b}, exact=True)


def test_mod_int_by_zero_is_zero():
    # numpy and the onnx reference give 0; rlx does not raise at run time.
    got, = run(single("Mod", [("a", I64, [3]), ("b", I64, [3])], I64), {"a": np.array([5, -5, 0]), "b": np.zeros(3, np.int64)})
    np.testing.assert_array_equal(got, [0, 0, 0])


def test_mod_errors_name_the_node():
    with pytest.raises(rlx.DTypeError, match="the_node.*Mod of int64 and int32"):
        rlx.onnx.load(single("Mod", [("a", I64, [2]), ("b", I32, [2])], I64))
    with pytest.raises(rlx.DTypeError, match="the_node.*Mod on bool"):
        rlx.onnx.load(single("Mod", [("a", 9, [2]), ("b", 9, [2])], 9))


# -- ReduceProd ------------------------------------------------------------------------------


@pytest.mark.parametrize("axes,keepdims", [(None, 1), (None, 0), ([1], 1), ([0, 2], 0), ([-1], 1), ([2, 0, 1], 0)])
@pytest.mark.parametrize("elem", [F, I64, I32])
def test_reduce_prod(axes, keepdims, elem):
    shape = [3, 5, 7]
    x = (RNG.uniform(0.5, 1.5, shape) if elem == F else RNG.integers(-3, 4, shape)).astype(NP[elem])
    inits = {"axes": np.array(axes, np.int64)} if axes is not None else {}
    m = single("ReduceProd", [("x", elem, shape)] + (["axes"] if axes is not None else []), elem, inits, opset=18, keepdims=keepdims)
    # Integer products wrap the same way; float products differ only by rounding order.
    check(m, {"x": x}, exact=elem != F, rtol=1e-5)


def test_reduce_prod_old_opset_axes_attribute_and_empty():
    x = RNG.uniform(0.5, 1.5, (2, 4)).astype(np.float32)
    check(single("ReduceProd", [("x", F, [2, 4])], F, opset=13, axes=[1], keepdims=0), {"x": x})
    check(single("ReduceProd", [("x", F, [2, 0, 3])], F, opset=13, axes=[1], keepdims=1), {"x": np.zeros((2, 0, 3), np.float32)})


def test_reduce_prod_noop_and_symbolic_axis():
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    m = single("ReduceProd", [("x", F, [2, 3]), "axes"], F, {"axes": np.zeros(0, np.int64)}, opset=18, noop_with_empty_axes=1)
    check(m, {"x": x}, exact=True)
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*symbolic size n"):
        rlx.onnx.load(single("ReduceProd", [("x", F, ["n", 3])], F, opset=13, axes=[0]))


# -- CumProd ---------------------------------------------------------------------------------


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis,elem", [(0, F), (1, F), (-1, I64), (0, I32), (1, I32)])
def test_cumprod(exclusive, reverse, axis, elem):
    shape = [5, 7]
    x = (RNG.uniform(0.5, 1.5, shape) if elem == F else RNG.integers(-3, 4, shape)).astype(NP[elem])
    m = single("CumProd", [("x", elem, shape), "axis"], elem, {"axis": np.array(axis, np.int64)}, opset=26,
               exclusive=exclusive, reverse=reverse)
    check(m, {"x": x}, which="ref", exact=elem != F, rtol=1e-5)


def test_cumprod_errors():
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*symbolic size n"):
        rlx.onnx.load(single("CumProd", [("x", F, ["n"]), "axis"], F, {"axis": np.array(0, np.int64)}, opset=26))
    with pytest.raises(rlx.ShapeError, match="the_node.*axis 2 out of range"):
        rlx.onnx.load(single("CumProd", [("x", F, [3]), "axis"], F, {"axis": np.array(2, np.int64)}, opset=26))
