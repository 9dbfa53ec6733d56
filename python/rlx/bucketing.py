"""Shape bucketing: serve every size of a symbolic dim from a few compiled variants.

A server that sees every sequence length from 1 to 512 should not compile 512 variants.
``pipe.bucketed(seq=[16, 32, 64, 128, 256, 512])`` (or ``rlx.bucketed(pipe, seq=...)``) returns
a :class:`Bucketed` whose ``run(feeds)``:

1. infers every symbol's value from the feeds' shapes (the template manifest says which input
   axis is which symbol),
2. picks, for each bucketed symbol, the smallest bucket >= the value,
3. pads every input along the axes whose dim is that symbol (zeros, or ``pad_values[input]``),
4. runs the bucket's variant (``pipe.get_or_compile(**binding)``, cached by the pipeline), and
5. slices every output back along the axes whose dim is that symbol.

Padding is exact only when the model ignores padded positions: a per-position computation
(embeddings, linears, layer norm, GELU) never mixes positions, and a computation across
positions must be masked (BERT's attention adds -10000 to padded keys, whose softmax weight is
then exactly 0 in float32; mean pooling multiplies by the mask and divides by its sum). Outputs
without the symbol (a pooled embedding) are returned whole. Results can differ from an unpadded
run by float rounding only (a kernel may block a longer row differently); for MiniLM the
difference is ~1e-7 on the normalised embedding.

Only axes whose dim is the symbol itself are padded and sliced. A bucketed symbol that occurs
in an expression dim of an input or output (``seq + 1``, ``2*seq``, ``batch*seq``) is refused
when the :class:`Bucketed` is made: where the valid entries of such an axis lie depends on how
the graph built it, so slicing it would be a guess.

Bucket specs, per symbol:

- a strictly increasing sequence of ints inside the symbol's bounds, e.g. ``[16, 32, 64]``;
- ``"pow2"``: powers of two from 8 up to the symbol's upper bound, which is always the last
  bucket (bounds (1, 512) -> 8, 16, 32, 64, 128, 256, 512; (1, 500) -> 8, ..., 256, 500).
  The floor of 8 keeps seven variants for 1..512 instead of ten: MiniLM at batch 1 runs seq 8
  in ~1.9 ms and seq 1 in ~1.0 ms on a 2-core Zen 5, so shorter buckets save little;
- ``"pow2:N"``: the same ladder from N instead of 8 (``batch="pow2:1"`` -> 1, 2, 4, ...).
  The first bucket is the smallest power of two >= max(N, the symbol's lower bound).

A value above the largest bucket runs **unbucketed at its exact size** by default
(``overflow="exact"``: one more variant, counted in the report as an overflow), or raises
``rlx.ShapeError`` with ``overflow="error"``. A value outside the symbol's bounds is a
``rlx.BindingError``, as it is without bucketing.

Argument mistakes (unknown symbol, empty / unsorted / non-int buckets, a bucket outside the
symbol's bounds, a pad value that does not fit the input's dtype) are ``rlx.BindingError``s
naming the symbol or input; feed mistakes are the same typed errors ``CompiledGraph.run``
raises.
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import math
import re
import threading
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

import rlx
from rlx._onnx_sym import Poly, parse_dim

__all__ = ["Bucketed", "bucketed", "pow2_ladder", "POW2_FLOOR"]

#: First bucket of a ``"pow2"`` ladder (unless the symbol's lower bound is higher).
POW2_FLOOR = 8

BucketSpec = Union[str, Sequence[int]]
_OVERFLOW = ("exact", "error")


def pow2_ladder(lo: int, hi: int, floor: int = POW2_FLOOR) -> List[int]:
    """Powers of two from the smallest one >= max(floor, lo), below ``hi``, then ``hi``."""
    first = 1
    while first < max(floor, lo, 1):
        first *= 2
    out = []
    b = first
    while b < hi:
        out.append(b)
        b *= 2
    out.append(hi)
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _hint(name: Any, choices: Iterable[str]) -> str:
    if not isinstance(name, str):
        return ""
    m = difflib.get_close_matches(name, list(choices), 1)
    return f" (did you mean {m[0]!r}?)" if m else ""


def _plain_symbol(d: Any) -> Optional[str]:
    """The symbol when a parsed dim is exactly one symbol, else None."""
    if isinstance(d, Poly) and len(d.terms) == 1:
        (m, c), = d.terms.items()
        if c == 1 and len(m) == 1:
            return m[0]
    return None


def _pipeline_bounds(pipe: "rlx.ModelCompilePipeline", known: Iterable[str]) -> Dict[str, Tuple[int, int]]:
    """Every template symbol's (min, max), from ``pipe.dims``."""
    return {str(k): (int(v[0]), int(v[1])) for k, v in pipe.dims.items()}


def _variant(pipe: "rlx.ModelCompilePipeline", binding: Mapping[str, int]) -> Tuple["rlx.CompiledGraph", bool]:
    """``(graph, compiled)``: the pipeline's variant for ``binding``, and whether this call
    compiled it (a cache hit costs a hash)."""
    compiled = binding not in pipe
    return pipe.get_or_compile(binding), compiled


class Bucketed:
    """Runs a pipeline's variants at bucketed sizes; see the module doc. Made by
    ``pipe.bucketed(...)`` / ``rlx.bucketed(pipe, ...)``.

    Attributes: ``pipeline``, ``buckets`` (symbol -> list of bucket sizes), ``bounds`` (every
    template symbol -> (min, max)), ``pad_values`` (input -> scalar), ``overflow``.
    Thread-safe: concurrent ``run`` calls share the pipeline's cache; the counters are locked.
    """

    def __init__(
        self,
        pipe: "rlx.ModelCompilePipeline",
        buckets: Mapping[str, BucketSpec],
        *,
        pad_values: Optional[Mapping[str, Any]] = None,
        overflow: str = "exact",
        _stacklevel: int = 2,
    ) -> None:
        if not isinstance(pipe, rlx.ModelCompilePipeline):
            raise rlx.BindingError(f"bucketed() needs a rlx.ModelCompilePipeline, got {type(pipe).__name__}")
        if not isinstance(buckets, Mapping):
            raise rlx.BindingError(f"buckets must be a dict of symbol -> buckets, got {type(buckets).__name__}")
        if not buckets:
            raise rlx.BindingError("bucketed() needs at least one symbol, e.g. seq=[16, 32, 64] or seq='pow2'")
        if overflow not in _OVERFLOW:
            raise rlx.BindingError(f"overflow = {overflow!r}: must be one of {list(_OVERFLOW)}")
        self.pipeline = pipe
        self.overflow = overflow
        man = pipe.manifest
        # name -> parsed dims (int or Poly) for the template's inputs and outputs.
        self._inputs = [(e.name, [parse_dim(d) for d in e.shape], e.dtype) for e in man.inputs]
        self._outputs = [(e.name, [parse_dim(d) for d in e.shape]) for e in man.outputs]
        self._symbols: List[str] = []
        for d in [d for _, ds, _ in self._inputs for d in ds] + [d for _, ds in self._outputs for d in ds]:
            for s in sorted(d.symbols()) if isinstance(d, Poly) else ():
                if s not in self._symbols:
                    self._symbols.append(s)
        self.bounds = _pipeline_bounds(pipe, self._symbols)
        self._symbols += [s for s in self.bounds if s not in self._symbols]
        self.buckets: Dict[str, List[int]] = {}
        for sym, spec in buckets.items():
            self.buckets[sym] = self._ladder(sym, spec)
        self._check_axes()
        self.pad_values = self._check_pad_values(pad_values)
        # Input name -> [(axis, symbol)] for bucketed axes; the same for outputs.
        self._pad_axes = {n: [(i, str(_plain_symbol(d))) for i, d in enumerate(dims) if _plain_symbol(d) in self.buckets]
                          for n, dims, _ in self._inputs}
        self._slice_axes = {n: [(i, str(_plain_symbol(d))) for i, d in enumerate(dims) if _plain_symbol(d) in self.buckets]
                            for n, dims in self._outputs}
        n_variants = 1
        for ladder in self.buckets.values():
            n_variants *= len(ladder)
        if n_variants > pipe.capacity:
            warnings.warn(
                f"rlx.bucketed: {n_variants} bucket variants exceed the pipeline's capacity {pipe.capacity}: "
                "variants will be evicted and compiled again; make the pipeline with a larger capacity",
                RuntimeWarning, stacklevel=_stacklevel)
        self._lock = threading.Lock()
        self.reset_report()

    # -- construction checks ------------------------------------------------------------------

    def _ladder(self, sym: Any, spec: Any) -> List[int]:
        if not isinstance(sym, str) or sym not in self._symbols:
            raise rlx.BindingError(f"cannot bucket unknown symbol {sym!r}{_hint(sym, self._symbols)}; "
                                   f"the template's symbols are {self._symbols}")
        lo, hi = self.bounds.get(sym, (0, 2**62))  # unread bounds: the pipeline checks them
        if isinstance(spec, str):
            if sym not in self.bounds:
                raise rlx.BindingError(
                    f"buckets for symbol {sym!r}: its bounds could not be read from the pipeline; give a list of ints")
            m = re.fullmatch(r"pow2(?::(\d+))?", spec.strip())
            if not m:
                raise rlx.BindingError(
                    f"buckets for symbol {sym!r}: unknown spec {spec!r} (use 'pow2', 'pow2:N' or a list of ints)")
            floor = int(m.group(1)) if m.group(1) else POW2_FLOOR
            if floor < 1:
                raise rlx.BindingError(f"buckets for symbol {sym!r}: 'pow2:N' needs N >= 1, got {spec!r}")
            return pow2_ladder(lo, hi, floor)
        if isinstance(spec, np.ndarray):
            spec = spec.tolist() if spec.ndim == 1 else spec
        if not isinstance(spec, (list, tuple, range)):
            raise rlx.BindingError(
                f"buckets for symbol {sym!r} must be a list of ints or 'pow2', got {type(spec).__name__}")
        if not spec:
            raise rlx.BindingError(f"buckets for symbol {sym!r} are empty")
        bad = [b for b in spec if not _is_int(b)]
        if bad:
            raise rlx.BindingError(f"buckets for symbol {sym!r} must be ints, got {bad[0]!r} ({type(bad[0]).__name__})")
        ladder = [int(b) for b in spec]
        if any(a >= b for a, b in zip(ladder, ladder[1:])):
            raise rlx.BindingError(f"buckets for symbol {sym!r} must be strictly increasing, got {ladder}")
        out = [b for b in ladder if not lo <= b <= hi]
        if out:
            raise rlx.BindingError(
                f"bucket(s) {out} for symbol {sym!r} are outside its bounds [{lo}, {hi}]")
        return ladder

    def _check_axes(self) -> None:
        for sym in self.buckets:
            if not any(_plain_symbol(d) == sym for _, dims, _ in self._inputs for d in dims):
                raise rlx.BindingError(
                    f"cannot bucket symbol {sym!r}: no input axis has the dim {sym!r}, so its value "
                    "cannot be read from the feeds")
            uses = [f"{kind} {name!r} axis {i} ({d})"
                    for kind, table in (("input", [(n, ds) for n, ds, _ in self._inputs]), ("output", self._outputs))
                    for name, ds in table for i, d in enumerate(ds)
                    if isinstance(d, Poly) and sym in d.symbols() and _plain_symbol(d) != sym]
            if uses:
                raise rlx.BindingError(
                    f"cannot bucket symbol {sym!r}: it occurs in expression dims ({'; '.join(uses)}); "
                    "bucketing pads and slices only axes whose dim is the symbol itself")

    def _check_pad_values(self, pad_values: Any) -> Dict[str, Any]:
        if pad_values is None:
            return {}
        if not isinstance(pad_values, Mapping):
            raise rlx.BindingError(f"pad_values must be a dict of input name -> scalar, got {type(pad_values).__name__}")
        dtypes = {n: dt for n, _, dt in self._inputs}
        out = {}
        for name, v in pad_values.items():
            if name not in dtypes:
                raise rlx.BindingError(
                    f"pad_values names unknown input {name!r}{_hint(name, dtypes)}; the inputs are {list(dtypes)}")
            ok = isinstance(v, (int, float, bool, np.number, np.bool_))
            if ok:
                try:
                    with np.errstate(all="ignore"):
                        cast = np.array(v).astype(np.dtype(dtypes[name]))
                    ok = bool(cast == v) or bool(np.isnan(cast) and np.isnan(v))
                except (TypeError, ValueError, OverflowError):
                    ok = False
            if not ok:
                raise rlx.BindingError(
                    f"pad_values[{name!r}] = {v!r} is not a {dtypes[name]} scalar")
            out[name] = v
        return out

    # -- running --------------------------------------------------------------------------------

    def _infer(self, feeds: Mapping[str, Any]) -> Dict[str, int]:
        """Symbol values from the feeds' shapes: plain-symbol axes first (they must agree), then
        expressions with one unknown symbol of degree 1."""
        values: Dict[str, int] = {}
        where: Dict[str, str] = {}
        pending: List[Tuple[Poly, int]] = []
        missing = [n for n, _, _ in self._inputs if n not in feeds]
        if missing:
            raise rlx.BindingError(f"missing input(s) {missing}; expected inputs {[n for n, _, _ in self._inputs]}")
        for name, dims, _ in self._inputs:
            shape = np.shape(feeds[name])
            if len(shape) != len(dims):
                raise rlx.ShapeError(
                    f"input {name!r}: got {len(shape)} dims {list(shape)}, expected {len(dims)} {[str(d) for d in dims]}")
            for axis, (d, n) in enumerate(zip(dims, shape)):
                sym = _plain_symbol(d)
                if sym is not None:
                    if sym in values and values[sym] != n:
                        raise rlx.ShapeError(
                            f"symbol {sym!r} is {values[sym]} from {where[sym]} but {n} from input {name!r} axis {axis}")
                    values.setdefault(sym, int(n))
                    where.setdefault(sym, f"input {name!r} axis {axis}")
                elif isinstance(d, Poly):
                    pending.append((d, int(n)))
        progress = True
        while pending and progress:
            progress = False
            for p, n in list(pending):
                unknown = [s for s in p.symbols() if s not in values]
                if len(unknown) != 1:
                    if not unknown:
                        pending.remove((p, n))
                    continue
                u = unknown[0]
                coef, rest = 0, 0
                for mono, c in p.terms.items():
                    k = c
                    for s in mono:
                        if s != u:
                            k *= values[s]
                    if mono.count(u) > 1:
                        break
                    if u in mono:
                        coef += k
                    else:
                        rest += k
                else:
                    if coef and (n - rest) % coef == 0 and (n - rest) // coef >= 0:
                        values[u] = (n - rest) // coef
                        progress = True
                pending.remove((p, n))
        return values

    def plan(self, feeds: Mapping[str, Any]) -> Tuple[Dict[str, int], Dict[str, int]]:
        """``(values, binding)``: the symbol values the feeds imply and the binding that would run
        them (bucketed symbols at their bucket). Raises as ``run`` would."""
        values = self._infer(feeds)
        binding = dict(values)
        for sym, ladder in self.buckets.items():
            v = values[sym]
            lo, hi = self.bounds.get(sym, (0, 2**62))
            if not lo <= v <= hi:
                raise rlx.BindingError(f"symbol `{sym}` = {v} is outside its bounds [{lo}, {hi}]")
            i = bisect.bisect_left(ladder, v)
            if i < len(ladder):
                binding[sym] = ladder[i]
            elif self.overflow == "error":
                raise rlx.ShapeError(
                    f"symbol {sym!r} = {v} is above its largest bucket {ladder[-1]} (overflow='error'; "
                    f"buckets {ladder})")
        return values, binding

    def pad(self, feeds: Mapping[str, Any], binding: Optional[Mapping[str, int]] = None) -> Dict[str, Any]:
        """The feeds padded to ``binding`` (by default the one :meth:`plan` picks). Inputs that
        need no padding are passed through unchanged (not copied)."""
        if binding is None:
            _, binding = self.plan(feeds)
        out = dict(feeds)
        for name, axes in self._pad_axes.items():
            if not axes:
                continue
            arr = feeds[name]
            shape = list(np.shape(arr))
            target = list(shape)
            for axis, sym in axes:
                target[axis] = binding[sym]
            if target == shape:
                continue
            arr = np.asarray(arr)
            padded = np.full(target, self.pad_values.get(name, 0), dtype=arr.dtype)
            padded[tuple(slice(0, n) for n in shape)] = arr
            out[name] = padded
        return out

    def run(self, inputs: Optional[Mapping[str, Any]] = None, /, **kwargs: Any) -> Dict[str, np.ndarray]:
        """Like ``CompiledGraph.run``: pads to the bucket, runs its variant, slices outputs back."""
        if inputs is None:
            feeds: Dict[str, Any] = {}
        elif isinstance(inputs, Mapping):
            feeds = dict(inputs)
        else:
            raise rlx.BindingError(f"inputs must be a dict of name -> array, got {type(inputs).__name__}")
        twice = [k for k in kwargs if k in feeds]
        if twice:
            raise rlx.BindingError(f"input(s) {twice} given twice (in the dict and as keywords)")
        feeds.update(kwargs)
        values, binding = self.plan(feeds)
        padded = self.pad(feeds, binding)
        key = tuple(sorted(binding.items()))
        exe, compiled = _variant(self.pipeline, binding)
        outs = exe.run(padded)
        for name, axes in self._slice_axes.items():
            if not axes or name not in outs:
                continue
            arr = outs[name]
            if all(arr.shape[a] == values[s] for a, s in axes):
                continue
            idx = [slice(None)] * arr.ndim
            for a, s in axes:
                idx[a] = slice(0, values[s])
            outs[name] = np.ascontiguousarray(arr[tuple(idx)])
        self._record(feeds, padded, values, binding, key, compiled)
        return outs

    __call__ = run

    def precompile(self, binding: Optional[Mapping[str, int]] = None, /, **dims: int) -> List[Dict[str, int]]:
        """Compiles every bucket combination now (a warm start), with the other symbols at
        ``dims``; returns the bindings. ``b.precompile(batch=1)`` for a seq-bucketed encoder."""
        fixed = dict(binding or {}, **dims)
        unknown = [s for s in fixed if s in self.buckets]
        if unknown:
            raise rlx.BindingError(f"precompile: symbol(s) {unknown} are bucketed; give only the other symbols")
        syms = list(self.buckets)
        done = []
        for combo in itertools.product(*(self.buckets[s] for s in syms)):
            b = dict(fixed, **dict(zip(syms, combo)))
            _, compiled = _variant(self.pipeline, b)
            with self._lock:
                self._compiled += compiled
                self._variants.setdefault(tuple(sorted(b.items())), 0)
            done.append(b)
        return done

    # -- report ---------------------------------------------------------------------------------

    def _record(self, feeds: Mapping[str, Any], padded: Mapping[str, Any], values: Mapping[str, int],
                binding: Mapping[str, int], key: Tuple[Tuple[str, int], ...], compiled: bool) -> None:
        useful = pad = 0
        for name, axes in self._pad_axes.items():
            if axes:
                u = math.prod(np.shape(feeds[name]))
                useful += u
                pad += math.prod(np.shape(padded[name])) - u
        bucket = ", ".join(f"{s}={binding[s]}" for s in self.buckets)
        over = any(binding[s] > self.buckets[s][-1] for s in self.buckets)
        with self._lock:
            self._calls += 1
            self._per_bucket[bucket] = self._per_bucket.get(bucket, 0) + 1
            self._variants[key] = self._variants.get(key, 0) + 1
            self._useful += useful
            self._padded += pad
            self._compiled += compiled
            self._overflow += over

    def reset_report(self) -> None:
        """Zeroes the counters (the pipeline's cache is kept)."""
        with self._lock:
            self._calls = self._useful = self._padded = self._compiled = self._overflow = 0
            self._per_bucket: Dict[str, int] = {}
            self._variants: Dict[Tuple[Tuple[str, int], ...], int] = {}

    def report(self) -> Dict[str, Any]:
        """Counters since creation (or :meth:`reset_report`):

        - ``calls``; ``calls_per_bucket``: ``"seq=16"`` (bucketed symbols, comma-separated) ->
          calls, in ladder order; a call above the largest bucket counts under its exact size;
        - ``overflow_calls``: calls above the largest bucket (run at the exact size);
        - ``useful_elements`` / ``padded_elements``: elements of the inputs that have a
          bucketed axis as fed / added by padding; ``padding_ratio`` = padded / useful;
        - ``variants_compiled``: variants this object compiled (pipeline cache misses, with
          :meth:`precompile`); ``variants_used``: distinct full bindings run or precompiled;
        - ``buckets``, ``overflow`` (the policy), ``pipeline_cached``: variants now in the
          pipeline's cache (shared with other users of the pipeline).
        """
        with self._lock:
            order = {f"{', '.join(f'{s}={v}' for s, v in zip(self.buckets, combo))}": i
                     for i, combo in enumerate(itertools.product(*self.buckets.values()))}
            per = dict(sorted(self._per_bucket.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
            return {
                "buckets": {s: list(v) for s, v in self.buckets.items()},
                "overflow": self.overflow,
                "calls": self._calls,
                "calls_per_bucket": per,
                "overflow_calls": self._overflow,
                "useful_elements": self._useful,
                "padded_elements": self._padded,
                "padding_ratio": self._padded / self._useful if self._useful else 0.0,
                "variants_compiled": self._compiled,
                "variants_used": len(self._variants),
                "pipeline_cached": len(self.pipeline),
            }

    def __repr__(self) -> str:
        r = self.report()
        spec = ", ".join(f"{s}={v}" for s, v in self.buckets.items())
        return (f"Bucketed({spec}, overflow={self.overflow!r}: {r['calls']} calls, "
                f"{r['variants_compiled']} variants compiled, padding {r['padding_ratio']:.3f} x useful elements)")

    def __str__(self) -> str:
        r = self.report()
        lines = [f"bucketed {', '.join(f'{s} {v}' for s, v in self.buckets.items())} (overflow: {self.overflow})"]
        if r["calls_per_bucket"]:
            w = max(len(k) for k in r["calls_per_bucket"])
            lines.append(f"  {'bucket':<{w}}  {'calls':>8}  {'share':>6}")
            for k, n in r["calls_per_bucket"].items():
                lines.append(f"  {k:<{w}}  {n:>8}  {100 * n / r['calls']:>5.1f}%")
        lines.append(
            f"  {r['calls']} calls ({r['overflow_calls']} above the largest bucket), "
            f"{r['variants_compiled']} variants compiled, {r['variants_used']} used, "
            f"{r['pipeline_cached']} in the pipeline's cache")
        lines.append(
            f"  padding: {r['padded_elements']} padded / {r['useful_elements']} useful input elements "
            f"({r['padding_ratio']:.3f})")
        return "\n".join(lines)


def bucketed(
    pipe: "rlx.ModelCompilePipeline",
    buckets: Optional[Mapping[str, BucketSpec]] = None,
    /,
    *,
    pad_values: Optional[Mapping[str, Any]] = None,
    overflow: str = "exact",
    _stacklevel: int = 3,
    **symbol_buckets: BucketSpec,
) -> Bucketed:
    """A :class:`Bucketed` runner over ``pipe``: ``rlx.bucketed(pipe, seq="pow2")``, or with
    several symbols ``rlx.bucketed(pipe, batch="pow2:1", seq=[16, 64, 512])``. Symbols not named
    run at their exact values. ``buckets`` as a dict does the same for a symbol whose name is
    a keyword of this function. See the module doc for specs, padding and errors."""
    if buckets is not None and not isinstance(buckets, Mapping):
        raise rlx.BindingError(f"buckets must be a dict of symbol -> buckets, got {type(buckets).__name__}")
    spec: Dict[str, BucketSpec] = dict(buckets or {})
    twice = [k for k in symbol_buckets if k in spec]
    if twice:
        raise rlx.BindingError(f"symbol(s) {twice} given twice (in the dict and as keywords)")
    spec.update(symbol_buckets)
    return Bucketed(pipe, spec, pad_values=pad_values, overflow=overflow, _stacklevel=_stacklevel)


def _pipeline_bucketed(
    self: "rlx.ModelCompilePipeline",
    buckets: Optional[Mapping[str, BucketSpec]] = None,
    /,
    *,
    pad_values: Optional[Mapping[str, Any]] = None,
    overflow: str = "exact",
    **symbol_buckets: BucketSpec,
) -> Bucketed:
    return bucketed(self, buckets, pad_values=pad_values, overflow=overflow, _stacklevel=4, **symbol_buckets)


_pipeline_bucketed.__name__ = "bucketed"
_pipeline_bucketed.__qualname__ = "ModelCompilePipeline.bucketed"
_pipeline_bucketed.__doc__ = bucketed.__doc__
