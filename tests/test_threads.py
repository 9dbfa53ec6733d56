"""Many Python threads on one CompiledGraph (the GIL is released during runs) give results
bit-identical to serial runs; concurrent get_or_compile compiles each variant once."""

import numpy as np

import rlx
from concurrency_support import parallel
from conftest import MODEL, block_graph, block_params

THREADS, RUNS = 8, 200


def test_threads_bit_identical_to_serial(rng):
    pipe = rlx.ModelCompilePipeline(block_graph())
    pipe.bind_params(block_params(rng))
    exe = pipe.get_or_compile(b=2, s=16)
    inputs = [rng.standard_normal((2, 16, MODEL)).astype(np.float32) for _ in range(THREADS)]
    serial = [exe.run(x=x)["y"] for x in inputs]
    mismatches = [0] * THREADS

    def worker(i):
        for r in range(RUNS):
            j = (i + r) % THREADS  # threads run different inputs at the same time
            if not np.array_equal(exe.run(x=inputs[j])["y"], serial[j]):
                mismatches[i] += 1

    parallel(worker, THREADS)
    assert mismatches == [0] * THREADS


def test_threads_on_several_variants_and_concurrent_compiles(rng):
    pipe = rlx.ModelCompilePipeline(block_graph())
    params = block_params(rng)
    pipe.bind_params(params)
    shapes = [(1, 8), (2, 5), (3, 17), (1, 8)]
    xs = {s: rng.standard_normal((*s, MODEL)).astype(np.float32) for s in shapes}
    ref_pipe = rlx.ModelCompilePipeline(block_graph())
    ref_pipe.bind_params(params)
    serial = {s: ref_pipe.get_or_compile(b=s[0], s=s[1]).run(x=xs[s])["y"] for s in xs}
    results = {}

    def worker(i):
        b, s = shapes[i % len(shapes)]
        exe = pipe.get_or_compile(b=b, s=s)
        for _ in range(20):
            out = exe.run(x=xs[(b, s)])["y"]
            assert np.array_equal(out, serial[(b, s)])
        results[i] = True

    parallel(worker, THREADS)
    assert len(results) == THREADS
    stats = pipe.stats
    assert stats["misses"] == 3 and stats["hits"] == THREADS - 3  # one compile per variant
