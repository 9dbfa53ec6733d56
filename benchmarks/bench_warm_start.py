"""Warm starts: the first call of a fresh process, without a cache, with an empty ``aot_dir``
and with the ``aot_dir`` a previous process filled — for MiniLM as ONNX (``rlx.onnx.load``) and
as ``SentenceEncoder``. Each measurement is its own process; times run from just before
``import rlx`` to the end of the first call (batch 1, 16 tokens).

    python benchmarks/bench_warm_start.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_model, rlx_isa  # noqa: E402

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import rlx
t_imported = time.perf_counter()
kind, path, aot = sys.argv[1], sys.argv[2], (sys.argv[3] or None)
ids = np.ones((1, 16), np.int64)
feed = dict(input_ids=ids, attention_mask=ids, token_type_ids=np.zeros_like(ids))
if kind == "onnx":
    import rlx.onnx
    m = rlx.onnx.load(path, aot_dir=aot)
    pipe = m.pipeline(aot_dir=aot)
    out = pipe.get_or_compile(batch=1, seq=16).run(**feed)
    skipped = {"import_from_cache": m.from_cache}
else:
    from rlx.models.bert import SentenceEncoder
    from rlx.models.bert import default_model_dir
    enc = SentenceEncoder(default_model_dir(), aot_dir=aot)
    out = enc.encode(["a warm start"])
    pipe = enc.pipeline
    skipped = {}
t1 = time.perf_counter()
s = pipe.stats
skipped.update(template_from_disk=s["template_from_disk"], variants_from_disk=s["variants_from_disk"])
print(json.dumps({"ms": 1e3 * (t1 - t0), "after_import_ms": 1e3 * (t1 - t_imported),
                  "compile_ms": 1e3 * s["compile_time_s"], **skipped}))
"""


def run(kind: str, path: str, aot: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, path, aot], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def onnx_model_path(tmp: str) -> str:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import onnx
    from onnx_bert import bert_onnx

    from rlx import safetensors
    from rlx.models import bert

    d = bert.default_model_dir()
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    w = dict(safetensors.load(os.path.join(d, "model.safetensors"), rename=bert._strip_prefix))
    path = os.path.join(tmp, "minilm.onnx")
    onnx.save(bert_onnx(cfg, w), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}  rlx ISA: {rlx_isa()}  rounds: {args.rounds} (medians)")
    with tempfile.TemporaryDirectory() as tmp:
        path = onnx_model_path(tmp)
        for kind in ("onnx", "encoder"):
            runs: dict = {"no cache": [], "empty aot_dir": [], "warm aot_dir": []}
            detail = {}
            for r in range(args.rounds):
                runs["no cache"].append(run(kind, path, ""))
                aot = os.path.join(tmp, f"aot-{kind}-{r}")
                runs["empty aot_dir"].append(run(kind, path, aot))
                detail = run(kind, path, aot)
                runs["warm aot_dir"].append(detail)
            med = {arm: {k: statistics.median(x[k] for x in xs) for k in ("ms", "after_import_ms")}
                   for arm, xs in runs.items()}
            cells = " | ".join(f"{arm} {m['ms']:6.1f} ms ({m['after_import_ms']:5.1f} after import)" for arm, m in med.items())
            first, warm = med["empty aot_dir"]["after_import_ms"], med["warm aot_dir"]["after_import_ms"]
            print(f"{kind:8s} first call of a process: {cells}; after import the warm process is "
                  f"{first / warm:.2f}x as fast as the first one; it skipped: "
                  f"{ {k: v for k, v in detail.items() if not k.endswith('ms')} }")


if __name__ == "__main__":
    main()
