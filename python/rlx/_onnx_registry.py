"""The ONNX op registry: ``HANDLERS`` and ``@op``, the operands read at import
(``STATIC_OPERANDS``), attribute and tensor decoding, folding at import (``foldable``,
``fold_shape``, ``known``) and ``check_supported``.

Ops of the default domain (``""`` / ``ai.onnx``) are registered under their op type, ops of
another domain under ``<domain>.<op type>`` (``ai.onnx.ml.Binarizer``,
``ai.onnx.preview.training.Adam``): :func:`op_key` gives a node's key.

Handler modules (``_onnx_ops_*``) import this module and register their ops with ``@op``; the
helpers several of them share are in ``rlx._onnx_helpers``. No handler module imports another
one or the importer's entry points, so there is no import circle. ``rlx._onnx_ops`` imports
every handler module, so importing it (or ``rlx.onnx``) registers the whole op set.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np

import rlx
from rlx._onnx_import import Importer, Known, normalize

Handler = Callable[[Importer, Any], Any]
HANDLERS: Dict[str, Handler] = {}

# Operands read at import (never run-time tensors): op type -> input positions.
STATIC_OPERANDS = {
    "Reshape": {1}, "Unsqueeze": {1}, "Squeeze": {1}, "Slice": {1, 2, 3, 4}, "Expand": {1},
    "ConstantOfShape": {0}, "ReduceSum": {1}, "ReduceMean": {1}, "ReduceMax": {1}, "ReduceMin": {1},
    "Range": {0, 1, 2}, "Clip": {1, 2}, "Dropout": {1, 2}, "Pad": {1, 3},
    "ConvTranspose": {1}, "Split": {1}, "Tile": {1}, "ReduceL1": {1}, "ReduceL2": {1},
    "ReduceSumSquare": {1}, "ReduceLogSum": {1}, "ReduceLogSumExp": {1}, "TopK": {1},
    "Loop": {0, 1},  # the trip count and the first condition: a Loop is unrolled at import
}


def op(*names: str) -> Callable[[Handler], Handler]:
    def reg(f: Handler) -> Handler:
        for n in names:
            HANDLERS[n] = f
        return f

    return reg


def op_key(node: Any) -> str:
    """The ``HANDLERS`` key of ``node``: its op type in the default domain, else
    ``<domain>.<op type>``. A default-domain op type with a dot never names another domain's op."""
    dom = node.domain or "ai.onnx"
    if dom == "ai.onnx" and "." not in node.op_type:
        return node.op_type
    return f"{dom}.{node.op_type}"


def attrs(node: Any) -> Dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        try:
            v = helper.get_attribute_value(a)
        except Exception as e:  # onnx raises ValueError / TypeError on malformed attributes
            raise rlx.ModelFormatError(f"attribute {a.name!r} cannot be read: {e}") from e
        out[a.name] = v.decode(errors="replace") if isinstance(v, bytes) else v
    return out


def tensor_array(t: Any, what: str) -> np.ndarray:
    """A TensorProto attribute as numpy; a malformed one is a ModelFormatError naming ``what``."""
    from onnx import TensorProto, numpy_helper

    if t.data_location == TensorProto.EXTERNAL:
        # numpy_helper would read it relative to the working directory, not the model's.
        raise rlx.ModelFormatError(f"{what}: external data in an attribute tensor is not supported")
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # onnx raises ValueError / TypeError / KeyError on bad tensors
        raise rlx.ModelFormatError(f"{what}: cannot decode the tensor: {e}") from e


def fold_shape(imp: Importer, what: str, *vals: Any) -> None:
    """Checks that folded operands broadcast, and counts the result against the budget."""
    shapes = [v.arr.shape for v in vals]
    try:
        out = np.broadcast_shapes(*shapes)
    except ValueError:
        raise rlx.ShapeError(f"{what}: shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast") from None
    imp.reserve(out, max(v.arr.itemsize for v in vals), "the result")


def check_supported(proto: Any, rewritten: Any = frozenset()) -> None:
    """One UnsupportedOpError listing every node rlx cannot import. ``rewritten`` holds the
    (domain, op type) pairs a rewrite before the walk handles (``rlx._onnx_quant.OPS``)."""
    from rlx._onnx_import import subgraphs

    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    bad = []

    def walk(graph: Any, inside: str) -> None:
        for i, n in enumerate(graph.node):
            dom = n.domain or "ai.onnx"
            label = f"node {n.name or '#' + str(i)!r}"
            if (dom, n.op_type) in rewritten and not inside:
                continue
            if op_key(n) not in HANDLERS:
                bad.append(f"{n.op_type} (domain {dom}, opset {opsets.get(dom, '?')}, {label}{inside})")
            for sub in subgraphs(n):
                walk(sub, f" in subgraph {sub.name!r} of {label}{inside}")

    walk(proto.graph, "")
    if bad:
        raise rlx.UnsupportedOpError(
            f"{len(bad)} unsupported ONNX node(s): " + "; ".join(bad)
            + f". Supported: {', '.join(sorted(HANDLERS))}"
        )


def foldable(*vs: Any) -> bool:
    """All known at import, and integer/bool/symbolic (shape arithmetic, never weights)."""
    return all(isinstance(v, Known) and (v.symbolic or v.dtype.kind in "iub") for v in vs if v is not None)


def known(arr: Any, dtype: Any) -> Known:
    arr = normalize(np.asarray(arr) if not isinstance(arr, np.ndarray) else arr)
    return Known(arr, dtype)
