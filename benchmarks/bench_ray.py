"""rlx on Ray: corpus embedding with Ray Data and request batching with Ray Serve (MiniLM-L6).

Method:

* Corpus: N sentences (default 20,000; --quick 2,000) of 1..64 random words from a fixed list,
  seeded. Every configuration embeds the same corpus and is checked against the plain
  single-process rlx embeddings (max abs diff, must be <= 1e-5).
* Plain rlx: `SentenceEncoder.encode` on consecutive batches of 32 in this process (2 threads),
  and `SentenceEmbedder.embed` in this process (the same, after sorting by token count).
* Ray Data on a local 2-CPU cluster: `map_batches` over Ray batches of 256 rows, an actor per
  worker (`concurrency` workers, `num_cpus` = threads each, so workers x threads = 2 cores):
  rlx 1 worker x 2 threads, 2 workers x 1 thread, 2 x 1 with prepack=False; and the same actor
  with ONNX Runtime in it (the ONNX file tests/onnx_bert.py builds from the same weights,
  ORT_ENABLE_ALL, intra-op threads = threads; same tokenizer, sorting and micro-batches).
  Sentences/s is rows / wall time of the whole job, actor start-up included.
* Memory: each worker reads /proc/self/status (VmRSS, RssAnon, RssFile) and the Rss / Pss of
  its model.safetensors mapping in /proc/self/smaps after every batch; the peak per worker is
  shown. Pss splits a shared page between the processes mapping it, so the weights' Pss summed
  over workers is the memory the weights really take, however many workers map them.
* Ray Serve: `serve_app(max_batch_size=32, batch_wait_timeout_s=0.005)`, 1 replica x 2
  threads, HTTP on 127.0.0.1. After a warm-up, R concurrent requests (default 200; one
  sentence of 1..64 random words each) are sent at once from R client threads; every answer is
  checked against a direct in-process call. Latency is per request, client side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_ray.py [--quick]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import logging
import os
import re
import socket
import sys
import tempfile
import time
import types
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import header, rows_table  # noqa: E402

WORDS = ("the of and to in is was for on that with as by at from his it an were are which this be "
         "also has had first one their its after new who they two her she been other when there "
         "all during into school time may years more most only over city some world would where "
         "later up such used many can state about national out known university united then made "
         "tokenization embeddings compiler worker anthropomorphically").split()
MiB = 1024.0


def corpus(n: int, seed: int, lo: int = 1, hi: int = 65):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(lo, hi)))) for _ in range(n)]


def memory_kb() -> dict:
    """This process's VmRSS / RssAnon / RssFile and its model.safetensors mapping's Rss / Pss (kB)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k = line.split(":", 1)[0]
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(line.split()[1])
    sums = {"Weights": [0, 0], "Panels": [0, 0]}  # Rss, Pss of model.safetensors / *.pack maps
    kind = None
    with open("/proc/self/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                name = line.rstrip()
                kind = "Weights" if name.endswith("model.safetensors") else "Panels" if name.endswith(".pack") else None
            elif kind and line.startswith(("Rss:", "Pss:")):
                sums[kind][line.startswith("Pss:")] += int(line.split()[1])
    for k, (rss, pss) in sums.items():
        out[k + "Rss"], out[k + "Pss"] = rss, pss
    return out


MEM_KEYS = ("VmRSS", "RssAnon", "AnonAdded", "RssFile", "WeightsRss", "WeightsPss", "PanelsRss", "PanelsPss")


def _tag(out: dict, base_anon: int) -> dict:
    n, m = len(out["id"]), memory_kb()
    m["AnonAdded"] = m["RssAnon"] - base_anon
    out["pid"] = np.full(n, os.getpid())
    for k in MEM_KEYS:
        out[k] = np.full(n, m[k])
    return out


def make_classes():
    """Actor classes, made here so Ray pickles them by value (this file is __main__)."""
    from rlx.integrations.ray import SentenceEmbedder

    class RlxActor(SentenceEmbedder):
        def __init__(self, **kw):
            base = memory_kb()  # the Ray worker before the model: Python, Ray, pandas, pyarrow
            super().__init__(**kw)
            self.base_anon = base["RssAnon"]

        def __call__(self, batch):
            return _tag(super().__call__(batch), self.base_anon)

    class OrtActor(SentenceEmbedder):
        """The same pipeline (tokenize, sort, micro-batch, restore order) with ORT running the
        encoder, and mean pooling + L2 normalisation in numpy."""

        def __init__(self, onnx_path, model_dir, threads, batch_size=32):
            import onnxruntime as ort
            from tokenizers import Tokenizer

            self.base_anon = memory_kb()["RssAnon"]
            self.column, self.output_column, self.batch_size = "text", "embedding", batch_size
            self.threads, self.rows, self.hidden = threads, 0, 384
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            self.sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
            tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
            tok.no_padding()
            tok.enable_truncation(max_length=512)
            self.encoder = types.SimpleNamespace(tokenizer=tok, run=self._run)

        def _run(self, feeds):
            h = self.sess.run(["last_hidden_state"], feeds)[0]
            m = feeds["attention_mask"][..., None].astype(np.float32)
            mean = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            norm = np.sqrt((mean * mean).sum(1, keepdims=True))
            return {"embedding": (mean / np.maximum(norm, 1e-12)).astype(np.float32)}

        def __call__(self, batch):
            return _tag(super().__call__(batch), self.base_anon)

    return RlxActor, OrtActor


def build_onnx(path: str, model_dir: str) -> None:
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import onnx
    from onnx_bert import bert_onnx
    from rlx.models.bert import SentenceEncoder

    enc = SentenceEncoder(model_dir, buckets=None)
    cfg = {k: getattr(enc.config, k) for k in ("hidden_size", "num_attention_heads", "num_hidden_layers", "layer_norm_eps")}
    onnx.save(bert_onnx(cfg, dict(enc.weights)), path)


def run_data(ray, texts, cls, kwargs, workers, threads, batch=256):
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    t0 = time.perf_counter()
    out = ds.map_batches(cls, fn_constructor_kwargs=kwargs, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=workers),  # = concurrency=workers
                         num_cpus=threads, batch_size=batch).materialize()
    wall = time.perf_counter() - t0
    emb = np.zeros((len(texts), 384), np.float32)
    seen = np.zeros(len(texts), np.int64)
    mem = collections.defaultdict(lambda: dict.fromkeys(MEM_KEYS, 0))
    for b in out.iter_batches(batch_size=4096, batch_format="numpy"):
        emb[b["id"]] = b["embedding"]
        np.add.at(seen, b["id"], 1)
        for j, pid in enumerate(b["pid"]):
            m = mem[int(pid)]
            for k in MEM_KEYS:
                m[k] = max(m[k], int(b[k][j]))
            # Pss depends on who else maps the file at that moment (a worker may outlive the
            # other): keep the least, i.e. the sample taken while the most processes shared it.
            for k in ("WeightsPss", "PanelsPss"):
                m[k + "Min"] = min(m.get(k + "Min", 1 << 62), int(b[k][j]))
    for m in mem.values():
        for k in ("WeightsPss", "PanelsPss"):
            m[k] = m.pop(k + "Min")
    assert (seen == 1).all(), "every row exactly once"
    return wall, emb, dict(mem)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, texts):
    req = urllib.request.Request(url, data=json.dumps({"texts": texts}).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        body = json.loads(r.read())
    return time.perf_counter() - t0, np.asarray(body["embeddings"], np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 sentences, 50 Serve requests")
    ap.add_argument("--sentences", type=int, default=None)
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--no-ort", action="store_true")
    a = ap.parse_args()
    n = a.sentences or (2000 if a.quick else 20000)
    n_req = a.requests or (50 if a.quick else 200)
    os.environ["RLX_NUM_THREADS"] = "2"  # this process (the plain runs); workers set their own
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    header("rlx on Ray: MiniLM-L6 corpus embedding (Ray Data) and serving (Ray Serve)",
           ["rlx", "ray", "onnxruntime", "numpy", "pandas", "pyarrow"])
    import ray
    from ray import serve

    from rlx.integrations.ray import SentenceEmbedder, serve_app
    from rlx.models.bert import SentenceEncoder, default_model_dir

    model_dir = default_model_dir()
    texts = corpus(n, seed=20000)
    ntok = [len(e.ids) for e in SentenceEncoder(model_dir, buckets=None).tokenizer.encode_batch(texts)]
    print(f"corpus: {n} sentences, tokens per sentence min {min(ntok)} / median {int(np.median(ntok))} / max {max(ntok)}")
    wsize = os.path.getsize(os.path.join(model_dir, "model.safetensors")) / 2**20
    print(f"model.safetensors: {wsize:.1f} MiB")

    results = []  # (name, workers, threads, wall, maxdiff, mem)

    enc = SentenceEncoder(model_dir)
    enc.encode(texts[:32])
    t0 = time.perf_counter()
    ref = np.concatenate([enc.encode(texts[i: i + 32]) for i in range(0, n, 32)])
    results.append(("plain rlx, encode() in batches of 32", 1, 2, time.perf_counter() - t0, 0.0, None))
    emb = SentenceEmbedder(model_dir, threads=2)
    emb.embed(texts[:32])
    t0 = time.perf_counter()
    got = emb.embed(texts)
    results.append(("plain rlx, SentenceEmbedder.embed (sorted)", 1, 2, time.perf_counter() - t0,
                    float(np.abs(got - ref).max()), None))
    del emb, enc

    tmp = tempfile.mkdtemp(prefix="bench_ray_")
    onnx_path = os.path.join(tmp, "minilm.onnx")
    if not a.no_ort:
        build_onnx(onnx_path, model_dir)

    for name in ("ray", "ray.data", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The workers' default AOT dir: compiled variants and packed panels shared between them.
    os.environ["RLX_CACHE_DIR"] = os.path.join(tmp, "rlx-cache")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=512 * 2**20, log_to_driver=False, logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    RlxActor, OrtActor = make_classes()
    configs = [
        ("Ray Data, rlx", 1, 2, RlxActor, {"threads": 2}),
        ("Ray Data, rlx", 2, 1, RlxActor, {"threads": 1}),
        ("Ray Data, rlx aot_dir=None (private panels)", 2, 1, RlxActor, {"threads": 1, "aot_dir": None}),
        ("Ray Data, rlx prepack=False", 2, 1, RlxActor, {"threads": 1, "prepack": False}),
    ]
    if not a.no_ort:
        configs += [
            ("Ray Data, ORT in the actor", 1, 2, OrtActor, {"onnx_path": onnx_path, "model_dir": model_dir, "threads": 2}),
            ("Ray Data, ORT in the actor", 2, 1, OrtActor, {"onnx_path": onnx_path, "model_dir": model_dir, "threads": 1}),
        ]
    mems = []
    for name, w, t, cls, kw in configs:
        wall, got, mem = run_data(ray, texts, cls, kw, w, t)
        results.append((name, w, t, wall, float(np.abs(got - ref).max()), mem))
        mems.append((f"{name} {w}x{t}", mem))
        print(f"  done: {name} {w}x{t}: {n / wall:.0f} sentences/s", flush=True)

    print()
    print(f"Throughput, {n} sentences (wall time of the whole job, actor start-up included):")
    rows = [[name, f"{w} x {t}", f"{wall:.1f} s", f"{n / wall:.0f}", f"{diff:.1e}"] for name, w, t, wall, diff, _ in results]
    print(rows_table(["configuration", "workers x threads", "time", "sentences/s", "max |diff| vs plain"], rows))

    print()
    print("Resident memory per worker, peak (MiB). Weights = the model.safetensors mapping, panels = the")
    print("packed GEMM panels mapped from the AOT dir (page cache, one copy per node); Pss divides each")
    print("shared page among the processes mapping it (least sample). 'anon added by model' = RssAnon")
    print("minus the worker's RssAnon before it loaded the model:")
    rows = []
    for label, mem in mems:
        for pid, m in sorted(mem.items()):
            rows.append([label, str(pid)] + [f"{m[k] / MiB:.1f}" for k in MEM_KEYS])
        tot = {k: sum(m[k] for m in mem.values()) for k in MEM_KEYS}
        rows.append([label, "total"] + [f"{tot[k] / MiB:.1f}" for k in MEM_KEYS])
    print(rows_table(["configuration", "worker pid", "VmRSS", "RssAnon", "anon added by model", "RssFile",
                      "weights Rss", "weights Pss", "panels Rss", "panels Pss"], rows))

    # -- Ray Serve ---------------------------------------------------------------------------
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    handle = serve.run(serve_app(model_dir, max_batch_size=32, batch_wait_timeout_s=0.005, threads=2),
                       name="rlx-bench", route_prefix="/embed")
    url = f"http://127.0.0.1:{port}/embed"
    for t in corpus(24, seed=1, lo=1, hi=120):  # warm-up: compile the buckets
        post(url, [t])
    warm = len(handle.batch_sizes.remote().result())
    reqs = corpus(n_req, seed=200)
    direct = SentenceEncoder(model_dir)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(n_req) as pool:
        answers = list(pool.map(lambda t: post(url, [t]), reqs))
    wall = time.perf_counter() - t0
    sizes = handle.batch_sizes.remote().result()[warm:]
    diff = max(float(np.abs(e - direct.encode([t])).max()) for t, (_, e) in zip(reqs, answers))
    lat = np.array([x for x, _ in answers]) * 1e3
    # The same burst through a DeploymentHandle (no HTTP proxy, no JSON): what the replica costs.
    n_before = len(handle.batch_sizes.remote().result())

    def via_handle(t):
        t1 = time.perf_counter()
        e = np.asarray(handle.embed.remote([t]).result(), np.float32)
        return time.perf_counter() - t1, e

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(n_req) as pool:
        h_answers = list(pool.map(via_handle, reqs))
    h_wall = time.perf_counter() - t0
    h_sizes = handle.batch_sizes.remote().result()[n_before:]
    h_diff = max(float(np.abs(e - direct.encode([t])).max()) for t, (_, e) in zip(reqs, h_answers))
    h_lat = np.array([x for x, _ in h_answers]) * 1e3
    diff = max(diff, h_diff)
    serve.shutdown()
    ray.shutdown()
    print()
    print(f"Ray Serve: {n_req} concurrent HTTP requests (1 sentence each, 1..64 words) on loopback,")
    print("1 replica x 2 threads, max_batch_size=32, batch_wait_timeout_s=0.005:")
    print(f"  all answers equal to direct calls: max |diff| {diff:.1e} ({'OK' if diff <= 1e-5 else 'FAIL'})")
    print(f"  latency p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, "
          f"max {lat.max():.0f} ms; {n_req / wall:.0f} requests/s over {wall:.2f} s")
    hist = collections.Counter(sizes)
    print(f"  batches formed: {len(sizes)}, sizes (requests per batch: count) "
          + ", ".join(f"{k}: {v}" for k, v in sorted(hist.items())) + f"; mean {np.mean(sizes):.1f}")
    print(f"  the same {n_req} through a DeploymentHandle (no HTTP): p50 {np.percentile(h_lat, 50):.0f} ms, "
          f"p99 {np.percentile(h_lat, 99):.0f} ms; {n_req / h_wall:.0f} requests/s; {len(h_sizes)} batches, "
          f"mean {np.mean(h_sizes):.1f} requests; max |diff| {h_diff:.1e}")
    bad = [r for r in results if r[4] > 1e-5]
    if bad or diff > 1e-5:
        print("FAIL: some outputs differ from plain rlx by more than 1e-5")
        sys.exit(1)


if __name__ == "__main__":
    main()
