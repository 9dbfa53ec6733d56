"""rlx.safetensors: header validation before any mapping, mmap / copy modes, renaming, and
zero-copy binding into a pipeline."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import rlx
from rlx import safetensors as st


def write(path, header: dict, data: bytes, raw_header: bytes | None = None) -> str:
    body = raw_header if raw_header is not None else json.dumps(header).encode()
    body += b" " * (-(8 + len(body)) % 8)  # pad so the data section is 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body)) + body + data)
    return str(path)


def good(tmp_path) -> str:
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([1, 2, 3], np.int64)
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
        "b": {"dtype": "I64", "shape": [3], "data_offsets": [48, 72]},
    }
    return write(tmp_path / "ok.safetensors", header, w.tobytes() + b.tobytes())


@pytest.mark.parametrize("mode", ["mmap", "copy"])
def test_reads_tensors_as_views(tmp_path, mode):
    t = st.load(good(tmp_path), mode=mode)
    assert sorted(t) == ["b", "w"]
    np.testing.assert_array_equal(t["w"], np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(t["b"], [1, 2, 3])
    assert not t["w"].flags.writeable and not t["w"].flags.owndata
    assert t.nbytes == 72 and "2 tensors" in repr(t)


def test_rename_hook_maps_and_skips(tmp_path):
    t = st.load(good(tmp_path), rename=lambda n: None if n == "b" else "layer." + n)
    assert list(t) == ["layer.w"]
    with pytest.raises(rlx.ModelFormatError, match="two tensors"):
        st.load(good(tmp_path), rename=lambda n: "same")


BAD = {
    "header longer than the file": (None, b"", "longer than the file"),
    "bad json": (None, b"{not json", "not valid JSON"),
    "duplicate names": (None, b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', "duplicate tensor name 'a'"),
    "overlap": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, None, "overlap"),
    "out of range": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, None, "past the data"),
    "shape x dtype != span": ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, None, "needs 12 bytes"),
    "negative dim": ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, None, "invalid shape"),
    "reversed offsets": ({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}, None, "invalid data_offsets"),
    "unknown dtype": ({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}, None, "unsupported dtype"),
    "not an object": (None, b"[1, 2]", "must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_headers_are_model_format_errors(tmp_path, case):
    header, raw, fragment = BAD[case]
    data = bytes(12)
    path = tmp_path / "bad.safetensors"
    if case == "header longer than the file":
        path.write_bytes(struct.pack("<Q", 1 << 20) + b"{}")
    else:
        write(path, header or {}, data, raw_header=raw)
    with pytest.raises(rlx.ModelFormatError, match=fragment):
        st.load(str(path))
    # Nothing is left half-open: a good file still loads afterwards.
    assert len(st.load(good(tmp_path))) == 2


def test_huge_header_length_is_rejected_before_reading(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    with pytest.raises(rlx.ModelFormatError, match="exceeds"):
        st.load(str(path))
    (tmp_path / "tiny").write_bytes(b"abc")
    with pytest.raises(rlx.ModelFormatError, match="too short"):
        st.load(str(tmp_path / "tiny"))


def test_mapped_weights_bind_zero_copy(tmp_path):
    t = st.load(good(tmp_path))
    g = rlx.Graph("lin", dims={"batch": (1, 8)})
    x = g.input("x", ("batch", 3))
    g.output("y", g.matmul(x, g.param("w", (3, 4))))
    pipe = rlx.ModelCompilePipeline(g)
    pipe.bind_params({"w": t["w"]})
    exe = pipe.get_or_compile(batch=2)
    assert exe.param_data_ptr("w") == t["w"].ctypes.data
    xs = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(exe.run(x=xs)["y"], xs @ t["w"])
