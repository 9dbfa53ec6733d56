"""Resident memory (VmRSS) before and after binding ~100 MB of float32 weights zero-copy,
against the arrays' own size; then the same with copy=True for contrast.

    python benchmarks/mem_binding.py [--mb 100]
"""

import argparse
import gc

import numpy as np

import rlx

LAYERS, WIDTH = 4, 2560  # 4 x 2560 x 2560 x 4 B = 100 MiB


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def graph(layers, width):
    g = rlx.Graph("deep", dims={"batch": (1, 64)})
    h = g.input("x", ("batch", width))
    for i in range(layers):
        h = g.linear(h, g.param(f"w{i}", (width, width)), activation="relu")
    g.output("y", h)
    return g


def measure(copy, layers, width):
    pipe = rlx.ModelCompilePipeline(graph(layers, width))
    pipe.build_template()
    ws = {f"w{i}": np.full((width, width), 0.001, np.float32) for i in range(layers)}
    size = sum(w.nbytes for w in ws.values()) / 2**20
    gc.collect()
    before = rss_mib()
    pipe.bind_params(ws, copy=copy)
    exe = pipe.get_or_compile(batch=1)
    after_bind = rss_mib()
    exe.run(x=np.ones((1, width), np.float32))
    after_run = rss_mib()
    same = all(exe.param_data_ptr(n) == w.ctypes.data for n, w in ws.items())
    print(f"copy={copy!s:5}  arrays {size:7.1f} MiB | RSS before bind {before:7.1f} MiB, after bind+compile "
          f"{after_bind:7.1f} (+{after_bind - before:6.1f}), after one run {after_run:7.1f} "
          f"(+{after_run - before:6.1f}) | kernels read the arrays' own memory: {same}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--width", type=int, default=WIDTH)
    a = ap.parse_args()
    measure(False, a.layers, a.width)
    gc.collect()
    measure(True, a.layers, a.width)


if __name__ == "__main__":
    main()
