"""rlx.onnx RNN, GRU and LSTM (unrolled) against ONNX Runtime: directions, layouts, biases,
initial states, peepholes, clip, linear_before_reset, activations; and their errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402
from onnx_case_support import F, check, single  # noqa: E402

import rlx  # noqa: E402

RNG = np.random.default_rng(13)
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _case(kind, direction="forward", layout=0, bias=True, init=True, peep=False, seq=4, batch=3, inp=5, hidden=6,
          **at):
    dirs = 2 if direction == "bidirectional" else 1
    gh = GATES[kind] * hidden
    x = RNG.standard_normal((batch, seq, inp) if layout else (seq, batch, inp)).astype(np.float32)
    feeds = {"x": x, "w": RNG.standard_normal((dirs, gh, inp)).astype(np.float32) * 0.5,
             "r": RNG.standard_normal((dirs, gh, hidden)).astype(np.float32) * 0.5}
    names = ["x", "w", "r"]
    if bias:
        feeds["b"] = RNG.standard_normal((dirs, 2 * gh)).astype(np.float32) * 0.5
    names += ["b" if bias else "", ""]
    state = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    if init:
        feeds["h0"] = RNG.standard_normal(state).astype(np.float32)
    names.append("h0" if init else "")
    if kind == "LSTM":
        if init:
            feeds["c0"] = RNG.standard_normal(state).astype(np.float32)
        names.append("c0" if init else "")
        if peep:
            feeds["p"] = RNG.standard_normal((dirs, 3 * hidden)).astype(np.float32)
            names.append("p")
    while names and not names[-1]:
        names.pop()
    ins = [(n, F, list(feeds[n].shape)) if n else "" for n in names]
    n_out = 3 if kind == "LSTM" else 2
    m = single(kind, ins, F, opset=22, n_out=n_out, hidden_size=hidden, direction=direction, layout=layout, **at)
    return m, feeds


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_recurrent(kind, direction, layout):
    m, feeds = _case(kind, direction, layout)
    # ONNX Runtime has no batchwise (layout 1) kernels.
    check(m, feeds, which="ref" if layout else "ort", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_recurrent_defaults_without_bias_or_state(kind):
    m, feeds = _case(kind, bias=False, init=False, seq=1)
    check(m, feeds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("extra", [{"clip": 0.7}, {"linear_before_reset": 1}, {"activations": ["Relu", "Softsign"]}])
def test_gru_options(extra):
    m, feeds = _case("GRU", "bidirectional" if "activations" not in extra else "forward", **extra)
    check(m, feeds, rtol=1e-4, atol=1e-5)


def test_lstm_peepholes_clip_and_activations():
    m, feeds = _case("LSTM", "bidirectional", peep=True, clip=1.5,
                     activations=["Sigmoid", "Softplus", "Tanh", "Sigmoid", "Tanh", "Relu"])
    check(m, feeds, rtol=1e-4, atol=1e-5)


def test_sequence_lens_full_length_is_accepted_shorter_is_not():
    m, feeds = _case("RNN", init=False)
    m.graph.node[0].input.append("lens")
    m.graph.initializer.append(numpy_helper.from_array(np.full(3, 4, np.int32), "lens"))
    check(m, feeds, rtol=1e-4, atol=1e-5)
    m.graph.initializer[-1].CopyFrom(numpy_helper.from_array(np.array([4, 2, 4], np.int32), "lens"))
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*sequence_lens"):
        rlx.onnx.load(m)


def test_recurrent_errors():
    m, _ = _case("LSTM", input_forget=1)
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*input_forget"):
        rlx.onnx.load(m)
    m, _ = _case("GRU", activations=["Sigmoid", "Affine"])
    with pytest.raises(rlx.UnsupportedOpError, match="the_node.*'Affine'"):
        rlx.onnx.load(m)
    m, _ = _case("RNN", hidden=6)
    next(a for a in m.graph.node[0].attribute if a.name == "hidden_size").i = 5  # no longer matches W
    with pytest.raises(rlx.ShapeError, match="the_node.*hidden_size 5"):
        rlx.onnx.load(m)
    m = single("RNN", [("x", F, ["s", 2, 3]), ("w", F, [1, 4, 3]), ("r", F, [1, 4, 4])], F, opset=22, hidden_size=4)
    with pytest.raises(rlx.ShapeError, match="the_node.*static sequence length"):
        rlx.onnx.load(m)
