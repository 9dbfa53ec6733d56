"""Wall time of 8 threads x 200 runs vs 1 thread x 1600 runs on one CompiledGraph.

rlx releases the GIL while a graph runs, so threads overlap when the machine has spare cores.
Kernels use the runtime's own pool too; RLX_NUM_THREADS=1 makes each run single-threaded so the
comparison shows Python-level parallelism only.

    python benchmarks/bench_threads.py [--batch 64] [--threads 8] [--runs 200]
"""

import argparse
import os
import sys
import threading
import time

import numpy as np

import rlx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from conftest import MLP_IN, MLP_SHAPES, mlp_graph, weights  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--runs", type=int, default=200)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    pipe = rlx.ModelCompilePipeline(mlp_graph())
    pipe.bind_params(weights(rng, MLP_SHAPES))
    exe = pipe.get_or_compile(batch=a.batch)
    x = rng.standard_normal((a.batch, MLP_IN)).astype(np.float32)
    for _ in range(50):
        exe.run(x=x)

    total = a.threads * a.runs
    t = time.perf_counter()
    for _ in range(total):
        exe.run(x=x)
    serial = time.perf_counter() - t

    barrier = threading.Barrier(a.threads + 1)

    def worker():
        barrier.wait()
        for _ in range(a.runs):
            exe.run(x=x)

    ts = [threading.Thread(target=worker) for _ in range(a.threads)]
    for th in ts:
        th.start()
    barrier.wait()
    t = time.perf_counter()
    for th in ts:
        th.join()
    parallel = time.perf_counter() - t

    print(f"cores={os.cpu_count()} RLX_NUM_THREADS={os.environ.get('RLX_NUM_THREADS', 'unset')} "
          f"graph=mlp batch={a.batch}")
    print(f"1 thread  x {total} runs: {serial * 1e3:8.1f} ms  ({serial / total * 1e6:7.1f} us/run)")
    print(f"{a.threads} threads x {a.runs} runs:  {parallel * 1e3:8.1f} ms  ({parallel / total * 1e6:7.1f} us/run)")
    print(f"speed-up {serial / parallel:.2f}x (runs execute on the runtime's pool of "
          f"RLX_NUM_THREADS or core-count workers, so at most that many overlap)")
    gil_probe()


def gil_probe(seconds=1.0, width=1024, batch=256):
    """Pure-Python loop iterations per second on the main thread, alone and while another thread
    runs a ~10 ms graph non-stop. Were the GIL held during runs, the main thread could only run
    between runs (a few percent of the time); released, it keeps its core."""
    g = rlx.Graph("wide", dims={"batch": (1, 4096)})
    g.output("y", g.linear(g.input("x", ("batch", width)), g.param("w", (width, width)), activation="relu"))
    pipe = rlx.ModelCompilePipeline(g)
    pipe.bind_params({"w": np.full((width, width), 1e-3, np.float32)})
    exe = pipe.get_or_compile(batch=batch)
    x = np.ones((batch, width), np.float32)
    t = time.perf_counter()
    exe.run(x=x)
    run_ms = (time.perf_counter() - t) * 1e3

    def spin(stop_at):
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
        return n

    alone = spin(time.perf_counter() + seconds) / seconds
    done = threading.Event()
    runs = [0]

    def runner():
        while not done.is_set():
            exe.run(x=x)
            runs[0] += 1

    th = threading.Thread(target=runner)
    th.start()
    busy = spin(time.perf_counter() + seconds) / seconds
    done.set()
    th.join()
    print(f"GIL probe: main-thread Python loop {alone / 1e6:.2f} M it/s alone, {busy / 1e6:.2f} M it/s "
          f"({busy / alone:.0%}) while another thread ran {runs[0]} runs of {run_ms:.1f} ms")


if __name__ == "__main__":
    main()
