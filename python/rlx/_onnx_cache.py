"""The ONNX import cache behind ``rlx.onnx.load(path, aot_dir=DIR)``.

Parsing the protobuf and decoding every initializer is most of a cold start (a 90 MB MiniLM:
~130 ms). An import is saved once as a directory ``DIR/onnx-<digest>/`` holding the graph
(``Graph.to_bytes``: checksummed, verified when read), the params (a safetensors file, mapped
back zero-copy) and ``meta.json`` (the key echoed in full, names, notes). The key is the model
file's resolved path, size and modification time, the import arguments and rlx's version: a
changed file is a new key. Like the compile cache, anything unusable is a miss (the entry is
removed and rebuilt) and a directory that cannot be written only warns, once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, Mapping, Optional, Tuple

import rlx
from rlx import safetensors

FORMAT = 2  # 2: the dtype conversions (rlx._onnx_dtypes)
_warned = False


def key_text(path: str, dims: Mapping[str, Tuple[int, int]], name: Optional[str]) -> str:
    real = os.path.realpath(path)
    st = os.stat(real)
    return json.dumps({
        "format": FORMAT, "rlx": rlx.__version__, "path": real, "size": st.st_size,
        "mtime_ns": st.st_mtime_ns, "dims": sorted([k, list(v)] for k, v in dims.items()), "name": name,
    }, sort_keys=True)


def _entry(aot_dir: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return os.path.join(os.path.realpath(aot_dir), f"onnx-{digest}")


def _plain_file(path: str) -> bool:
    try:
        return os.path.isfile(path) and not os.path.islink(path)
    except OSError:
        return False


def load(aot_dir: str, key: str) -> Optional[Any]:
    """The cached import for ``key``, or None (a bad entry is removed)."""
    from rlx.onnx import OnnxModel, QuantFold

    d = _entry(aot_dir, key)
    if not os.path.lexists(d):
        return None
    t0 = time.perf_counter()
    try:
        if os.path.islink(d) or not os.path.isdir(d):
            raise ValueError("not a directory")
        files = {f: os.path.join(d, f) for f in ("meta.json", "graph.rlxg", "params.safetensors")}
        if not all(_plain_file(p) for p in files.values()):
            raise ValueError("missing or not plain files")
        with open(files["meta.json"], "rb") as f:
            meta = json.loads(f.read())
        if not isinstance(meta, dict) or meta.get("key") != key:
            raise ValueError("another key")
        with open(files["graph.rlxg"], "rb") as f:
            graph = rlx.Graph.from_bytes(f.read())
        params: Dict[str, Any] = dict(safetensors.load(files["params.safetensors"]))
        if sorted(params) != sorted(meta["params"]):
            raise ValueError("params differ from the meta")
        m = OnnxModel(graph, params, list(meta["inputs"]), list(meta["outputs"]), time.perf_counter() - t0,
                      list(meta["notes"]), shadowed=meta["shadowed"], frozen=meta["frozen"],
                      quantized=[QuantFold.from_json(f) for f in meta.get("quantized", [])],
                      conversions=list(meta["conversions"]), input_dtypes=_dtypes(meta["input_dtypes"]),
                      output_dtypes=_dtypes(meta["output_dtypes"]))
        m._shapes = {k: tuple(v) for k, v in meta["shapes"].items()}
        m.from_cache = True
        return m
    except (OSError, ValueError, KeyError, TypeError, rlx.RlxError):
        shutil.rmtree(d, ignore_errors=True)
        if os.path.lexists(d) and not os.path.isdir(d):
            os.remove(d)
        return None


def _elems(dtypes: Mapping[str, Any]) -> Dict[str, int]:
    """Declared dtypes as ONNX element types (bfloat16 has no portable numpy name)."""
    from onnx import helper

    return {k: int(helper.np_dtype_to_tensor_dtype(v)) for k, v in dtypes.items()}


def _dtypes(elems: Mapping[str, int]) -> Dict[str, Any]:
    from rlx._onnx_dtypes import declared_np

    out = {k: declared_np(int(e)) for k, e in elems.items()}
    if any(v is None for v in out.values()):
        raise ValueError("a converted dtype rlx does not know")
    return out


def store(aot_dir: str, key: str, m: Any) -> None:
    """Saves ``m`` under ``key``: written to a temp directory, then renamed into place."""
    global _warned
    d = _entry(aot_dir, key)
    tmp = f"{os.path.join(os.path.realpath(aot_dir), '.tmp-onnx')}-{os.getpid()}-{time.time_ns()}"
    try:
        os.makedirs(os.path.realpath(aot_dir), exist_ok=True)
        os.mkdir(tmp)
        with open(os.path.join(tmp, "graph.rlxg"), "wb") as f:
            f.write(m.graph.to_bytes())
        safetensors.save(os.path.join(tmp, "params.safetensors"), m.params)
        meta = {"key": key, "params": sorted(m.params), "inputs": m.inputs, "outputs": m.outputs, "notes": m.notes,
                "shadowed": m.shadowed, "frozen": m.frozen, "shapes": {k: list(v) for k, v in m._shapes.items()},
                "quantized": [list(f) for f in m.quantized], "conversions": m.conversions,
                "input_dtypes": _elems(m.input_dtypes), "output_dtypes": _elems(m.output_dtypes)}
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(tmp, d)
        except OSError:
            pass  # another process saved the same import first
    except (OSError, rlx.RlxError) as e:
        if not _warned:
            _warned = True
            print(f"rlx: ONNX import cache {aot_dir!r} unusable ({e}); imports are not saved", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
