"""TfIdfVectorizer against the onnx reference evaluator, on the cases the backend node tests
(TF only, bigrams and uni+bigrams) leave out: IDF / TFIDF with and without weights, trigrams,
unigrams with skips, a pool n-gram listed twice, several n-grams in one output slot, sizes
left out by min_gram_length, int64 and rank-0 / rank-1 / batched tokens, a symbolic batch;
and the typed errors (string pools, a symbolic sequence length, a malformed node)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

I32, I64, F = TensorProto.INT32, TensorProto.INT64, TensorProto.FLOAT

# Unigrams 2 3 5 4, bigrams (5 6) (7 8) (6 7), trigram (2 3 5): the node tests' pool plus a trigram.
POOL = [2, 3, 5, 4, 5, 6, 7, 8, 6, 7, 2, 3, 5]
COUNTS = [0, 4, 10]
INDEXES = [0, 1, 2, 3, 4, 5, 6, 7]


def model(shape: Sequence[Any], elem: int = I32, out_shape: Optional[Sequence[Any]] = None, **attrs: Any) -> onnx.ModelProto:
    node = helper.make_node("TfIdfVectorizer", ["X"], ["Y"], name="the_tfidf", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", elem, list(shape))],
                              [helper.make_tensor_value_info("Y", F, out_shape)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 8
    return m


def reference(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The reference evaluator's output. It reads ``len(weights)`` even when there are none
    (a TypeError in IDF / TFIDF): those run as TF and get the spec's no-weight rule here."""
    from onnx.reference import ReferenceEvaluator

    node = m.graph.node[0]
    mode = next(a.s.decode() for a in node.attribute if a.name == "mode")
    if mode == "TF" or any(a.name == "weights" for a in node.attribute):
        return ReferenceEvaluator(m).run(None, {"X": x})[0]
    tf = onnx.ModelProto()
    tf.CopyFrom(m)
    next(a for a in tf.graph.node[0].attribute if a.name == "mode").s = b"TF"
    counts = ReferenceEvaluator(tf).run(None, {"X": x})[0]
    return (counts > 0).astype(np.float32) if mode == "IDF" else counts


def check(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    got = rlx.onnx.load(m).run({"X": x})["Y"]
    want = reference(m, x)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    return got


def attrs(**kw: Any) -> Dict[str, Any]:
    base = dict(mode="TF", min_gram_length=1, max_gram_length=3, max_skip_count=0, ngram_counts=COUNTS,
                ngram_indexes=INDEXES, pool_int64s=POOL)
    base.update(kw)
    return base


TOKENS = np.array([[2, 3, 5, 4, 2, 3, 5, 6, 7, 8, 6, 7], [1, 2, 3, 5, 6, 7, 5, 6, 2, 7, 3, 5]], np.int32)


@pytest.mark.parametrize("mode,weights", [("TF", None), ("IDF", None), ("IDF", [0.5 + i for i in range(8)]),
                                          ("TFIDF", None), ("TFIDF", [0.25 * (i + 1) for i in range(8)])])
@pytest.mark.parametrize("lo,hi,skip", [(1, 3, 0), (1, 3, 2), (1, 1, 3), (2, 3, 1), (3, 3, 4), (1, 2, 11)])
def test_modes_sizes_and_skips(mode, weights, lo, hi, skip):
    kw = attrs(mode=mode, min_gram_length=lo, max_gram_length=hi, max_skip_count=skip)
    if weights is not None:
        kw["weights"] = weights
    out = check(model([2, 12], **kw), TOKENS)
    assert out.shape == (2, 8)


@pytest.mark.parametrize("shape", [[12], [1, 12], [3, 4], []])
def test_ranks_and_int64(shape):
    rng = np.random.default_rng(1)
    x = rng.integers(1, 9, size=shape).astype(np.int64)
    kw = attrs(max_skip_count=1, mode="TFIDF", weights=[0.5] * 8)
    if shape:
        check(model(shape, I64, **kw), x)
    else:
        # A scalar is one token ([C = 1], as the spec reads it); the reference cannot index a
        # scalar, so it runs on the [1] row.
        got = rlx.onnx.load(model(shape, I64, **kw)).run({"X": x})["Y"]
        np.testing.assert_array_equal(got, reference(model([1], I64, **kw), x.reshape(1)))
        for v in (2, 3, 5, 4):
            # A unigram of the pool: counted once, whatever the skips.
            got = rlx.onnx.load(model(shape, I64, **kw)).run({"X": np.array(v, np.int64)})["Y"]
            assert got.shape == (8,) and got.sum() == 0.5


def test_random_tokens_against_reference():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(2, 9, size=(4, 20)).astype(np.int32)
        check(model([4, 20], **attrs(max_skip_count=int(rng.integers(0, 4)))), x)


def test_duplicate_ngrams_and_shared_slots():
    # (5 6) twice: the last id counts; slots 1 and 3 each gather two n-grams; slot 5 is never used.
    kw = attrs(pool_int64s=[2, 3, 5, 6, 7, 8, 5, 6], ngram_counts=[0, 2], ngram_indexes=[1, 3, 3, 1, 0, 6],
               max_gram_length=2, max_skip_count=1, mode="TFIDF", weights=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    out = check(model([2, 12], **kw), TOKENS)
    assert out.shape == (2, 7) and not out[:, 5].any()


def test_pool_without_counted_sizes_gives_zeros():
    # Only a 4-gram in the pool, and only a 4-token row: no window fits the min length.
    kw = attrs(pool_int64s=[1, 2, 3, 4], ngram_counts=[0, 0, 0, 0], ngram_indexes=[2], min_gram_length=1,
               max_gram_length=3)
    assert not check(model([2, 12], **kw), TOKENS).any()
    short = attrs(min_gram_length=3, max_gram_length=3, max_skip_count=3)
    assert not check(model([2], **short), np.array([2, 3], np.int32)).any()


def test_symbolic_batch():
    m = model(["N", 12], out_shape=["N", 8], **attrs(max_skip_count=2))
    om = rlx.onnx.load(m, dims={"N": (1, 8)})
    for n in (1, 3):
        x = np.concatenate([TOKENS] * 2)[:n]
        np.testing.assert_array_equal(om.run({"X": x})["Y"], reference(m, x))


def test_string_pool_is_a_dtype_error_naming_the_node():
    kw = attrs()
    del kw["pool_int64s"]
    kw["pool_strings"] = ["a", "b", "c", "d", "a", "b", "b", "c", "c", "d", "a", "b", "c"]
    with pytest.raises(rlx.DTypeError, match="the_tfidf.*pool_strings"):
        rlx.onnx.load(model([12], I64, **kw))
    with pytest.raises(rlx.DTypeError):
        rlx.onnx.load(model([12], TensorProto.STRING, **kw))  # a string input: rlx has no strings


def test_symbolic_length_is_unsupported_naming_the_node():
    with pytest.raises(rlx.UnsupportedOpError, match="the_tfidf.*symbolic length"):
        rlx.onnx.load(model([2, "L"], **attrs()), dims={"L": (1, 16)})


@pytest.mark.parametrize("bad,msg", [(dict(mode="BM25"), "mode"), (dict(ngram_indexes=[0, 1]), "ngram_indexes"),
                                     (dict(weights=[1.0, 2.0]), "weights"), (dict(max_skip_count=-1), "max_skip")])
def test_malformed_nodes(bad, msg):
    with pytest.raises(rlx.ModelFormatError, match=msg):
        rlx.onnx.load(model([12], **attrs(**bad)))


def test_float_tokens_are_a_dtype_error():
    with pytest.raises(rlx.DTypeError, match="the_tfidf"):
        rlx.onnx.load(model([12], F, **attrs()))


def test_supported_op_listed():
    ops: List[str] = rlx.onnx.SUPPORTED_OPS
    assert "TfIdfVectorizer" in ops
