"""Text ops: TfIdfVectorizer over integer tokens, composed from rlx graph ops.

Everything but the tokens is known at import (the pool, the n-gram sizes and skips, the
output slots, the weights) and so is the sequence length, so every (start, skip) window the
reference counts is enumerated at import. Per n-gram size the window's tokens are gathered
([N, windows, 1, n]), compared with every pool n-gram of that size ([pool, n]), the matches
(all n tokens equal) summed over the windows, and the per-n-gram counts scattered into the
output's feature slots by a constant 0 / 1 matrix (a matmul); the mode's weights follow.
rlx has no string tensors: a string pool is a ``DTypeError``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np

import rlx
from rlx._onnx_import import Importer
from rlx._onnx_registry import attrs, op
from rlx._onnx_sym import dim_text

#: The most window x pool-n-gram x n comparisons (per row) TfIdfVectorizer builds at import.
MAX_TFIDF_COMPARISONS = 1 << 26


def _pool_ngrams(pool: List[int], counts: List[int], lo: int, hi: int) -> Tuple[Dict[int, Dict[tuple, int]], int]:
    """The pool's n-grams of sizes ``lo`` .. ``hi``: size -> {n-gram: id}, and the number of ids.

    Ids are numbered from 0 in pool order over every size (those outside [lo, hi] take ids
    too), as the reference numbers them; an n-gram listed twice keeps its last id, as the
    reference's trie does. Section ``i`` of ``counts`` holds the (i + 1)-grams."""
    out: Dict[int, Dict[tuple, int]] = {}
    nid = 0
    for i, start in enumerate(counts):
        size = i + 1
        end = counts[i + 1] if i + 1 < len(counts) else len(pool)
        items = end - start
        if items <= 0:
            continue
        n_grams = items // size
        if lo <= size <= hi:
            for k in range(n_grams):
                a = start + k * size
                if a < 0 or a + size > len(pool):
                    break  # the reference stops at the pool's end
                out.setdefault(size, {})[tuple(pool[a:a + size])] = nid
                nid += 1
        else:
            nid += n_grams
    return out, nid


def _windows(c: int, size: int, skips: List[int]) -> np.ndarray:
    """[windows, size] positions: every start with every skip whose n-gram fits in ``c``."""
    rows = [[s + k * d for k in range(size)] for d in skips for s in range(c) if s + (size - 1) * d < c]
    return np.array(rows, np.int64).reshape(len(rows), size)


@op("TfIdfVectorizer")
def _tfidf_vectorizer(imp: Importer, node: Any) -> Any:
    """Counts of the pool's n-grams (skip-grams: up to ``max_skip_count`` tokens skipped
    between neighbours; unigrams counted once a position) in each row of int32 / int64 tokens,
    weighted by ``mode``: TF the counts, IDF the weight (or 1) where the count is non-zero,
    TFIDF the counts times the weights. [C] gives [features], [N, C] gives [N, features]."""
    at = attrs(node)
    if at.get("pool_strings"):
        raise rlx.DTypeError("TfIdfVectorizer with pool_strings: rlx has no string tensors (int64 pools only)")
    mode = at.get("mode", "")
    if mode not in ("TF", "IDF", "TFIDF"):
        raise rlx.ModelFormatError(f"TfIdfVectorizer mode {mode!r}: expected TF, IDF or TFIDF")
    lo, hi = int(at.get("min_gram_length", 0)), int(at.get("max_gram_length", 0))
    max_skip = int(at.get("max_skip_count", 0))
    if max_skip < 0:
        raise rlx.ModelFormatError(f"TfIdfVectorizer max_skip_count {max_skip}: must be >= 0")
    pool = [int(v) for v in at.get("pool_int64s", [])]
    counts = [int(v) for v in at.get("ngram_counts", [])]
    indexes = [int(v) for v in at.get("ngram_indexes", [])]
    weights = [float(v) for v in at.get("weights", [])]
    if not indexes or min(indexes) < 0:
        raise rlx.ModelFormatError("TfIdfVectorizer needs non-negative ngram_indexes (one output slot an n-gram)")
    n_out = max(indexes) + 1
    if weights and len(weights) < n_out:
        raise rlx.ModelFormatError(f"TfIdfVectorizer has {len(weights)} weights for {n_out} output slots")
    grams, n_ids = _pool_ngrams(pool, counts, lo, hi)
    if any(i >= len(indexes) for d in grams.values() for i in d.values()):
        raise rlx.ModelFormatError(f"TfIdfVectorizer pool has {n_ids} n-grams but {len(indexes)} ngram_indexes")

    xv = imp.get(node.input[0])
    dims = imp.shape(xv)
    if len(dims) > 2:
        raise rlx.ShapeError(f"TfIdfVectorizer input of shape {[dim_text(d) for d in dims]}: expected [C] or [N, C]")
    c = dims[-1] if dims else 1
    if not isinstance(c, int):
        raise rlx.UnsupportedOpError(f"TfIdfVectorizer over a sequence of symbolic length {dim_text(c)}: rlx "
                                     "enumerates the n-gram windows at import and needs a static length")
    dt = imp.dtype(xv)
    if dt.kind not in "iu":
        raise rlx.DTypeError(f"TfIdfVectorizer of {dt}: the tokens must be int32 or int64 (rlx has no strings)")
    batch = dims[0] if len(dims) == 2 else 1
    g = imp.g
    x = g.reshape(imp.rt(xv), (dim_text(batch), c))
    if np.dtype(x.dtype) != np.int64:
        x = g.cast(x, "int64")

    # The skips each size is counted at: unigrams once a position (the reference counts them
    # in its first pass only, when min_gram_length is 1), longer n-grams at every skip.
    all_skips = list(range(1, max_skip + 2))
    parts, slots = [], []
    for size in sorted(grams):
        if size < 1:
            continue
        table = grams[size]
        skips = [1] if size == 1 and lo == 1 else all_skips
        pos = _windows(c, size, skips)
        if not len(pos):
            continue
        keys = np.array(list(table), np.int64).reshape(len(table), size)
        n_win, n_key = pos.shape[0], keys.shape[0]
        if n_win * n_key * size > MAX_TFIDF_COMPARISONS:
            raise rlx.UnsupportedOpError(
                f"TfIdfVectorizer {size}-grams: {n_win} windows x {n_key} pool n-grams x {size} tokens is over "
                f"the {MAX_TFIDF_COMPARISONS} comparisons a row rlx builds at import")
        imp.reserve([pos.size + keys.size], 8, "the TfIdfVectorizer windows and pool")
        win = g.gather(x, g.constant(np.ascontiguousarray(pos.reshape(-1))), 1)
        win = g.reshape(win, (dim_text(batch), n_win, 1, size))
        hit = g.cast(g.eq(win, g.constant(np.ascontiguousarray(keys))), "float32")  # [N, windows, pool, size]
        if size > 1:
            hit = g.cast(g.eq(g.reduce_sum(hit, [3], keep_dim=False), g.constant(np.array(float(size), np.float32))),
                         "float32")
        else:
            hit = g.reshape(hit, (dim_text(batch), n_win, n_key))
        parts.append(g.reduce_sum(hit, [1], keep_dim=False))  # [N, pool]: matches per n-gram
        slots.extend(indexes[i] for i in table.values())
    if not parts:
        freq = imp.filled([batch, n_out], g.constant(np.array(0.0, np.float32)))
    else:
        scatter = np.zeros((len(slots), n_out), np.float32)
        scatter[np.arange(len(slots)), slots] = 1.0
        imp.reserve(scatter.shape, 4, "the TfIdfVectorizer slot matrix")
        cnt = parts[0] if len(parts) == 1 else g.concat(parts, 1)
        freq = g.matmul(cnt, g.constant(scatter))  # [N, features]
    w = g.constant(np.ascontiguousarray(np.array(weights[:n_out], np.float32))) if weights else None
    if mode == "IDF":
        zero = g.constant(np.array(0.0, np.float32))
        freq = g.where(g.gt(freq, zero), w if w is not None else g.constant(np.array(1.0, np.float32)), zero)
    elif mode == "TFIDF" and w is not None:
        freq = g.mul(freq, w)
    if len(dims) < 2:
        freq = g.reshape(freq, (n_out,))
    return freq
