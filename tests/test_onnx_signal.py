"""rlx.onnx HannWindow / HammingWindow / BlackmanWindow and DFT against ONNX Runtime and the
onnx reference, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_case_support import F, I64, check, single  # noqa: E402

import rlx  # noqa: E402

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("size", [1, 2, 10, 33])
def test_windows(op, periodic, size):
    if size == 1 and not periodic:
        pytest.skip("N - 1 = 0: the reference divides by zero")
    m = single(op, ["n"], F, {"n": np.array(size, np.int64)}, opset=17, periodic=periodic)
    check(m, {}, rtol=1e-5, atol=1e-6)


def test_window_int_output_and_errors():
    check(single("HannWindow", ["n"], I64, {"n": np.array(8, np.int64)}, opset=17, output_datatype=I64), {}, exact=True)
    with pytest.raises(rlx.ShapeError, match="the_node.*size -3"):
        rlx.onnx.load(single("HannWindow", ["n"], F, {"n": np.array(-3, np.int64)}, opset=17))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*known at import"):
        rlx.onnx.load(single("HannWindow", [("n", I64, [])], F, opset=17))


def _dft_model(shape, opset, axis=None, length=None, **at):
    ins = [("x", F, shape)]
    inits = {}
    if length is not None:
        inits["len"] = np.array(length, np.int64)
    ins.append("len" if length is not None else "")
    if opset >= 20:
        if axis is not None:
            inits["axis"] = np.array(axis, np.int64)
        ins.append("axis" if axis is not None else "")
    elif axis is not None:
        at["axis"] = axis
    while ins and ins[-1] == "":
        ins.pop()
    return single("DFT", ins, F, inits, opset=opset, **at)


CASES = [  # (shape, axis, length, inverse, onesided)
    ([2, 9, 1], 1, None, 0, 0), ([2, 9, 2], 1, None, 0, 0), ([2, 8, 1], 1, None, 0, 1), ([2, 9, 1], 1, None, 0, 1),
    ([3, 6, 5, 2], 2, None, 0, 0), ([3, 6, 5, 2], 1, 8, 0, 0), ([3, 6, 5, 2], 1, 4, 0, 0), ([2, 7, 2], 1, None, 1, 0),
    ([2, 5, 2], 1, None, 1, 1), ([2, 5, 2], 1, 9, 1, 1), ([2, 6, 2], 1, 7, 1, 1), ([2, 7, 2], -2, 12, 1, 0),
]


@pytest.mark.parametrize("shape,axis,length,inverse,onesided", CASES)
@pytest.mark.parametrize("opset", [17, 20])
def test_dft(shape, axis, length, inverse, onesided, opset):
    if opset == 17 and axis is not None and axis < 0:
        pytest.skip("opset 17 axis attribute is non-negative in the tests here")
    m = _dft_model(shape, opset, axis, length, inverse=inverse, onesided=onesided)
    x = RNG.standard_normal(shape).astype(np.float32)
    # The onnx reference (numpy's FFT in float64): ONNX Runtime's irfft disagrees on lengths.
    check(m, {"x": x}, which="ref", rtol=1e-4, atol=1e-5)


def test_dft_matches_ort_forward():
    m = _dft_model([2, 16, 2], 20, 1, None)
    check(m, {"x": RNG.standard_normal((2, 16, 2)).astype(np.float32)}, rtol=1e-4, atol=1e-5)


def test_dft_errors():
    with pytest.raises(rlx.ShapeError, match="the_node.*expected \\[..., signal, 1 or 2\\]"):
        rlx.onnx.load(_dft_model([2, 8, 3], 20, 1))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*symbolic size n"):
        rlx.onnx.load(_dft_model([2, "n", 2], 20, 1))
    with pytest.raises(rlx.ShapeError, match="the_node.*length 0"):
        rlx.onnx.load(_dft_model([2, 8, 2], 20, 1, 0))


@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("step,length,window", [(8, 16, False), (5, None, True), (3, 12, True), (40, None, False)])
def test_stft(c, onesided, step, length, window):
    if c == 2 and onesided:
        pytest.skip("a one-sided transform of a complex signal is not defined")
    x = RNG.standard_normal((2, 40, c)).astype(np.float32)
    wlen = length or 10
    inits = {"step": np.array(step, np.int64)}
    ins = [("x", F, [2, 40, c]), "step"]
    feeds = {"x": x}
    if window:
        ins.append(("w", F, [wlen]))
        feeds["w"] = RNG.random(wlen).astype(np.float32)
    else:
        ins.append("")
    if length is not None:
        ins.append("len")
        inits["len"] = np.array(length, np.int64)
    check(single("STFT", ins, F, inits, opset=17, onesided=onesided), feeds, which="ref", rtol=1e-4, atol=1e-4)


def test_stft_errors():
    inits = {"step": np.array(4, np.int64), "len": np.array(8, np.int64)}
    with pytest.raises(rlx.ShapeError, match="the_node.*window of length 6"):
        rlx.onnx.load(single("STFT", [("x", F, [1, 20, 1]), "step", ("w", F, [6]), "len"], F, inits, opset=17))
    with pytest.raises(rlx.ShapeError, match="the_node.*frame_length 30"):
        rlx.onnx.load(single("STFT", [("x", F, [1, 20, 1]), "step", "", "len"], F,
                             {"step": inits["step"], "len": np.array(30, np.int64)}, opset=17))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*known at import"):
        rlx.onnx.load(single("STFT", [("x", F, [1, 20, 1]), ("step", I64, [])], F, opset=17))


@pytest.mark.parametrize("mels,dft,rate,lo,hi", [(8, 16, 8192, 0.0, 4096.0), (10, 64, 16000, 20.0, 7600.0),
                                                 (4, 9, 100, 1.0, 50.0), (20, 32, 8000, 100.0, 3000.0)])
@pytest.mark.parametrize("out", [None, 11])
def test_mel_weight_matrix(mels, dft, rate, lo, hi, out):
    inits = {"m": np.array(mels, np.int64), "d": np.array(dft, np.int64), "r": np.array(rate, np.int64),
             "lo": np.array(lo, np.float32), "hi": np.array(hi, np.float32)}
    at = {} if out is None else {"output_datatype": out}
    check(single("MelWeightMatrix", ["m", "d", "r", "lo", "hi"], out or F, inits, opset=17, **at), {}, which="ref",
          rtol=1e-6, atol=1e-7)


def test_mel_weight_matrix_errors():
    inits = {"m": np.array(0, np.int64), "d": np.array(16, np.int64), "r": np.array(8000, np.int64),
             "lo": np.array(0.0, np.float32), "hi": np.array(100.0, np.float32)}
    with pytest.raises(rlx.ShapeError, match="the_node.*num_mel_bins 0"):
        rlx.onnx.load(single("MelWeightMatrix", ["m", "d", "r", "lo", "hi"], F, inits, opset=17))
