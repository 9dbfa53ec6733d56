"""Command line: ``python -m rlx embed "text" ...``, ``python -m rlx demo``, ``python -m rlx info model.onnx``,
``python -m rlx generate --model-dir DIR "prompt"``.

A mistake in the arguments or the model files (a missing directory, bad JSON, a wrong config
value, bad ``--dims``) prints one line ``error: <Type>: <message>`` to stderr and exits with
status 2, like argparse's usage errors; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional, Sequence

import numpy as np

DEMO_SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
]


def _encoder(model_dir: Optional[str], mode: str, aot_dir: Optional[str] = None, precision: str = "f32"):
    from rlx.models.bert import SentenceEncoder, default_model_dir

    return SentenceEncoder(model_dir or default_model_dir(), mode=mode, aot_dir=aot_dir, precision=precision)


def _print_similarity(texts: Sequence[str], emb: np.ndarray) -> None:
    sim = emb @ emb.T
    width = max(len(t) for t in texts)
    print(f"\ncosine similarity ({len(texts)} x {len(texts)}):")
    for i, t in enumerate(texts):
        row = " ".join(f"{v:6.3f}" for v in sim[i])
        print(f"  {t:<{width}}  {row}")


def cmd_embed(args: argparse.Namespace) -> int:
    enc = _encoder(args.model_dir, args.mode, args.aot_dir, args.precision)
    emb = enc.encode(args.texts)
    for t, e in zip(args.texts, emb):
        head = ", ".join(f"{v:+.4f}" for v in e[:6])
        print(f"{t!r}: [{head}, ...] ({e.shape[0]} dims, |e| = {np.linalg.norm(e):.4f})")
    if len(args.texts) > 1:
        _print_similarity(args.texts, emb)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    enc = _encoder(args.model_dir, args.mode, args.aot_dir, args.precision)
    pipe = enc.pipeline
    print(f"model: {enc.model_dir}")
    print(f"loaded + template compiled in {time.perf_counter() - t0:.3f} s "
          f"({len(enc.weights)} tensors, {enc.weights.nbytes / 2**20:.1f} MiB bound zero-copy from a memory map)")
    rep = pipe.report_data
    kinds: dict = {}
    for f in rep["fusions"]:
        kinds[f.split(":")[0]] = kinds.get(f.split(":")[0], 0) + 1
    fused = ", ".join(f"{k} x{n}" for k, n in kinds.items())
    print(f"template: {rep['hir_ops_before']} HIR ops -> {rep['hir_ops_after']} after passes -> {rep['kernels']} kernels ({fused})")
    print(f"near misses: {len(rep['near_misses'])}  (full report: pipe.report, or RLX_DEBUG=1)")
    if args.aot_dir:
        st = pipe.stats
        where = "read from the AOT cache (no passes ran)" if st["template_from_disk"] else "compiled and saved"
        print(f"AOT cache {st['aot_dir']}: template {where}; variants are read from there when present, "
              f"and packed weight panels are memory-mapped from its packed/ directory (one copy for "
              f"every process using it; not counted in packed_bytes)")
    from rlx import available_isas

    print(f"CPU kernels: {pipe.isa} (of {', '.join(available_isas())}); weights are packed into "
          f"GEMM panels by the first variant and shared by the others\n")
    batches = [DEMO_SENTENCES, DEMO_SENTENCES[:2], DEMO_SENTENCES * 4, [s + " " + s for s in DEMO_SENTENCES]]
    print(f"{'variant':<22}{'specialize+compile':>20}{'first run':>12}{'run (median of 10)':>20}")
    packed = pipe.stats["packed_bytes"]
    for texts in batches:
        batch = enc.tokenize(texts)
        if enc.bucketing is not None:
            batch = enc.bucketing.pad(batch)  # to the seq bucket, as enc.encode runs it
        b, s = batch["input_ids"].shape
        seen = {"batch": b, "seq": s} in pipe
        t = time.perf_counter()
        exe = pipe.get_or_compile(batch=b, seq=s)
        t_compile = time.perf_counter() - t
        t = time.perf_counter()
        exe.run(batch)
        t_first = time.perf_counter() - t
        runs = []
        for _ in range(10):
            t = time.perf_counter()
            exe.run(batch)
            runs.append(time.perf_counter() - t)
        note = " (cached)" if seen else ""
        if not note and packed is not None and pipe.stats["packed_bytes"] != packed:
            note = f" (packs {(pipe.stats['packed_bytes'] - packed) / 2**20:.1f} MiB of weights)"
        packed = pipe.stats["packed_bytes"]
        print(f"batch={b:<3} seq={s:<10}{t_compile * 1e3:>17.2f} ms{t_first * 1e3:>9.2f} ms{np.median(runs) * 1e3:>17.2f} ms{note}")
    print(f"linears: precision {args.precision}: {exe.kernels[1]}")
    stats = pipe.stats
    print("pipeline stats: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()))
    emb = enc.encode(DEMO_SENTENCES)
    if enc.bucketing is not None:
        print(f"sequence buckets: {enc.bucketing!r}")
    _print_similarity(DEMO_SENTENCES, emb)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    try:
        from rlx.cli_info import info_main
    except ImportError:
        print("error: rlx info needs the ONNX importer (rlx.onnx), which is not installed", file=sys.stderr)
        return 2
    return info_main([args.model] + list(args.rest))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rlx", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, fn, help_ in [("embed", cmd_embed, "sentence embeddings of TEXTS"), ("demo", cmd_demo, "the embedding demo")]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--model-dir", default=None, help="directory with config.json, model.safetensors, tokenizer.json")
        p.add_argument("--mode", choices=["mmap", "copy"], default="mmap", help="how weights are loaded (see rlx.safetensors)")
        p.add_argument("--aot-dir", default=None, help="persist compiled variants here; a later run reads them back")
        p.add_argument("--precision", choices=["f32", "bf16", "int8"], default="f32", help="the linears' number format")
        if name == "embed":
            p.add_argument("texts", nargs="+")
        p.set_defaults(fn=fn)
    from rlx.cli_generate import add_parser as add_generate

    add_generate(sub)
    p = sub.add_parser("info", help="symbols, params and manifest of an ONNX model")
    p.add_argument("model")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_info)
    args = ap.parse_args(argv)
    import rlx

    try:
        return int(args.fn(args))
    except (rlx.RlxError, MemoryError) as e:
        print(f"error: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
