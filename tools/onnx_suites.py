"""Pass counts of the ONNX backend's model suites through rlx (tests/onnx_backend_adapter.py):
pytorch-converted and pytorch-operator, each case's data sets compared within the tolerances
the case declares. Prints `suite passed / total` and each failure's first error line.

    python tools/onnx_suites.py [pytorch-converted pytorch-operator]
"""

from __future__ import annotations

import glob
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def data_sets(case):
    """The case's (inputs, expected outputs) pairs, from memory or from its directory."""
    if case.model is not None:
        return case.model, case.data_sets
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
    order = lambda p: int(p.rsplit("_", 1)[1][:-3])  # noqa: E731  (input_12.pb -> 12)
    sets = []
    for d in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set_*"))):
        load = lambda pat: [numpy_helper.to_array(onnx.load_tensor(f))  # noqa: E731
                            for f in sorted(glob.glob(os.path.join(d, pat)), key=order)]
        sets.append((load("input_*.pb"), load("output_*.pb")))
    return model, sets


def main(kinds) -> None:
    from onnx.backend.test.loader import load_model_tests
    from onnx_backend_adapter import RlxBackend

    for kind in kinds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cases = load_model_tests(kind=kind)
        passed, failures = 0, []
        for case in cases:
            try:
                model, sets = data_sets(case)
                rep = RlxBackend.prepare(model)
                for inputs, expected in sets:
                    for got, want in zip(rep.run(inputs), expected):
                        np.testing.assert_allclose(np.asarray(got), want, rtol=case.rtol, atol=case.atol)
                passed += 1
            except Exception as e:  # a failing case is reported, not raised
                failures.append(f"{case.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        print(f"{kind}: {passed} / {len(cases)}")
        for f in failures:
            print("  ", f[:160])


if __name__ == "__main__":
    main(sys.argv[1:] or ["pytorch-converted", "pytorch-operator"])
