"""rlx on Ray: corpus embedding with Ray Data and online embedding with Ray Serve.

Ray is an optional dependency (``pip install "rlx[ray]"``); this module imports it only where a
Ray object is built (``embed_dataset``, ``serve_app``), so :class:`SentenceEmbedder` can be
used, and tested, as a plain callable without Ray.

Batch inference (Ray Data, one stateful actor per worker)::

    import ray
    from rlx.integrations.ray import SentenceEmbedder, embed_dataset

    ds = ray.data.read_parquet("corpus/")                        # a "text" column
    ds = embed_dataset(ds, concurrency=4, threads=2)             # adds "embedding" (float32)
    # or, spelled out:
    ds = ds.map_batches(SentenceEmbedder, fn_constructor_kwargs={"threads": 2},
                        concurrency=4, num_cpus=2, batch_size=256)

Serving (Ray Serve, requests batched with ``@serve.batch``)::

    from ray import serve
    from rlx.integrations.ray import serve_app

    serve.run(serve_app(max_batch_size=32), route_prefix="/embed")
    # POST {"texts": ["a sentence", ...]}  ->  {"embeddings": [[...], ...]}

What each worker does, and why it scales on one node:

- **Threads.** A worker runs rlx on ``threads`` kernel threads (``RLX_NUM_THREADS`` is set in
  the worker before its pipeline is made). By default that is the number of CPUs Ray assigned
  to the actor (``num_cpus``), so ``workers x threads <= cores`` whenever Ray's CPU accounting
  is (``embed_dataset`` passes ``num_cpus=threads``).
- **Shared weights.** ``SentenceEncoder`` memory-maps ``model.safetensors`` (``mode="mmap"``)
  and binds the weights without a copy, so every worker process on a node maps the same page
  cache pages. The packed GEMM panels of the linear weights (``prepack=True``, ~1.5x faster
  GEMMs, ~40 MiB for MiniLM) are shared too: they are written once to the AOT directory
  (``aot_dir``, by default :func:`default_aot_dir`, a directory on the node) and memory-mapped
  by every worker. ``aot_dir=None`` keeps each worker's packed copy private.
- **Few variants.** A batch is tokenized once, sorted by token count and cut into micro-batches
  of ``batch_size`` sentences of similar length, each run through the encoder's sequence-length
  buckets (powers of two from 8 by default): a stream of varied lengths compiles a handful of
  variants and pads little. Rows are returned in their input order.
- **Warm starts.** ``aot_dir`` is also the encoder's disk AOT cache (``SentenceEncoder(aot_dir=)``):
  a new or restarted worker loads the compiled variants and packed panels instead of making
  them.

Mistakes are typed rlx errors: an unknown column is an ``rlx.BindingError`` (naming the columns
there are), a text that is not a string an ``rlx.DTypeError``, a bad argument an
``rlx.BindingError``; inside Ray they reach the caller wrapped by Ray (``RayTaskError`` subclasses
the original error class, so ``except rlx.DTypeError`` still catches them).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

import rlx

__all__ = ["SentenceEmbedder", "embed_dataset", "serve_app", "default_threads", "default_aot_dir"]

#: ``aot_dir`` default of the workers: :func:`default_aot_dir`.
AUTO = "auto"


def default_aot_dir() -> str:
    """The node-local directory workers share compiled variants and packed weights through:
    ``$RLX_CACHE_DIR`` if set, else ``~/.cache/rlx``."""
    return os.environ.get("RLX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "rlx")

_FEEDS = ("input_ids", "attention_mask", "token_type_ids")


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _ray_assigned_cpus() -> Optional[int]:
    """CPUs Ray assigned to the current actor / task, or None outside a Ray worker. Ray is
    never imported here: a process where it is not imported yet is not a Ray worker."""
    ray = sys.modules.get("ray")
    if ray is None:
        return None
    try:
        if not ray.is_initialized():
            return None
        ctx = ray.get_runtime_context()
        if ctx.worker.mode != getattr(ray, "WORKER_MODE", 1):  # the driver: not an actor
            return None
        cpus = ctx.get_assigned_resources().get("CPU")
    except Exception:  # an older / newer Ray without these: fall back to the cores
        return None
    return max(1, int(cpus)) if cpus else None


def default_threads() -> int:
    """Kernel threads for one worker: the CPUs Ray assigned to it (its ``num_cpus``) inside a
    Ray worker, else ``RLX_NUM_THREADS`` if set, else the cores this process may use."""
    assigned = _ray_assigned_cpus()
    if assigned is not None:
        return min(assigned, _cores())
    env = os.environ.get("RLX_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return _cores()


def _positive_int(name: str, v: Any) -> int:
    if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0):
        raise rlx.BindingError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def _column_name(name: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise rlx.BindingError(f"{name} must be a non-empty column name (str), got {v!r}")
    return v


def _check_texts(texts: Sequence[Any], where: str) -> List[str]:
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise rlx.DTypeError(f"{where}: row {i} is {type(t).__name__} {t!r:.60}, not a string")
    return out


class SentenceEmbedder:
    """A callable class for ``ray.data.Dataset.map_batches``: adds ``output_column`` (float32
    ``[rows, hidden]``, L2-normalised sentence embeddings) computed from the strings in
    ``column``.

    Takes pandas DataFrames, numpy batches (dict of arrays) and pyarrow Tables, and returns the
    same kind with every input column kept. ``batch_size`` is the encoder's micro-batch (the
    sentences run together, after sorting the Ray batch by token count); Ray's own batch is the
    ``batch_size`` of ``map_batches``. ``threads`` is the kernel threads (default
    :func:`default_threads`), ``aot_dir`` the encoder's AOT cache, ``buckets`` / ``capacity``
    the encoder's sequence buckets and variant cache size, ``prepack`` whether the linear
    weights are repacked for the GEMM kernels (faster, but the packed copy is the worker's own
    memory; ``False`` runs on the memory-mapped weights only, shared by every worker). ``model_dir`` defaults to the
    shipped all-MiniLM-L6-v2 (``rlx.models.bert.default_model_dir()``).
    """

    def __init__(
        self,
        model_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        column: str = "text",
        output_column: str = "embedding",
        batch_size: int = 32,
        aot_dir: Optional[Union[str, "os.PathLike[str]"]] = AUTO,
        threads: Optional[int] = None,
        buckets: Union[str, Sequence[int], None] = "pow2",
        capacity: int = 32,
        prepack: bool = True,
    ) -> None:
        from rlx.models.bert import SentenceEncoder, default_model_dir

        self.column = _column_name("column", column)
        self.output_column = _column_name("output_column", output_column)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.threads = default_threads() if threads is None else _positive_int("threads", threads)
        # Read by the runtime when the pipeline first needs its thread pool; this process is
        # the worker's own, so setting it here affects this worker only.
        os.environ["RLX_NUM_THREADS"] = str(self.threads)
        self.encoder = SentenceEncoder(
            str(model_dir) if model_dir is not None else default_model_dir(),
            capacity=_positive_int("capacity", capacity), buckets=buckets,
            aot_dir=default_aot_dir() if aot_dir == AUTO else aot_dir,
            prepack=bool(prepack),
        )
        self.hidden = self.encoder.config.hidden_size
        self.rows = 0  # rows embedded by this worker

    # -- the computation ------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` (float32 ``[len(texts), hidden]``) in their order: sorted by
        token count, run in micro-batches of ``batch_size``, then put back in order."""
        texts = _check_texts(texts, "texts")
        out = np.empty((len(texts), self.hidden), np.float32)
        if not texts:
            return out
        enc = self.encoder.tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in enc), np.int64, len(enc))
        order = np.argsort(lengths, kind="stable")
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo: lo + self.batch_size]
            seq = int(lengths[idx].max())
            feeds = {k: np.zeros((len(idx), seq), np.int64) for k in _FEEDS}
            for r, i in enumerate(idx):
                e, n = enc[i], int(lengths[i])
                feeds["input_ids"][r, :n] = e.ids
                feeds["attention_mask"][r, :n] = e.attention_mask
                feeds["token_type_ids"][r, :n] = e.type_ids
            out[idx] = self.encoder.run(feeds)["embedding"]
        self.rows += len(texts)
        return out

    # -- batch formats --------------------------------------------------------------------

    def _missing(self, names: Sequence[str]) -> "rlx.BindingError":
        return rlx.BindingError(f"batch has no column {self.column!r}; its columns are {list(names)}")

    def __call__(self, batch: Any) -> Any:
        mod = type(batch).__module__.split(".")[0]
        if isinstance(batch, Mapping):  # numpy format: dict of arrays
            if self.column not in batch:
                raise self._missing(list(batch))
            emb = self.embed(_check_texts(np.asarray(batch[self.column]).tolist(), f"column {self.column!r}"))
            out = dict(batch)
            out[self.output_column] = emb
            return out
        if mod == "pandas" and hasattr(batch, "assign"):
            if self.column not in batch.columns:
                raise self._missing([str(c) for c in batch.columns])
            emb = self.embed(_check_texts(batch[self.column].tolist(), f"column {self.column!r}"))
            out = batch.copy(deep=False)
            out[self.output_column] = list(emb)  # one float32 row per cell (a tensor column in Ray)
            return out
        if mod == "pyarrow" and hasattr(batch, "append_column"):
            import pyarrow as pa

            if self.column not in batch.column_names:
                raise self._missing(batch.column_names)
            emb = self.embed(_check_texts(batch.column(self.column).to_pylist(), f"column {self.column!r}"))
            col = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), self.hidden)
            if self.output_column in batch.column_names:
                batch = batch.drop_columns([self.output_column])
            return batch.append_column(self.output_column, col)
        raise rlx.DTypeError(
            f"batch of type {type(batch).__module__}.{type(batch).__name__}: expected a pandas "
            "DataFrame, a dict of numpy arrays or a pyarrow Table")

    def __repr__(self) -> str:
        return (f"SentenceEmbedder({self.encoder.model_dir!r}, column={self.column!r}, "
                f"output_column={self.output_column!r}, batch_size={self.batch_size}, threads={self.threads})")


def _require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError('rlx.integrations.ray needs Ray: pip install "rlx[ray]" (or "ray[data,serve]>=2.9")') from None
    return ray


def embed_dataset(
    ds: Any,
    model_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    *,
    column: str = "text",
    output_column: str = "embedding",
    concurrency: Optional[Union[int, Tuple[int, int]]] = None,
    threads: int = 1,
    batch_size: int = 256,
    encode_batch_size: int = 32,
    aot_dir: Optional[Union[str, "os.PathLike[str]"]] = AUTO,
    batch_format: str = "pandas",
    prepack: bool = True,
    **map_batches_kwargs: Any,
) -> Any:
    """``ds.map_batches(SentenceEmbedder, ...)`` in one call: ``concurrency`` actors (default:
    the cluster's CPUs // ``threads``) of ``threads`` kernel threads each (``num_cpus=threads``),
    Ray batches of ``batch_size`` rows, encoder micro-batches of ``encode_batch_size``. Other
    keyword arguments go to ``map_batches`` (``max_restarts``, ``memory``, ...). Lazy, as
    ``map_batches`` is: the result is a new Dataset."""
    ray = _require_ray()
    import ray.data  # noqa: F401  (ActorPoolStrategy)

    threads = _positive_int("threads", threads)
    batch_size = _positive_int("batch_size", batch_size)
    column = _column_name("column", column)
    try:
        schema = ds.schema()
    except Exception:  # a source whose schema needs execution: the actor checks each batch
        schema = None
    names = list(getattr(schema, "names", None) or [])
    if names and column not in names:
        raise rlx.BindingError(f"dataset has no column {column!r}; its columns are {names}")
    if concurrency is None:
        cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else _cores()
        concurrency = max(1, cpus // threads)
    if isinstance(concurrency, tuple) and len(concurrency) == 2:
        lo, hi = (_positive_int("concurrency", c) for c in concurrency)
        pool = dict(min_size=lo, max_size=hi)
    else:
        pool = dict(size=_positive_int("concurrency", concurrency))
    kwargs: Dict[str, Any] = dict(num_cpus=threads, batch_format=batch_format)
    kwargs.update(map_batches_kwargs)
    if "compute" not in kwargs and "concurrency" not in kwargs:
        # An actor pool of that size (what map_batches(concurrency=N) means for a class; Ray
        # >= 2.51 prefers it spelled as compute=).
        kwargs["compute"] = ray.data.ActorPoolStrategy(**pool)
    return ds.map_batches(
        SentenceEmbedder,
        fn_constructor_kwargs=dict(model_dir=model_dir, column=column, output_column=output_column,
                                   batch_size=encode_batch_size, aot_dir=aot_dir, threads=threads,
                                   prepack=prepack),
        batch_size=batch_size, **kwargs,
    )


def _request_texts(body: Any) -> List[str]:
    if not isinstance(body, dict) or "texts" not in body:
        raise rlx.BindingError('request body must be a JSON object {"texts": [...]}')
    texts = body["texts"]
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list):
        raise rlx.DTypeError(f'"texts" must be a list of strings, got {type(texts).__name__}')
    return _check_texts(texts, '"texts"')


def serve_app(
    model_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    max_batch_size: int = 32,
    batch_wait_timeout_s: float = 0.005,
    *,
    threads: Optional[int] = None,
    num_replicas: int = 1,
    encode_batch_size: int = 32,
    aot_dir: Optional[Union[str, "os.PathLike[str]"]] = AUTO,
    prepack: bool = True,
    name: str = "RlxEmbedder",
) -> Any:
    """A Ray Serve application embedding sentences over HTTP: POST ``{"texts": [...]}`` gives
    ``{"embeddings": [[...], ...]}`` (a bad body gives status 400 and ``{"error": ...}``).

    Concurrent requests are merged by ``@serve.batch`` (up to ``max_batch_size`` requests,
    waiting at most ``batch_wait_timeout_s`` for more) and their sentences embedded together.
    Each of the ``num_replicas`` replicas reserves ``threads`` CPUs (default 1) and runs rlx
    on as many threads. The deployment also answers handle calls ``embed(texts)`` (same
    batching) and ``batch_sizes()`` (the number of requests in each batch it formed, in order).
    Run it with ``serve.run(serve_app(...), route_prefix="/embed")``."""
    _require_ray()
    from ray import serve

    max_batch_size = _positive_int("max_batch_size", max_batch_size)
    if not (isinstance(batch_wait_timeout_s, (int, float)) and not isinstance(batch_wait_timeout_s, bool)
            and 0 <= batch_wait_timeout_s < float("inf")):
        raise rlx.BindingError(f"batch_wait_timeout_s must be a finite number >= 0, got {batch_wait_timeout_s!r}")
    num_replicas = _positive_int("num_replicas", num_replicas)
    threads = 1 if threads is None else _positive_int("threads", threads)
    ctor: Dict[str, Any] = dict(model_dir=model_dir, batch_size=_positive_int("encode_batch_size", encode_batch_size),
                aot_dir=aot_dir, threads=threads, prepack=prepack)

    @serve.deployment(name=name, num_replicas=num_replicas, ray_actor_options={"num_cpus": threads},
                      max_ongoing_requests=max(100, 4 * max_batch_size))
    class RlxEmbedder:
        def __init__(self) -> None:
            self.embedder = SentenceEmbedder(**ctor)
            self._batch_sizes: List[int] = []

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=float(batch_wait_timeout_s))
        async def _embed_many(self, requests: List[List[str]]) -> List[np.ndarray]:
            self._batch_sizes.append(len(requests))
            flat = [t for texts in requests for t in texts]
            # In a thread: rlx releases the GIL, and the event loop keeps taking requests
            # (they form the next batch) while this one runs.
            emb = await asyncio.get_running_loop().run_in_executor(None, self.embedder.embed, flat)
            out, at = [], 0
            for texts in requests:
                out.append(emb[at: at + len(texts)])
                at += len(texts)
            return out

        async def embed(self, texts: List[str]) -> np.ndarray:
            texts = _check_texts(texts, "texts")
            return await self._embed_many(texts)

        def batch_sizes(self) -> List[int]:
            return list(self._batch_sizes)

        async def __call__(self, request: Any) -> Any:
            from starlette.responses import JSONResponse

            try:
                body = await request.json()
            except Exception as e:
                return JSONResponse({"error": f"body is not JSON: {e}"}, status_code=400)
            try:
                texts = _request_texts(body)
            except rlx.RlxError as e:
                return JSONResponse({"error": f"{type(e).__name__}: {e}"}, status_code=400)
            emb = await self._embed_many(texts)
            return {"embeddings": emb.tolist()}

    return RlxEmbedder.bind()  # type: ignore[attr-defined]  # serve.deployment adds it
