"""The ONNX import cache (rlx.onnx.load(path, aot_dir=...)) and Graph.to_bytes / from_bytes:
a second load reads the saved import back (no protobuf parse) with identical results; anything
unusable in the cache is a miss that re-imports; a changed model file is a new key."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rlx
import rlx.onnx

onnx = pytest.importorskip("onnx")
from test_onnx_import import attention_model  # noqa: E402


@pytest.fixture()
def model_path(tmp_path):
    path = tmp_path / "attn.onnx"
    onnx.save(attention_model(np.random.default_rng(7)), str(path))
    return str(path)


def _feed(b=2, s=9):
    rng = np.random.default_rng(b * 100 + s)
    return {"ids": rng.integers(0, 50, (b, s)).astype(np.int64), "mask": np.ones((b, s), np.int64)}


def _outputs(m):
    return {k: v.tobytes() for k, v in m.run(_feed()).items()}


def test_second_load_reads_the_saved_import(model_path, tmp_path):
    cache = tmp_path / "cache"
    plain = _outputs(rlx.onnx.load(model_path))
    first = rlx.onnx.load(model_path, aot_dir=cache)
    assert not first.from_cache
    assert _outputs(first) == plain
    again = rlx.onnx.load(model_path, aot_dir=cache)
    assert again.from_cache
    assert again.inputs == first.inputs and again.outputs == first.outputs
    assert again.symbols == first.symbols
    assert _outputs(again) == plain
    # The params are read back zero-copy from the saved file (read-only views of a map).
    assert all(not a.flags.writeable for a in again.params.values())


@pytest.mark.parametrize("damage", ["graph bytes flipped", "graph truncated", "meta not JSON", "meta of another key",
                                    "params truncated", "params missing", "entry is a file"])
def test_a_damaged_entry_is_a_miss_that_imports_again(model_path, tmp_path, damage):
    cache = tmp_path / "cache"
    plain = _outputs(rlx.onnx.load(model_path, aot_dir=cache))
    (entry,) = [p for p in cache.iterdir() if p.name.startswith("onnx-")]
    graph, meta, params = entry / "graph.rlxg", entry / "meta.json", entry / "params.safetensors"
    if damage == "graph bytes flipped":
        b = bytearray(graph.read_bytes())
        b[len(b) // 2] ^= 0x10
        graph.write_bytes(bytes(b))
    elif damage == "graph truncated":
        graph.write_bytes(graph.read_bytes()[:100])
    elif damage == "meta not JSON":
        meta.write_text("{not json")
    elif damage == "meta of another key":
        import json
        d = json.loads(meta.read_text())
        d["key"] = d["key"].replace('"rlx"', '"rlx-other"')
        meta.write_text(json.dumps(d))
    elif damage == "params truncated":
        os.truncate(params, params.stat().st_size - 64)
    elif damage == "params missing":
        params.unlink()
    else:
        import shutil
        shutil.rmtree(entry)
        entry.write_bytes(b"junk")
    m = rlx.onnx.load(model_path, aot_dir=cache)
    assert not m.from_cache
    assert _outputs(m) == plain
    assert rlx.onnx.load(model_path, aot_dir=cache).from_cache  # rewritten


def test_a_changed_model_file_is_a_new_key(model_path, tmp_path):
    cache = tmp_path / "cache"
    rlx.onnx.load(model_path, aot_dir=cache)
    onnx.save(attention_model(np.random.default_rng(8)), model_path)
    st = os.stat(model_path)
    os.utime(model_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    m = rlx.onnx.load(model_path, aot_dir=cache)
    assert not m.from_cache
    assert _outputs(m) == _outputs(rlx.onnx.load(model_path))


def test_an_unusable_cache_dir_warns_and_imports(model_path, tmp_path, capfd):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    m = rlx.onnx.load(model_path, aot_dir=blocker / "cache")
    assert not m.from_cache
    assert _outputs(m) == _outputs(rlx.onnx.load(model_path))
    assert "unusable" in capfd.readouterr().err


def test_graph_bytes_round_trip_and_refuse_anything_else():
    g = rlx.Graph("g", dims={"n": (1, 8)})
    x = g.input("x", ("n", 4))
    g.output("y", g.softmax(g.add(x, g.constant(np.arange(4, dtype=np.float32)))))
    data = g.to_bytes()
    h = rlx.Graph.from_bytes(data)
    assert h.dims == g.dims and h.inputs == g.inputs
    xs = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    run = lambda graph: rlx.ModelCompilePipeline(graph).get_or_compile(n=3).run(x=xs)["y"]  # noqa: E731
    assert run(h).tobytes() == run(g).tobytes()
    for bad in [b"", data[:-1], data + b"\0", b"RLXAOT\0\n" + bytes(100), bytes(len(data))]:
        with pytest.raises(rlx.ModelFormatError):
            rlx.Graph.from_bytes(bad)
    flipped = bytearray(data)
    for i in range(0, len(data), max(1, len(data) // 200)):
        flipped[i] ^= 1
        with pytest.raises(rlx.ModelFormatError):
            rlx.Graph.from_bytes(bytes(flipped))
        flipped[i] ^= 1
