"""Time to a new variant: MiniLM-L6 (6 layers) specialized and compiled for 100 bindings it has
not seen (batch 2, seq 9..108), median and max in ms; the packed weights are built once, by the
first variant, and shared by every later one (packed bytes do not grow).

    python benchmarks/bench_variants.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header  # noqa: E402


def main() -> None:
    from rlx.models.bert import SentenceEncoder, default_model_dir

    header("New variants of the MiniLM-L6 encoder (specialize + compile)", ["rlx"])
    enc = SentenceEncoder(default_model_dir(), capacity=1000)
    t = time.perf_counter()
    enc.pipeline.get_or_compile(batch=1, seq=8)
    first = (time.perf_counter() - t) * 1e3
    packed = enc.pipeline.stats["packed_bytes"]
    times = []
    for seq in range(9, 109):
        t = time.perf_counter()
        enc.pipeline.get_or_compile(batch=2, seq=seq)
        times.append((time.perf_counter() - t) * 1e3)
    s = enc.pipeline.stats
    print(f"\nfirst variant (template + packing {packed / 2**20:.1f} MiB of weights): {first:.1f} ms")
    print(f"100 new variants: median {statistics.median(times):.2f} ms, max {max(times):.2f} ms "
          f"(specialize {s['specialize_time_s'] / s['specializations'] * 1e3:.3f} ms on average)")
    grew = s["packed_bytes"] - packed
    print(f"packed bytes after 101 variants: {s['packed_bytes'] / 2**20:.1f} MiB (grew by {grew} bytes)"
          f" [{'ok: packed once, shared' if grew == 0 else 'FAIL: repacked per variant'}]")
    if grew:
        sys.exit(1)


if __name__ == "__main__":
    main()
