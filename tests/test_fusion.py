"""Fusion seen from Python: a BERT-style encoder layer written op by op, the way exporters emit
it, compiled with and without the optimizer and checked against numpy; the compile report
names the fusions."""

import math

import numpy as np
import pytest

import rlx
from conftest import gelu_ref, layer_norm_ref, softmax_ref

H, HEADS, FFN = 384, 12, 1536
HD = H // HEADS
EPS = 1e-12
SHAPES = {
    **{f"w{n}": (H, H) for n in "qkvo"},
    **{f"b{n}": (H,) for n in "qkvo"},
    "ln1_g": (H,),
    "ln1_b": (H,),
    "w1": (H, FFN),
    "b1": (FFN,),
    "w2": (FFN, H),
    "b2": (H,),
    "ln2_g": (H,),
    "ln2_b": (H,),
}
VARIANTS = [(1, 7), (3, 16)]  # (batch, seq)


def bert_layer():
    g = rlx.Graph("bert_layer", dims={"batch": (1, 8), "seq": (1, 128)})
    x = g.input("x", ("batch", "seq", H))
    mask = g.input("mask", ("batch", "seq"), "int64")
    p = {n: g.param(n, s) for n, s in SHAPES.items()}
    # Additive padding bias as exporters write it: (1 - mask) * -10000, shaped [b, 1, 1, s].
    inv = g.sub(g.scalar(1.0), g.cast(mask, "float32"))
    bias = g.reshape(g.mul(inv, g.constant(np.float32(-10000.0))), ("batch", 1, 1, "seq"))

    def heads(name, perm):
        t = g.linear(x, p[f"w{name}"], p[f"b{name}"])
        return g.transpose(g.reshape(t, ("batch", "seq", HEADS, HD)), perm)

    q = heads("q", (0, 2, 1, 3))  # [b, h, s, d]
    kt = heads("k", (0, 2, 3, 1))  # [b, h, d, s]
    v = heads("v", (0, 2, 1, 3))
    scores = g.mul(g.matmul(q, kt), g.scalar(1.0 / math.sqrt(HD)))
    probs = g.softmax(g.add(scores, bias), axis=-1)
    ctx = g.reshape(g.transpose(g.matmul(probs, v), (0, 2, 1, 3)), ("batch", "seq", H))
    h1 = g.layer_norm(g.add(g.linear(ctx, p["wo"], p["bo"]), x), p["ln1_g"], p["ln1_b"], eps=EPS)
    f = g.linear(g.linear(h1, p["w1"], p["b1"], activation="gelu"), p["w2"], p["b2"])
    g.output("hidden", g.layer_norm(g.add(f, h1), p["ln2_g"], p["ln2_b"], eps=EPS))
    return g


def bert_layer_ref(x, mask, p):
    b, s, _ = x.shape
    x = x.astype(np.float64)
    bias = ((1.0 - mask) * -10000.0).reshape(b, 1, 1, s)

    def heads(n):
        return (x @ p[f"w{n}"] + p[f"b{n}"]).reshape(b, s, HEADS, HD).transpose(0, 2, 1, 3)

    q, k, v = heads("q"), heads("k"), heads("v")
    probs = softmax_ref(q @ k.transpose(0, 1, 3, 2) / math.sqrt(HD) + bias)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, H)
    h1 = layer_norm_ref(ctx @ p["wo"] + p["bo"] + x, p["ln1_g"], p["ln1_b"], EPS)
    f = gelu_ref(h1 @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return layer_norm_ref(f + h1, p["ln2_g"], p["ln2_b"], EPS)


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(7)
    p = {}
    for n, s in SHAPES.items():
        if n.endswith("_g"):
            p[n] = (1.0 + 0.2 * rng.standard_normal(s)).astype(np.float32)
        else:
            p[n] = (rng.standard_normal(s) * (0.1 if len(s) == 2 else 0.05)).astype(np.float32)
    return p


@pytest.fixture(scope="module")
def pipes(params):
    """The same layer compiled with and without the optimizer: {optimize: pipeline}."""
    g = bert_layer()
    out = {}
    for optimize in (True, False):
        pipe = rlx.ModelCompilePipeline(g, optimize=optimize)
        pipe.bind_params(params)
        out[optimize] = pipe
    return out


def _inputs(b, s):
    rng = np.random.default_rng(b * 1000 + s)
    x = rng.standard_normal((b, s, H)).astype(np.float32)
    # Row i keeps its first s - i tokens (at least one), so padding really is masked.
    lens = np.maximum(s - np.arange(b), 1)
    mask = (np.arange(s)[None, :] < lens[:, None]).astype(np.int64)
    return x, mask


@pytest.mark.parametrize("b,s", VARIANTS)
def test_optimized_matches_unoptimized_and_numpy(pipes, params, b, s):
    x, mask = _inputs(b, s)
    fused = pipes[True].get_or_compile(batch=b, seq=s).run(x=x, mask=mask)["hidden"]
    plain = pipes[False].get_or_compile(batch=b, seq=s).run(x=x, mask=mask)["hidden"]
    want = bert_layer_ref(x, mask, params)
    assert fused.shape == plain.shape == (b, s, H) and fused.dtype == np.float32
    np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(plain, want, rtol=1e-4, atol=1e-4)


def test_padding_changes_only_through_the_mask(pipes):
    # Garbage in padded positions must not reach the kept tokens of the same row.
    b, s = VARIANTS[1]
    x, mask = _inputs(b, s)
    exe = pipes[True].get_or_compile(batch=b, seq=s)
    y = exe.run(x=x, mask=mask)["hidden"]
    # Moderate garbage: huge values would give scores past the -10000 bias (numpy agrees).
    noise = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32) * 3
    x2 = np.where(mask[..., None] == 0, noise, x).astype(np.float32)
    y2 = exe.run(x=x2, mask=mask)["hidden"]
    keep = mask.astype(bool)
    assert not keep.all()
    np.testing.assert_allclose(y2[keep], y[keep], rtol=1e-4, atol=1e-4)


def test_report_names_the_fusions(pipes):
    report = pipes[True].report
    assert report.startswith("compile report:"), report
    for piece in ("fuse_attention", "fuse_qkv", "attention:", "qkv"):
        assert piece in report, report
    data = pipes[True].report_data
    names = [n for n, _ in data["passes"]]
    assert "fuse_attention" in names and "fuse_qkv" in names
    # Every pass was timed: finite, non-negative, and the template took measurable time.
    times = [t for _, t in data["passes"]]
    assert all(0.0 <= t < 60.0 for t in times) and sum(times) > 0.0, times
    assert any(f.startswith("attention") for f in data["fusions"]), data["fusions"]
    assert any("qkv" in f for f in data["fusions"]), data["fusions"]
    assert data["hir_ops_after"] < data["hir_ops_before"]
    plain = pipes[False].report_data
    assert plain["fusions"] == [] and plain["passes"] == []
    # Fusion leaves fewer kernels than lowering op by op.
    assert data["kernels"] < plain["kernels"], (data["kernels"], plain["kernels"])


def test_specialized_report_has_the_specialize_time(pipes):
    spec = pipes[True].specialize(batch=2, seq=5)
    d = spec.report_data
    assert d["specialize_time_s"] > 0.0 and "specialize" in spec.report
    assert d["kernels"] == pipes[True].report_data["kernels"]


def test_report_builds_the_template():
    g = rlx.Graph("tiny")
    g.output("y", g.relu(g.input("x", (2,))))
    pipe = rlx.ModelCompilePipeline(g)
    assert pipe.stats["template_time_s"] == 0.0
    assert "1 kernels" in pipe.report
    assert pipe.stats["template_time_s"] > 0.0 and len(pipe) == 0


def test_rlx_debug_1_prints_the_compile_report():
    import os
    import subprocess
    import sys

    code = "import rlx\ng = rlx.Graph('g')\ng.output('y', g.exp(g.input('x', (2,))))\nrlx.ModelCompilePipeline(g).get_or_compile()\n"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, RLX_DEBUG="1"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "compile report:" in out.stderr and "pass fold_constants" in out.stderr, out.stderr
    quiet = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, RLX_DEBUG="0"), capture_output=True, text=True)
    assert "compile report" not in quiet.stderr


@pytest.mark.parametrize("shape", [(20_001,), (3, 9_000), (2, 4_096), (5, 7)])
def test_fused_elementwise_on_long_rows_matches_numpy(shape):
    """Fused programs run in blocks of columns: rows longer than a block (a single 1-D row
    too), a row of exactly one block and short rows agree with numpy, with broadcasting."""
    g = rlx.Graph("ew")
    x = g.input("x", shape)
    b = g.input("b", shape[-1:])
    y = g.gelu(g.add(g.mul(x, g.scalar(2.0)), b))
    g.output("y", g.sub(y, x))
    rng = np.random.default_rng(0)
    xs = rng.standard_normal(shape).astype(np.float32)
    bs = rng.standard_normal(shape[-1:]).astype(np.float32)
    pipe = rlx.ModelCompilePipeline(g)
    assert any("elementwise" in f for f in pipe.report_data["fusions"]), pipe.report
    got = pipe.get_or_compile().run(x=xs, b=bs)["y"]
    want = gelu_ref(2.0 * xs.astype(np.float64) + bs) - xs
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
