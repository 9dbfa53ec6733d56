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

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_minilm.py [--quick]
        [--threads 1,2] [--ov-static]
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
OUT = "last_hidden_state"
# name -> label; "rlx" is prepack=True (or the default pipeline on builds without the keyword).
BUSY: list = []  # background load (cores) measured over each worker
SYSTEMS = {"rlx": "rlx", "rlx-noprepack": "rlx prepack=False", "ort": "ORT", "ov": "OV"}


def feeds_for(b: int, s: int) -> dict:
    """The same inputs in every worker: the seed depends only on the shape."""
    rng = np.random.default_rng([SEED, b, s])
    return {
        "input_ids": rng.integers(1000, 30000, (b, s), dtype=np.int64),
        "attention_mask": np.ones((b, s), np.int64),
        "token_type_ids": np.zeros((b, s), np.int64),
    }


# ----------------------------------------------------------------------------- workers

def make_system(system: str, path: str, threads: int, ov_static: bool):
    """Returns (prepare, status): prepare(feeds) -> a zero-arg call returning the output."""
    if system in ("rlx", "rlx-noprepack"):
        import rlx.onnx

        model = rlx.onnx.load(path)
        status = "ok"
        try:
            pipe = model.pipeline(prepack=(system == "rlx"))
        except TypeError as e:
            if "prepack" not in str(e):
                raise
            if system == "rlx-noprepack":
                return None, "prepack-unsupported"
            pipe, status = model.pipeline(), "prepack-unsupported"

        def prepare(feeds):
            exe = pipe.get_or_compile(model.binding(feeds))  # batch=b, seq=s
            feeds = {k: v for k, v in feeds.items() if k in model.graph.inputs}
            return lambda: exe.run(feeds)[OUT]
        return prepare, status

    if system == "ort":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return (lambda feeds: (lambda: sess.run([OUT], feeds)[0])), "ok"

    if system == "ov":
        import openvino as ov

        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": "f32",  # no bf16 on CPUs that have it
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,  # plain f32 matmuls, like the others
        }
        dynamic = None if ov_static else core.compile_model(path, "CPU", config)

        def prepare(feeds):
            if dynamic is None:  # --ov-static: one compiled model per input shape
                m = core.read_model(path)
                m.reshape({k: list(v.shape) for k, v in feeds.items()})
                compiled = core.compile_model(m, "CPU", config)
            else:
                compiled = dynamic
            req, out = compiled.create_infer_request(), compiled.output(0)
            return lambda: req.infer(feeds)[out]  # outputs copied, as rlx and ORT return new arrays
        return prepare, "ok"

    if system == "baseline":  # python + numpy only, for reading the RSS figures
        return (lambda feeds: (lambda: np.zeros((1,), np.float32))), "ok"
    raise ValueError(system)


def worker(a: argparse.Namespace) -> None:
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    prepare, status = make_system(a.worker, a.model, a.threads, a.ov_static)
    res = {"status": np.array(status)}
    if prepare is not None:
        for b, s in shapes:
            run = prepare(feeds_for(b, s))
            if a.rss:  # the RSS worker only needs the shape resident and run a few times
                for _ in range(8):
                    run()
                continue
            med, n = adaptive_median(run, warmup=3, target_s=a.target, min_n=5, max_n=a.max_n)
            res[f"t_{b}x{s}"], res[f"n_{b}x{s}"] = np.array(med), np.array(n)
            res[f"y_{b}x{s}"] = np.asarray(run(), np.float32)
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
    if not rss:
        print(f"  {SYSTEMS[system]:>18} @ {threads} thread(s): done in {time.perf_counter() - t:.1f} s "
              f"(background load meanwhile: {bg.cores:.2f} cores)")
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def best_of(old, new):
    """Merges two runs of one worker: the lower median per shape (outputs from either)."""
    if old is None or new is None:
        return new if old is None else old
    merged = dict(old)
    for k, v in new.items():
        if k.startswith("t_") and float(v) < float(old.get(k, np.inf)):
            merged[k] = v
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 shapes, ~0.25 s of timing per shape, N <= 20")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--ov-static", action="store_true", help="OpenVINO: compile one static-shape model per shape")
    ap.add_argument("--rounds", type=int, default=2, help="runs of every worker, best median kept (default 2)")
    # worker-only arguments
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--shapes", help=argparse.SUPPRESS)
    ap.add_argument("--rss", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--max-n", type=int, default=50, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "build":
        return build_model(a.out)
    if a.worker:
        a.threads = int(a.threads)
        return worker(a)
    if a.quick:
        a.target, a.max_n, a.rounds = 0.25, 20, 1
    shapes = QUICK_SHAPES if a.quick else SHAPES
    threads = [int(t) for t in a.threads.split(",")]

    header("MiniLM-L6 (all-MiniLM-L6-v2) encoder, last_hidden_state, f32",
           ["rlx", "onnxruntime", "openvino", "numpy"])
    if max(threads) > (os.cpu_count() or 1):
        print(f"WARNING: {max(threads)} threads on {os.cpu_count()} cores oversubscribes the machine")
    systems = ["rlx", "rlx-noprepack", "ort", "ov"]
    if importlib.util.find_spec("openvino") is None:
        print("OpenVINO: skipped (openvino is not importable; `make bench-setup` installs it)")
        systems.remove("ov")
    print(f"method: each system x thread count in its own process, 3 warm-up runs, median of N runs "
          f"(N for ~{a.target:g} s, 5..{a.max_n}), best of {a.rounds} round(s) in rotated order; "
          f"OV shapes: {'static per shape' if a.ov_static else 'dynamic'}")

    with tempfile.TemporaryDirectory(prefix="rlx-bench-") as tmp:
        t, model = time.perf_counter(), os.path.join(tmp, "model.onnx")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "build", "--out", model], check=True)
        print(f"model: {model} ({os.path.getsize(model) / 2**20:.1f} MiB, built in {time.perf_counter() - t:.1f} s)")

        # Peak RSS of a process that loads the model and runs one shape; measured before the
        # latency runs, while the parent holds nothing but numpy.
        n = max(threads)
        rss_rows = []
        for sysname, label in [("baseline", "python + numpy only")] + [(x, SYSTEMS[x]) for x in systems]:
            r = spawn(sysname, n, [RSS_SHAPE], a, model, tmp, rss=True)
            if r is not None and str(r["status"]) == "prepack-unsupported" and sysname == "rlx-noprepack":
                r = None
            rss_rows.append([label] + (["n/a"] * 2 if r is None else [f"{float(r[k]) / 1024:.0f}" for k in ("rss_kib", "hwm_kib")]))

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

            rows = []
            for b, s in shapes:
                k = f"{b}x{s}"
                tr, to, tv = t_of("rlx", k), t_of("ort", k), t_of("ov", k)
                rows.append([f"{b} x {s}", fmt_ms(tr), fmt_ms(t_of("rlx-noprepack", k)), fmt_ms(to), fmt_ms(tv),
                             fmt_ratio(tr, to), fmt_ratio(tr, tv)])
            print(f"\nMiniLM-L6, {n} thread(s), median ms (lower is better; ratio < 1 means rlx is faster)")
            print(rows_table(["batch x seq", "rlx ms", "rlx prepack=False ms", "ORT ms", "OV ms", "rlx/ORT", "rlx/OV"], rows))

            # Accuracy: every system against rlx (and rlx against the first thread count's rlx).
            if res.get("rlx") is None:
                print("accuracy: no rlx outputs to compare against")
                ok = False
                continue
            for b, s in shapes:
                ref.setdefault(f"{b}x{s}", res["rlx"][f"y_{b}x{s}"])
            checks = [(SYSTEMS[x], res[x]) for x in systems if x != "rlx" and res.get(x) is not None]
            if n != threads[0]:
                checks.insert(0, (f"rlx @ {threads[0]} thread(s)", res["rlx"]))
            for label, r in checks:
                diff = max(float(np.max(np.abs(r[f"y_{b}x{s}"] - ref[f"{b}x{s}"]))) for b, s in shapes)
                ok &= diff <= TOL
                print(f"accuracy: max |{label} - rlx| = {diff:.2e} over all shapes  "
                      f"[{'ok' if diff <= TOL else f'FAIL > {TOL:g}'}]")

        print(f"\nPeak RSS of a process that loads the model and runs {RSS_SHAPE[0]} x {RSS_SHAPE[1]} at {max(threads)} thread(s)")
        print(rows_table(["system", "ru_maxrss MiB", "VmHWM MiB"], rss_rows))
    if max(BUSY, default=0.0) > BUSY_LIMIT:
        print(f"\nWARNING: other processes used up to {max(BUSY):.2f} cores while some workers ran; "
              f"rerun on an idle machine before trusting these numbers")
    if not ok:
        print("\nFAILED: some outputs differ from rlx by more than the tolerance (or rlx failed)")
        sys.exit(1)


if __name__ == "__main__":
    main()
