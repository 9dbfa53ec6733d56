"""ONNX signal ops whose sizes are known at import: the Hann / Hamming / Blackman windows and
MelWeightMatrix (constants), DFT (one matmul with a real DFT matrix made at import) and STFT
(frames gathered at import-time positions, times the window, then DFT's matrix).

DFT works on the ONNX real layout: the last axis holds [re] or [re, im]. Along the transformed
axis, the signal's [n, c] values are flattened to n * c and multiplied by a [n * c, m * c_out]
matrix of cos / sin terms (angles reduced mod 2 pi in integers, in float64, then float32); the
inverse one-sided transform (irfft) weighs the bins as numpy's irfft does (DC and, for an even
length, Nyquist once, real parts only; the others twice). A signal longer than ``dft_length``
is sliced first; a shorter one is zero-padded by the matrix.
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

import rlx
from rlx._onnx_helpers import dims_prod
from rlx._onnx_import import Importer, Known, declared_dtype, np_dtype
from rlx._onnx_registry import STATIC_OPERANDS, attrs, op
from rlx._onnx_sym import dim_text

STATIC_OPERANDS.update({"HannWindow": {0}, "HammingWindow": {0}, "BlackmanWindow": {0}, "DFT": {1, 2},
                        "STFT": {1, 3}, "MelWeightMatrix": {0, 1, 2, 3, 4}})

# w(t) for t = 2 pi n / N (N = size, or size - 1 when symmetric).
_WINDOWS = {
    "HannWindow": lambda t: 0.5 - 0.5 * np.cos(t),
    "HammingWindow": lambda t: 25 / 46 - (21 / 46) * np.cos(t),
    "BlackmanWindow": lambda t: 0.42 - 0.5 * np.cos(t) + 0.08 * np.cos(2 * t),
}


def _scalar_int(imp: Importer, name: str, what: str) -> int:
    arr = np.asarray(imp.values(name, what)).reshape(-1)
    if arr.size != 1 or arr.dtype.kind not in "iu":
        raise rlx.ShapeError(f"{what} must be one integer, got {arr.tolist()}")
    return int(arr[0])


@op(*_WINDOWS)
def _window(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    size = _scalar_int(imp, node.input[0], f"{node.op_type} size")
    if size < 0:
        raise rlx.ShapeError(f"{node.op_type} size {size} is negative")
    dt = np_dtype(int(at.get("output_datatype", 1)), f"{node.op_type} output_datatype")
    imp.reserve([size], dt.itemsize, "the window")
    period = size if at.get("periodic", 1) else size - 1
    n = np.arange(size, dtype=np.float64)
    w = _WINDOWS[node.op_type](2 * np.pi * n / period) if period > 0 else np.ones(size)
    return Known(w.astype(dt), dt)


def _dft_matrix(n: int, c: int, length: int, m: int, inverse: bool, onesided: bool) -> np.ndarray:
    """The [n * c, m * c_out] real matrix of a DFT of ``length`` on n input points (n <= length)
    with c components (1 real, 2 complex), keeping m output points."""
    j = np.arange(n)[:, None]
    if inverse and onesided:
        # irfft: input bins j, output times k; c_out = 1.
        k = np.arange(length)[None, :]
        theta = 2 * np.pi * ((j * k) % length) / length
        w = np.where((j == 0) | (2 * j == length), 1.0, 2.0) * (2 * j <= length) / length
        mat = np.stack([w * np.cos(theta), -w * np.sin(theta)], axis=1)[:, :c, :]  # [n, c, length]
        return mat.reshape(n * c, length)
    k = np.arange(m)[None, :]
    theta = 2 * np.pi * ((j * k) % length) / length
    cos, sin = np.cos(theta), np.sin(theta)
    s = 1.0 if inverse else -1.0  # e^{s i theta}
    scale = 1.0 / length if inverse else 1.0
    # (xr + i xi)(cos + s i sin) = (xr cos - s xi sin) + i (s xr sin + xi cos)
    mat = np.empty((n, 2, m, 2))
    mat[:, 0, :, 0], mat[:, 0, :, 1] = cos, s * sin
    mat[:, 1, :, 0], mat[:, 1, :, 1] = -s * sin, cos
    return (mat[:, :c] * scale).reshape(n * c, m * 2)


@op("DFT")
def _dft(imp: Importer, node: Any) -> Any:
    at = attrs(node)
    xv = imp.get(node.input[0])
    dims = imp.shape(xv)
    r = len(dims)
    ins = list(node.input) + ["", ""]
    if imp.opset >= 20:
        axis = _scalar_int(imp, ins[2], "DFT axis") if ins[2] else -2
    else:
        axis = int(at.get("axis", 1))
    if not -r <= axis < r:
        raise rlx.ShapeError(f"DFT axis {axis} out of range for rank {r}")
    axis %= r
    c = dims[-1]
    if r < 2 or axis == r - 1 or c not in (1, 2):
        raise rlx.ShapeError(f"DFT input of shape {[dim_text(d) for d in dims]}, axis {axis}: expected [..., signal, 1 or 2]")
    if imp.dtype(xv) != np.float32:
        raise rlx.DTypeError(f"DFT on {imp.dtype(xv)} (float32)")
    n = dims[axis]
    if not isinstance(n, int):
        raise rlx.UnsupportedOpError(f"DFT along an axis of symbolic size {dim_text(n)}")
    inverse, onesided = bool(at.get("inverse", 0)), bool(at.get("onesided", 0))
    length: Optional[int] = _scalar_int(imp, ins[1], "DFT dft_length") if ins[1] else None
    if length is None:
        length = 2 * (n - 1) if inverse and onesided else n
    if length < 1:
        raise rlx.ShapeError(f"DFT length {length} must be positive")
    g, x = imp.g, imp.rt(xv)
    # Input points used: an irfft reads bins 0 .. length // 2, any DFT at most length points.
    used = min(n, length // 2 + 1 if inverse and onesided else length)
    if used < n:
        x = g.slice(x, axis, 0, used)
    m = length // 2 + 1 if onesided and not inverse else length
    mat = _dft_matrix(used, c, length, m, inverse, onesided).astype(np.float32)
    c_out = 1 if inverse and onesided else 2
    # [..., used, c] with the signal axis next to last, flattened to rows of used * c.
    perm = [i for i in range(r - 1) if i != axis] + [axis, r - 1]
    xt = g.transpose(x, perm) if perm != list(range(r)) else x
    lead: List[Any] = [dims[i] for i in perm[:-2]]
    rows = g.reshape(xt, (dim_text(dims_prod(lead)), used * c))
    y = g.matmul(rows, g.constant(mat))
    y = g.reshape(y, tuple(dim_text(d) for d in lead) + (m, c_out))
    inv = [perm.index(i) for i in range(r)]
    return g.transpose(y, inv) if perm != list(range(r)) else y


@op("STFT")
def _stft(imp: Importer, node: Any) -> Any:
    ins = list(node.input) + ["", "", ""]
    xv = imp.get(ins[0])
    dims = imp.shape(xv)
    if len(dims) != 3 or dims[2] not in (1, 2) or not isinstance(dims[1], int):
        raise rlx.ShapeError(f"STFT signal of shape {[dim_text(d) for d in dims]}: expected [batch, static length, 1 or 2]")
    if imp.dtype(xv) != np.float32:
        raise rlx.DTypeError(f"STFT on {imp.dtype(xv)} (float32)")
    step = _scalar_int(imp, ins[1], "STFT frame_step")
    win = imp.get(ins[2]) if ins[2] else None
    if win is not None and (imp.rank(win) != 1 or not isinstance(imp.shape(win)[0], int)):
        raise rlx.ShapeError(f"STFT window of shape {[dim_text(d) for d in imp.shape(win)]}: expected a static [length]")
    length = _scalar_int(imp, ins[3], "STFT frame_length") if ins[3] else None
    if length is None:
        length = imp.shape(win)[0] if win is not None else dims[1]
    if win is not None and imp.shape(win)[0] != length:
        raise rlx.ShapeError(f"STFT window of length {imp.shape(win)[0]} and frame_length {length} differ")
    if step < 1 or not 1 <= length <= dims[1]:
        raise rlx.ShapeError(f"STFT frame_step {step} and frame_length {length} on a signal of {dims[1]}: "
                             "a positive step and a length within the signal")
    frames, c = (dims[1] - length) // step + 1, dims[2]
    g = imp.g
    pos = (np.arange(frames)[:, None] * step + np.arange(length)[None, :]).reshape(-1).astype(np.int64)
    batch = dim_text(dims[0])
    x = g.reshape(g.gather(imp.rt(xv), g.constant(pos), 1), (batch, frames, length, c))
    if win is not None:
        x = g.mul(x, g.reshape(imp.rt(win), (1, 1, length, 1)))
    m = length // 2 + 1 if attrs(node).get("onesided", 1) else length
    mat = _dft_matrix(length, c, length, m, False, False).astype(np.float32)
    y = g.matmul(g.reshape(x, (dim_text(dims_prod([dims[0], frames])), length * c)), g.constant(mat))
    return g.reshape(y, (batch, frames, m, 2))


def _scalar(imp: Importer, name: str, what: str) -> Any:
    arr = np.asarray(imp.values(name, what)).reshape(-1)
    if arr.size != 1:
        raise rlx.ShapeError(f"{what} must be one value, got {arr.tolist()}")
    return arr[0]


@op("MelWeightMatrix")
def _mel_weight_matrix(imp: Importer, node: Any) -> Any:
    """Triangles between num_mel_bins + 2 points equally spaced in mel(f) = 2595 log10(1 + f / 700),
    each point at spectrogram bin floor((dft_length + 1) f / sample_rate), as the onnx reference
    and ONNX Runtime place them."""
    mels = _scalar_int(imp, node.input[0], "MelWeightMatrix num_mel_bins")
    dft = _scalar_int(imp, node.input[1], "MelWeightMatrix dft_length")
    rate = _scalar_int(imp, node.input[2], "MelWeightMatrix sample_rate")
    lo = _scalar(imp, node.input[3], "MelWeightMatrix lower_edge_hertz")
    hi = _scalar(imp, node.input[4], "MelWeightMatrix upper_edge_hertz")
    if mels < 1 or dft < 1 or rate < 1 or not 0 <= lo < hi:
        raise rlx.ShapeError(f"MelWeightMatrix num_mel_bins {mels}, dft_length {dft}, sample_rate {rate}, edges "
                             f"{lo} .. {hi}: positive sizes and 0 <= lower < upper")
    dt = declared_dtype(int(attrs(node).get("output_datatype", 1)), "MelWeightMatrix output_datatype")
    bins = dft // 2 + 1
    imp.reserve([bins, mels], dt.itemsize, "the matrix")
    mel_lo, mel_hi = 2595 * np.log1p(lo / 700) / np.log(10), 2595 * np.log1p(hi / 700) / np.log(10)
    points = np.arange(mels + 2) * ((mel_hi - mel_lo) / (mels + 2)) + mel_lo
    edges = (((dft + 1) * (700 * np.expm1(points / 2595 * np.log(10)))) // rate).astype(np.int64)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    j = np.arange(bins)[:, None]
    rise = np.where(centre > left, (j - left) / np.maximum(centre - left, 1), 1.0)
    fall = (right - j) / np.maximum(right - centre, 1)
    out = np.where((j >= centre) & (j < right), fall, np.where((j >= left) & (j <= centre), rise, 0.0))
    return Known(out.astype(dt), dt)
