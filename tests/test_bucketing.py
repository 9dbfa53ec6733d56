"""Shape bucketing (rlx.bucketing): padded runs equal unpadded ones on valid positions (bit for
bit on a per-token graph with masked pooling, to float rounding on MiniLM), bucket choice, the
report, values above the largest bucket, and argument / feed mistakes as typed rlx errors that
leave the pipeline usable."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

import rlx
from conftest import bert_inputs, minilm_dir_or_skip
from rlx.bucketing import POW2_FLOOR, pow2_ladder

D, VOCAB = 16, 50


def token_graph(seq_max: int = 256) -> rlx.Graph:
    """Per-token work (embedding gather, linear + GELU, layer norm) and a masked mean over seq:
    padding never reaches a valid position. Outputs have seq on axis 1, on axis 2 and not at all."""
    g = rlx.Graph("tokens", dims={"batch": (1, 64), "seq": (1, seq_max)})
    x = g.input("x", ("batch", "seq", D))
    ids = g.input("ids", ("batch", "seq"), "int64")
    m = g.input("mask", ("batch", "seq"))
    h = g.add(x, g.gather(g.param("emb", (VOCAB, D)), ids, 0))
    h = g.linear(h, g.param("w", (D, D)), g.param("b", (D,)), activation="gelu")
    h = g.layer_norm(h, g.param("gamma", (D,)), g.param("beta", (D,)))
    g.output("h", h)
    g.output("hT", g.transpose(h, [0, 2, 1]))
    m3 = g.reshape(m, ("batch", "seq", 1))
    total = g.reduce_sum(g.mul(h, m3), axes=[1])
    g.output("pooled", g.div(total, g.maximum(g.reduce_sum(m3, axes=[1]), g.scalar(1e-9))))
    return g


def token_pipeline(capacity: int = 64, isa=None) -> rlx.ModelCompilePipeline:
    rng = np.random.default_rng(7)
    pipe = rlx.ModelCompilePipeline(token_graph(), capacity=capacity, isa=isa)
    pipe.bind_params({
        "emb": rng.standard_normal((VOCAB, D)).astype(np.float32),
        "w": (rng.standard_normal((D, D)) * 0.3).astype(np.float32),
        "b": rng.standard_normal(D).astype(np.float32),
        "gamma": (1 + 0.1 * rng.standard_normal(D)).astype(np.float32),
        "beta": (0.1 * rng.standard_normal(D)).astype(np.float32),
    })
    return pipe


def token_feeds(b: int, s: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((b, s), np.float32)
    mask[0, s - s // 3:] = 0  # a padded tail in the first row
    return {"x": rng.standard_normal((b, s, D)).astype(np.float32),
            "ids": rng.integers(0, VOCAB, (b, s)).astype(np.int64), "mask": mask}


def unpadded(pipe: rlx.ModelCompilePipeline, feeds: dict, **binding: int) -> dict:
    """The exact-size variant's outputs, compiled outside the cache (the counters stay put)."""
    return pipe.compile_lir(pipe.specialize(**binding)).run(feeds)


@pytest.fixture(scope="module")
def tokens():
    return token_pipeline()


# -- results ------------------------------------------------------------------------------------


@pytest.mark.parametrize("isa", rlx.available_isas())
def test_per_token_graph_is_bit_identical_for_every_seq(isa):
    pipe = token_pipeline(isa=isa)
    bk = pipe.bucketed(seq=[4, 16, 64, 256], batch="pow2:1")
    for s in range(1, 131):
        for b in (1, 3):
            feeds = token_feeds(b, s, seed=s)
            want = unpadded(pipe, feeds, batch=b, seq=s)
            got = bk.run(feeds)
            assert got.keys() == want.keys()
            for k in want:
                assert got[k].shape == want[k].shape, (k, s, b)
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"{k} b={b} seq={s} isa={isa}")
                assert got[k].flags.c_contiguous
    r = bk.report()
    assert r["calls"] == 260 and r["variants_compiled"] == r["variants_used"] == 8  # 4 seq x batch 1, 4


@pytest.fixture(scope="module")
def minilm():
    """One SentenceEncoder (default buckets: "pow2") for the module; its pipeline's cache holds
    every seq bucket for batch 1 and 2."""
    from rlx.models import bert

    return bert.SentenceEncoder(minilm_dir_or_skip(), capacity=32)


# Measured on avx512 for seq 1..130, batch 1..3: max |diff| 2.9e-6 on last_hidden_state (values
# up to ~6) and 1.5e-7 on the unit-norm embedding; a padded run differs by rounding only (the
# attention's softmax sums over a longer, zero-weighted key row).
HIDDEN_ATOL, EMBEDDING_ATOL = 1e-5, 1e-6


def test_minilm_bucketed_equals_unpadded_for_every_seq(minilm):
    bk = minilm.bucketing
    assert isinstance(bk, rlx.Bucketed) and bk.buckets == {"seq": [8, 16, 32, 64, 128, 256, 512]}
    bk.reset_report()
    worst = [0.0, 0.0]
    for s in range(1, 131):
        b = 1 + s % 2
        feeds = bert_inputs(b, s, seed=s)
        want = unpadded(minilm.pipeline, feeds, batch=b, seq=s)
        got = minilm.run(feeds)
        assert got["last_hidden_state"].shape == (b, s, 384) and got["embedding"].shape == (b, 384)
        for i, (k, tol) in enumerate([("last_hidden_state", HIDDEN_ATOL), ("embedding", EMBEDDING_ATOL)]):
            err = float(np.abs(got[k] - want[k]).max())
            worst[i] = max(worst[i], err)
            assert err <= tol, f"{k} seq={s}: max |diff| {err}"
    r = bk.report()
    assert r["calls"] == 130 and r["calls_per_bucket"] == {
        "seq=8": 8, "seq=16": 8, "seq=32": 16, "seq=64": 32, "seq=128": 64, "seq=256": 2}
    assert r["overflow_calls"] == 0 and r["variants_used"] == 12  # 6 buckets x batch 1, 2
    print(f"max |diff|: last_hidden_state {worst[0]:.2e}, embedding {worst[1]:.2e}")


def test_sentence_encoder_pads_with_the_mask_and_matches_unbucketed(minilm):
    texts = ["A man is eating food.", "A man is eating a piece of bread with a knife and a fork.", "Hi"]
    batch = minilm.tokenize(texts)
    b, s = batch["input_ids"].shape
    assert s == max(int(m.sum()) for m in batch["attention_mask"])  # longest text, not a bucket
    want = unpadded(minilm.pipeline, batch, batch=b, seq=s)["embedding"]
    got = minilm.encode(texts)
    np.testing.assert_allclose(got, want, rtol=0, atol=EMBEDDING_ATOL)
    assert 16 < s <= 32 and minilm.bucketing.plan(batch)[1] == {"batch": b, "seq": 32}
    from rlx.models import bert

    off = bert.SentenceEncoder(minilm.model_dir, buckets=None)
    assert off.bucketing is None
    np.testing.assert_allclose(off.encode(texts), got, rtol=0, atol=EMBEDDING_ATOL)
    assert off.pipeline.get_or_compile(batch=b, seq=s) is not None and {"batch": b, "seq": s} in off.pipeline


# -- bucket choice, ladders, report -------------------------------------------------------------


@pytest.mark.parametrize("seq,bucket", [(1, 16), (15, 16), (16, 16), (17, 32), (33, 64), (64, 64), (65, 65), (256, 256)])
def test_smallest_bucket_at_least_the_value(tokens, seq, bucket):
    bk = tokens.bucketed(seq=[16, 32, 64])
    values, binding = bk.plan(token_feeds(2, seq))
    assert values == {"batch": 2, "seq": seq} and binding == {"batch": 2, "seq": bucket}


def test_pow2_ladders():
    assert POW2_FLOOR == 8
    assert pow2_ladder(1, 512) == [8, 16, 32, 64, 128, 256, 512]
    assert pow2_ladder(1, 500) == [8, 16, 32, 64, 128, 256, 500]
    assert pow2_ladder(1, 64, floor=1) == [1, 2, 4, 8, 16, 32, 64]
    assert pow2_ladder(20, 100) == [32, 64, 100]
    assert pow2_ladder(1, 4) == [4] and pow2_ladder(3, 3) == [3]


def test_pow2_spec_uses_the_symbol_bounds(tokens):
    bk = tokens.bucketed(seq="pow2", batch="pow2:1")
    assert bk.bounds == {"batch": (1, 64), "seq": (1, 256)}
    assert bk.buckets == {"seq": [8, 16, 32, 64, 128, 256], "batch": [1, 2, 4, 8, 16, 32, 64]}
    assert rlx.bucketed(tokens, {"seq": "pow2:32"}).buckets == {"seq": [32, 64, 128, 256]}


def test_report_counts_calls_padding_and_variants():
    pipe = token_pipeline()
    bk = rlx.bucketed(pipe, seq=[16, 32, 64])
    assert bk.report()["calls"] == 0 and "0 calls" in repr(bk)
    seqs, b = [3, 5, 16, 17, 40], 2
    for s in seqs:
        bk.run(token_feeds(b, s))
    bk.run(token_feeds(b, 5))  # a cache hit
    seqs.append(5)
    r = bk.report()
    assert r["calls"] == 6 and r["calls_per_bucket"] == {"seq=16": 4, "seq=32": 1, "seq=64": 1}
    per_token = D + 2  # x, ids, mask
    bucket = {3: 16, 5: 16, 16: 16, 17: 32, 40: 64}
    assert r["useful_elements"] == sum(b * s * per_token for s in seqs)
    assert r["padded_elements"] == sum(b * (bucket[s] - s) * per_token for s in seqs)
    assert r["padding_ratio"] == pytest.approx(r["padded_elements"] / r["useful_elements"])
    assert r["variants_compiled"] == r["variants_used"] == 3 == len(pipe) and r["overflow_calls"] == 0
    text = str(bk)
    assert "seq=16" in text and "66.7%" in text and "3 variants compiled" in text
    assert "6 calls" in repr(bk) and "Bucketed(seq=[16, 32, 64]" in repr(bk)
    bk.reset_report()
    assert bk.report()["calls"] == 0 and len(pipe) == 3


def test_precompile_is_a_warm_start():
    pipe = token_pipeline()
    bk = pipe.bucketed(seq="pow2")
    done = bk.precompile(batch=1)
    assert [d["seq"] for d in done] == [8, 16, 32, 64, 128, 256] and len(pipe) == 6
    for s in (1, 9, 100, 256):
        bk.run(token_feeds(1, s))
    r = bk.report()
    assert r["variants_compiled"] == 6 and pipe.stats["misses"] == 6
    with pytest.raises(rlx.BindingError, match="'seq'|seq"):
        bk.precompile(seq=3)


def test_pad_values_per_input(tokens):
    bk = tokens.bucketed(seq=[8], pad_values={"ids": 7, "mask": 0.0})
    feeds = token_feeds(1, 5)
    padded = bk.pad(feeds)
    assert padded["ids"].shape == (1, 8) and (padded["ids"][0, 5:] == 7).all()
    assert (padded["x"][0, 5:] == 0).all() and (padded["mask"][0, 5:] == 0).all()
    np.testing.assert_array_equal(padded["ids"][:, :5], feeds["ids"])
    assert bk.pad(token_feeds(1, 8))["x"] is not None
    same = token_feeds(1, 8)
    assert bk.pad(same)["x"] is same["x"]  # no padding needed: not copied


# -- values above the largest bucket, outside the bounds ----------------------------------------


def test_above_the_largest_bucket_runs_exact_by_default(tokens):
    bk = tokens.bucketed(seq=[16, 32])
    feeds = token_feeds(2, 50)
    got = bk.run(feeds)
    want = unpadded(tokens, feeds, batch=2, seq=50)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    r = bk.report()
    assert r["overflow_calls"] == 1 and r["calls_per_bucket"] == {"seq=50": 1} and r["padded_elements"] == 0


def test_above_the_largest_bucket_can_be_an_error(tokens):
    bk = tokens.bucketed(seq=[16, 32], overflow="error")
    with pytest.raises(rlx.ShapeError, match=r"'seq' = 33 is above its largest bucket 32"):
        bk.run(token_feeds(1, 33))
    assert bk.run(token_feeds(1, 32))["h"].shape == (1, 32, D)  # still usable
    assert bk.report()["calls"] == 1


def test_outside_the_bounds_is_a_binding_error(tokens):
    bk = tokens.bucketed(seq="pow2")
    with pytest.raises(rlx.BindingError, match=r"symbol `seq` = 300 is outside its bounds \[1, 256\]"):
        bk.run(token_feeds(1, 300))
    assert bk.run(token_feeds(1, 3))["pooled"].shape == (1, D)


# -- argument and feed mistakes -----------------------------------------------------------------

BAD_BUCKETS = [
    ("unknown symbol", {"sq": [16]}, r"unknown symbol 'sq' \(did you mean 'seq'\?\)"),
    ("empty", {"seq": []}, r"buckets for symbol 'seq' are empty"),
    ("unsorted", {"seq": [32, 16]}, r"symbol 'seq' must be strictly increasing, got \[32, 16\]"),
    ("repeated", {"seq": [16, 16]}, r"symbol 'seq' must be strictly increasing"),
    ("float", {"seq": [16.0, 32]}, r"symbol 'seq' must be ints, got 16.0"),
    ("bool", {"seq": [True, 16]}, r"symbol 'seq' must be ints, got True"),
    ("string items", {"seq": ["16"]}, r"symbol 'seq' must be ints"),
    ("not a list", {"seq": 16}, r"symbol 'seq' must be a list of ints or 'pow2', got int"),
    ("bad spec", {"seq": "pow3"}, r"symbol 'seq': unknown spec 'pow3'"),
    ("pow2:0", {"seq": "pow2:0"}, r"symbol 'seq': 'pow2:N' needs N >= 1"),
    ("above bounds", {"seq": [16, 1000]}, r"bucket\(s\) \[1000\] for symbol 'seq' are outside its bounds \[1, 256\]"),
    ("below bounds", {"batch": [0, 4]}, r"bucket\(s\) \[0\] for symbol 'batch' are outside its bounds \[1, 64\]"),
    ("no symbol", {}, r"at least one symbol"),
]


@pytest.mark.parametrize("case", BAD_BUCKETS, ids=[c[0] for c in BAD_BUCKETS])
def test_bad_buckets_are_binding_errors(tokens, case):
    _, spec, fragment = case
    with pytest.raises(rlx.BindingError, match=fragment):
        tokens.bucketed(**spec)
    with pytest.raises(rlx.BindingError, match=fragment):
        rlx.bucketed(tokens, spec)
    out = tokens.bucketed(seq=[8]).run(token_feeds(1, 5))  # the pipeline is still usable
    assert out["h"].shape == (1, 5, D)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(overflow="clip"), r"overflow = 'clip'"),
    (dict(pad_values={"idz": 0}), r"unknown input 'idz' \(did you mean 'ids'\?\)"),
    (dict(pad_values={"ids": 0.5}), r"pad_values\['ids'\] = 0.5 is not a int64 scalar"),
    (dict(pad_values={"x": "0"}), r"pad_values\['x'\] = '0' is not a float32 scalar"),
    (dict(pad_values={"ids": 2**70}), r"pad_values\['ids'\]"),
    (dict(pad_values=[0]), r"pad_values must be a dict"),
])
def test_bad_options_are_binding_errors(tokens, kwargs, fragment):
    with pytest.raises(rlx.BindingError, match=fragment):
        tokens.bucketed(seq=[16], **kwargs)


def test_bounds_come_from_the_pipeline(tokens):
    assert tokens.dims["seq"] == (1, 256)
    lo, hi = tokens.dims["seq"]
    bk = tokens.bucketed(seq="pow2")
    assert bk.bounds["seq"] == (lo, hi)


def test_given_twice_and_not_a_pipeline(tokens):
    with pytest.raises(rlx.BindingError, match="given twice"):
        rlx.bucketed(tokens, {"seq": [16]}, seq=[32])
    with pytest.raises(rlx.BindingError, match="ModelCompilePipeline"):
        rlx.bucketed(token_graph(), seq=[16])


def test_expression_dims_are_refused_at_bucketed_time():
    g = rlx.Graph("expr", dims={"batch": (1, 8), "seq": (1, 64)})
    x = g.input("x", ("batch", "seq", 4))
    g.output("flat", g.reshape(x, ("batch*seq", 4)))
    g.output("same", g.relu(x))
    pipe = rlx.ModelCompilePipeline(g)
    for sym in ("seq", "batch"):
        with pytest.raises(rlx.BindingError, match=rf"cannot bucket symbol '{sym}': it occurs in expression dims "
                                                   r"\(output 'flat' axis 0 \(batch\*seq\)\)"):
            pipe.bucketed(**{sym: [8]})

    g = rlx.Graph("shifted", dims={"batch": (1, 8), "seq": (1, 64)})
    x = g.input("x", ("batch", "seq", 4))
    y = g.input("y", ("batch", "seq + 1", 4))
    g.output("cat", g.concat([x, y], axis=1))  # seq + (seq + 1): where do y's valid rows lie?
    pipe = rlx.ModelCompilePipeline(g)
    with pytest.raises(rlx.BindingError, match=r"'seq'.*input 'y' axis 1 \(seq \+ 1\); output 'cat' axis 1 \(2\*seq \+ 1\)"):
        pipe.bucketed(seq="pow2")
    bk = pipe.bucketed(batch="pow2:1")  # batch is only ever a plain dim: fine
    feeds = {"x": np.ones((3, 5, 4), np.float32), "y": np.ones((3, 6, 4), np.float32)}
    assert bk.plan(feeds) == ({"batch": 3, "seq": 5}, {"batch": 4, "seq": 5})
    assert bk.run(feeds)["cat"].shape == (3, 11, 4)

    g = rlx.Graph("doubled", dims={"n": (1, 64)})
    z = g.input("z", ("2*n", 4))
    g.output("z2", g.relu(z))
    with pytest.raises(rlx.BindingError, match=r"cannot bucket symbol 'n': no input axis has the dim 'n'"):
        rlx.ModelCompilePipeline(g).bucketed(n=[8])


def test_non_bucketed_symbols_are_inferred_from_expressions():
    g = rlx.Graph("pairs", dims={"batch": (1, 8), "seq": (1, 64)})
    x = g.input("x", ("batch", "seq", 4))
    p = g.input("p", ("2*batch", 4))
    g.output("y", g.relu(x))
    g.output("q", g.relu(p))
    bk = rlx.ModelCompilePipeline(g).bucketed(seq=[16])
    out = bk.run(x=np.ones((3, 5, 4), np.float32), p=-np.ones((6, 4), np.float32))
    assert out["y"].shape == (3, 5, 4) and out["q"].shape == (6, 4) and (out["q"] == 0).all()


FEED_MISTAKES = [
    ("seq disagrees", lambda f: {**f, "mask": f["mask"][:, :4]}, rlx.ShapeError,
     r"symbol 'seq' is 6 from input 'x' axis 1 but 4 from input 'mask' axis 1"),
    ("missing input", lambda f: {"x": f["x"], "ids": f["ids"]}, rlx.BindingError, r"missing input\(s\) \['mask'\]"),
    ("wrong rank", lambda f: {**f, "ids": f["ids"][0]}, rlx.ShapeError, r"input 'ids': got 1 dims"),
    ("unknown input", lambda f: {**f, "xx": f["x"]}, rlx.BindingError, r"unknown input `xx`"),
    ("wrong dtype", lambda f: {**f, "ids": f["ids"].astype(np.float32)}, rlx.DTypeError, r"input `ids`"),
    ("not a dict", lambda f: [f["x"]], rlx.BindingError, r"dict"),
]


@pytest.mark.parametrize("case", FEED_MISTAKES, ids=[c[0] for c in FEED_MISTAKES])
def test_feed_mistakes_are_typed_and_recoverable(tokens, case):
    _, edit, exc, fragment = case
    bk = tokens.bucketed(seq=[8, 16])
    feeds = token_feeds(2, 6)
    good = bk.run(feeds)
    with pytest.raises(exc, match=fragment):
        bk.run(edit(feeds))
    with pytest.raises(rlx.BindingError, match="given twice"):
        bk.run(feeds, x=feeds["x"])
    again = bk.run(**feeds)
    for k in good:
        np.testing.assert_array_equal(again[k], good[k])
    assert bk.report()["calls"] == 2


def test_more_bucket_variants_than_capacity_warns():
    pipe = token_pipeline(capacity=4)
    with pytest.warns(RuntimeWarning, match="6 bucket variants exceed the pipeline's capacity 4"):
        pipe.bucketed(seq="pow2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.bucketed(seq=[16, 256])


def test_concurrent_runs_share_variants_and_counters():
    pipe = token_pipeline()
    bk = pipe.bucketed(seq=[8, 32, 128])
    seqs = list(range(1, 121))
    errors = []

    def worker(offset):
        try:
            for s in seqs[offset::4]:
                feeds = token_feeds(1, s, seed=s)
                got = bk.run(feeds)
                np.testing.assert_array_equal(got["h"], unpadded(pipe, feeds, batch=1, seq=s)["h"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    r = bk.report()
    assert r["calls"] == 120 and sum(r["calls_per_bucket"].values()) == 120 and len(pipe) == 3


def test_buckets_through_a_small_pipeline_cache():
    """Every call looks its bucket's variant up in the pipeline (a hit costs a hash); with more
    buckets than the cache holds, evicted buckets compile again and results stay exact."""
    pipe = token_pipeline(capacity=2)
    with pytest.warns(RuntimeWarning, match="capacity 2"):
        bk = pipe.bucketed(seq=[8, 16, 32])
    for s in (3, 3, 3):
        bk.run(token_feeds(1, s))
    assert pipe.stats["misses"] == 1 and pipe.stats["hits"] == 2
    bucket_misses = 1
    for s in (10, 20, 5, 30, 12):  # buckets 16, 32, 8, 32, 16 through a cache of 2
        feeds = token_feeds(1, s, seed=s)
        before = pipe.stats["misses"]
        got = bk.run(feeds)["h"]
        bucket_misses += pipe.stats["misses"] - before
        np.testing.assert_array_equal(got, unpadded(pipe, feeds, batch=1, seq=s)["h"])
        assert len(pipe) <= 2
    assert bucket_misses >= 4  # most buckets were evicted in between and compiled again
    assert bk.report()["variants_compiled"] == bucket_misses


def test_onnx_model_pipelines_bucket_too():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    import rlx.onnx

    w = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", "seq", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", "seq", 4])
    nodes = [helper.make_node("MatMul", ["X", "W"], ["h"]), helper.make_node("Relu", ["h"], ["Y"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], initializer=[numpy_helper.from_array(w, "W")]),
                              opset_imports=[helper.make_opsetid("", 17)])
    m = rlx.onnx.load(model, dims={"batch": (1, 8), "seq": (1, 100)})
    bk = m.bucketed(seq="pow2")
    assert bk.buckets == {"seq": [8, 16, 32, 64, 100]}
    assert m.pipeline().bucketed(seq=[50, 100]).buckets == {"seq": [50, 100]}
    for s in (1, 9, 70):
        feeds = {"X": np.random.default_rng(s).standard_normal((2, s, 4)).astype(np.float32)}
        np.testing.assert_array_equal(bk.run(feeds)["Y"], m.run(feeds)["Y"])
    assert bk.report()["calls_per_bucket"] == {"seq=8": 1, "seq=16": 1, "seq=100": 1}
