"""Structural checks of an ONNX graph, before the import walk: node arity, empty required
inputs, required attributes and their types (all read from the ONNX op schemas), and single
assignment of every value name. Each failure names the node and the value.

Wiring problems (arity, empty inputs, a name assigned twice) are ``GraphError``s; a node whose
attributes do not match its schema is a ``ModelFormatError``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import rlx

__all__ = ["check_graph"]

_ANY = 2**31 - 1  # what the schemas give as max_input / max_output of variadic ops


def _schema(op_type: str, opset: int, domain: str = "") -> Optional[Any]:
    """The op's schema in ``domain`` at the model's opset for it, else its latest one (models
    that use an op before the opset that introduced it are imported as before)."""
    from onnx import defs

    for args in ((op_type, opset, domain), (op_type, domain)):
        try:
            return defs.get_schema(*args)
        except defs.SchemaError:
            continue
    return None


def _count(lo: int, hi: int) -> str:
    if hi >= _ANY:
        return f"at least {lo}"
    return str(lo) if lo == hi else f"{lo} to {hi}"


def _check_node(node: Any, where: str, opsets: Dict[str, int]) -> None:
    from onnx import AttributeProto, defs

    dom = node.domain or "ai.onnx"
    schema = _schema(node.op_type, opsets.get(dom, 1), dom) if dom != "ai.onnx" else None
    if schema is None:
        # The default domain; also a domain onnx has no schemas for (onnxruntime's contrib
        # QuantizeLinear, ...), checked against the default domain's op of that name.
        schema = _schema(node.op_type, opsets["ai.onnx"])
    if schema is None:
        return
    n_in, n_out = len(node.input), len(node.output)
    if not schema.min_input <= n_in <= schema.max_input:
        raise rlx.GraphError(f"{where}: has {n_in} input(s), the op takes {_count(schema.min_input, schema.max_input)}")
    if not schema.min_output <= n_out <= schema.max_output:
        raise rlx.GraphError(f"{where}: has {n_out} output(s), the op makes {_count(schema.min_output, schema.max_output)}")
    formals = schema.inputs
    for j, name in enumerate(node.input):
        formal = formals[min(j, len(formals) - 1)]
        if not name and formal.option != defs.OpSchema.FormalParameterOption.Optional:
            raise rlx.GraphError(f"{where}: input #{j} ({formal.name}) is empty but required")
    seen = set()
    for a in node.attribute:
        if a.name in seen:
            raise rlx.ModelFormatError(f"{where}: attribute {a.name!r} is given twice")
        seen.add(a.name)
        spec = schema.attributes.get(a.name)
        if spec is not None and int(a.type) != int(spec.type):
            got = AttributeProto.AttributeType.Name(a.type) if a.type in AttributeProto.AttributeType.values() else str(a.type)
            raise rlx.ModelFormatError(f"{where}: attribute {a.name!r} is {got}, the op wants {spec.type.name}")
    missing = sorted(k for k, spec in schema.attributes.items() if spec.required and k not in seen)
    if missing:
        raise rlx.ModelFormatError(f"{where}: missing required attribute(s) {missing}")


def check_graph(graph: Any, opset: int, opsets: Optional[Dict[str, int]] = None) -> None:
    """Raises on the first node whose wiring or attributes do not match its op, and on any
    value name written twice (two nodes, or a node and a graph input / initializer). ``opset``
    is the default domain's version, ``opsets`` the model's other domains (domain -> version)."""
    opsets = {**(opsets or {}), "ai.onnx": opset}
    writers: Dict[str, str] = {}
    for vi in graph.input:
        if vi.name in writers:
            raise rlx.GraphError(f"graph input {vi.name!r} is declared twice")
        writers[vi.name] = "a graph input"
    for t in graph.initializer:
        # An input of the same name is allowed: the initializer is its default value.
        writers.setdefault(t.name, "an initializer")
    for i, node in enumerate(graph.node):
        label = f"node {node.name or '#' + str(i)!r} ({node.op_type})"
        _check_node(node, f"ONNX {label}", opsets)
        for o in node.output:
            if not o:
                continue
            if o in writers:
                raise rlx.GraphError(
                    f"ONNX value {o!r} is assigned twice, by {writers[o]} and by {label}; every value must be assigned once"
                )
            writers[o] = label
    for vi in graph.output:
        if not vi.name:
            raise rlx.GraphError("a graph output has an empty name")
