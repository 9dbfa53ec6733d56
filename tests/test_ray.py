"""rlx on Ray (rlx.integrations.ray): Ray Data map_batches and Ray Serve on a local 2-CPU
cluster these tests start themselves (loopback only). Skipped when Ray is not installed.

Every embedding is compared with ``SentenceEncoder.encode`` in this process (<= 1e-5)."""

import collections
import concurrent.futures
import json
import os
import socket
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

import rlx
from conftest import minilm_dir_or_skip

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")

from rlx.integrations.ray import SentenceEmbedder, embed_dataset, serve_app  # noqa: E402

# Ray's own deprecation notices (pydantic fields, DataContext options) are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOL = 1e-5
N_CORPUS = 2000
WORDS = ("the of and to in is was for on that with as by at from his it an were are which this be "
         "also has had first one their its after new who they two her she been other when there "
         "all during into school time may years more most only over city some world would where "
         "later up such used many can state about national out known university united then made "
         "tokenization embeddings rlx compiler worker anthropomorphically").split()


def sentences(n, seed, lo=1, hi=48):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(lo, hi)))) for _ in range(n)]


@pytest.fixture(scope="module")
def model_dir():
    return minilm_dir_or_skip()


@pytest.fixture(scope="module")
def encoder(model_dir):
    from rlx.models.bert import SentenceEncoder

    return SentenceEncoder(model_dir)


def reference(encoder, texts, chunk=64):
    """In-process embeddings, in unsorted chunks (other paddings than the Ray path's)."""
    return np.concatenate([encoder.encode(texts[i: i + chunk]) for i in range(0, len(texts), chunk)])


@pytest.fixture(scope="module")
def corpus(encoder):
    texts = sentences(N_CORPUS, seed=15)
    return texts, reference(encoder, texts)


@pytest.fixture(scope="module")
def cluster(model_dir, tmp_path_factory):
    """A local Ray with 2 CPUs, no dashboard, bound to loopback; shut down after the module."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Workers inherit it: their default AOT dir (shared packed weights) stays in the test's tmp.
    os.environ["RLX_CACHE_DIR"] = str(tmp_path_factory.mktemp("rlx-cache"))
    if ray.is_initialized():
        ray.shutdown()
    # Classes defined here (the _Tagged embedder) travel to the workers by value: they cannot
    # import this test module.
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=256 * 2**20, log_to_driver=False, logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield {"aot_dir": str(tmp_path_factory.mktemp("aot"))}
    ray.shutdown()


def rows_by_id(ds):
    """Every output row keyed by id; fails on a duplicated id."""
    out = {}
    for r in ds.iter_rows():
        i = int(r["id"])
        assert i not in out, f"row {i} came out twice"
        out[i] = r
    return out


def dataset(texts):
    return ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])


class _Tagged(SentenceEmbedder):
    """Adds the worker's pid and thread count to each row (numpy format)."""

    def __call__(self, batch):
        out = super().__call__(batch)
        out["pid"] = np.full(len(out["id"]), os.getpid())
        out["threads"] = np.full(len(out["id"]), self.threads)
        return out


# -- Ray Data ---------------------------------------------------------------------------------

def test_map_batches_two_workers_equal_in_process(cluster, corpus):
    texts, ref = corpus
    ds = dataset(texts).map_batches(
        _Tagged, fn_constructor_kwargs={"aot_dir": cluster["aot_dir"]}, batch_format="numpy",
        concurrency=2, num_cpus=1, batch_size=100)
    rows = rows_by_id(ds)
    assert sorted(rows) == list(range(len(texts)))
    got = np.stack([rows[i]["embedding"] for i in range(len(texts))])
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() <= TOL
    assert len({int(r["pid"]) for r in rows.values()}) == 2, "both workers should have run batches"
    # Each worker took the CPUs Ray gave it (num_cpus=1), so workers x threads <= 2 cores.
    assert {int(r["threads"]) for r in rows.values()} == {1}


@pytest.mark.parametrize("fmt", ["pandas", "numpy", "pyarrow"])
def test_batch_formats(cluster, corpus, fmt):
    texts, ref = corpus[0][:256], corpus[1][:256]
    ds = dataset(texts).map_batches(
        SentenceEmbedder, fn_constructor_kwargs={"threads": 1, "output_column": "vec", "aot_dir": cluster["aot_dir"]},
        batch_format=fmt, concurrency=1, num_cpus=1, batch_size=64)
    rows = rows_by_id(ds)
    assert sorted(rows) == list(range(len(texts)))
    assert all(rows[i]["text"] == texts[i] for i in rows), "input columns are kept"
    got = np.stack([np.asarray(rows[i]["vec"], np.float32) for i in range(len(texts))])
    assert np.abs(got - ref).max() <= TOL


def test_formats_in_process(model_dir, encoder):
    """The same batch as pandas / numpy / pyarrow gives the same float32 column, input columns kept."""
    texts = sentences(40, seed=3)
    ref = reference(encoder, texts)
    emb = SentenceEmbedder(model_dir, threads=1, batch_size=8)
    out_pd = emb(pd.DataFrame({"text": texts, "k": range(40)}))
    out_np = emb({"text": np.array(texts), "k": np.arange(40)})
    out_pa = emb(pa.table({"text": texts, "k": list(range(40))}))
    assert list(out_pd["k"]) == list(range(40)) and list(out_np["k"]) == list(range(40))
    assert out_pa.column("k").to_pylist() == list(range(40))
    for got in (np.stack(out_pd["embedding"].to_list()), out_np["embedding"],
                np.asarray(out_pa.column("embedding").to_pylist(), np.float32)):
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= TOL
    assert out_np["embedding"].dtype == np.float32
    assert out_pa.schema.field("embedding").type == pa.list_(pa.float32(), ref.shape[1])


def test_order_restored_after_length_sort(model_dir, encoder):
    """Rows come back in input order although they run sorted by length: lengths alternate
    long / short so sorting moves every row, and each row equals its sentence encoded alone."""
    short, long_ = sentences(12, seed=1, lo=1, hi=4), sentences(12, seed=2, lo=60, hi=90)
    texts = [t for pair in zip(long_, short) for t in pair]
    emb = SentenceEmbedder(model_dir, threads=1, batch_size=5)
    got = emb.embed(texts)
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    assert np.abs(got - alone).max() <= TOL
    # Sorted, the 12 short sentences (<= 8 tokens) fill two micro-batches of 5 by themselves
    # (bucket seq=8); in input order every micro-batch would mix long and short ones.
    rep = emb.encoder.bucketing.report()
    assert rep["calls"] == 5 and rep["calls_per_bucket"].get("seq=8") == 2, rep["calls_per_bucket"]


def test_bad_arguments_are_typed(cluster, model_dir):
    emb = SentenceEmbedder(model_dir, threads=1)
    with pytest.raises(rlx.BindingError, match="no column 'text'.*'body'"):
        emb(pd.DataFrame({"body": ["a"]}))
    with pytest.raises(rlx.DTypeError, match="row 1 is int"):
        emb({"text": np.array(["a", 3], dtype=object)})
    with pytest.raises(rlx.DTypeError, match="expected a pandas DataFrame"):
        emb(["a", "b"])
    with pytest.raises(rlx.BindingError, match="batch_size"):
        SentenceEmbedder(model_dir, batch_size=0)
    with pytest.raises(rlx.BindingError, match="threads"):
        SentenceEmbedder(model_dir, threads=-1)
    with pytest.raises(rlx.BindingError, match="column"):
        SentenceEmbedder(model_dir, column=3)
    # Through Ray: the unknown column is refused before anything runs; a non-string row
    # fails the job with the typed error (Ray's wrapper subclasses it).
    ds = ray.data.from_items([{"body": "x"}])
    with pytest.raises(rlx.BindingError, match="no column 'text'"):
        embed_dataset(ds, model_dir, concurrency=1)
    bad = ray.data.from_items([{"text": "fine"}, {"text": None}])  # a null: not a string
    with pytest.raises(Exception) as info:
        embed_dataset(bad, model_dir, concurrency=1, batch_format="numpy").materialize()
    chain, e = [], info.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, rlx.DTypeError) for x in chain) or "DTypeError" in str(info.value)
    with pytest.raises(rlx.BindingError, match="max_batch_size"):
        serve_app(model_dir, max_batch_size=0)


def test_embed_dataset(cluster, corpus, model_dir):
    texts, ref = corpus[0][:600], corpus[1][:600]
    ds = embed_dataset(dataset(texts), model_dir, concurrency=2, threads=1, batch_size=128,
                       aot_dir=cluster["aot_dir"])
    rows = rows_by_id(ds)
    assert sorted(rows) == list(range(len(texts)))
    got = np.stack([np.asarray(rows[i]["embedding"], np.float32) for i in range(len(texts))])
    assert np.abs(got - ref).max() <= TOL


def test_worker_killed_mid_job_every_row_once(cluster, corpus, tmp_path):
    """One worker process dies (os._exit) on its first batch; Ray restarts the actor and retries
    the batch: every row comes out exactly once, with the right embedding."""
    texts, ref = corpus[0][:800], corpus[1][:800]
    marker = str(tmp_path / "killed")

    class DiesOnce(SentenceEmbedder):
        def __call__(self, batch):
            try:  # only the first worker to get here, only once in the whole job
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return super().__call__(batch)
            os._exit(1)

    ds = dataset(texts).map_batches(
        DiesOnce, fn_constructor_kwargs={"threads": 1, "aot_dir": cluster["aot_dir"]}, batch_format="pandas",
        concurrency=2, num_cpus=1, batch_size=100, max_restarts=2, max_task_retries=2)
    rows = list(ds.iter_rows())
    assert os.path.exists(marker), "no worker was killed: the test did not test anything"
    counts = collections.Counter(int(r["id"]) for r in rows)
    assert sorted(counts) == list(range(len(texts))) and set(counts.values()) == {1}
    got = {int(r["id"]): np.asarray(r["embedding"], np.float32) for r in rows}
    assert np.abs(np.stack([got[i] for i in range(len(texts))]) - ref).max() <= TOL


# -- Ray Serve --------------------------------------------------------------------------------

def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body, timeout=60):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_serve_concurrent_requests_equal_direct(cluster, encoder, model_dir):
    serve = pytest.importorskip("ray.serve")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        handle = serve.run(serve_app(model_dir, max_batch_size=8, batch_wait_timeout_s=0.02, threads=1),
                           name="rlx-test", route_prefix="/embed")
        url = f"http://127.0.0.1:{port}/embed"
        rng = np.random.default_rng(7)
        reqs = [sentences(int(rng.integers(1, 5)), seed=100 + i, lo=1, hi=int(rng.integers(2, 70))) for i in range(40)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda t: _post(url, {"texts": t}), reqs))
        for texts, (status, body) in zip(reqs, answers):
            assert status == 200, body
            got = np.asarray(body["embeddings"], np.float32)
            assert got.shape == (len(texts), 384)
            assert np.abs(got - encoder.encode(texts)).max() <= TOL
        sizes = handle.batch_sizes.remote().result()
        assert sum(sizes) == len(reqs) and max(sizes) <= 8
        assert max(sizes) > 1, f"16 concurrent clients never formed a batch: {sizes}"
        # The handle path batches the same way.
        one = sentences(3, seed=9)
        assert np.abs(np.asarray(handle.embed.remote(one).result()) - encoder.encode(one)).max() <= TOL
        # Bad bodies are 400s naming the typed error, and the server keeps serving.
        assert _post(url, {"txt": ["a"]})[0] == 400
        status, body = _post(url, {"texts": ["a", 5]})
        assert status == 400 and "DTypeError" in body["error"]
        assert _post(url, {"texts": ["still fine"]})[0] == 200
    finally:
        serve.shutdown()


def test_import_without_ray():
    """rlx and rlx.integrations.ray import with Ray absent; only the Ray entry points need it."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import rlx, rlx.integrations.ray as r\n"
        "assert 'ray' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n    r.embed_dataset(None)\nexcept ImportError as e:\n    print('ImportError', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install" in out.stdout and "rlx[ray]" in out.stdout
