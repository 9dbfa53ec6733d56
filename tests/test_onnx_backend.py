"""Every ONNX backend node test shipped with the `onnx` package (about 1,900 cases).

Selection: every node test runs unless it is excluded with a reason: a node whose op rlx does
not import ("op X is not imported"), an element type rlx computes in neither natively nor
through the boundary conversion of `rlx._onnx_dtypes` (`foreign_dtype`), or a documented
limitation in `EXCLUDED` below. Nothing else is skipped, and nothing selected may fail.

`python tests/test_onnx_backend.py` prints the pass / fail / excluded totals over all cases,
the excluded count per reason and the pass count per op; with `--all` it also runs the
excluded cases and lists those that pass (an exclusion to drop).
"""

from __future__ import annotations

import collections
import os
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
from rlx._onnx_registry import op_key  # noqa: E402

_T = onnx.TensorProto
# Computed natively, or converted at the boundary (float16 / bfloat16 / double / the 8-bit floats /
# float4e2m1 in float32, int8 ... uint32 and the sub-byte int4 / uint4 / int2 / uint2 in int64:
# rlx._onnx_dtypes).
RLX_TYPES = {_T.FLOAT, _T.INT64, _T.INT32, _T.BOOL, _T.FLOAT16, _T.BFLOAT16, _T.DOUBLE, _T.INT8, _T.UINT8, _T.INT16,
             _T.UINT16, _T.UINT32, _T.UINT64} | {getattr(_T, t) for t in (
                 "INT4", "UINT4", "INT2", "UINT2", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
                 "FLOAT4E2M1") if hasattr(_T, t)}

# Limitations, by test name: (pattern, reason).
EXCLUDED: List[Tuple[str, str]] = [
    (r"^test_(div|mod|max|min|top_k|bitshift_(left|right))_uint64$|^test_bitwise_(and|or|xor)_ui64_|"
     r"^test_pow_types_float32_uint64$",
     "UINT64 is computed as int64 bit patterns: division, modulo, shifts, bitwise ops, min / max, sorting and "
     "powers read values from 2**63 on as negative, and are a DTypeError"),
    (r"^test_training_dropout", "Dropout in training mode draws random masks; rlx imports inference graphs"),
    (r"^test_(identity_(sequence|opt)|if_(seq|opt)|loop13_seq|loop16_seq_none)$",
     "sequence and optional types: rlx has tensors only"),
    (r"^test_batchnorm_.*_training_mode$", "BatchNormalization in training mode computes batch statistics"),
    (r"^test_maxpool_with_argmax_", "MaxPool's Indices output: rlx has no argmax positions"),
    (r"^test_bitcast_.*float", "BitCast from or to a float type of a run-time value: rlx computes floats in "
     "float32 and has no op that reinterprets bits (a DTypeError)"),
    (r"^test_(blackman|hamming|hann)window(_symmetric)?_expanded$",
     "the expansion makes a Range whose length is known only at run time"),
    (r"^test_center_crop_pad_.*_expanded$", "the expansion computes Pad's pads at run time; rlx reads them at import"),
    (r"^test_range_.*_expanded$",
     "the expansion's Loop runs a trip count computed from the run-time start, limit and delta: a "
     "data-dependent number of steps (rlx unrolls a Loop at import)"),
    (r"^test_affine_grid_.*_expanded$",
     "the expansion reads the grid's size from the run-time size input through ordinary ops (AffineGrid "
     "itself reads it at import): a data-dependent shape"),
    (r"^test_dft_inverse(_opset19)?$",
     "the expected output carries the float32 FFT's rounding noise (1.9e-7 where the exact value is 0), "
     "above the test's atol of 1e-7; rlx's DFT matrix product is closer to the exact value"),
]
DTYPE_REASON = "a dtype rlx does not compute in, even converted at the boundary"
NOT_IMPORTED = "op {} is not imported"


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


def missing_op(model: onnx.ModelProto) -> Optional[str]:
    """The first op of the test's graph that rlx does not import, as rlx keys it: the op type,
    or ``<domain>.<op type>`` for another domain (``rlx._onnx_registry.op_key``)."""
    supported = set(rlx.onnx.SUPPORTED_OPS)
    for n in model.graph.node:
        key = op_key(n)
        if key not in supported:
            return key
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
        missing = missing_op(c.model)
        dt = foreign_dtype(c.model)
        if missing is not None:
            reason = NOT_IMPORTED.format(missing)
        elif dt is not None:
            reason = f"{DTYPE_REASON} ({dt})"
        else:
            reason = next((r for p, r in EXCLUDED if re.search(p, c.name)), None)
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
    # Every imported op with node tests has at least one test that runs, the converted dtypes
    # run, and every case is either selected or excluded with a reason.
    ops = collections.Counter(RUN.values())
    for op in ("Add", "MatMul", "Gemm", "Reshape", "Softmax", "LayerNormalization", "Gather", "Slice", "Expand", "Where",
               "Conv", "MaxPool", "AveragePool", "BatchNormalization", "LRN", "Split", "Tile",
               "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "CumSum", "Cast", "CastLike"):
        assert ops[op] > 0, op
    for name in ("test_cast_FLOAT_to_FLOAT16", "test_cast_DOUBLE_to_FLOAT", "test_max_uint8", "test_min_int16"):
        assert name in RUN, name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        total = len(load_model_tests(kind="node"))
    assert len(RUN) + len(EXCLUDED_TESTS) == total and not set(RUN) & set(EXCLUDED_TESTS)
    assert all(EXCLUDED_TESTS.values())


def test_every_exclusion_pattern_excludes_something():
    # A pattern that no longer matches an excluded case is stale: drop it.
    reasons = collections.Counter(EXCLUDED_TESTS.values())
    stale = [p for p, r in EXCLUDED if not reasons[r]]
    assert not stale, stale


def _run(names: List[str]) -> set:
    """Runs the named cases (excluded or not) through the backend; the names that fail."""
    import unittest

    bt = onnx.backend.test.BackendTest(RlxBackend, __name__ + "_all")
    for name in names:
        bt.include("^" + re.escape(name) + "_cpu$")
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(bt.test_cases["OnnxBackendNodeModelTest"])
    with open(os.devnull, "w") as devnull:
        result = unittest.TextTestRunner(verbosity=0, stream=devnull).run(suite)
    return {t.id().rsplit(".", 1)[-1][: -len("_cpu")] for t, _ in result.failures + result.errors}


def _family(reason: str) -> str:
    """Reasons grouped for the summary: every "op X is not imported" is one family."""
    return "op ... is not imported" if re.fullmatch(NOT_IMPORTED.format(".+"), reason) else reason.split(" (")[0]


def main(argv: List[str]) -> None:
    failed = _run(list(RUN))
    per_op: Dict[str, List[int]] = collections.defaultdict(lambda: [0, 0])
    for name, op in RUN.items():
        per_op[op][name in failed] += 1
    print(f"{'op':<28}{'pass':>6}{'fail':>6}")
    for op in sorted(per_op):
        print(f"{op:<28}{per_op[op][0]:>6}{per_op[op][1]:>6}")
    total = len(RUN) + len(EXCLUDED_TESTS)
    print(f"total over {total} node tests: {len(RUN) - len(failed)} pass, {len(failed)} fail, "
          f"{len(EXCLUDED_TESTS)} excluded")
    for name in sorted(failed):
        print(f"  FAILED {name}")
    for fam, n in collections.Counter(_family(r) for r in EXCLUDED_TESTS.values()).most_common():
        print(f"  excluded {n:>4}: {fam}")
    missing = collections.Counter(r for r in EXCLUDED_TESTS.values() if _family(r) == "op ... is not imported")
    print("  not imported: " + ", ".join(f"{r.split()[1]} {n}" for r, n in missing.most_common()))
    if "--all" in argv:
        runnable = [n for n, r in EXCLUDED_TESTS.items() if _family(r) != "op ... is not imported"]
        passing = sorted(set(runnable) - _run(runnable))
        print(f"excluded but passing ({len(passing)} of {len(runnable)} run):")
        for name in passing:
            print(f"  {name}: {EXCLUDED_TESTS[name]}")


if __name__ == "__main__":
    main(sys.argv[1:])
