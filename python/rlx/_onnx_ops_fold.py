"""ONNX ops that scatter values into a larger image, as gathers and sums over import-time index
lists: Col2Im and MaxUnpool. Shapes must be static.

- Col2Im: each image position sums the column entries that land on it; their positions are
  listed at import (padded with a zero entry to the longest list), gathered, summed.
- MaxUnpool: the run-time indices are flat positions in the whole output, so each output
  position takes the last input whose index names it (as the onnx reference writes them in
  order), found by comparing all input indices with all output positions: a mask of
  |input| x |output| elements, limited to ``_MASK_LIMIT``. Output positions no index names are 0.
"""

from __future__ import annotations

import itertools
from typing import Any, List

import numpy as np

import rlx
from rlx._onnx_helpers import static_dims
from rlx._onnx_import import Importer
from rlx._onnx_registry import STATIC_OPERANDS, attrs, op

STATIC_OPERANDS.update({"Col2Im": {1, 2}, "MaxUnpool": {2}})

_MASK_LIMIT = 1 << 26


def _ints(at: dict, key: str, n: int, default: int, low: int) -> List[int]:
    vals = [int(v) for v in at.get(key, [default] * n)]
    if len(vals) != n or any(v < low for v in vals):
        raise rlx.ShapeError(f"{key} {vals}: expected {n} values of at least {low}")
    return vals


def _col2im_sources(image: List[int], block: List[int], strides: List[int], pads: List[int],
                    dilations: List[int], length: int) -> np.ndarray:
    """[P, m]: for each image position, the flat (kernel offset * L + block) column entries
    that land on it, padded with K * L (a zero entry)."""
    d = len(image)
    counts = [(image[i] + pads[i] + pads[i + d] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(d)]
    if min(counts) < 1 or int(np.prod(counts)) != length:
        raise rlx.ShapeError(f"Col2Im input holds {length} blocks; image {image}, block {block}, strides {strides}, "
                             f"pads {pads} and dilations {dilations} make {counts}")
    lists: List[List[int]] = [[] for _ in range(int(np.prod(image)))]
    img_strides = [int(np.prod(image[i + 1:])) for i in range(d)]
    for k, offs in enumerate(itertools.product(*[range(b) for b in block])):
        for b_idx, blk in enumerate(itertools.product(*[range(c) for c in counts])):
            pos = [blk[i] * strides[i] - pads[i] + offs[i] * dilations[i] for i in range(d)]
            if all(0 <= p < s for p, s in zip(pos, image)):
                lists[sum(p * s for p, s in zip(pos, img_strides))].append(k * length + b_idx)
    width = max(max(len(sl) for sl in lists), 1)
    zero = int(np.prod(block)) * length
    return np.array([sl + [zero] * (width - len(sl)) for sl in lists], np.int64)


@op("Col2Im")
def _col2im(imp: Importer, node: Any) -> Any:
    image = [int(v) for v in np.asarray(imp.values(node.input[1], "Col2Im image_shape")).reshape(-1)]
    block = [int(v) for v in np.asarray(imp.values(node.input[2], "Col2Im block_shape")).reshape(-1)]
    xv = imp.get(node.input[0])
    xs = static_dims(imp, xv, "Col2Im")
    d, k = len(image), int(np.prod(block)) if block else 0
    if d < 1 or len(block) != d or min(image + block) < 1 or len(xs) != 3 or xs[1] % k:
        raise rlx.ShapeError(f"Col2Im input of shape {xs}, image_shape {image}, block_shape {block}: expected "
                             "[N, C * prod(block_shape), L] and positive shapes of one length")
    at = attrs(node)
    strides, dilations = _ints(at, "strides", d, 1, 1), _ints(at, "dilations", d, 1, 1)
    pads = _ints(at, "pads", 2 * d, 0, 0)
    src = _col2im_sources(image, block, strides, pads, dilations, xs[2])
    n, c = xs[0], xs[1] // k
    imp.reserve(src.shape, 8, "the Col2Im index list")
    g = imp.g
    x = g.reshape(imp.rt(xv), (n, c, k * xs[2]))
    dt = np.dtype(x.dtype)
    x = g.concat([x, g.constant(np.zeros((n, c, 1), dt))], 2)
    y = g.gather(x, g.constant(src.reshape(-1)), 2)
    y = g.reduce_sum(g.reshape(y, (n, c) + src.shape), [3])
    return g.reshape(y, tuple([n, c] + image))


@op("MaxUnpool")
def _max_unpool(imp: Importer, node: Any) -> Any:
    xv, iv = imp.get(node.input[0]), imp.get(node.input[1])
    xs = static_dims(imp, xv, "MaxUnpool")
    if static_dims(imp, iv, "MaxUnpool") != xs or imp.dtype(iv).kind not in "iu":
        raise rlx.ShapeError(f"MaxUnpool indices of shape {imp.shape(iv)} and {imp.dtype(iv)}: integers shaped as X {xs}")
    at = attrs(node)
    kernel = [int(v) for v in at.get("kernel_shape", [])]
    d = len(kernel)
    if d < 1 or len(xs) != d + 2 or min(kernel) < 1:
        raise rlx.ShapeError(f"MaxUnpool kernel_shape {kernel} for an input of shape {xs}")
    strides, pads = _ints(at, "strides", d, 1, 1), _ints(at, "pads", 2 * d, 0, 0)
    inferred = xs[:2] + [(xs[2 + i] - 1) * strides[i] - pads[i] - pads[i + d] + kernel[i] for i in range(d)]
    shape = inferred
    if len(node.input) > 2 and node.input[2]:
        shape = [int(v) for v in np.asarray(imp.values(node.input[2], "MaxUnpool output_shape")).reshape(-1)]
        if len(shape) != len(xs) or any(s < t for s, t in zip(shape, inferred)):
            raise rlx.ShapeError(f"MaxUnpool output_shape {shape} is smaller than the unpooled shape {inferred}")
    if min(inferred) < 1:
        raise rlx.ShapeError(f"MaxUnpool of {xs} makes the empty shape {inferred}")
    k, p = int(np.prod(xs)), int(np.prod(inferred))
    if k * p > _MASK_LIMIT:
        raise rlx.UnsupportedOpError(f"MaxUnpool from {k} to {p} elements: the {k} x {p} index mask is over "
                                     f"{_MASK_LIMIT} elements")
    g = imp.g
    idx = imp.rt(iv)
    idx = idx if np.dtype(idx.dtype) == np.int64 else g.cast(idx, "int64")
    hit = g.eq(g.reshape(idx, (k, 1)), g.constant(np.arange(p, dtype=np.int64).reshape(1, p)))
    one, zero = g.constant(np.ones((), np.float32)), g.constant(np.zeros((), np.float32))
    hits = g.where(hit, one, zero)
    last = g.argmax(hits, 0, False, True)  # the last input naming each output position
    x = imp.rt(xv)
    dt = np.dtype(x.dtype)
    y = g.gather(g.reshape(x, (k,)), last, 0)
    y = g.where(g.gt(g.reduce_max(hits, [0]), zero), y, g.constant(np.zeros((), dt)))
    if shape != inferred:
        # Positions past the unpooled shape read an appended zero.
        pos = np.full(shape, p, np.int64)
        pos[tuple(slice(0, t) for t in inferred)] = np.arange(p).reshape(inferred)
        y = g.gather(g.concat([y, g.constant(np.zeros((1,), dt))], 0), g.constant(pos.reshape(-1)), 0)
    return g.reshape(y, tuple(shape))
