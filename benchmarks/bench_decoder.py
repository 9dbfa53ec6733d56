"""Decoder LM against ONNX Runtime: a SmolLM-135M-shaped Llama (hidden 576, 30 layers, 9 heads,
3 KV heads, FFN 1536, vocab 49152, tied embeddings) with random weights, batch 1.

rlx runs ``rlx.models.llama.CausalLM`` on the safetensors checkpoint (KV cache in place, the
past length a run-time value). ONNX Runtime runs the same weights through an ONNX graph with
``past_key_values.*`` inputs and ``present.*`` outputs (standard ONNX ops, written by
``tests/llama_support.write_onnx_decoder``; each step feeds the presents back). Each system
runs in a process of its own (ORT's spinning threads would steal the cores of whatever runs
next). Figures: prefill latency at 128 and 512 tokens, decode tokens/s at a past of 128, 512
and 1024 tokens, KV-cache bytes, peak RSS, and the variants compiled over a 1,000-token
generation.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_decoder.py [--threads 1,2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from _common import fmt_ratio, header, rows_table  # noqa: E402

SHAPE = dict(vocab=49152, hidden=576, layers=30, heads=9, kv_heads=3, ffn=1536, tied=True, max_positions=2048)
PREFILL = (128, 512)
CONTEXTS = (128, 512, 1024)
STEPS = 32
GEN_TOKENS = 1000


def model_files(root: str) -> Dict[str, str]:
    """The random checkpoint and its ONNX form, written once into ``root``."""
    from llama_support import random_llama_dir, write_onnx_decoder

    d, onnx_path = os.path.join(root, "model"), os.path.join(root, "decoder.onnx")
    if not os.path.isfile(os.path.join(d, "model.safetensors")):
        random_llama_dir(d, seed=0, **SHAPE)  # type: ignore[arg-type]
    if not os.path.isfile(onnx_path):
        write_onnx_decoder(d, onnx_path)
    return {"model_dir": d, "onnx": onnx_path}


def median_of(fn: Callable[[], float], n: int) -> float:
    return statistics.median(fn() for _ in range(n))


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_rlx(files: Dict[str, str], quick: bool) -> Dict[str, Any]:
    import rlx
    from rlx.models import llama

    lm = llama.CausalLM(files["model_dir"])
    rng = np.random.default_rng(0)
    out: Dict[str, Any] = {"isa": rlx.cpu_isa() if callable(getattr(rlx, "cpu_isa", None)) else "?"}

    def prefill(n: int) -> float:
        sess = lm.session(1, max_context=2048)
        ids = rng.integers(0, SHAPE["vocab"], (1, n))
        t = time.perf_counter()
        sess.prefill(ids)
        return time.perf_counter() - t

    for n in PREFILL:
        prefill(n)  # compiles the bucket's variant
        out[f"prefill_{n}"] = median_of(lambda: prefill(n), 3)
    for c in CONTEXTS:
        sess = lm.session(1, max_context=2048)
        sess.prefill(rng.integers(0, SHAPE["vocab"], (1, c)))
        tok = np.array([7], np.int64)
        sess.decode(tok)
        t = time.perf_counter()
        for _ in range(STEPS):
            sess.decode(tok)
        out[f"decode_{c}"] = STEPS / (time.perf_counter() - t)
        out["kv_bytes"] = sess.kv_cache_bytes
    before = lm.stats["variants_compiled"]
    n_gen = 100 if quick else GEN_TOKENS
    t = time.perf_counter()
    toks = lm.generate([1, 2, 3, 4, 5, 6, 7, 8], max_new_tokens=n_gen)
    out["gen_s"] = time.perf_counter() - t
    out["gen_tokens"] = len(toks)
    out["gen_variants"] = lm.stats["variants_compiled"] - before
    out["variants_total"] = lm.stats["variants_compiled"]
    out["rss_mib"] = rss_peak_mib()
    return out


def phase_ort(files: Dict[str, str], threads: int) -> Dict[str, Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(files["onnx"], so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    layers, kvh, hd = SHAPE["layers"], SHAPE["kv_heads"], SHAPE["hidden"] // SHAPE["heads"]
    rng = np.random.default_rng(0)
    keys = [f"{i}.{kv}" for i in range(layers) for kv in ("key", "value")]

    def empty() -> Dict[str, np.ndarray]:
        return {f"past_key_values.{k}": np.zeros((1, kvh, 0, hd), np.float32) for k in keys}

    def step(ids: np.ndarray, start: int, past: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        pos = np.arange(start, start + ids.shape[1], dtype=np.int64)[None]
        res = dict(zip(names, sess.run(None, {"input_ids": ids, "position_ids": pos, **past})))
        return {f"past_key_values.{k}": res[f"present.{k}"] for k in keys}

    out: Dict[str, Any] = {}

    def prefill(n: int) -> float:
        ids = rng.integers(0, SHAPE["vocab"], (1, n))
        t = time.perf_counter()
        step(ids, 0, empty())
        return time.perf_counter() - t

    for n in PREFILL:
        prefill(n)
        out[f"prefill_{n}"] = median_of(lambda: prefill(n), 3)
    for c in CONTEXTS:
        past = step(rng.integers(0, SHAPE["vocab"], (1, c)), 0, empty())
        tok = np.array([[7]], np.int64)
        past = step(tok, c, past)
        t = time.perf_counter()
        for j in range(STEPS):
            past = step(tok, c + 1 + j, past)
        out[f"decode_{c}"] = STEPS / (time.perf_counter() - t)
        out["kv_bytes"] = sum(v.nbytes for v in past.values())
    out["rss_mib"] = rss_peak_mib()
    return out


def run_phase(name: str, threads: int, root: str, quick: bool) -> Dict[str, Any]:
    env = dict(os.environ, RLX_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--phase", name, "--threads", str(threads), "--root", root]
    if quick:
        cmd.append("--quick")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        return {}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="2")
    ap.add_argument("--root", default=os.path.join(os.path.dirname(HERE), "target", "bench-models", "smollm-135m-random"))
    ap.add_argument("--quick", action="store_true", help="a 100-token generation instead of 1,000")
    ap.add_argument("--phase", choices=["rlx", "ort"])
    args = ap.parse_args()
    files = model_files(args.root)
    if args.phase:
        result = phase_rlx(files, args.quick) if args.phase == "rlx" else phase_ort(files, int(args.threads))
        print(json.dumps(result))
        return
    header("Decoder (SmolLM-135M shape, random weights, batch 1)", ["onnxruntime", "numpy"])
    for threads in [int(t) for t in args.threads.split(",")]:
        r, o = run_phase("rlx", threads, args.root, args.quick), run_phase("ort", threads, args.root, args.quick)
        if not r or not o:
            print(f"{threads} thread(s): a phase failed (see above)")
            continue
        print(f"\n{threads} thread(s), rlx ISA path {r['isa']}:")
        rows: List[List[str]] = []
        for n in PREFILL:
            k = f"prefill_{n}"
            rows.append([f"prefill {n} tokens (ms)", f"{r[k] * 1e3:.1f}", f"{o[k] * 1e3:.1f}", fmt_ratio(r[k], o[k])])
        for c in CONTEXTS:
            k = f"decode_{c}"
            rows.append([f"decode at past {c} (tokens/s)", f"{r[k]:.1f}", f"{o[k]:.1f}", f"{r[k] / o[k]:.2f}x"])
        rows.append(["KV cache (MiB)", f"{r['kv_bytes'] / 2**20:.1f}", f"{o['kv_bytes'] / 2**20:.1f}", ""])
        rows.append(["peak RSS (MiB)", f"{r['rss_mib']:.0f}", f"{o['rss_mib']:.0f}", ""])
        print(rows_table(["", "rlx", "onnxruntime", "rlx/ort (time) or speed-up"], rows))
        print("rlx KV cache: max_context 2048 preallocated; ORT's grows with the past (its presents).")
        print(f"rlx generation of {r['gen_tokens']} tokens: {r['gen_s']:.1f} s, {r['gen_variants']} variant(s) "
              f"compiled during it ({r['variants_total']} in the whole phase)")


if __name__ == "__main__":
    main()
