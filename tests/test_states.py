"""States (KV caches) through the Python API: a cache written in place by `cache_write`, read
by `kv_attention` at run-time positions, against a numpy oracle; and every way a caller can
hand over a bad state array (read-only, wrong dtype or shape, aliased, missing, unknown)."""

import numpy as np
import pytest

import rlx

CTX, D, HEADS, KV = 16, 4, 2, 1


def graph():
    g = rlx.Graph("kv", dims={"batch": (1, 4), "seq": (1, 8)})
    q = g.input("q", ("batch", HEADS, "seq", D))
    k = g.input("k", ("batch", KV, "seq", D))
    v = g.input("v", ("batch", KV, "seq", D))
    pos = g.input("pos", ("batch",), "int64")
    kc = g.cache_write(g.state("kc", ("batch", KV, CTX, D)), k, pos)
    vc = g.cache_write(g.state("vc", ("batch", KV, CTX, D)), v, pos)
    g.output("o", g.kv_attention(q, kc, vc, pos))
    return g


@pytest.fixture(scope="module")
def exe():
    return rlx.ModelCompilePipeline(graph()).get_or_compile(batch=2, seq=3)


def feeds(seed, pos=(0, 5)):
    r = np.random.default_rng(seed)
    f = {n: r.standard_normal((2, h, 3, D)).astype(np.float32) for n, h in (("q", HEADS), ("k", KV), ("v", KV))}
    f["pos"] = np.array(pos, np.int64)
    return f


def caches():
    return {n: np.zeros((2, KV, CTX, D), np.float32) for n in ("kc", "vc")}


def oracle(f, st):
    """Writes the new rows into `st` and returns causal attention over each row's prefix."""
    out = np.zeros((2, HEADS, 3, D), np.float32)
    for b, p in enumerate(f["pos"]):
        st["kc"][b, :, p : p + 3] = f["k"][b]
        st["vc"][b, :, p : p + 3] = f["v"][b]
        for h in range(HEADS):
            for i in range(3):
                keys, vals = st["kc"][b, h // (HEADS // KV), : p + i + 1], st["vc"][b, h // (HEADS // KV), : p + i + 1]
                s = keys.astype(np.float64) @ f["q"][b, h, i] / np.sqrt(D)
                w = np.exp(s - s.max())
                out[b, h, i] = (w / w.sum()) @ vals
    return out


def test_manifest_and_graph_list_the_states(exe):
    assert graph().states == ["kc", "vc"]
    st = exe.manifest.states
    assert [e.name for e in st] == ["kc", "vc"] and st[0].shape == (2, KV, CTX, D)


def test_states_update_in_place_over_steps(exe):
    got, want = caches(), caches()
    for step, pos in enumerate([(0, 5), (3, 8), (6, 13)]):
        f = feeds(step, pos)
        out = exe.run_stateful(f, got)["o"]
        np.testing.assert_allclose(out, oracle(f, want), rtol=1e-5, atol=1e-5)
        for n in got:
            np.testing.assert_array_equal(got[n], want[n])


def test_bad_state_arrays_are_refused(exe):
    f = feeds(0)
    with pytest.raises(rlx.BindingError, match="missing state"):
        exe.run(f)
    ro = caches()
    ro["kc"].flags.writeable = False
    with pytest.raises(rlx.BindingError, match="cannot be written"):
        exe.run_stateful(f, ro)
    with pytest.raises(rlx.DTypeError):
        exe.run_stateful(f, {**caches(), "kc": np.zeros((2, KV, CTX, D), np.float64)})
    with pytest.raises(rlx.ShapeError):
        exe.run_stateful(f, {**caches(), "kc": np.zeros((2, KV, CTX - 1, D), np.float32)})
    with pytest.raises(rlx.BindingError, match="unknown state"):
        exe.run_stateful(f, {**caches(), "kx": np.zeros(1, np.float32)})
    same = np.zeros((2, KV, CTX, D), np.float32)
    with pytest.raises(rlx.BindingError):
        exe.run_stateful(f, {"kc": same, "vc": same})
    # A state that shares memory with an input.
    big = np.zeros((2, KV, CTX, D), np.float32)
    f2 = dict(f, k=big.reshape(-1)[: 2 * KV * 3 * D].reshape(2, KV, 3, D))
    with pytest.raises(rlx.BindingError, match="shares memory"):
        exe.run_stateful(f2, {"kc": big, "vc": np.zeros_like(big)})
    # A non-contiguous state.
    wide = np.zeros((2, KV, CTX, 2 * D), np.float32)[..., :D]
    with pytest.raises(rlx.BindingError):
        exe.run_stateful(f, {**caches(), "kc": wide})


def test_positions_past_the_cache_are_errors_and_leave_it_unchanged(exe):
    st = caches()
    exe.run_stateful(feeds(1), st)
    before = {n: a.copy() for n, a in st.items()}
    for pos in [(0, CTX - 2), (-1, 0)]:
        with pytest.raises(rlx.ShapeError, match="context"):
            exe.run_stateful(feeds(2, pos), st)
        for n in st:
            np.testing.assert_array_equal(st[n], before[n])


def test_a_state_read_directly_is_refused():
    g = rlx.Graph("bad")
    s = g.state("s", (1, 1, 4, 2))
    g.output("y", g.neg(s))
    with pytest.raises(rlx.RlxError, match="state"):
        rlx.ModelCompilePipeline(g).build_template()
