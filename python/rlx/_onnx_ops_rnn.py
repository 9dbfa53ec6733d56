"""ONNX RNN, GRU and LSTM unrolled over a static sequence length: the input projection of every
step is one matmul, then each step is a matmul with R and the gate arithmetic of the spec.

Supported: forward / reverse / bidirectional, layout 0 and 1, biases, initial states, LSTM
peepholes, ``clip``, GRU's ``linear_before_reset`` and the activations Sigmoid, Tanh, Relu,
Softsign and Softplus. ``sequence_lens`` must be known at import and equal the sequence length
for every batch entry (shorter sequences would need per-entry masks and reversals);
LSTM's ``input_forget`` is unsupported.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import numpy as np

import rlx
from rlx._onnx_import import Importer
from rlx._onnx_registry import STATIC_OPERANDS, attrs, op
from rlx._onnx_sym import dim_text

STATIC_OPERANDS.update({"RNN": {4}, "GRU": {4}, "LSTM": {4}})

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}


def _activation(g: Any, name: str) -> Callable[[Any], Any]:
    one = g.constant(np.ones((), np.float32))
    table: Dict[str, Callable[[Any], Any]] = {
        "sigmoid": g.sigmoid, "tanh": g.tanh, "relu": g.relu,
        "softsign": lambda x: g.div(x, g.add(one, g.abs(x))),
        "softplus": lambda x: g.add(g.relu(x), g.log(g.add(one, g.exp(g.neg(g.abs(x)))))),
    }
    f = table.get(name.lower())
    if f is None:
        raise rlx.UnsupportedOpError(f"recurrent activation {name!r} (Sigmoid, Tanh, Relu, Softsign, Softplus)")
    return f


class _Cell:
    """One direction's weights and the graph helpers a step needs."""

    def __init__(self, imp: Importer, node: Any, d: int, hidden: int, acts: List[Callable[[Any], Any]]) -> None:
        self.imp, self.g, self.h, self.acts = imp, imp.g, hidden, acts
        at = attrs(node)
        self.clip = float(at["clip"]) if "clip" in at else None
        self.lbr = bool(at.get("linear_before_reset", 0))
        gh = _GATES[node.op_type] * hidden
        g = self.g
        ins = list(node.input) + [""] * 8
        w = g.reshape(g.slice(imp.rt(imp.get(ins[1])), 0, d, d + 1), (gh, dim_text(imp.shape(imp.get(ins[1]))[2])))
        self.wt = g.transpose(w, [1, 0])
        self.rt = g.transpose(g.reshape(g.slice(imp.rt(imp.get(ins[2])), 0, d, d + 1), (gh, hidden)), [1, 0])
        self.wb = self.rb = None
        if ins[3]:
            b = g.reshape(g.slice(imp.rt(imp.get(ins[3])), 0, d, d + 1), (2 * gh,))
            self.wb, self.rb = g.slice(b, 0, 0, gh), g.slice(b, 0, gh, 2 * gh)
        self.p = None
        if node.op_type == "LSTM" and ins[7]:
            self.p = g.reshape(g.slice(imp.rt(imp.get(ins[7])), 0, d, d + 1), (3 * hidden,))

    def part(self, v: Any, k: int) -> Any:
        return self.g.slice(v, len(v.shape) - 1, k * self.h, (k + 1) * self.h)

    def pre(self, v: Any) -> Any:
        if self.clip is None:
            return v
        g, c = self.g, self.clip
        return g.min(g.max(v, g.constant(np.array(-c, np.float32))), g.constant(np.array(c, np.float32)))

    def recur(self, h: Any) -> Any:
        return self.g.matmul(h, self.rt)


def _rnn_step(cell: _Cell, xw: Any, h: Any, c: Any) -> Any:
    g = cell.g
    return cell.acts[0](cell.pre(g.add(xw, cell.recur(h)))), None


def _gru_step(cell: _Cell, xw: Any, h: Any, c: Any) -> Any:
    g = cell.g
    f, act = cell.acts[0], cell.acts[1]
    hr = cell.recur(h)  # [B, 3H] = H R^T (+ Rb once added below)
    if cell.rb is not None:
        hr = g.add(hr, cell.rb)
    z = f(cell.pre(g.add(cell.part(xw, 0), cell.part(hr, 0))))
    r = f(cell.pre(g.add(cell.part(xw, 1), cell.part(hr, 1))))
    if cell.lbr:
        cand = g.add(cell.part(xw, 2), g.mul(r, cell.part(hr, 2)))
    else:
        rh = g.matmul(g.mul(r, h), g.slice(cell.rt, 1, 2 * cell.h, 3 * cell.h))
        cand = g.add(cell.part(xw, 2), rh if cell.rb is None else g.add(rh, cell.part(cell.rb, 2)))
    hc = act(cell.pre(cand))
    one = g.constant(np.ones((), np.float32))
    return g.add(g.mul(g.sub(one, z), hc), g.mul(z, h)), None


def _lstm_step(cell: _Cell, xw: Any, h: Any, c: Any) -> Any:
    g = cell.g
    f, act, out_act = cell.acts
    s = g.add(xw, cell.recur(h))
    peep = (lambda k, v: v) if cell.p is None else (lambda k, v: g.add(v, g.mul(cell.part(cell.p, k), c)))
    i = f(cell.pre(peep(0, cell.part(s, 0))))
    fg = f(cell.pre(peep(2, cell.part(s, 2))))
    cand = act(cell.pre(cell.part(s, 3)))
    c2 = g.add(g.mul(fg, c), g.mul(i, cand))
    o = f(cell.pre(cell.part(s, 1) if cell.p is None else g.add(cell.part(s, 1), g.mul(cell.part(cell.p, 1), c2))))
    return g.mul(o, out_act(c2)), c2


_STEPS = {"RNN": _rnn_step, "GRU": _gru_step, "LSTM": _lstm_step}


def _check_lens(imp: Importer, name: str, steps: int) -> None:
    if not name:
        return
    lens = np.asarray(imp.values(name, "sequence_lens")).reshape(-1)
    if np.any(lens != steps):
        raise rlx.UnsupportedOpError(f"sequence_lens {lens.tolist()} shorter than the sequence ({steps}): "
                                     "rlx unrolls full-length sequences only")


def _initial(imp: Importer, name: str, d: int, batch: Any, hidden: int, layout: int) -> Any:
    g = imp.g
    if not name:
        return imp.filled([batch, hidden], g.constant(np.zeros((), np.float32)))
    v = imp.rt(imp.get(name))
    v = g.transpose(v, [1, 0, 2]) if layout else v
    return g.reshape(g.slice(v, 0, d, d + 1), (dim_text(batch), hidden))


@op("RNN", "GRU", "LSTM")
def _recurrent(imp: Importer, node: Any) -> Any:
    at, kind = attrs(node), node.op_type
    ins = list(node.input) + [""] * 8
    if at.get("input_forget", 0):
        raise rlx.UnsupportedOpError("LSTM input_forget=1 (coupled input and forget gates)")
    direction = at.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise rlx.ModelFormatError(f"direction {direction!r} is not forward, reverse or bidirectional")
    dirs, layout, hidden = 2 if direction == "bidirectional" else 1, int(at.get("layout", 0)), int(at.get("hidden_size", 0))
    g = imp.g
    x = imp.rt(imp.get(ins[0]))
    if layout:
        x = g.transpose(x, [1, 0, 2])
    dims = imp.shape(x)
    ws = imp.shape(imp.get(ins[1]))
    if len(dims) != 3 or not isinstance(dims[0], int) or hidden < 1 or len(ws) != 3 or ws[:2] != [dirs, _GATES[kind] * hidden]:
        raise rlx.ShapeError(f"{kind} X of shape {[dim_text(d) for d in dims]} (static sequence length), W of shape "
                             f"{[dim_text(d) for d in ws]}, hidden_size {hidden}: expected W [{dirs}, "
                             f"{_GATES[kind]} * hidden_size, input]")
    steps, batch = dims[0], dims[1]
    _check_lens(imp, ins[4], steps)
    names = [a.decode(errors="replace") if isinstance(a, bytes) else a for a in at.get("activations", [])]
    names = names or _DEFAULTS[kind] * dirs
    per = len(_DEFAULTS[kind])
    if len(names) != per * dirs:
        raise rlx.ShapeError(f"{kind} activations {names}: {per} per direction")
    if at.get("activation_alpha") or at.get("activation_beta"):
        raise rlx.UnsupportedOpError(f"{kind} activation_alpha / activation_beta (parameterized activations)")
    ys, hs, cs = [], [], []
    for d in range(dirs):
        cell = _Cell(imp, node, d, hidden, [_activation(g, n) for n in names[d * per:(d + 1) * per]])
        xw = g.matmul(g.reshape(x, (dim_text(steps * batch), dim_text(dims[2]))), cell.wt)
        if cell.wb is not None:
            # GRU adds R's bias inside its gates (before r scales it); the others add both here.
            xw = g.add(xw, cell.wb if kind == "GRU" else g.add(cell.wb, cell.rb))
        xw = g.reshape(xw, (steps, dim_text(batch), _GATES[kind] * hidden))
        h = _initial(imp, ins[5], d, batch, hidden, layout)
        c: Optional[Any] = _initial(imp, ins[6], d, batch, hidden, layout) if kind == "LSTM" else None
        out: List[Any] = [None] * steps
        reverse = direction == "reverse" or d == 1
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            xt = g.reshape(g.slice(xw, 0, t, t + 1), (dim_text(batch), _GATES[kind] * hidden))
            h, c = _STEPS[kind](cell, xt, h, c)
            out[t] = g.reshape(h, (1, 1, dim_text(batch), hidden))
        ys.append(g.concat(out, 0) if steps > 1 else out[0])
        hs.append(g.reshape(h, (1, dim_text(batch), hidden)))
        if c is not None:
            cs.append(g.reshape(c, (1, dim_text(batch), hidden)))
    y = g.concat(ys, 1) if dirs > 1 else ys[0]  # [S, dirs, B, H]
    states = [g.concat(v, 0) if dirs > 1 else v[0] for v in ([hs, cs] if kind == "LSTM" else [hs])]
    if layout:
        y = g.transpose(y, [2, 0, 1, 3])
        states = [g.transpose(s, [1, 0, 2]) for s in states]
    return [y] + states
