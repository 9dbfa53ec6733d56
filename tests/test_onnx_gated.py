"""Swish, SwiGLU and RotaryEmbedding (rlx._onnx_ops_gated) against the ONNX reference."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_case_support import F, I64, check, single  # noqa: E402

import rlx  # noqa: E402
import rlx.onnx  # noqa: E402

RNG = np.random.default_rng(0)


def _f(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.5])
def test_swish(alpha):
    m = single("Swish", [("x", F, [3, 5])], F, opset=24, alpha=alpha)
    check(m, {"x": _f(3, 5) * 4}, which="ref", rtol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_swiglu(alpha):
    m = single("SwiGLU", [("a", F, [2, 3, 4]), ("b", F, [2, 3, 4])], F, opset=28, alpha=alpha)
    check(m, {"a": _f(2, 3, 4) * 3, "b": _f(2, 3, 4)}, which="ref", rtol=1e-6)


def test_swiglu_shapes_must_match():
    m = single("SwiGLU", [("a", F, [2, 4]), ("b", F, [1, 4])], F, opset=28)
    with pytest.raises(rlx.ShapeError, match="the_node.*one shape"):
        rlx.onnx.load(m)


def _rope_case(rank, interleaved, rd, with_pos):
    b, h, s, d = 2, 3, 5, 8
    half = (rd or d) // 2
    xs = [b, h, s, d] if rank == 4 else [b, s, h * d]
    ins = [("x", F, xs)]
    feeds = {"x": _f(*xs)}
    if with_pos:
        ins += [("cos", F, [11, half]), ("sin", F, [11, half]), ("pos", I64, [b, s])]
        ang = _f(11, half)
        feeds["pos"] = RNG.integers(0, 11, (b, s)).astype(np.int64)
    else:
        ins += [("cos", F, [b, s, half]), ("sin", F, [b, s, half])]
        ang = _f(b, s, half)
    feeds["cos"], feeds["sin"] = np.cos(ang), np.sin(ang)
    kw = dict(interleaved=int(interleaved), rotary_embedding_dim=rd)
    if rank == 3:
        kw["num_heads"] = h
    return single("RotaryEmbedding", ins, F, opset=23, **kw), feeds


@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rd", [0, 4])
@pytest.mark.parametrize("with_pos", [False, True])
def test_rotary_embedding(rank, interleaved, rd, with_pos):
    m, feeds = _rope_case(rank, interleaved, rd, with_pos)
    check(m, feeds, which="ref", rtol=1e-6, atol=1e-6)


def test_rotary_embedding_errors():
    m, _ = _rope_case(3, False, 0, True)
    del m.graph.node[0].attribute[:]  # no num_heads for a 3-D input
    with pytest.raises(rlx.ModelFormatError, match="the_node.*num_heads"):
        rlx.onnx.load(m)
    m, _ = _rope_case(4, False, 4, True)
    next(a for a in m.graph.node[0].attribute if a.name == "rotary_embedding_dim").i = 6  # caches hold 2
    with pytest.raises(rlx.ShapeError, match="the_node.*rotary_embedding_dim / 2 = 3"):
        rlx.onnx.load(m)
