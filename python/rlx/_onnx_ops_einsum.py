"""ONNX Einsum on one or two float32 operands: an index repeated in one operand takes the
diagonal first, indices in one operand only and not in the output are summed, then transposes
and one batched matmul ([batch, free a, contracted] x [batch, contracted, free b]). Ellipses are
expanded to spare letters; broadcasting between operands is not imported.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

import numpy as np

import rlx
from rlx._onnx_helpers import dims_prod
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import DimLike, dim_text


def _parse_einsum(eq: str, ranks: List[int]) -> Tuple[List[str], str]:
    eq = eq.replace(" ", "")
    if "->" in eq:
        lhs, out = eq.split("->")
    else:
        lhs, out = eq, None
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise rlx.ShapeError(f"Einsum {eq!r} names {len(terms)} operands, got {len(ranks)}")
    ell_rank = None
    letters = set(c for c in eq if c.isalpha())
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in letters]
    fixed = []
    for term, rk in zip(terms, ranks):
        if "..." in term:
            k = rk - (len(term) - 3)
            if ell_rank is not None and k != ell_rank:
                raise rlx.UnsupportedOpError(f"Einsum {eq!r}: ellipses of different ranks (broadcasting)")
            ell_rank = k
            term = term.replace("...", "".join(spare[:k]))
        if not re.fullmatch(r"[A-Za-z]*", term) or len(term) != rk:
            raise rlx.ShapeError(f"Einsum term {term!r} does not match an operand of rank {rk}")
        fixed.append(term)
    ell = "".join(spare[:ell_rank or 0])
    if out is None:
        counts: Dict[str, int] = {}
        for term in fixed:
            for c in term:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c in counts if counts[c] == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    if not re.fullmatch(r"[A-Za-z]*", out) or len(set(out)) != len(out):
        raise rlx.ShapeError(f"Einsum output {out!r} is not a list of distinct indices")
    if any(c not in "".join(fixed) for c in out):
        raise rlx.ShapeError(f"Einsum {eq!r}: an output index names no input axis")
    return fixed, out


def _diagonals(imp: Importer, x: Any, term: str, dims: List[DimLike], eq: str) -> Tuple[Any, str]:
    """``x`` (axes ``term`` of sizes ``dims``) with each index repeated in ``term`` reduced to its
    diagonal: the off-diagonal elements masked to zero (whatever they hold), then the second axis
    summed away."""
    dims = list(dims)
    while True:
        rep = next((c for c in term if term.count(c) > 1), None)
        if rep is None:
            return x, term
        i = term.index(rep)
        j = term.index(rep, i + 1)
        n = dims[i]
        if not isinstance(n, int):
            raise rlx.UnsupportedOpError(f"Einsum {eq!r}: the diagonal of index {rep!r} of symbolic size {dim_text(n)}")
        shape = [1] * len(term)
        shape[i] = shape[j] = n
        mask = imp.g.constant(np.eye(n, dtype=bool).reshape(shape))
        x = imp.g.where(mask, x, imp.g.constant(np.zeros((), np.float32)))
        x = imp.g.reduce_sum(x, [j], keep_dim=False)
        term, dims = term[:j] + term[j + 1:], dims[:j] + dims[j + 1:]


def _sum_out(imp: Importer, x: Any, term: str, keep: str) -> Tuple[Any, str]:
    """``x`` summed over the indices of ``term`` that are not in ``keep``."""
    drop = [i for i, c in enumerate(term) if c not in keep]
    if not drop:
        return x, term
    return imp.g.reduce_sum(x, drop, keep_dim=False), "".join(c for c in term if c in keep)


def _permute(imp: Importer, x: Any, term: str, want: str) -> Any:
    perm = [term.index(c) for c in want]
    return x if perm == list(range(len(perm))) else imp.g.transpose(x, perm)


@op("Einsum")
def _einsum(imp: Importer, node: Any) -> Any:
    eq = attrs(node)["equation"]
    vals = [imp.get(i) for i in node.input]
    fixed, out = _parse_einsum(eq, [imp.rank(v) for v in vals])
    if len(vals) > 2:
        raise rlx.UnsupportedOpError(f"Einsum {eq!r} with {len(vals)} operands (1 or 2)")
    size: Dict[str, DimLike] = {}
    for term, v in zip(fixed, vals):
        for c, d in zip(term, imp.shape(v)):
            if c in size and size[c] != d:
                raise rlx.UnsupportedOpError(f"Einsum {eq!r}: index {c!r} has sizes {dim_text(size[c])} and {dim_text(d)} (no broadcasting)")
            size[c] = d
    if any(imp.dtype(v) != np.float32 for v in vals):
        raise rlx.UnsupportedOpError(f"Einsum {eq!r} on {', '.join(str(imp.dtype(v)) for v in vals)} (float32 only)")
    diag = [_diagonals(imp, imp.rt(v), t, imp.shape(v), eq) for t, v in zip(fixed, vals)]
    if len(vals) == 1:
        x, term = _sum_out(imp, *diag[0], out)
        return _permute(imp, x, term, out)
    (a, ta), (b, tb) = diag
    # Indices in one operand only and not in the output are summed first.
    a, ta = _sum_out(imp, a, ta, out + tb)
    b, tb = _sum_out(imp, b, tb, out + ta)
    batch = [c for c in ta if c in tb and c in out]
    contract = [c for c in ta if c in tb and c not in out]
    fa = [c for c in ta if c not in tb]
    fb = [c for c in tb if c not in ta]
    if any(c not in out for c in fa + fb):
        raise rlx.GraphError(f"Einsum {eq!r}: internal index classification failed")
    a = _permute(imp, a, ta, "".join(batch + fa + contract))
    b = _permute(imp, b, tb, "".join(batch + contract + fb))
    bs, m, k, nn = ([size[c] for c in batch], dims_prod([size[c] for c in fa]),
                    dims_prod([size[c] for c in contract]), dims_prod([size[c] for c in fb]))
    bsz = dims_prod(bs)
    a = imp.g.reshape(a, (dim_text(bsz), dim_text(m), dim_text(k)))
    b = imp.g.reshape(b, (dim_text(bsz), dim_text(k), dim_text(nn)))
    y = imp.g.matmul(a, b)
    res = "".join(batch + fa + fb)
    y = imp.g.reshape(y, tuple(dim_text(size[c]) for c in res))
    return _permute(imp, y, res, out)
