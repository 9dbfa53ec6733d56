"""ONNX Det as the Leibniz sum over permutations: sum of sign(s) * prod_i x[i, s(i)], one
gather of the n! * n entries and products along the permutation. No division, so singular and
ill-conditioned matrices need no pivoting; the cost grows as n!, so n is limited to ``_MAX_N``
(720 terms). Values are products of n entries summed in float32: for well-scaled small matrices
as accurate as LU; large entries of mixed sign cancel as in any float32 sum.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

import rlx
from rlx._onnx_helpers import dims_prod
from rlx._onnx_import import Importer
from rlx._onnx_registry import op
from rlx._onnx_sym import dim_text

_MAX_N = 6


def _sign(perm: tuple) -> int:
    """+1 for an even permutation, -1 for an odd one (by counting inversions)."""
    inv = sum(1 for i in range(len(perm)) for j in range(i + 1, len(perm)) if perm[i] > perm[j])
    return -1 if inv % 2 else 1


@op("Det")
def _det(imp: Importer, node: Any) -> Any:
    xv = imp.get(node.input[0])
    dims = imp.shape(xv)
    if len(dims) < 2 or dims[-1] != dims[-2]:
        raise rlx.ShapeError(f"Det input of shape {[dim_text(d) for d in dims]}: expected [..., n, n]")
    n = dims[-1]
    if not isinstance(n, int) or not 1 <= n <= _MAX_N:
        raise rlx.UnsupportedOpError(f"Det of {dim_text(n)} x {dim_text(n)} matrices: rlx sums the n! terms of "
                                     f"the Leibniz formula, for static 1 <= n <= {_MAX_N}")
    if imp.dtype(xv).kind != "f":
        raise rlx.DTypeError(f"Det on {imp.dtype(xv)} (float types)")
    g = imp.g
    lead = dims[:-2]
    x = g.reshape(imp.rt(xv), (dim_text(dims_prod(lead)), n * n))
    perms = list(itertools.permutations(range(n)))
    idx = np.array([[i * n + s[i] for i in range(n)] for s in perms], np.int64)  # [n!, n]
    terms = g.reshape(g.gather(x, g.constant(idx.reshape(-1)), 1), (dim_text(dims_prod(lead)), len(perms), n))
    prod = g.slice(terms, 2, 0, 1)
    for i in range(1, n):
        prod = g.mul(prod, g.slice(terms, 2, i, i + 1))
    signs = np.array([_sign(s) for s in perms], np.float32).reshape(len(perms), 1)
    y = g.reduce_sum(g.mul(prod, g.constant(signs)), [1, 2])
    return g.reshape(y, tuple(dim_text(d) for d in lead))
