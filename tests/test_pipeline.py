"""ModelCompilePipeline: results against numpy for several variants, the three steps, the cache,
manifests and their diffs, and one parameter binding serving every variant."""

import numpy as np
import pytest

import rlx
from conftest import (
    MLP_IN,
    MLP_OUT,
    MLP_SHAPES,
    MODEL,
    block_graph,
    block_params,
    block_ref,
    mlp_graph,
    mlp_ref,
    weights,
)

TOL = dict(rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_mlp_matches_numpy(mlp, rng, batch):
    pipe, params = mlp
    x = rng.standard_normal((batch, MLP_IN)).astype(np.float32)
    out = pipe.get_or_compile(batch=batch).run(x=x)["probs"]
    assert out.shape == (batch, MLP_OUT)
    np.testing.assert_allclose(out, mlp_ref(x, params), **TOL)


def test_transformer_block_three_variants(rng):
    pipe = rlx.ModelCompilePipeline(block_graph())
    params = block_params(rng)
    pipe.bind_params(params)  # once, for every variant
    for b, s in [(1, 8), (4, 128), (3, 17)]:
        x = rng.standard_normal((b, s, MODEL)).astype(np.float32)
        exe = pipe.get_or_compile(b=b, s=s)
        assert exe.binding == {"b": b, "s": s}
        y = exe.run(x=x)["y"]
        assert y.shape == (b, s, MODEL)
        np.testing.assert_allclose(y, block_ref(x, params), rtol=1e-3, atol=1e-4)
    assert len(pipe) == 3 and pipe.stats["misses"] == 3


def test_three_steps_equal_get_or_compile(mlp, rng):
    pipe, _ = mlp
    spec = pipe.specialize({"batch": 5})
    assert spec.binding == {"batch": 5}
    assert "lir @mlp {batch=5}" in str(spec)
    assert spec.manifest.inputs[0].shape == (5, MLP_IN)
    exe = pipe.compile_lir(spec)
    x = rng.standard_normal((5, MLP_IN)).astype(np.float32)
    a = exe.run(x=x)["probs"]
    b = pipe.get_or_compile(batch=5).run({"x": x})["probs"]
    np.testing.assert_array_equal(a, b)
    # compile_lir does not fill the cache; get_or_compile did.
    assert pipe.stats["misses"] == 1 and len(pipe) == 1


def test_cache_hits_misses_evictions(rng):
    pipe = rlx.ModelCompilePipeline(mlp_graph(), capacity=2)
    pipe.bind_params(weights(rng, MLP_SHAPES))
    first = pipe.get_or_compile(batch=1)
    pipe.get_or_compile(batch=1)
    pipe.get_or_compile({"batch": 2})
    assert {"batch": 1} in pipe and {"batch": 2} in pipe and {"batch": 3} not in pipe
    pipe.get_or_compile(batch=3)  # evicts batch=1 (FIFO)
    s = pipe.stats
    assert (s["hits"], s["misses"], s["evictions"]) == (1, 3, 1)
    assert len(pipe) == 2 and {"batch": 1} not in pipe
    assert s["template_time_s"] > 0 and s["compile_time_s"] > 0 and s["specialize_time_s"] > 0
    # An evicted graph still held by the caller keeps working.
    x = rng.standard_normal((1, MLP_IN)).astype(np.float32)
    assert first.run(x=x)["probs"].shape == (1, MLP_OUT)


def test_template_manifest_is_symbolic(mlp):
    pipe, _ = mlp
    m = pipe.manifest
    assert [e.name for e in m.inputs] == ["x"] and [e.name for e in m.outputs] == ["probs"]
    assert m.inputs[0].shape == ("batch", MLP_IN)
    assert m.inputs[0].nbytes == f"{4 * MLP_IN}*batch"
    assert m.arena_bytes is None
    offsets = [e.offset for e in m.params]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert all(e.nbytes == 4 * int(np.prod(MLP_SHAPES[e.name])) for e in m.params)
    assert m.param_block_bytes >= sum(e.nbytes for e in m.params)
    text = repr(m)
    assert "w1" in text and "offset" in text and "batch" in text


def test_manifest_diff_between_variants(mlp):
    pipe, _ = mlp
    m8, m16 = pipe.manifest_for(batch=8), pipe.manifest_for(batch=16)
    assert m8.inputs[0].shape == (8, MLP_IN) and m8.arena_bytes is not None
    d = m8.diff(m16)
    assert not d.is_empty and bool(d) and d.params_compatible
    assert {(sec, name) for sec, name, _, _ in d.changed} == {("input", "x"), ("output", "probs")}
    _, _, before, after = d.changed[0]
    assert before.shape[0] == 8 and after.shape[0] == 16
    assert d.added == [] and d.removed == []
    same = m8.diff(pipe.manifest_for(batch=8))
    assert same.is_empty and not same and "identical" in repr(same)
    # manifest_for compiles nothing.
    assert len(pipe) == 0


def test_manifest_diff_between_models():
    g = rlx.Graph("mlp2", dims={"batch": (1, 4096)})
    x = g.input("x", ("batch", MLP_IN))
    g.output("probs", g.linear(x, g.param("w1", (MLP_IN, MLP_OUT))))
    d = rlx.ModelCompilePipeline(mlp_graph()).manifest.diff(rlx.ModelCompilePipeline(g).manifest)
    assert "param b1" in d.removed and not d.params_compatible


def test_pipeline_snapshots_the_graph(rng):
    g = mlp_graph()
    pipe = rlx.ModelCompilePipeline(g)
    g.output("extra", g.input("z", (3,)))  # later edits do not reach the pipeline
    assert [e.name for e in pipe.manifest.outputs] == ["probs"]


def test_rebinding_reaches_every_cached_variant(mlp, rng):
    pipe, params = mlp
    exes = [pipe.get_or_compile(batch=b) for b in (2, 3)]
    new = weights(rng, MLP_SHAPES)
    pipe.bind_params(new)
    for b, exe in zip((2, 3), exes):
        x = rng.standard_normal((b, MLP_IN)).astype(np.float32)
        np.testing.assert_allclose(exe.run(x=x)["probs"], mlp_ref(x, new), **TOL)


def test_outputs_are_new_arrays(mlp, rng):
    pipe, _ = mlp
    exe = pipe.get_or_compile(batch=2)
    x = rng.standard_normal((2, MLP_IN)).astype(np.float32)
    a = exe.run(x=x)["probs"]
    keep = a.copy()
    b = exe.run(x=x * 2)["probs"]
    assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, keep)


def test_pipeline_rejects_bad_device_and_capacity():
    with pytest.raises(rlx.CompileError, match="unknown device"):
        rlx.ModelCompilePipeline(mlp_graph(), device="tpu")
    with pytest.raises(rlx.CompileError, match="capacity"):
        rlx.ModelCompilePipeline(mlp_graph(), capacity=0)
