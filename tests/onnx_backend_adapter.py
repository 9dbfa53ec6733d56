"""An `onnx.backend.base.Backend` over rlx.onnx: import, compile the variant the inputs imply,
run. Graph inputs that an op reads at import, of any dtype (Reshape's `shape`, Slice's bounds,
Compress's condition, MelWeightMatrix's edges, ...), are frozen to the values given at run time,
as a real model would carry them as initializers.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

import rlx
import rlx.onnx
from rlx._onnx_ops import STATIC_OPERANDS


def static_inputs(model: onnx.ModelProto) -> set:
    """Graph inputs consumed at a position rlx reads at import."""
    names = set()
    opset = {o.domain or "": o.version for o in model.opset_import}.get("", 1)
    for n in model.graph.node:
        pos = STATIC_OPERANDS.get(n.op_type, set())
        if n.op_type == "Clip" and opset >= 11:
            pos = set()  # min / max are ordinary tensors
        for i, name in enumerate(n.input):
            if i in pos:
                names.add(name)
    return names


class RlxRep(BackendRep):
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        inits = {t.name for t in model.graph.initializer}
        self.inputs = [i.name for i in model.graph.input if i.name not in inits]
        self.static = static_inputs(model)
        self._cache: Dict[Tuple, Any] = {}

    def run(self, inputs: Any, **kwargs: Any) -> Tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            if not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            feed = dict(zip(self.inputs, inputs))
        frozen = {k: np.asarray(v) for k, v in feed.items() if k in self.static}
        key = tuple(sorted((k, v.tobytes(), v.shape) for k, v in frozen.items()))
        if key not in self._cache:
            with warnings.catch_warnings():
                # The conversions are the point of many cases; tests/test_onnx_dtypes.py checks the warning.
                warnings.simplefilter("ignore", rlx.onnx.DTypeConversionWarning)
                self._cache[key] = rlx.onnx.load(self.model, constants=frozen)
        om = self._cache[key]
        outs = om.run({k: np.array(v, order="C") for k, v in feed.items() if k not in frozen})
        return tuple(outs[n] for n in om.outputs)


class RlxBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> RlxRep:
        super().prepare(model, device, **kwargs)
        return RlxRep(model)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> Tuple[np.ndarray, ...]:
        return cls.prepare(model, device).run(inputs)


def primary_op(case: Any, by_name: Dict[str, Any]) -> str:
    """The op a node test is about: its single node's op, or, for a function-expanded test,
    the op of the test it expands."""
    name = case.name
    if "_expanded" in name:
        base = name.split("_expanded")[0]
        sib = by_name.get(base)
        return primary_op(sib, by_name) if sib is not None else ""
    ops = [n.op_type for n in case.model.graph.node] if case.model is not None else []
    return ops[-1] if ops else ""
