"""ONNX DepthToSpace and SpaceToDepth: a reshape, a transpose and a reshape (folded with numpy
when the input is known at import). Channels and spatial sizes must be static.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np

import rlx
from rlx._onnx_helpers import reshape_to
from rlx._onnx_import import Importer, Known
from rlx._onnx_registry import attrs, foldable, op
from rlx._onnx_sym import DimLike, dim_text


def _static(imp: Importer, dims: Sequence[DimLike], what: str, which: Sequence[int]) -> None:
    if not all(isinstance(dims[i], int) for i in which):
        raise rlx.UnsupportedOpError(f"{what} needs static channels and spatial sizes, got {[str(d) for d in dims]}")


def _move(imp: Importer, x: Any, shape1: List[DimLike], perm: List[int], shape2: List[DimLike]) -> Any:
    if foldable(x):
        return Known(np.transpose(x.arr.reshape([int(d) for d in shape1]), perm).reshape([int(d) for d in shape2]), x.dtype)
    y = reshape_to(imp, x, shape1)
    y = imp.g.transpose(imp.rt(y), perm)
    return imp.g.reshape(y, tuple(dim_text(d) for d in shape2))


@op("DepthToSpace")
def _depth_to_space(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    if len(dims) != 4:
        raise rlx.ShapeError(f"DepthToSpace input of rank {len(dims)}, expected [N, C, H, W]")
    _static(imp, dims, "DepthToSpace", (1, 2, 3))
    b = int(at["blocksize"])
    n, c, h, w = dims
    if b < 1 or c % (b * b):
        raise rlx.ShapeError(f"DepthToSpace: channels {c} not divisible by blocksize^2 ({b}^2)")
    mode = at.get("mode", "DCR")
    c2 = c // (b * b)
    if mode == "DCR":
        return _move(imp, x, [n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2], [n, c2, h * b, w * b])
    if mode == "CRD":
        return _move(imp, x, [n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3], [n, c2, h * b, w * b])
    raise rlx.UnsupportedOpError(f"DepthToSpace mode {mode!r} (DCR or CRD)")


@op("SpaceToDepth")
def _space_to_depth(imp: Importer, node: Any) -> Any:
    x = imp.get(node.input[0])
    dims = imp.shape(x)
    if len(dims) != 4:
        raise rlx.ShapeError(f"SpaceToDepth input of rank {len(dims)}, expected [N, C, H, W]")
    _static(imp, dims, "SpaceToDepth", (1, 2, 3))
    at = attrs(node)
    b = int(at["blocksize"])
    n, c, h, w = dims
    if b < 1 or h % b or w % b:
        raise rlx.ShapeError(f"SpaceToDepth: spatial sizes {h}x{w} not divisible by blocksize {b}")
    mode = at.get("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise rlx.UnsupportedOpError(f"SpaceToDepth mode {mode!r} (DCR or CRD)")
    perm = [0, 3, 5, 1, 2, 4] if mode == "DCR" else [0, 1, 3, 5, 2, 4]
    return _move(imp, x, [n, c, h // b, b, w // b, b], perm, [n, c * b * b, h // b, w // b])
