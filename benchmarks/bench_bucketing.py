"""Shape bucketing under dynamic traffic: a replay of N requests (batch 1) through MiniLM-L6
with and without bucketing of the sequence length.

Sequence lengths follow a log-normal over sentence lengths (median ~26 word-piece tokens,
sigma 0.75, plus [CLS] and [SEP]; clipped to 1..512; seeded), so most requests are short and a
long tail reaches a few hundred tokens. Every request is run by every arm, in rotated order, so
background load on a shared machine hits the arms alike:

- exact: ``SentenceEncoder(buckets=None)``, one variant per distinct length (pipeline capacity
  512: nothing is evicted, every distinct length is compiled once);
- pow2: the default, ``buckets="pow2"`` (8, 16, ..., 512: seven variants);
- half-octave: ``[8, 12, 16, 24, ..., 384, 512]`` (13 variants, less padding).

Per arm: variants compiled, the pipeline cache's bytes (``pipe.stats["bytes"]`` where the
extension reports it) and the packed weights it shares, specialize + compile time, latency per
request (p50 / p99 / mean, including the compile of a variant on its first request),
throughput (requests per second of the arm's own run time), the padding added, and the largest
embedding difference from the exact arm.

    python benchmarks/bench_bucketing.py [--requests 10000] [--quick] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header, rows_table  # noqa: E402

MEDIAN_TOKENS, SIGMA = 26, 0.75
HALF_OCTAVE = [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]


def lengths(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    words = rng.lognormal(mean=np.log(MEDIAN_TOKENS), sigma=SIGMA, size=n)
    return np.clip(np.rint(words).astype(np.int64) + 2, 1, 512)


def feeds(seq: int, seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(1, seq), dtype=np.int64)
    ids[0, 0], ids[0, -1] = 101, 102  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": np.ones((1, seq), np.int64),
            "token_type_ids": np.zeros((1, seq), np.int64)}


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=None, help="requests to replay (default 10000; 1500 with --quick)")
    ap.add_argument("--quick", action="store_true", help="1500 requests: a smoke run of well under a minute")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = args.requests or (1500 if args.quick else 10000)
    if n < 1:
        ap.error("--requests must be >= 1")

    import rlx
    from rlx.models.bert import SentenceEncoder, default_model_dir

    header(f"Shape bucketing: {n} requests of batch 1 through MiniLM-L6, seq ~ log-normal "
           f"(median {MEDIAN_TOKENS}+2 tokens, sigma {SIGMA}, clipped to 1..512, seed {args.seed})",
           ["rlx", "numpy"])
    seqs = lengths(n, args.seed)
    q = np.percentile(seqs, [50, 90, 99])
    print(f"lengths: {len(np.unique(seqs))} distinct, p50 {q[0]:.0f}, p90 {q[1]:.0f}, p99 {q[2]:.0f}, "
          f"max {seqs.max()}, mean {seqs.mean():.1f} tokens")

    model_dir = default_model_dir()
    arms: Dict[str, Any] = {
        "exact": SentenceEncoder(model_dir, buckets=None, capacity=512),
        "pow2": SentenceEncoder(model_dir, buckets="pow2"),
        "half-octave": SentenceEncoder(model_dir, buckets=HALF_OCTAVE, capacity=16),
    }
    names = list(arms)
    lat: Dict[str, List[float]] = {k: [] for k in names}
    worst = {k: 0.0 for k in names}
    t_start = time.perf_counter()
    for i, s in enumerate(seqs):
        f = feeds(int(s), seed=args.seed * 1_000_003 + i)
        outs = {}
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t = time.perf_counter()
            outs[name] = arms[name].run(f)["embedding"]
            lat[name].append(time.perf_counter() - t)
        for name in names[1:]:
            worst[name] = max(worst[name], float(np.abs(outs[name] - outs["exact"]).max()))
    wall = time.perf_counter() - t_start

    rows = []
    for name in names:
        enc = arms[name]
        st = enc.pipeline.stats
        ms = np.array(lat[name]) * 1e3
        cache = st.get("bytes")
        if enc.bucketing is not None:
            r = enc.bucketing.report()
            pad = f"{r['padding_ratio']:.2f}"
        else:
            pad = "0"
        rows.append([
            name, str(st["compiles"]), str(len(enc.pipeline)),
            "n/a" if cache is None else f"{cache / 2**20:.1f}",
            f"{(st['specialize_time_s'] + st['compile_time_s']) * 1e3:.0f}",
            f"{np.percentile(ms, 50):.2f}", f"{np.percentile(ms, 99):.2f}", f"{ms.mean():.2f}",
            f"{len(ms) / (ms.sum() / 1e3):.0f}", pad,
            "-" if name == "exact" else f"{worst[name]:.1e}",
        ])
    print()
    print(rows_table(["arm", "variants compiled", "cached", "cache MiB", "compile ms", "p50 ms", "p99 ms",
                      "mean ms", "req/s", "padded/useful", "max |emb diff|"], rows))
    packed = arms["exact"].pipeline.stats.get("packed_bytes", 0)
    print(f"\ncache MiB: pipe.stats['bytes'] (the cached variants); each pipeline also holds "
          f"{packed / 2**20:.1f} MiB of packed weights, shared by its variants (not in the column).")
    print("compile ms: specialize + compile summed over the arm's variants, the first one's weight packing included;"
          " p50/p99/mean: per request, a variant's compile included on its first request.")
    print(f"replay wall time {wall:.1f} s for {len(names)} arms (rlx.cpu_isa() = {rlx.cpu_isa()})")
    warm = SentenceEncoder(model_dir)
    t = time.perf_counter()
    done = warm.bucketing.precompile(batch=1)
    print(f"warm start: a fresh pow2 encoder's bucketing.precompile(batch=1) compiles its {len(done)} variants "
          f"in {(time.perf_counter() - t) * 1e3:.0f} ms (the first packs the weights)")
    for name in names[1:]:
        print(f"\n{name}: {arms[name].bucketing}")


if __name__ == "__main__":
    main()
