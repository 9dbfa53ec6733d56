"""GEMM: rlx `linear` vs numpy (OpenBLAS) `x @ w` on MiniLM-sized products.

Method:

* y[M,N] = x[M,K] @ w, M in {16, 128, 1024}, (K, N) in MiniLM's projections. numpy and rlx
  both get w stored [K,N]; rlx is also timed with w stored [N,K] (PyTorch's layout, read
  transposed in place via `linear(..., transpose_w=True)`) when the builder has that flag.
* rlx and numpy are timed in separate phases (every rlx case, a 0.5 s pause, every numpy case):
  OpenBLAS's threads spin after a call and would steal the cores rlx uses, and back.
* Each case: 3 warm-up calls, then the median of N calls with N for ~0.2 s (5..1000).
* Peak = the best numpy sgemm rate on a 2048^3 product (best of 7), at the same thread count.
* Threads: rlx uses RLX_NUM_THREADS or its default (all cores). If RLX_NUM_THREADS is set and
  OPENBLAS_NUM_THREADS is not, numpy is given the same count (set before numpy is imported).
* rlx's results are checked against numpy's (max abs diff relative to max |y|).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py
"""

from __future__ import annotations

import inspect
import os
import sys
import time

if "RLX_NUM_THREADS" in os.environ and "OPENBLAS_NUM_THREADS" not in os.environ:
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["RLX_NUM_THREADS"]  # must precede numpy's import

import numpy as np  # noqa: E402

import rlx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BUSY_LIMIT, Background, adaptive_median, best_time, header, rows_table  # noqa: E402

MS = [16, 128, 1024]
KNS = [(384, 384), (384, 1152), (384, 1536), (1536, 384)]
TIMING = dict(warmup=3, target_s=0.2, min_n=5, max_n=1000)


def has_transpose_flag() -> bool:
    try:
        return "transpose_w" in inspect.signature(rlx.Graph.linear).parameters
    except (TypeError, ValueError):  # no introspectable signature: try building one instead
        g = rlx.Graph("probe", dims={"m": (1, 8)})
        try:
            g.linear(g.input("x", ("m", 2)), g.param("w", (3, 2)), transpose_w=True)
            return True
        except TypeError:
            return False


def rlx_linear(m: int, w: np.ndarray, transposed: bool):
    """A one-linear rlx graph over w (stored [K,N], or [N,K] if `transposed`), compiled for M=m."""
    n, k = w.shape if transposed else w.shape[::-1]
    g = rlx.Graph("gemm", dims={"m": (1, 1 << 16)})
    x = g.input("x", ("m", k))
    wv = g.param("w", w.shape)
    g.output("y", g.linear(x, wv, transpose_w=True) if transposed else g.linear(x, wv))
    pipe = rlx.ModelCompilePipeline(g)
    pipe.bind_params({"w": w})
    return pipe.get_or_compile(m=m)


def blas_name() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        return "unknown BLAS"


def time_phases(cases: list) -> float:
    """Times every rlx case, pauses, times every numpy case, then returns the measured peak."""
    # Phase 1: rlx only. Outputs are kept for the check at the end.
    for c in cases:
        c["t_rlx"], _ = adaptive_median(lambda: c["exe"].run(x=c["x"]), **TIMING)
        c["y_rlx"] = c["exe"].run(x=c["x"])["y"]
        if c["exe_t"] is not None:
            c["t_rlx_t"], _ = adaptive_median(lambda: c["exe_t"].run(x=c["x"]), **TIMING)
            c["y_rlx_t"] = c["exe_t"].run(x=c["x"])["y"]
    time.sleep(0.5)  # let rlx's workers go idle before numpy is timed

    # Phase 2: numpy only, then the peak.
    for c in cases:
        c["t_np"], _ = adaptive_median(lambda: c["x"] @ c["w"], **TIMING)
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    peak = 2 * 2048**3 / best_time(lambda: a @ a) / 1e9
    return peak


def main() -> None:
    header("GEMM: rlx linear vs numpy x @ w (f32)", ["rlx", "numpy"])
    print(f"numpy BLAS: {blas_name()}")
    print(f"threads: rlx RLX_NUM_THREADS={os.environ.get('RLX_NUM_THREADS', 'unset (default)')}, "
          f"numpy OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset (default)')}")
    transposed_ok = has_transpose_flag()
    if not transposed_ok:
        print("rlx w[N,K]: skipped (rlx.Graph.linear has no transpose_w flag in this build)")

    rng = np.random.default_rng(1)
    cases = []
    for m in MS:
        for k, n in KNS:
            x = rng.standard_normal((m, k), dtype=np.float32)
            w = rng.standard_normal((k, n), dtype=np.float32)
            wt = np.ascontiguousarray(w.T)  # the same weight stored [N,K]
            exe = rlx_linear(m, w, False)
            exe_t = rlx_linear(m, wt, True) if transposed_ok else None
            cases.append(dict(m=m, k=k, n=n, x=x, w=w, exe=exe, exe_t=exe_t))

    with Background() as bg:  # load from other processes over both timed phases
        peak = time_phases(cases)

    print(f"\nmeasured peak: {peak:.1f} GFLOP/s (best numpy sgemm on 2048^3, best of 7)")
    print("GFLOP/s = 2*M*K*N / median time; ratio > 1 means rlx is faster\n")
    head = ["M x K x N", "rlx GF/s", "numpy GF/s", "rlx/numpy", "rlx %peak"]
    if transposed_ok:
        head += ["rlx w[N,K] GF/s", "w[N,K]/numpy", "w[N,K] %peak"]
    rows, worst = [], 0.0
    for c in cases:
        flops = 2 * c["m"] * c["k"] * c["n"]
        g_r, g_n = flops / c["t_rlx"] / 1e9, flops / c["t_np"] / 1e9
        row = [f"{c['m']} x {c['k']} x {c['n']}", f"{g_r:.1f}", f"{g_n:.1f}", f"{g_r / g_n:.2f}", f"{100 * g_r / peak:.0f}%"]
        if transposed_ok:
            g_t = flops / c["t_rlx_t"] / 1e9
            row += [f"{g_t:.1f}", f"{g_t / g_n:.2f}", f"{100 * g_t / peak:.0f}%"]
        rows.append(row)
        ref = c["x"] @ c["w"]
        for key in ("y_rlx", "y_rlx_t"):
            if key in c:
                worst = max(worst, float(np.max(np.abs(c[key] - ref)) / np.max(np.abs(ref))))
    print(rows_table(head, rows))
    print(f"background load during the timed phases: {bg.cores:.2f} cores" + (
        "  WARNING: other processes competed for the cores; rerun on an idle machine" if bg.cores > BUSY_LIMIT else ""))
    print(f"\naccuracy: max |rlx - numpy| / max |numpy| = {worst:.1e} over all cases "
          f"[{'ok' if worst <= 1e-5 else 'CHECK'}]")


if __name__ == "__main__":
    main()
