"""os.fork() after a run must not hang the child: rayon's workers do not survive fork, so the
runtime gives a forked child a thread pool of its own."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

import rlx
from concurrency_support import expect_clean_exit

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _graph() -> rlx.Graph:
    g = rlx.Graph("forked", dims={"batch": (1, 4096)})
    x = g.input("x", ("batch", 64))
    g.output("y", g.linear(x, g.param("w", (64, 256)), activation="gelu"))
    return g


def test_child_runs_after_fork():
    pipe = rlx.ModelCompilePipeline(_graph())
    w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    pipe.bind_params({"w": w})
    exe = pipe.get_or_compile(batch=512)  # large enough to use the pool's workers
    x = np.ones((512, 64), np.float32)
    want = exe.run(x=x)["y"]
    pid = os.fork()
    if pid == 0:  # child: same graph, a new variant, then report by exit code
        try:
            same = np.array_equal(exe.run(x=x)["y"], want)
            other = pipe.get_or_compile(batch=700).run(x=np.ones((700, 64), np.float32))["y"]
            os._exit(0 if same and np.allclose(other[:512], want) else 1)
        except BaseException:
            os._exit(2)
    expect_clean_exit(pid, "the forked child hung running a graph")
    # The parent's pool still works.
    assert np.array_equal(exe.run(x=x)["y"], want)


def test_child_runs_a_batch_sample_by_sample_after_fork():
    # 12 images of 32 x 56 x 56 activations, 18 KiB of weights: run sample by sample on the
    # pool, which the child must rebuild.
    g = rlx.Graph("convnet", dims={"batch": (1, 16)})
    x = g.input("x", ("batch", 16, 56, 56))
    g.output("y", g.relu(g.conv(x, g.param("w", (32, 16, 3, 3)), pads=[1, 1, 1, 1])))
    pipe = rlx.ModelCompilePipeline(g)
    rng = np.random.default_rng(1)
    pipe.bind_params({"w": (rng.standard_normal((32, 16, 3, 3)) * 0.2).astype(np.float32)})
    exe = pipe.get_or_compile(batch=12)
    assert exe.samples_apart == 12
    xs = rng.standard_normal((12, 16, 56, 56)).astype(np.float32)
    want = exe.run(x=xs)["y"]
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if np.array_equal(exe.run(x=xs)["y"], want) else 1)
        except BaseException:
            os._exit(2)
    expect_clean_exit(pid, "the forked child hung running a batch sample by sample")
    assert np.array_equal(exe.run(x=xs)["y"], want)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_fork_while_another_thread_compiles_does_not_hang_the_child():
    """The pipeline's lock is held while a variant compiles (here: a 512 MiB arena being
    touched); a fork at that moment used to leave the child's copy locked forever."""
    import threading

    g = rlx.Graph("wide", dims={"n": (1, 1 << 17)})
    h = g.input("x", ("n", 1024))
    for i in range(3):
        h = g.linear(h, g.param(f"w{i}", (1024, 1024)))
    g.output("y", h)
    pipe = rlx.ModelCompilePipeline(g)
    pipe.bind_params({f"w{i}": np.eye(1024, dtype=np.float32) for i in range(3)})
    compiling = threading.Thread(target=lambda: pipe.get_or_compile(n=1 << 16))
    compiling.start()
    time.sleep(0.02)  # inside the compile (it takes a few hundred ms)
    pid = os.fork()
    if pid == 0:
        try:
            out = pipe.get_or_compile(n=2).run(x=np.ones((2, 1024), np.float32))["y"]
            os._exit(0 if np.array_equal(out, np.ones((2, 1024), np.float32)) else 1)
        except BaseException:
            os._exit(2)
    compiling.join()
    expect_clean_exit(pid, "the child forked during a compile hung on the pipeline's lock")
