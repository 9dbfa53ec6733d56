"""Concurrency stress on one ModelCompilePipeline: many Python threads run a mix of variants
while other threads rebind params, a bounded cache evicts variants and the main thread forks.
Every result must be bit-identical to a serial run, and nothing may hang.

Reliability catalog row: "Many Python threads running one pipeline (same or different variants)
give results bit-identical to serial runs; cache lookups and compiles are single-flight; a
variant evicted from the bounded cache while a run uses it stays alive until the run ends;
os.fork() while another thread holds an rlx lock: the child's calls still work".

What rlx promises about rebinding while runs are in flight (`ParamStore` in
crates/rlx-runtime/src/params.rs, `bind_params` in crates/rlx-py/src/arrays.rs, README
"Rebinding a weight repacks it"): a run takes a snapshot of every slot when it starts, so it
never sees a weight change mid-run nor a half-written or half-packed weight, and `bind_params`
makes the whole new set visible at once: "a concurrent run sees the old set or the new one,
never a mix". So every result under rebinding must be bit-identical to the serial result for
set A or for set B.

Three bugs this file found are fixed and kept as regression tests: `bind_params` used to
commit one slot at a time (a run starting in between saw a mix of A and B), and a child forked
while another thread packed a weight, or took or returned a run's arena, hung on the std Mutex
that guarded the packed panels or the arena pool (both are ForkLocks now; about 1 fork in 400
of the stress test hung on the arena pool before).

Each case prints one line of figures (visible with `pytest -s`)."""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref

import numpy as np
import pytest

import rlx
from concurrency_support import expect_clean_exit, parallel
from conftest import weights

IN, HID, OUT = 256, 768, 256
SHAPES = {"w1": (IN, HID), "b1": (HID,), "w2": (HID, OUT), "gamma": (OUT,), "beta": (OUT,)}
# n=3 is small enough to run on the calling thread; the others run on the pool. Five variants
# against a cache of two: threads keep compiling and evicting.
VARIANTS = (3, 17, 40, 64, 100)
CAPACITY = 2
THREADS, RUNS = 8, 300
WATCHDOG = 60.0  # seconds before a thread still running counts as a hang
FORKS = 20
CHILD_TIMEOUT = 10.0  # seconds before a forked child (done in ~50 ms) counts as hung

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _graph() -> rlx.Graph:
    g = rlx.Graph("stress", dims={"n": (1, 256)})
    x = g.input("x", ("n", IN))
    h = g.linear(x, g.param("w1", SHAPES["w1"]), g.param("b1", SHAPES["b1"]), activation="gelu")
    y = g.linear(h, g.param("w2", SHAPES["w2"]))
    y = g.layer_norm(y, g.param("gamma", SHAPES["gamma"]), g.param("beta", SHAPES["beta"]))
    g.output("y", g.softmax(y, axis=-1))
    return g


def _pipeline(params, capacity: int = CAPACITY) -> rlx.ModelCompilePipeline:
    pipe = rlx.ModelCompilePipeline(_graph(), capacity=capacity)
    pipe.bind_params(params)
    return pipe


def _inputs(rng, ns=VARIANTS):
    return {n: rng.standard_normal((n, IN)).astype(np.float32) for n in ns}


def _run(pipe, xs, n) -> bytes:
    return pipe.get_or_compile(n=n).run(x=xs[n])["y"].tobytes()


def _serial(pipe, xs) -> dict:
    """One run of every variant, one after the other, before any thread starts."""
    return {n: _run(pipe, xs, n) for n in xs}


def _serial_per_param_choice(pipe, xs, a, b) -> dict:
    """Serial results of every variant for every per-param choice between the sets `a` and `b`:
    (variant, result bytes) -> the choice, e.g. "ABAAA" (params in SHAPES order). Leaves `a`
    bound."""
    choices = {}
    for choice in itertools.product("AB", repeat=len(SHAPES)):
        pipe.bind_params({k: (a if c == "A" else b)[k] for k, c in zip(SHAPES, choice)})
        for n, out in _serial(pipe, xs).items():
            choices.setdefault((n, out), "".join(choice))
    pipe.bind_params(a)
    return choices


def _delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in ("hits", "misses", "evictions", "specializations", "compiles")}


def _check_cache_bookkeeping(pipe, before: dict, lookups: int) -> dict:
    d = _delta(before, pipe.stats)
    assert d["hits"] + d["misses"] == lookups, d  # every lookup counted once
    assert d["specializations"] == d["compiles"] == d["misses"], d  # one compile per miss
    s = pipe.stats
    assert s["evictions"] == s["misses"] - len(pipe), s  # FIFO: every insert past capacity evicts one
    assert len(pipe) <= pipe.capacity
    return d


# -- 1. threads over mixed variants ------------------------------------------------------------


def test_threads_on_mixed_variants_are_bit_identical_to_serial(rng):
    xs = _inputs(rng)
    pipe = _pipeline(weights(rng, SHAPES))
    serial = _serial(pipe, xs)
    before = pipe.stats
    runs, bad = [0] * THREADS, []

    def worker(i):
        for r in range(RUNS):
            n = VARIANTS[(i + r) % len(VARIANTS)]  # at any moment the threads run different variants
            if _run(pipe, xs, n) != serial[n]:
                bad.append((i, r, n))
            runs[i] += 1

    parallel(worker, THREADS, timeout=WATCHDOG)
    assert not bad, f"{len(bad)} results differ from the serial run: {bad[:10]}"
    assert sum(runs) == THREADS * RUNS
    d = _check_cache_bookkeeping(pipe, before, THREADS * RUNS)
    print(
        f"\n[concurrency 1] {THREADS} threads x {RUNS} runs = {sum(runs)} runs over {len(VARIANTS)} variants "
        f"bit-identical to serial; {d['misses']} compiles, {d['evictions']} evictions (capacity {CAPACITY})"
    )


# -- 2. threads while another thread rebinds params --------------------------------------------


def test_threads_while_a_weight_is_rebound_see_the_old_or_the_new_weight(rng):
    """One slot (`w1`, a packed GEMM weight) flips between two arrays: each run sees one of
    them whole (its snapshot), bit-identical to the serial run with it."""
    xs = _inputs(rng)
    a, b = weights(rng, SHAPES), weights(rng, SHAPES)
    pipe = _pipeline(a)
    serial_a = _serial(pipe, xs)
    pipe.set_param("w1", b["w1"])
    serial_b = _serial(pipe, xs)
    pipe.set_param("w1", a["w1"])
    assert all(serial_a[n] != serial_b[n] for n in VARIANTS)
    seen = {"A": 0, "B": 0}
    bad, binds, lock = [], [0], threading.Lock()

    def rebinder(stop):
        while not stop.is_set():
            binds[0] += 1
            pipe.set_param("w1", (b if binds[0] % 2 else a)["w1"])
            time.sleep(0.0002)

    def worker(i):
        for r in range(RUNS):
            n = VARIANTS[(i + r) % len(VARIANTS)]
            out = _run(pipe, xs, n)
            which = "A" if out == serial_a[n] else "B" if out == serial_b[n] else None
            with lock:
                if which is None:
                    bad.append((i, r, n))
                else:
                    seen[which] += 1

    parallel(worker, THREADS, background=[rebinder], timeout=WATCHDOG)
    assert not bad, f"{len(bad)} results are neither the serial A nor the serial B result: {bad[:10]}"
    assert seen["A"] > 0 and seen["B"] > 0, (seen, binds)  # the rebinds did land between runs
    print(
        f"\n[concurrency 2a] {THREADS} threads x {RUNS} runs = {THREADS * RUNS} runs during {binds[0]} "
        f"rebinds of w1: {seen['A']} bit-identical to serial A, {seen['B']} to serial B, 0 other"
    )


def test_threads_while_weight_sets_are_rebound_see_set_a_or_set_b(rng):
    """`bind_params` flips every param between sets A and B while threads run: each result is
    bit-identical to the serial result for A or for B. A result that is neither is classified
    against the serial results of every per-param choice of A and B, so a failure says whether
    a run saw a mix of the sets (a torn bind) or something else (garbage)."""
    xs = _inputs(rng)
    a, b = weights(rng, SHAPES), weights(rng, SHAPES)
    pipe = _pipeline(a)
    combos = _serial_per_param_choice(pipe, xs, a, b)
    pure_a, pure_b = "A" * len(SHAPES), "B" * len(SHAPES)
    counts: dict = {}
    binds, lock = [0], threading.Lock()

    def rebinder(stop):
        while not stop.is_set():
            binds[0] += 1
            pipe.bind_params(b if binds[0] % 2 else a)
            time.sleep(0.0002)

    def worker(i):
        for r in range(RUNS):
            n = VARIANTS[(i + r) % len(VARIANTS)]
            which = combos.get((n, _run(pipe, xs, n)), "garbage")
            with lock:
                counts[which] = counts.get(which, 0) + 1

    parallel(worker, THREADS, background=[rebinder], timeout=WATCHDOG)
    others = {k: v for k, v in counts.items() if k not in (pure_a, pure_b)}
    assert not others, f"results neither serial A nor serial B (per-param choice: count): {others}"
    assert counts.get(pure_a, 0) > 0 and counts.get(pure_b, 0) > 0, counts
    print(
        f"\n[concurrency 2b] {THREADS} threads x {RUNS} runs = {THREADS * RUNS} runs during {binds[0]} "
        f"bind_params of all {len(SHAPES)} params: {counts[pure_a]} bit-identical to serial A, "
        f"{counts[pure_b]} to serial B, 0 mixed, 0 other"
    )


def test_bind_params_is_atomic_for_concurrent_runs():
    """Regression (fixed in 8ff7e43): bind_params committed one slot at a time, so a run
    starting in between saw a mix of the old and new sets. Deterministic repro: the old w1 is
    held only by the store, and its finalizer (which runs when bind_params drops it) runs the
    graph on another thread. That run must see the old set or the new one."""
    g = rlx.Graph("two", dims={"n": (1, 8)})
    x = g.input("x", ("n", 4))
    g.output("y", g.linear(g.linear(x, g.param("w1", (4, 4))), g.param("w2", (4, 4))))
    pipe = rlx.ModelCompilePipeline(g)
    eye = np.eye(4, dtype=np.float32)
    old = {"w1": eye.copy(), "w2": eye.copy()}  # y = x; only the store will hold these arrays
    new = {"w1": 2 * eye, "w2": 3 * eye}  # y = 6 x
    exe = pipe.get_or_compile(n=1)
    ones = np.ones((1, 4), np.float32)
    seen = []

    def run_on_another_thread():  # while bind_params drops the old w1
        t = threading.Thread(target=lambda: seen.append(float(exe.run(x=ones)["y"][0, 0])), daemon=True)
        t.start()
        t.join(WATCHDOG)

    weakref.finalize(old["w1"], run_on_another_thread)
    pipe.bind_params(old)
    del old
    assert float(exe.run(x=ones)["y"][0, 0]) == 1.0
    pipe.bind_params(new)
    assert float(exe.run(x=ones)["y"][0, 0]) == 6.0
    assert len(seen) == 1
    assert seen[0] in (1.0, 6.0), f"a run during bind_params saw w1 new and w2 old: y = {seen[0]}"


# -- 3. eviction under threads -----------------------------------------------------------------


def test_eviction_under_threads_keeps_running_variants_alive(rng):
    """Capacity 1, eight threads each on a variant of its own: nearly every lookup compiles and
    evicts another thread's variant, often while that variant runs. Each thread alternates a
    fresh lookup with the graph it got first (evicted long since)."""
    own = (3, 9, 17, 24, 40, 64, 80, 100)
    xs = _inputs(rng, own)
    params = weights(rng, SHAPES)
    pipe = _pipeline(params, capacity=1)
    serial = _serial(pipe, xs)
    before = pipe.stats
    bad, evicted_by_the_end, lookups = [], [0] * THREADS, [0] * THREADS

    def worker(i):
        n = own[i]
        first = pipe.get_or_compile(n=n)
        lookups[i] += 1
        for r in range(RUNS // 2):
            if r % 2:
                exe = first
            else:
                exe = pipe.get_or_compile(n=n)
                lookups[i] += 1
            if exe.run(x=xs[n])["y"].tobytes() != serial[n]:
                bad.append((i, r))
            if {"n": n} not in pipe:
                evicted_by_the_end[i] += 1

    parallel(worker, THREADS, timeout=WATCHDOG)
    assert not bad, f"{len(bad)} results differ from the serial run: {bad[:10]}"
    d = _check_cache_bookkeeping(pipe, before, sum(lookups))
    assert d["evictions"] > 0 and sum(evicted_by_the_end) > 0, (d, evicted_by_the_end)

    # Single flight: all threads ask at once for a variant nobody compiled yet; one compiles it.
    new = (120, 150, 190, 256)
    xs_new = _inputs(rng, new)
    ref = _serial(_pipeline(params), xs_new)  # another pipeline, same weights
    for n in new:
        start = pipe.stats
        outs = [b""] * THREADS

        def same_new_variant(i, n=n):
            outs[i] = _run(pipe, xs_new, n)

        parallel(same_new_variant, THREADS, timeout=WATCHDOG)
        step = _delta(start, pipe.stats)
        assert (step["misses"], step["hits"], step["compiles"]) == (1, THREADS - 1, 1), step
        assert all(o == ref[n] for o in outs)
    print(
        f"\n[concurrency 3] {THREADS} threads x {RUNS // 2} runs = {THREADS * (RUNS // 2)} runs on {len(own)} "
        f"variants, capacity 1: bit-identical to serial; {d['evictions']} evictions, "
        f"{sum(evicted_by_the_end)} runs whose variant was evicted by the time it returned; "
        f"{len(new)} x {THREADS} simultaneous lookups of a new variant compiled it once each"
    )


# -- 4. fork while threads run, compile, evict and rebind ---------------------------------------


def test_fork_while_threads_run_compile_and_rebind(rng):
    """The main thread forks while worker threads run mixed variants (compiling and evicting
    through a cache of two), another thread compiles new variants, and a third flips every
    param between sets A and B and runs the new set at once (which packs its weights, so a
    packing is often under way at the fork). The child looks a variant up (it may compile it),
    runs it and runs a graph evicted in the parent; every result, in the child and the parent,
    is bit-identical to the serial result for A or for B."""
    xs = _inputs(rng)
    a, b = weights(rng, SHAPES), weights(rng, SHAPES)
    pipe = _pipeline(b)
    serial_b = _serial(pipe, xs)
    pipe.bind_params(a)
    serial_a = _serial(pipe, xs)
    held = {n: pipe.get_or_compile(n=n) for n in VARIANTS}  # evicted from the cache, kept here
    forks_done = threading.Event()
    workers, runs, bad, compiled, binds = 4, [0] * 4, [], [0], [0]

    def ok(n, out):
        return out == serial_a[n] or out == serial_b[n]

    def worker(i):
        r = 0
        while not forks_done.is_set():
            n = VARIANTS[(i + r) % len(VARIANTS)]
            r += 1
            if not ok(n, _run(pipe, xs, n)):
                bad.append((i, n))
            runs[i] += 1

    def compiler(stop):  # new variants, so a compile is often in flight when the fork happens
        for n in itertools.cycle(range(101, 257)):
            if stop.is_set() or forks_done.is_set():
                return
            pipe.get_or_compile(n=n)
            compiled[0] += 1
            time.sleep(0.001)

    def rebinder(stop):
        while not (stop.is_set() or forks_done.is_set()):
            binds[0] += 1
            pipe.bind_params(b if binds[0] % 2 else a)
            n = VARIANTS[binds[0] % len(VARIANTS)]
            if not ok(n, _run(pipe, xs, n)):
                bad.append(("rebinder", n))

    def forks():
        trials = 0
        try:
            for trial in range(FORKS):
                time.sleep(0.01)
                n, m = VARIANTS[trial % len(VARIANTS)], VARIANTS[(trial + 2) % len(VARIANTS)]
                pid = os.fork()
                if pid == 0:  # the child reports by exit code only
                    try:
                        good = ok(n, _run(pipe, xs, n))
                        good = ok(m, held[m].run(x=xs[m])["y"].tobytes()) and good
                        os._exit(0 if good else 1)
                    except BaseException:
                        os._exit(2)
                hang = f"fork {trial}: the child hung (threads were running, compiling and rebinding)"
                expect_clean_exit(pid, hang, CHILD_TIMEOUT)
                trials += 1
        finally:
            forks_done.set()
        return trials

    trials = parallel(worker, workers, background=[compiler, rebinder], during=forks, timeout=WATCHDOG)
    assert trials == FORKS
    assert not bad, f"{len(bad)} parent results are neither serial A nor serial B: {bad[:10]}"
    assert all(ok(n, held[n].run(x=xs[n])["y"].tobytes()) for n in VARIANTS)
    print(
        f"\n[concurrency 4] {trials} forks without a hang, each child bit-identical to serial A or B, "
        f"while {workers} threads ran {sum(runs)} runs (bit-identical), {compiled[0]} new variants "
        f"compiled and {binds[0]} bind_params flipped the weights"
    )


@needs_fork
def test_fork_while_another_thread_packs_a_rebound_weight():
    """Regression (fixed in 8ff7e43): a thread's run packs a newly bound 32 MiB weight (~20 ms)
    and the main thread forks in the middle of it. The packed panels were guarded by a std
    Mutex, which the child found locked by a thread it does not have: its run hung for ever.
    Passes once three forks landed inside a packing with the child fine; skips if too few
    landed (a loaded machine)."""
    k, n = 2048, 4096
    g = rlx.Graph("packed", dims={"n": (1, 8)})
    g.output("y", g.linear(g.input("x", ("n", k)), g.param("w", (k, n))))
    pipe = rlx.ModelCompilePipeline(g)
    pipe.bind_params({"w": np.full((k, n), 0.5, np.float32)})
    exe = pipe.get_or_compile(n=1)
    x = np.ones((1, k), np.float32)
    want = exe.run(x=x)["y"].tobytes()
    t0 = time.monotonic()
    exe.run(x=x)
    plain_run = time.monotonic() - t0
    landed = 0
    for _ in range(8):
        pipe.set_param("w", np.full((k, n), 0.5, np.float32))  # a new binding: the next run packs it
        started, span = threading.Event(), []

        def packer():
            span.append(time.monotonic())
            started.set()
            exe.run(x=x)
            span.append(time.monotonic())

        t = threading.Thread(target=packer, daemon=True)
        t.start()
        started.wait(WATCHDOG)
        time.sleep(0.004)
        forked_at = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                os._exit(0 if exe.run(x=x)["y"].tobytes() == want else 1)
            except BaseException:
                os._exit(2)
        t.join(WATCHDOG)
        expect_clean_exit(pid, "the child forked while another thread packed a weight hung", CHILD_TIMEOUT)
        # Count the fork only if the parent's run was still well inside its packing then.
        if forked_at < span[1] - 2 * plain_run - 0.002:
            landed += 1
            if landed == 3:
                return
    pytest.skip(f"only {landed} of 8 forks landed inside a packing")


# -- 8. kernels that keep per-thread scratch across their parallel loops -----------------------

def test_threads_on_scratch_holding_kernels_are_bit_identical_to_serial(rng):
    # A position-major convolution and attention keep per-thread scratch while their parallel
    # loops run; a pool worker waiting inside such a loop may start another thread's run. With
    # the scratch borrowed for the whole call that second run used to fail (RefCell already
    # borrowed); it now takes its own.
    g = rlx.Graph("scratch", dims={"n": (1, 8)})
    x = g.input("x", ("n", 64, 12, 12))
    y = g.relu(g.conv(x, g.param("w", (160, 64, 3, 3)), pads=[1, 1, 1, 1]))  # 144 positions < 160
    q = g.reshape(y, ("n", 10, 16, 144))
    a = g.attention(q, q, q)
    g.output("y", g.reshape(a, ("n", 160, 12, 12)))
    pipe = rlx.ModelCompilePipeline(g)
    pipe.bind_params({"w": (rng.standard_normal((160, 64, 3, 3)) * 0.05).astype(np.float32)})
    xs = {n: rng.standard_normal((n, 64, 12, 12)).astype(np.float32) for n in (1, 2, 4)}
    serial = {n: pipe.get_or_compile(n=n).run(x=xs[n])["y"].tobytes() for n in xs}
    bad = []

    def worker(i):
        for r in range(60):
            n = (1, 2, 4)[(i + r) % 3]
            if pipe.get_or_compile(n=n).run(x=xs[n])["y"].tobytes() != serial[n]:
                bad.append((i, r, n))

    parallel(worker, THREADS, timeout=WATCHDOG)
    assert not bad, f"{len(bad)} results differ from the serial run: {bad[:10]}"
