"""ONNX ops of transformer blocks, composed of rlx elementwise and data-movement ops: Swish
(``x * sigmoid(alpha * x)``), SwiGLU (``Swish(A) * B``) and RotaryEmbedding.

RotaryEmbedding takes its cos / sin caches as inputs (rlx's own ``rotary`` computes them from
a theta, so it is not used): the caches are gathered at ``position_ids`` (when given), and the
rotated pairs are the two halves of the first ``rotary_embedding_dim`` features, or with
``interleaved`` the even / odd features, reached by a reshape to ``[..., dim / 2, 2]`` rather
than strided slices. Features past ``rotary_embedding_dim`` pass through.
"""

from __future__ import annotations

from typing import Any, List

import numpy as np

import rlx
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import DimLike, dim_text

_FLOAT = np.dtype(np.float32)


def _float_operand(imp: Importer, name: str, what: str) -> Any:
    v = imp.get(name)
    if v is None:
        raise rlx.ModelFormatError(f"{what} is missing")
    if imp.dtype(v) != _FLOAT:
        raise rlx.DTypeError(f"{what} of dtype {imp.dtype(v)} (rlx computes it in float32)")
    return imp.rt(v)


def _swish(imp: Importer, x: Any, alpha: float) -> Any:
    g = imp.g
    if alpha == 1.0:
        return g.mul(x, g.sigmoid(x))
    return g.mul(x, g.sigmoid(g.mul(x, g.constant(np.array(alpha, np.float32)))))


@op("Swish")
def _swish_op(imp: Importer, node: Any) -> Any:
    x = _float_operand(imp, node.input[0], "Swish X")
    return _swish(imp, x, float(attrs(node).get("alpha", 1.0)))


@op("SwiGLU")
def _swiglu(imp: Importer, node: Any) -> Any:
    if len(node.input) != 2:
        raise rlx.ModelFormatError(f"SwiGLU needs two inputs (A, B), got {len(node.input)}")
    a = _float_operand(imp, node.input[0], "SwiGLU A")
    b = _float_operand(imp, node.input[1], "SwiGLU B")
    sa, sb = imp.shape(a), imp.shape(b)
    if sa != sb:
        # The spec applies no broadcasting: A and B have one shape.
        raise rlx.ShapeError(f"SwiGLU A {[dim_text(d) for d in sa]} and B {[dim_text(d) for d in sb]} must have one shape")
    return imp.g.mul(_swish(imp, a, float(attrs(node).get("alpha", 1.0))), b)


# -- RotaryEmbedding ---------------------------------------------------------------------------


def _texts(dims: List[DimLike]) -> tuple:
    return tuple(dim_text(d) for d in dims)


def _caches(imp: Importer, node: Any, half: int) -> List[Any]:
    """cos and sin as [batch, seq, half]: gathered at position_ids, or given so."""
    names = list(node.input) + [""] * (4 - len(node.input))
    cos = _float_operand(imp, names[1], "RotaryEmbedding cos_cache")
    sin = _float_operand(imp, names[2], "RotaryEmbedding sin_cache")
    if imp.shape(cos) != imp.shape(sin):
        raise rlx.ShapeError(f"RotaryEmbedding cos_cache {list(_texts(imp.shape(cos)))} and sin_cache "
                             f"{list(_texts(imp.shape(sin)))} must have one shape")
    want = 2 if names[3] else 3
    if imp.rank(cos) != want or imp.shape(cos)[-1] != half:
        raise rlx.ShapeError(f"RotaryEmbedding caches of shape {list(_texts(imp.shape(cos)))}: expected rank {want} "
                             f"ending in rotary_embedding_dim / 2 = {half}")
    if not names[3]:
        return [cos, sin]
    pos = imp.get(names[3])
    if imp.dtype(pos) != np.int64 or imp.rank(pos) != 2:
        raise rlx.ShapeError(f"RotaryEmbedding position_ids must be int64 [batch, seq], got {imp.dtype(pos)} "
                             f"{list(_texts(imp.shape(pos)))}")
    p = imp.rt(pos)
    return [imp.g.gather(cos, p, 0), imp.g.gather(sin, p, 0)]


def _rotate(imp: Importer, x: Any, cos: Any, sin: Any, interleaved: bool) -> Any:
    """``x`` [..., dim] rotated by ``cos`` / ``sin`` [..., dim / 2] (broadcasting)."""
    g = imp.g
    dims = imp.shape(x)
    n = int(dims[-1])  # the rotary dim, static
    half = n // 2
    if interleaved:
        pairs = g.reshape(x, _texts(dims[:-1]) + (half, 2))
        x1, x2 = g.slice(pairs, len(dims), 0, 1), g.slice(pairs, len(dims), 1, 2)
        cos = g.reshape(cos, tuple(cos.shape) + (1,))
        sin = g.reshape(sin, tuple(sin.shape) + (1,))
    else:
        x1, x2 = g.slice(x, len(dims) - 1, 0, half), g.slice(x, len(dims) - 1, half, n)
    real = g.sub(g.mul(cos, x1), g.mul(sin, x2))
    imag = g.add(g.mul(sin, x1), g.mul(cos, x2))
    out = g.concat([real, imag], len(x1.shape) - 1)
    return g.reshape(out, _texts(dims)) if interleaved else out


@op("RotaryEmbedding")
def _rotary_embedding(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x = _float_operand(imp, node.input[0], "RotaryEmbedding X")
    dims = imp.shape(x)
    g = imp.g
    if len(dims) == 4:
        b, _, s, head = dims  # [batch, heads, seq, head]
        y = x
    elif len(dims) == 3:
        b, s, hidden = dims
        heads = int(at.get("num_heads", 0))
        if heads <= 0:
            raise rlx.ModelFormatError("RotaryEmbedding with a 3-D input needs num_heads > 0")
        if not isinstance(hidden, int) or hidden % heads:
            raise rlx.ShapeError(f"RotaryEmbedding hidden size {dim_text(hidden)} is not a multiple of {heads} heads")
        head = hidden // heads
        y = g.reshape(x, (dim_text(b), dim_text(s), heads, head))  # [batch, seq, heads, head]
    else:
        raise rlx.ShapeError(f"RotaryEmbedding input of rank {len(dims)}, expected 3 or 4")
    if not isinstance(head, int):
        raise rlx.UnsupportedOpError(f"RotaryEmbedding head size {dim_text(head)} is symbolic (must be static)")
    rd = int(at.get("rotary_embedding_dim", 0)) or head
    if rd % 2 or not 0 < rd <= head:
        raise rlx.ShapeError(f"RotaryEmbedding rotary_embedding_dim {rd}: must be even and at most the head size {head}")
    cos, sin = _caches(imp, node, rd // 2)
    # cos / sin [batch, seq, half] broadcast over the heads axis of y.
    axis = 1 if len(dims) == 4 else 2
    shape = [dim_text(b), dim_text(s), rd // 2]
    shape.insert(axis, 1)
    cos, sin = g.reshape(cos, tuple(shape)), g.reshape(sin, tuple(shape))
    last = len(imp.shape(y)) - 1
    rot = y if rd == head else g.slice(y, last, 0, rd)
    out = _rotate(imp, rot, cos, sin, bool(at.get("interleaved", 0)))
    if rd != head:
        out = g.concat([out, g.slice(y, last, rd, head)], last)
    return g.reshape(out, _texts(dims)) if len(dims) == 3 else out
