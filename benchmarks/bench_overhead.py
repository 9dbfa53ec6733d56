"""Per-call overhead: one small linear (x[1,16] @ w[16,16]) run from Python by rlx and by ONNX
Runtime, each in its own phase; the best of 5 batches of 20,000 calls, in microseconds.

At this size the work is nothing and the cost is the call: argument checks, binding inputs,
dispatch. rlx runs graphs this small on the calling thread (no hand-off to its pool).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_overhead.py
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header  # noqa: E402

CALLS, BATCHES = 20_000, 5


def per_call_us(fn) -> float:
    for _ in range(1000):
        fn()
    best = float("inf")
    for _ in range(BATCHES):
        t = time.perf_counter()
        for _ in range(CALLS):
            fn()
        best = min(best, (time.perf_counter() - t) / CALLS)
    return best * 1e6


def main() -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    import rlx

    header("Per-call overhead: one 1x16x16 linear from Python", ["rlx", "onnxruntime"])
    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    x = np.ones((1, 16), np.float32)

    g = rlx.Graph("one_linear")
    g.output("y", g.linear(g.input("x", (1, 16)), g.param("w", (16, 16))))
    pipe = rlx.ModelCompilePipeline(g)
    pipe.bind_params({"w": w})
    exe = pipe.get_or_compile()
    t_rlx = per_call_us(lambda: exe.run(x=x))
    y_rlx = exe.run(x=x)["y"]

    time.sleep(0.5)  # separate phases: nothing of rlx's is running while ORT is timed
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "one_linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    t_ort = per_call_us(lambda: sess.run(None, {"x": x}))
    y_ort = sess.run(None, {"x": x})[0]

    diff = float(np.max(np.abs(y_rlx - y_ort)))
    print(f"\nrlx {t_rlx:.2f} us per call, ORT {t_ort:.2f} us per call, rlx/ORT {t_rlx / t_ort:.2f}")
    print(f"accuracy: max |rlx - ORT| = {diff:.1e} [{'ok' if diff < 1e-5 else 'FAIL'}]")
    if diff >= 1e-5:
        sys.exit(1)


if __name__ == "__main__":
    main()
