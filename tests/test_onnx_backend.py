"""The ONNX backend node tests shipped with the `onnx` package, for every op rlx.onnx claims.

Selection: a node test runs when the op it tests (its node's op, or for a function-expanded
test, the op it expands) is in `rlx.onnx.SUPPORTED_OPS`. Tests that fail because of a
documented limitation are excluded below, each with its reason; nothing else is skipped.

`python tests/test_onnx_backend.py` prints the pass count per op.
"""

from __future__ import annotations

import collections
import re
import sys
import warnings
from typing import Dict, List, Optional, Tuple

import pytest

onnx = pytest.importorskip("onnx")

import onnx.backend.test  # noqa: E402
from onnx.backend.test.loader import load_model_tests  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from onnx_backend_adapter import RlxBackend, primary_op  # noqa: E402

import rlx.onnx  # noqa: E402

RLX_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL}

# Limitations, by test name: (pattern, reason).
EXCLUDED: List[Tuple[str, str]] = [
    (r"^test_training_dropout", "Dropout in training mode draws random masks; rlx imports inference graphs"),
    (r"^test_identity_(sequence|opt)$", "sequence and optional types: rlx has tensors only"),
    (r"^test_range_.*_expanded$", "the expansion uses Loop and Ceil, which rlx does not import"),
    (r"^test_slice_neg_steps$", "rlx slices with step 1"),
    (r"^test_averagepool_.*dilations", "AveragePool dilations: rlx averages dense windows"),
    (r"^test_batchnorm_.*_training_mode$", "BatchNormalization in training mode computes batch statistics"),
    (r"^test_maxpool_with_argmax_", "MaxPool's Indices output: rlx has no argmax positions"),
]
DTYPE_REASON = "uses a dtype outside rlx's float32 / int64 / int32 / bool"


def foreign_dtype(model: onnx.ModelProto) -> Optional[str]:
    """The first element type in the test's interface or casts that rlx does not compute in."""
    g = model.graph
    types = [vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output) if vi.type.HasField("tensor_type")]
    for n in g.node:
        for a in n.attribute:
            if a.name == "to":
                types.append(a.i)
            if a.type == onnx.AttributeProto.TENSOR:
                types.append(a.t.data_type)
    for t in types:
        if t not in RLX_TYPES:
            return onnx.TensorProto.DataType.Name(t)
    return None


def selection() -> Tuple[Dict[str, str], Dict[str, str]]:
    """(test name -> op) for the tests that run, (test name -> reason) for the excluded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind="node")
    by_name = {c.name: c for c in cases}
    run, excluded = {}, {}
    for c in cases:
        op = primary_op(c, by_name)
        if op not in rlx.onnx.SUPPORTED_OPS:
            continue
        reason = next((r for p, r in EXCLUDED if re.search(p, c.name)), None)
        dt = foreign_dtype(c.model)
        if reason is None and dt is not None:
            reason = f"{DTYPE_REASON} ({dt})"
        if reason is None:
            run[c.name] = op
        else:
            excluded[c.name] = reason
    return run, excluded


RUN, EXCLUDED_TESTS = selection()

backend_test = onnx.backend.test.BackendTest(RlxBackend, __name__)
for _name in RUN:
    backend_test.include("^" + re.escape(_name) + "_cpu$")
for _name in EXCLUDED_TESTS:
    backend_test.exclude("^" + re.escape(_name) + "_cpu$")
# Only node tests: the model-zoo tests download real models.
globals().update({k: v for k, v in backend_test.test_cases.items() if k == "OnnxBackendNodeModelTest"})


def test_selection_is_not_empty():
    # Every claimed op with node tests has at least one test that runs.
    ops = collections.Counter(RUN.values())
    for op in ("Add", "MatMul", "Gemm", "Reshape", "Softmax", "LayerNormalization", "Gather", "Slice", "Expand", "Where",
               "Conv", "MaxPool", "AveragePool", "BatchNormalization", "LRN", "Split", "Tile",
               "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "CumSum"):
        assert ops[op] > 0, op


if __name__ == "__main__":
    import unittest

    suite = unittest.defaultTestLoader.loadTestsFromTestCase(backend_test.test_cases["OnnxBackendNodeModelTest"])
    result = unittest.TextTestRunner(verbosity=0, stream=open("/dev/null", "w")).run(suite)
    failed = {t.id().rsplit(".", 1)[-1][: -len("_cpu")] for t, _ in result.failures + result.errors}
    per_op: Dict[str, List[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for name, op in RUN.items():
        per_op[op][1 if name in failed else 0] += 1
    for name, reason in EXCLUDED_TESTS.items():
        pass
    print(f"{'op':<20}{'pass':>6}{'fail':>6}")
    for op in sorted(per_op):
        print(f"{op:<20}{per_op[op][0]:>6}{per_op[op][1]:>6}")
    print(f"total: {sum(v[0] for v in per_op.values())} pass, {len(failed)} fail, {len(EXCLUDED_TESTS)} excluded")
    for r, n in collections.Counter(v.split(' (')[0] for v in EXCLUDED_TESTS.values()).items():
        print(f"  excluded {n}: {r}")
