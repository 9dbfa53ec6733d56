"""all-MiniLM-L6-v2 encoder latency: rlx vs ONNX Runtime vs OpenVINO on one ONNX file.

Method (why it is done this way):

* One ONNX file (tests/onnx_bert.py's exporter-style graph over the shipped weights) feeds
  every system: rlx through `rlx.onnx.load`, ORT with ORT_ENABLE_ALL, OpenVINO in f32.
* Every (system, thread count) runs in its own worker process, one after another. ORT's and
  OpenBLAS's pools spin after a call and would steal the cores of whatever runs next in the
  same process; separate processes also give each system a clean heap and its own peak RSS.
* Threads: rlx via RLX_NUM_THREADS, ORT via intra_op_num_threads (inter_op 1, sequential),
  OpenVINO via INFERENCE_NUM_THREADS (latency hint, one stream).
* Per shape: 3 warm-up runs (rlx compiles the shape on the first), then the median of N runs,
  N chosen for ~1 s of timing, clamped to [5, 50]. Inputs come from a fixed seed per shape.
* Every (system, threads) worker runs `--rounds` times (default 2) with the order rotated;
  each shape keeps its best median, so a transient neighbour on a shared host does not decide.
* Every system's last_hidden_state is checked against rlx's (max abs diff <= 1e-3).
* Peak RSS: one more worker per system that only runs (8, 128) and reports ru_maxrss.
* Reduced precision (`--precisions`, default f32,bf16,int8), each peer beside its rlx twin:
  bf16: rlx `SentenceEncoder(precision="bf16")` (its `exe.kernels` printed) vs OpenVINO with
  INFERENCE_PRECISION_HINT=bf16 (the precision it reports printed); int8: rlx
  `SentenceEncoder(precision="int8")` (skipped with a note while it raises "not implemented")
  vs ORT on `quantize_dynamic(per_channel=True, QInt8, MatMul, MatMulConstBOnly)`: the 36
  weight MatMuls int8, the 12 attention MatMuls (activation x activation) left f32. rlx f32
  always runs: it is the reference of the accuracy line, the min over rows of the cosine of
  mean-pooled, L2-normalised embeddings. The rlx reduced columns run SentenceEncoder's own graph
  (same weights, same math) at exact shapes, not the ONNX import of the f32 columns.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_minilm.py [--quick]
        [--threads 1,2] [--ov-static] [--precisions f32,bf16,int8]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import BUSY_LIMIT, Background, adaptive_median, fmt_ms, fmt_ratio, header, rows_table  # noqa: E402

SHAPES = [(1, 16), (1, 128), (8, 128), (32, 128), (1, 512)]
QUICK_SHAPES = [(1, 16), (1, 128), (8, 128)]
RSS_SHAPE = (8, 128)
SEED = 20240601
TOL = 1e-3
COS_MIN = 0.99  # reduced precision: min embedding cosine vs rlx f32 below this is flagged
OUT = "last_hidden_state"
# name -> label; "rlx" is prepack=True (or the default pipeline on builds without the keyword).
BUSY: list = []  # background load (cores) measured over each worker
SYSTEMS = {"rlx": "rlx", "rlx-noprepack": "rlx prepack=False", "ort": "ORT", "ov": "OV",
           "rlx-bf16": "rlx bf16", "ov-bf16": "OV bf16", "rlx-int8": "rlx int8", "ort-int8": "ORT int8"}
# precision -> its systems; "rlx" (f32) always runs as the accuracy reference.
PRECISIONS = {"f32": ["rlx", "rlx-noprepack", "ort", "ov"], "bf16": ["rlx-bf16", "ov-bf16"],
              "int8": ["rlx-int8", "ort-int8"]}
# reduced-precision table: (rlx system, peer system) per precision
PAIRS = {"bf16": ("rlx-bf16", "ov-bf16"), "int8": ("rlx-int8", "ort-int8")}


def feeds_for(b: int, s: int) -> dict:
    """The same inputs in every worker: the seed depends only on the shape."""
    rng = np.random.default_rng([SEED, b, s])
    return {
        "input_ids": rng.integers(1000, 30000, (b, s), dtype=np.int64),
        "attention_mask": np.ones((b, s), np.int64),
        "token_type_ids": np.zeros((b, s), np.int64),
    }


# ----------------------------------------------------------------------------- workers

def int8_path(path: str) -> str:
    """Where the ORT int8 model is cached: next to the f32 one."""
    return path[: -len(".onnx")] + ".int8.onnx"


def make_system(system: str, path: str, threads: int, ov_static: bool):
    """Returns (prepare, status, info): prepare(feeds) -> a zero-arg call returning the output;
    info, a list prepare appends to, says which kernels / precision actually ran."""
    if system in ("rlx", "rlx-noprepack"):
        return rlx_onnx(system, path)
    if system in ("rlx-bf16", "rlx-int8"):
        return rlx_encoder(system.split("-")[1])
    if system in ("ort", "ort-int8"):
        return ort_session(path if system == "ort" else int8_path(path), threads)
    if system in ("ov", "ov-bf16"):
        return ov_model(path, threads, ov_static, "bf16" if system == "ov-bf16" else "f32")
    if system == "baseline":  # python + numpy only, for reading the RSS figures
        return (lambda feeds: (lambda: np.zeros((1,), np.float32))), "ok", []
    raise ValueError(system)


def rlx_onnx(system: str, path: str):
    import rlx.onnx

    model, info = rlx.onnx.load(path), []
    status = "ok"
    try:
        pipe = model.pipeline(prepack=(system == "rlx"))
    except TypeError as e:
        if "prepack" not in str(e):
            raise
        if system == "rlx-noprepack":
            return None, "prepack-unsupported", info
        pipe, status = model.pipeline(), "prepack-unsupported"

    def prepare(feeds):
        exe = pipe.get_or_compile(model.binding(feeds))  # batch=b, seq=s
        info.append(f"kernels {getattr(exe, 'kernels', 'n/a')}")
        feeds = {k: v for k, v in feeds.items() if k in model.graph.inputs}
        return lambda: exe.run(feeds)[OUT]
    return prepare, status, info


def rlx_encoder(precision: str):
    """The sentence encoder's own graph at `precision`, one exact-shape variant per shape."""
    from rlx.models.bert import SentenceEncoder, default_model_dir

    enc, info = SentenceEncoder(default_model_dir(), buckets=None, precision=precision), []

    def prepare(feeds):
        exe = enc.pipeline.get_or_compile(batch=feeds["input_ids"].shape[0], seq=feeds["input_ids"].shape[1])
        info.append(f"kernels {exe.kernels}")
        return lambda: exe.run(feeds)[OUT]
    return prepare, "ok", info


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return (lambda feeds: (lambda: sess.run([OUT], feeds)[0])), "ok", []


def ov_model(path: str, threads: int, ov_static: bool, precision: str):
    import openvino as ov

    core, info = ov.Core(), []
    config = {
        "INFERENCE_PRECISION_HINT": precision,  # explicit: f32 would be bf16 on some CPUs
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,  # no int8 matmuls behind the precision asked for
    }
    dynamic = None if ov_static else core.compile_model(path, "CPU", config)

    def prepare(feeds):
        if dynamic is None:  # --ov-static: one compiled model per input shape
            m = core.read_model(path)
            m.reshape({k: list(v.shape) for k, v in feeds.items()})
            compiled = core.compile_model(m, "CPU", config)
        else:
            compiled = dynamic
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type
        info.append(f"INFERENCE_PRECISION_HINT {getattr(hint, 'get_type_name', lambda: hint)()}")
        req, out = compiled.create_infer_request(), compiled.output(0)
        return lambda: req.infer(feeds)[out]  # outputs copied, as rlx and ORT return new arrays
    return prepare, "ok", info


def not_implemented(e: Exception) -> bool:
    """rlx refusing a precision it does not have yet (int8 today): skip the column, not fail."""
    import rlx

    return isinstance(e, rlx.CompileError) and "not implemented" in str(e)


def measure(a: argparse.Namespace, shapes) -> dict:
    prepare, status, info = make_system(a.worker, a.model, a.threads, a.ov_static)
    res = {"status": np.array(status)}
    if prepare is None:
        return res
    for b, s in shapes:
        run = prepare(feeds_for(b, s))
        if a.rss:  # the RSS worker only needs the shape resident and run a few times
            for _ in range(8):
                run()
            continue
        med, n = adaptive_median(run, warmup=3, target_s=a.target, min_n=5, max_n=a.max_n)
        res[f"t_{b}x{s}"], res[f"n_{b}x{s}"] = np.array(med), np.array(n)
        res[f"y_{b}x{s}"] = np.asarray(run(), np.float32)
    res["info"] = np.array("; ".join(dict.fromkeys(info)))  # distinct, in shape order
    return res


def worker(a: argparse.Namespace) -> None:
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    try:
        res = measure(a, shapes)
    except Exception as e:
        if not a.worker.startswith("rlx") or not not_implemented(e):
            raise
        res = {"status": np.array(f"skipped: {e}")}
    # ru_maxrss (KiB on Linux) keeps the parent's high-water mark across fork+exec, so the parent
    # stays small (it never loads the model) and VmHWM, which exec resets, is reported beside it.
    res["rss_kib"] = np.array(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    res["hwm_kib"] = np.array(vm_hwm_kib())
    np.savez(a.out, **res)


def vm_hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), -1)


# ----------------------------------------------------------------------------- parent

def build_model(path: str) -> None:
    """all-MiniLM-L6-v2 as an ONNX file, built once from the shipped safetensors weights (in a
    worker too, so the parent never holds the weights: see the RSS note in worker())."""
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import onnx
    from onnx_bert import bert_onnx
    from rlx.models.bert import SentenceEncoder, default_model_dir

    enc = SentenceEncoder(default_model_dir())
    cfg = {k: getattr(enc.config, k) for k in ("hidden_size", "num_attention_heads", "num_hidden_layers", "layer_norm_eps")}
    onnx.save(bert_onnx(cfg, dict(enc.weights)), path)


def quantize_model(path: str) -> None:
    """ORT's dynamic int8 model of `path`, cached next to it: per-channel int8 weights on the
    MatMuls whose B is an initializer (MatMulConstBOnly, explicit though it is quantize_dynamic's
    default), so the attention MatMuls between activations stay f32. Prints what it quantized."""
    import collections
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic warns about pre-processing
    quantize_dynamic(path, int8_path(path), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
    ops = collections.Counter(n.op_type for n in onnx.load(int8_path(path)).graph.node)
    print(f"{ops['MatMulInteger']} MatMulInteger (weights, per-channel int8), {ops['MatMul']} MatMul left f32")


def spawn(system: str, threads: int, shapes, a: argparse.Namespace, model: str, tmp: str, rss: bool = False):
    """Runs one worker process to completion; returns its results dict or None on failure."""
    out = os.path.join(tmp, f"{system}-{threads}-{'rss' if rss else 'lat'}.npz")
    env = dict(os.environ, RLX_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", system, "--threads", str(threads),
           "--model", model, "--out", out, "--shapes", ",".join(f"{b}x{s}" for b, s in shapes),
           "--target", str(a.target), "--max-n", str(a.max_n)]
    cmd += ["--rss"] * rss + ["--ov-static"] * a.ov_static
    t = time.perf_counter()
    with Background() as bg:  # CPU used by anything other than this worker while it ran
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    BUSY.append(bg.cores)
    if p.returncode != 0:
        print(f"  {SYSTEMS.get(system, system)} @ {threads} threads FAILED (exit {p.returncode}):")
        print("    " + "\n    ".join(p.stderr.strip().splitlines()[-8:]))
        return None
    with np.load(out) as z:
        r = {k: z[k] for k in z.files}
    if not rss:
        print(f"  {SYSTEMS[system]:>18} @ {threads} thread(s): done in {time.perf_counter() - t:.1f} s "
              f"(background load meanwhile: {bg.cores:.2f} cores)")
        if str(r.get("info", "")):
            print(f"  {'':>18}   ran: {r['info']}")
    return r


def best_of(old, new):
    """Merges two runs of one worker: the lower median per shape (outputs from either)."""
    if old is None or new is None:
        return new if old is None else old
    merged = dict(old)
    for k, v in new.items():
        if k.startswith("t_") and float(v) < float(old.get(k, np.inf)):
            merged[k] = v
    return merged


def skip_reason(r) -> str:
    """The note of a worker that skipped its system (rlx int8 before it exists), else ""."""
    status = "" if r is None else str(r["status"])
    return status if status.startswith("skipped") else ""


def embeddings(y: np.ndarray) -> np.ndarray:
    """Mean pooling (every mask is all ones here) + L2 normalisation, as SentenceEncoder does."""
    m = y.mean(axis=1)
    return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)


def min_cosine(r, ref, shapes) -> float:
    """The least cosine over every row of every shape between r's embeddings and ref's."""
    k = [f"{b}x{s}" for b, s in shapes]
    return min(float(np.min(np.sum(embeddings(r[f"y_{x}"]) * embeddings(ref[x]), axis=-1))) for x in k)


def f32_table(t_of, shapes) -> list:
    rows = []
    for b, s in shapes:
        k = f"{b}x{s}"
        tr, to, tv = t_of("rlx", k), t_of("ort", k), t_of("ov", k)
        rows.append([f"{b} x {s}", fmt_ms(tr), fmt_ms(t_of("rlx-noprepack", k)), fmt_ms(to), fmt_ms(tv),
                     fmt_ratio(tr, to), fmt_ratio(tr, tv)])
    return rows


def reduced_table(t_of, shapes, precisions) -> tuple:
    """Header and rows: per reduced precision, rlx ms, peer ms, rlx/peer."""
    head = ["batch x seq"]
    for p in precisions:
        mine, peer = (SYSTEMS[x] for x in PAIRS[p])
        head += [f"{mine} ms", f"{peer} ms", f"{mine}/{peer}"]
    rows = []
    for b, s in shapes:
        row = [f"{b} x {s}"]
        for p in precisions:
            tm, tp = (t_of(x, f"{b}x{s}") for x in PAIRS[p])
            row += [fmt_ms(tm), fmt_ms(tp), fmt_ratio(tm, tp)]
        rows.append(row)
    return head, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 shapes, ~0.25 s of timing per shape, N <= 20")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--ov-static", action="store_true", help="OpenVINO: compile one static-shape model per shape")
    ap.add_argument("--rounds", type=int, default=2, help="runs of every worker, best median kept (default 2)")
    ap.add_argument("--precisions", default="f32,bf16,int8",
                    help="comma-separated subset of f32,bf16,int8 (default all); rlx f32 always runs")
    # worker-only arguments
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--shapes", help="comma-separated BATCHxSEQ shapes instead of the default set, e.g. 1x512,8x128")
    ap.add_argument("--rss", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--max-n", type=int, default=50, help=argparse.SUPPRESS)
    a = ap.parse_args()
    precisions = [p for p in PRECISIONS if p in a.precisions.split(",")]  # canonical order
    unknown = set(a.precisions.split(",")) - set(PRECISIONS)
    if unknown or not precisions:
        ap.error(f"--precisions: unknown {sorted(unknown)}; choose from {','.join(PRECISIONS)}")
    if a.worker == "build":
        build_model(a.out)
        return quantize_model(a.out) if "int8" in precisions else None
    if a.worker:
        a.threads = int(a.threads)
        return worker(a)
    if a.quick:
        a.target, a.max_n, a.rounds = 0.25, 20, 1
    shapes = QUICK_SHAPES if a.quick else SHAPES
    if a.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    reduced = [p for p in precisions if p != "f32"]

    header(f"MiniLM-L6 (all-MiniLM-L6-v2) encoder, last_hidden_state, {'/'.join(precisions)}",
           ["rlx", "onnxruntime", "openvino", "numpy"])
    if max(threads) > (os.cpu_count() or 1):
        print(f"WARNING: {max(threads)} threads on {os.cpu_count()} cores oversubscribes the machine")
    systems = ["rlx"] + [x for p in precisions for x in PRECISIONS[p] if x != "rlx"]
    if importlib.util.find_spec("openvino") is None:
        print("OpenVINO: skipped (openvino is not importable; `make bench-setup` installs it)")
        systems = [x for x in systems if not x.startswith("ov")]
    print(f"method: each system x thread count in its own process, 3 warm-up runs, median of N runs "
          f"(N for ~{a.target:g} s, 5..{a.max_n}), best of {a.rounds} round(s) in rotated order; "
          f"OV shapes: {'static per shape' if a.ov_static else 'dynamic'}")

    with tempfile.TemporaryDirectory(prefix="rlx-bench-") as tmp:
        t, model = time.perf_counter(), os.path.join(tmp, "model.onnx")
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "build", "--out", model,
                            "--precisions", ",".join(precisions)], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"building the model failed:\n{p.stderr}")
        print(f"model: {model} ({os.path.getsize(model) / 2**20:.1f} MiB, built in {time.perf_counter() - t:.1f} s)")
        if "int8" in precisions:
            print(f"ORT int8 model: {int8_path(model)} ({os.path.getsize(int8_path(model)) / 2**20:.1f} MiB): "
                  f"{p.stdout.strip()}")

        # Peak RSS of a process that loads the model and runs one shape; measured before the
        # latency runs, while the parent holds nothing but numpy. A system rlx does not have yet
        # (its worker reports "skipped") shows here first and is left out of the latency runs.
        n = max(threads)
        rss_rows, skipped = [], {}
        for sysname in ["baseline"] + systems:
            r = spawn(sysname, n, [RSS_SHAPE], a, model, tmp, rss=True)
            if r is not None and str(r["status"]) == "prepack-unsupported" and sysname == "rlx-noprepack":
                r = None
            if skip_reason(r):
                skipped[sysname], r = skip_reason(r), None
            label = SYSTEMS.get(sysname, "python + numpy only")
            rss_rows.append([label] + (["n/a"] * 2 if r is None else [f"{float(r[k]) / 1024:.0f}" for k in ("rss_kib", "hwm_kib")]))
        for sysname, reason in skipped.items():
            print(f"note: {SYSTEMS[sysname]} {reason}; its column reads n/a")
        systems = [x for x in systems if x not in skipped]

        ok, ref = True, {}
        for n in threads:
            print(f"\n[{n} thread(s)]")
            res = {}
            # Several rounds, the systems in a rotated order each round, keeping each shape's
            # best median: a noisy neighbour on a shared host slows one round, not all of them.
            for rnd in range(a.rounds):
                for sysname in systems[rnd % len(systems):] + systems[:rnd % len(systems)]:
                    if sysname == "rlx-noprepack" and res.get("rlx") is not None and str(res["rlx"]["status"]) == "prepack-unsupported":
                        res[sysname] = None
                        continue
                    r = spawn(sysname, n, shapes, a, model, tmp)
                    res[sysname] = best_of(res.get(sysname), r)
            if res.get("rlx") is not None and str(res["rlx"]["status"]) == "prepack-unsupported":
                print("note: this rlx build has no `prepack` keyword: the rlx column is the default pipeline")

            def t_of(sysname, key):
                r = res.get(sysname)
                return float(r[f"t_{key}"]) if r is not None and f"t_{key}" in r else None

            if "f32" in precisions:
                print(f"\nMiniLM-L6, {n} thread(s), median ms (lower is better; ratio < 1 means rlx is faster)")
                print(rows_table(["batch x seq", "rlx ms", "rlx prepack=False ms", "ORT ms", "OV ms", "rlx/ORT", "rlx/OV"],
                                 f32_table(t_of, shapes)))
            if reduced:
                print(f"\nMiniLM-L6, {n} thread(s), reduced precision, median ms (ratio < 1 means rlx is faster)")
                print(rows_table(*reduced_table(t_of, shapes, reduced)))

            # Accuracy: every system against rlx (and rlx against the first thread count's rlx).
            if res.get("rlx") is None:
                print("accuracy: no rlx outputs to compare against")
                ok = False
                continue
            for b, s in shapes:
                ref.setdefault(f"{b}x{s}", res["rlx"][f"y_{b}x{s}"])
            checks = [(SYSTEMS[x], res[x]) for x in PRECISIONS["f32"][1:] if res.get(x) is not None]
            if n != threads[0]:
                checks.insert(0, (f"rlx @ {threads[0]} thread(s)", res["rlx"]))
            for label, r in checks:
                diff = max(float(np.max(np.abs(r[f"y_{b}x{s}"] - ref[f"{b}x{s}"]))) for b, s in shapes)
                ok &= diff <= TOL
                print(f"accuracy: max |{label} - rlx| = {diff:.2e} over all shapes  "
                      f"[{'ok' if diff <= TOL else f'FAIL > {TOL:g}'}]")
            ok &= reduced_accuracy(res, ref, shapes, reduced)

        print(f"\nPeak RSS of a process that loads the model and runs {RSS_SHAPE[0]} x {RSS_SHAPE[1]} at {max(threads)} thread(s)")
        print(rows_table(["system", "ru_maxrss MiB", "VmHWM MiB"], rss_rows))
    if max(BUSY, default=0.0) > BUSY_LIMIT:
        print(f"\nWARNING: other processes used up to {max(BUSY):.2f} cores while some workers ran; "
              f"rerun on an idle machine before trusting these numbers")
    if not ok:
        print("\nFAILED: some outputs differ from rlx by more than the tolerance, an rlx reduced-precision "
              "embedding is below the cosine bound, or rlx failed")
        sys.exit(1)


def reduced_accuracy(res, ref, shapes, reduced) -> bool:
    """Prints each reduced-precision system's least embedding cosine against rlx f32; False when
    an rlx one falls below COS_MIN (a peer's low figure is reported, not a failure of rlx)."""
    ok = True
    for x in (x for p in reduced for x in PAIRS[p]):
        if res.get(x) is None:
            continue
        cos = min_cosine(res[x], ref, shapes)
        good = cos >= COS_MIN
        ok &= good or not x.startswith("rlx")
        print(f"accuracy: min cosine({SYSTEMS[x]}, rlx f32) embedding = {cos:.5f} over all rows  "
              f"[{'ok' if good else f'LOW < {COS_MIN:g}'}]")
    return ok


if __name__ == "__main__":
    main()
