"""Ctrl-C during a long run raises KeyboardInterrupt at the next kernel boundary, and the graph
stays usable (the run's GIL is released, so the main thread polls for signals while it waits)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import rlx

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="posix signals")


def _long_graph(layers: int = 40) -> rlx.Graph:
    g = rlx.Graph("long", dims={"n": (1, 1 << 16)})
    h = g.input("x", ("n", 1024))
    for i in range(layers):
        h = g.linear(h, g.param(f"w{i}", (1024, 1024)), activation="relu")
    g.output("y", h)
    return g


def _ctrl_c_stops_it_early(exe, x, full: float) -> None:
    """Ctrl-C a quarter of the way into a run that takes `full` seconds: KeyboardInterrupt, and
    well before a whole run could finish (a kernel boundary comes every 1/40 of the run)."""
    timer = threading.Timer(full / 4, lambda: os.kill(os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        exe.run(x=x)
    stopped_after = time.monotonic() - started
    timer.cancel()
    print(f"\n[interrupt] a {full * 1e3:.0f} ms run, Ctrl-C at {full / 4 * 1e3:.0f} ms: KeyboardInterrupt "
          f"after {stopped_after * 1e3:.0f} ms (latency {(stopped_after - full / 4) * 1e3:.0f} ms)")
    assert stopped_after < full * 0.75, (stopped_after, full)


def test_ctrl_c_interrupts_a_long_run_and_the_graph_still_works():
    pipe = rlx.ModelCompilePipeline(_long_graph())
    w = (np.eye(1024, dtype=np.float32) * 0.5).copy()
    pipe.bind_params({f"w{i}": w for i in range(40)})
    exe = pipe.get_or_compile(n=4096)  # 16 MiB buffers, 40 GEMMs of 4096x1024x1024
    x = np.ones((4096, 1024), np.float32)
    # The run's own length on this machine, then Ctrl-C a quarter of the way into another.
    started = time.monotonic()
    exe.run(x=x)
    full = time.monotonic() - started
    _ctrl_c_stops_it_early(exe, x, full)
    small = pipe.get_or_compile(n=4).run(x=np.ones((4, 1024), np.float32))["y"]
    np.testing.assert_allclose(small, np.full((4, 1024), 0.5**40, np.float32), rtol=1e-6)


def test_ctrl_c_interrupts_the_first_run_of_a_variant_with_a_small_arena():
    """The first run's length is unknown, so it is always interruptible (it used to be only
    when its arena was 32 MiB or more)."""

    def first_run_of_a_new_pipeline():
        pipe = rlx.ModelCompilePipeline(_long_graph())
        w = (np.eye(1024, dtype=np.float32) * 0.5).copy()
        pipe.bind_params({f"w{i}": w for i in range(40)})
        exe = pipe.get_or_compile(n=2048)  # 8 MiB buffers: an arena well under 32 MiB
        return exe, np.ones((2048, 1024), np.float32)

    exe, x = first_run_of_a_new_pipeline()
    started = time.monotonic()
    exe.run(x=x)
    full = time.monotonic() - started
    exe, x = first_run_of_a_new_pipeline()
    _ctrl_c_stops_it_early(exe, x, full)
