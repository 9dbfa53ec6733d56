"""Choosing the next token from logits: greedy, or sampled after temperature, top-k and top-p
(nucleus) filtering, in that order (as Hugging Face's ``generate`` applies them)."""

from __future__ import annotations

import numpy as np

import rlx

__all__ = ["pick_tokens"]


def pick_tokens(logits: np.ndarray, do_sample: bool, temperature: float, top_k: int, top_p: float,
                rng: np.random.Generator) -> np.ndarray:
    """One token per row of ``logits`` ``[rows, vocab]``, as int64. Greedy takes the first
    largest logit; sampling draws each row in order from ``rng``."""
    if not do_sample:
        return np.argmax(logits, axis=-1).astype(np.int64)
    if not (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")):
        raise rlx.ShapeError(f"temperature must be a finite number > 0, got {temperature!r}")
    if not (isinstance(top_k, int) and top_k >= 0):
        raise rlx.ShapeError(f"top_k must be an int >= 0 (0: off), got {top_k!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise rlx.ShapeError(f"top_p must be in (0, 1], got {top_p!r}")
    out = np.empty(len(logits), np.int64)
    for r, row in enumerate(np.asarray(logits, np.float64)):
        z = row / temperature
        order = np.argsort(-z, kind="stable")
        if top_k:
            order = order[:top_k]
        p = np.exp(z[order] - z[order[0]])
        p /= p.sum()
        if top_p < 1:
            # The nucleus: the fewest most likely tokens whose probability reaches top_p.
            keep = int(np.searchsorted(np.cumsum(p), top_p)) + 1
            order, p = order[:keep], p[:keep] / p[:keep].sum()
        out[r] = order[rng.choice(len(order), p=p)]
    return out
