"""Zero-copy parameter binding from numpy: pointers, lifetime, in-place changes, and the
documented behaviour for arrays that cannot be borrowed (with and without copy=True)."""

import gc
import weakref

import numpy as np
import pytest

import rlx
from conftest import MLP_IN, MLP_SHAPES, mlp_graph, mlp_ref, weights

TOL = dict(rtol=2e-4, atol=2e-5)


@pytest.fixture
def setup(rng):
    pipe = rlx.ModelCompilePipeline(mlp_graph())
    params = weights(rng, MLP_SHAPES)
    x = rng.standard_normal((3, MLP_IN)).astype(np.float32)
    return pipe, params, x


def run(pipe, x):
    return pipe.get_or_compile(batch=x.shape[0]).run(x=x)["probs"]


def misaligned(a):
    """A C-contiguous float32 copy of `a` whose data starts one byte off alignment."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(raw.data, dtype=np.float32, offset=1, count=a.size).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


def test_zero_copy_pointer_and_in_place_changes(rng):
    """Without pre-packing, kernels read the bound array itself: an in-place write shows in
    the next run."""
    pipe = rlx.ModelCompilePipeline(mlp_graph(), prepack=False)
    params = weights(rng, MLP_SHAPES)
    x = rng.standard_normal((3, MLP_IN)).astype(np.float32)
    pipe.bind_params(params)
    exe = pipe.get_or_compile(batch=3)
    for name, arr in params.items():
        assert exe.param_data_ptr(name) == arr.ctypes.data
    assert pipe.stats["packed_bytes"] == 0
    before = exe.run(x=x)["probs"]
    np.testing.assert_allclose(before, mlp_ref(x, params), **TOL)
    params["w2"] *= 3.0  # in place: the next run sees it
    after = exe.run(x=x)["probs"]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, mlp_ref(x, params), **TOL)


def test_prepacked_weights_are_a_snapshot_until_rebound(setup):
    """With pre-packing (the default) linears read panels packed at bind/compile time: an
    in-place write is not seen until the array is bound again, which repacks it."""
    pipe, params, x = setup
    pipe.bind_params(params)
    exe = pipe.get_or_compile(batch=3)
    assert exe.param_data_ptr("w1") == params["w1"].ctypes.data  # still borrowed, not copied
    assert pipe.stats["packed_bytes"] >= (params["w1"].nbytes + params["w2"].nbytes)
    before = exe.run(x=x)["probs"]
    np.testing.assert_allclose(before, mlp_ref(x, params), **TOL)
    params["w2"] *= 3.0
    np.testing.assert_array_equal(exe.run(x=x)["probs"], before)
    pipe.set_param("w2", params["w2"])  # rebinding drops the old panels
    after = exe.run(x=x)["probs"]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, mlp_ref(x, params), **TOL)


def test_bound_arrays_are_kept_alive(setup):
    pipe, params, x = setup
    expected = mlp_ref(x, params)
    mine = {k: v.copy() for k, v in params.items()}  # referenced by nothing but this test
    ref = weakref.ref(mine["w1"])
    pipe.bind_params(mine)
    del mine
    gc.collect()
    assert ref() is not None  # the store holds the array
    np.testing.assert_allclose(run(pipe, x), expected, **TOL)
    # Rebinding the slot releases the old array.
    pipe.set_param("w1", np.zeros(MLP_SHAPES["w1"], np.float32))
    gc.collect()
    assert ref() is None


def test_copy_true_does_not_alias(setup):
    pipe, params, x = setup
    pipe.bind_params(params, copy=True)
    exe = pipe.get_or_compile(batch=3)
    assert exe.param_data_ptr("w1") != params["w1"].ctypes.data
    expected = mlp_ref(x, params)
    params["w1"] *= 0.0
    np.testing.assert_allclose(exe.run(x=x)["probs"], expected, **TOL)


def _variants(a):
    return {
        "non-contiguous": (np.asfortranarray(a), rlx.BindingError, "C-contiguous"),
        "negatively strided": (a[::-1, ::-1].copy()[::-1, ::-1], rlx.BindingError, "negatively strided"),
        "misaligned": (misaligned(a), rlx.BindingError, "misaligned"),
        "float64": (a.astype(np.float64), rlx.DTypeError, "float64"),
        "big-endian": (a.astype(">f4"), rlx.DTypeError, ">f4"),
        "int32": (np.round(a * 10).astype(np.int32), rlx.DTypeError, "int32"),
    }


@pytest.mark.parametrize("kind", list(_variants(np.zeros((2, 2), np.float32))))
def test_unborrowable_arrays(setup, kind):
    pipe, params, x = setup
    arr, exc, fragment = _variants(params["w1"])[kind]
    others = {k: v for k, v in params.items() if k != "w1"}
    with pytest.raises(exc, match=fragment) as info:
        pipe.bind_params({**others, "w1": arr})
    assert "copy=True" in str(info.value)
    assert "w1" in str(info.value)
    assert pipe.missing_params == list(MLP_SHAPES)  # all-or-nothing: nothing was bound
    # copy=True converts into an owned copy: results use the converted values.
    pipe.bind_params({**others, "w1": arr}, copy=True)
    used = {**others, "w1": np.asarray(arr, np.float32)}
    np.testing.assert_allclose(run(pipe, x), mlp_ref(x, used), **TOL)


def test_fix_suggested_in_the_message_works(setup):
    pipe, params, x = setup
    pipe.bind_params({**params, "w1": np.ascontiguousarray(np.asfortranarray(params["w1"]))})
    np.testing.assert_allclose(run(pipe, x), mlp_ref(x, params), **TOL)


def test_read_only_arrays_and_memmaps_are_borrowed(setup, tmp_path):
    pipe, params, x = setup
    ro = params["w1"].copy()
    ro.setflags(write=False)
    path = tmp_path / "w2.bin"
    params["w2"].tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=MLP_SHAPES["w2"])
    pipe.bind_params({**params, "w1": ro, "w2": mm})
    exe = pipe.get_or_compile(batch=3)
    assert exe.param_data_ptr("w1") == ro.ctypes.data
    assert exe.param_data_ptr("w2") == mm.ctypes.data
    np.testing.assert_allclose(exe.run(x=x)["probs"], mlp_ref(x, params), **TOL)


def test_wrong_shape_is_a_shape_error(setup):
    pipe, params, _ = setup
    for copy in (False, True):
        with pytest.raises(rlx.ShapeError, match=r"param `w1`: expected shape \[24, 32\], got \[32, 24\]"):
            pipe.bind_params({"w1": np.ascontiguousarray(params["w1"].T)}, copy=copy)


def test_object_arrays(setup):
    pipe, params, x = setup
    obj = params["b1"].astype(object)
    with pytest.raises(rlx.DTypeError, match="object|O"):
        pipe.set_param("b1", obj)
    pipe.set_param("b1", obj, copy=True)  # numbers convert
    with pytest.raises(rlx.DTypeError, match="cannot convert"):
        pipe.set_param("b1", np.array(["a"] * 32, dtype=object), copy=True)


def test_unknown_and_missing_param_names(setup):
    pipe, params, x = setup
    with pytest.raises(rlx.BindingError, match="unknown param `w_1`.*did you mean `w1`") as info:
        pipe.bind_params({"w_1": params["w1"], "bias": params["b1"]})
    assert "`bias`" in str(info.value)
    pipe.bind_params({"w1": params["w1"], "b1": params["b1"]})  # a subset binds
    assert pipe.missing_params == ["w2", "b2"]
    exe = pipe.get_or_compile(batch=3)
    with pytest.raises(rlx.BindingError, match=r'params not bound: \["w2", "b2"\]'):
        exe.run(x=x)
    with pytest.raises(rlx.BindingError, match="unknown param"):
        exe.param_data_ptr("nope")
    assert exe.param_data_ptr("w2") is None
    pipe.bind_params({"w2": params["w2"], "b2": params["b2"]})
    np.testing.assert_allclose(exe.run(x=x)["probs"], mlp_ref(x, params), **TOL)


def test_a_bound_array_cannot_be_resized_while_bound(setup):
    """Bound arrays are pinned: numpy refuses to reallocate them, even with refcheck=False,
    so a run never reads freed memory. Rebinding the slot releases the pin."""
    pipe, params, x = setup
    w1 = params["w1"]
    pipe.bind_params(params)
    exe = pipe.get_or_compile(batch=3)
    good = exe.run(x=x)["probs"]
    with pytest.raises(ValueError, match="cannot resize"):
        w1.resize((MLP_SHAPES["w1"][0] * 4, MLP_SHAPES["w1"][1]), refcheck=False)
    np.testing.assert_array_equal(exe.run(x=x)["probs"], good)
    # A view's owner is pinned too: resizing the base would move the view's memory.
    base = np.zeros(MLP_SHAPES["w1"][0] * MLP_SHAPES["w1"][1] + 16, np.float32)
    view = base[: w1.size].reshape(MLP_SHAPES["w1"])
    view[...] = w1
    exe.set_param("w1", view)
    with pytest.raises(ValueError, match="cannot resize"):
        base.resize(base.size * 4, refcheck=False)
    np.testing.assert_allclose(exe.run(x=x)["probs"], good, rtol=1e-6)
    exe.set_param("w1", w1.copy())  # the old bindings' pins go with them
    del view
    base.resize(base.size * 4, refcheck=False)
    w1.resize((MLP_SHAPES["w1"][0] * 4, MLP_SHAPES["w1"][1]), refcheck=False)


def test_inputs_are_released_after_a_run(setup):
    """Inputs are pinned only for the length of a run (read in place with the GIL released):
    afterwards the caller may resize them again."""
    pipe, params, x = setup
    pipe.bind_params(params)
    exe = pipe.get_or_compile(batch=3)
    exe.run(x=x)
    x.resize((6, x.shape[1]), refcheck=False)  # not pinned between runs


def test_set_param_from_compiled_graph_serves_other_variants(setup):
    pipe, params, x = setup
    pipe.bind_params(params)
    a, b = pipe.get_or_compile(batch=3), pipe.get_or_compile(batch=5)
    new = np.full(MLP_SHAPES["b2"], 2.0, np.float32)
    a.set_param("b2", new)
    assert b.param_data_ptr("b2") == new.ctypes.data
