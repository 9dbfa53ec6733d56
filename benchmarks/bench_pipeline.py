"""rlx against its peers on this machine, in one process.

* GEMM: rlx `linear` vs numpy (OpenBLAS) on transformer-sized products, in GFLOP/s and as a
  share of the machine's measured peak (the best numpy sgemm rate seen on a large product).
* MiniLM (all-MiniLM-L6-v2): rlx's builder path vs ONNX Runtime on the same weights and the
  same ONNX-equivalent graph, median latency per variant, and the ratio.

Run it with the OpenBLAS overrides unset so numpy runs its best kernel:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

import rlx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def median_time(fn, repeat: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def best_time(fn, repeat: int = 7) -> float:
    fn()
    return min(_timed(fn) for _ in range(repeat))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measured_peak() -> float:
    """The best numpy sgemm rate on a large product: the machine's practical peak."""
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    return 2 * 2048**3 / best_time(lambda: a @ a) / 1e9


def settle() -> None:
    """Let a peer's worker threads stop spinning before the other side is timed (OpenBLAS and
    ONNX Runtime both spin after a call, which steals the cores rlx would use, and back)."""
    time.sleep(0.5)


def bench_gemm() -> None:
    shapes = [(128, 384, 384), (1024, 384, 384), (1024, 384, 1536), (1024, 1536, 384), (4096, 384, 1152)]
    rng = np.random.default_rng(1)
    cases = []
    for m, k, n in shapes:
        g = rlx.Graph("gemm", dims={"m": (1, 1 << 16)})
        x = g.input("x", ("m", k))
        g.output("y", g.linear(x, g.param("w", (k, n))))
        pipe = rlx.ModelCompilePipeline(g)
        w = rng.standard_normal((k, n), dtype=np.float32)
        pipe.bind_params({"w": w})
        cases.append((m, k, n, pipe.get_or_compile(m=m), rng.standard_normal((m, k), dtype=np.float32), w))
    t_rlx = [median_time(lambda: exe.run(x=xs)) for (_, _, _, exe, xs, _) in cases]
    settle()
    t_np = [median_time(lambda: xs @ w) for (_, _, _, _, xs, w) in cases]
    peak = measured_peak()
    print(f"\nGEMM (x[M,K] @ w[K,N]), measured peak {peak:.1f} GFLOP/s (best numpy sgemm 2048^3)")
    print(f"{'M x K x N':>20} {'rlx GFLOP/s':>12} {'numpy GFLOP/s':>14} {'rlx/numpy':>10} {'rlx % peak':>11}")
    for (m, k, n, *_), tr, tn in zip(cases, t_rlx, t_np):
        flops = 2 * m * k * n
        g_rlx, g_np = flops / tr / 1e9, flops / tn / 1e9
        print(f"{f'{m} x {k} x {n}':>20} {g_rlx:>12.1f} {g_np:>14.1f} {g_rlx / g_np:>10.2f} {100 * g_rlx / peak:>10.0f}%")
    settle()


def bench_minilm() -> None:
    try:
        import onnxruntime as ort
        from rlx.models.bert import SentenceEncoder, default_model_dir
        from onnx_bert import bert_onnx
    except ImportError as e:
        print(f"\nMiniLM: skipped ({e})")
        return
    enc = SentenceEncoder(default_model_dir())
    cfg = {k: getattr(enc.config, k) for k in ("hidden_size", "num_attention_heads", "num_hidden_layers", "layer_norm_eps")}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(bert_onnx(cfg, enc.weights).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    variants = [(1, 16), (1, 128), (8, 128), (32, 128)]
    feeds = []
    for b, s in variants:
        feeds.append({
            "input_ids": rng.integers(1000, 30000, (b, s), dtype=np.int64),
            "attention_mask": np.ones((b, s), np.int64),
            "token_type_ids": np.zeros((b, s), np.int64),
        })
    compile_ms, t_rlx = [], []
    for (b, s), f in zip(variants, feeds):
        t = time.perf_counter()
        exe = enc.pipeline.get_or_compile(batch=b, seq=s)
        compile_ms.append((time.perf_counter() - t) * 1e3)
        t_rlx.append(median_time(lambda: exe.run(f), repeat=10 if b * s <= 1024 else 5))
    settle()
    t_ort = [median_time(lambda: sess.run(["last_hidden_state"], f), repeat=10 if b * s <= 1024 else 5) for (b, s), f in zip(variants, feeds)]
    print(f"\nMiniLM-L6 encoder (last hidden state), {os.cpu_count()} threads each")
    print(f"{'batch x seq':>12} {'rlx ms':>9} {'ORT ms':>9} {'rlx/ORT':>8} {'compile ms':>11}")
    for (b, s), tr, to, c in zip(variants, t_rlx, t_ort, compile_ms):
        print(f"{f'{b} x {s}':>12} {tr * 1e3:>9.2f} {to * 1e3:>9.2f} {tr / to:>8.2f} {c:>11.2f}")


def main() -> None:
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"note: {var} is set; numpy will be slower than it can be (see the docstring)")
    bench_gemm()
    bench_minilm()


if __name__ == "__main__":
    main()
