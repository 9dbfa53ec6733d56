"""rlx.safetensors headers (root cause 10): wrong types, deep nesting, huge or negative dims,
malformed offsets and duplicate names are ModelFormatErrors naming the tensor, raised before the
file is mapped; after each, a valid file still loads with the same tensors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import rlx
from rlx import safetensors as st

W = np.arange(6, dtype=np.float32).reshape(2, 3)


def write(path, header: bytes, data: bytes = bytes(16)) -> str:
    header += b" " * (-(8 + len(header)) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return str(path)


def entry(**kw) -> bytes:
    spec = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    spec.update(kw)
    return json.dumps({"a": spec}).encode()


def still_loads(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}).encode()
    for mode in ("mmap", "copy"):
        t = st.load(write(tmp_path / "good.safetensors", header, W.tobytes()), mode=mode)
        assert list(t) == ["w"]
        np.testing.assert_array_equal(t["w"], W)


BAD = [
    ("dtype is a list", entry(dtype=["F32"]), r"tensor 'a' has unsupported dtype \['F32'\]"),
    ("dtype is a number", entry(dtype=4), "tensor 'a' has unsupported dtype 4"),
    ("dtype is an object", entry(dtype={"F32": 1}), "tensor 'a' has unsupported dtype"),
    ("deeply nested header", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ("int of 5000 digits", b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 0]}}', "not valid JSON"),
    ("shape [0, 2**70]", entry(shape=[0, 2**70], data_offsets=[0, 0]), r"tensor 'a' shape \[0, 1180591620717411303424\] is too large"),
    ("shape [2**40, 2**40, 0]", entry(shape=[2**40, 2**40, 0], data_offsets=[0, 0]), "tensor 'a' shape .* is too large"),
    ("negative dim", entry(shape=[-4]), r"tensor 'a' has invalid shape \[-4\]"),
    ("float dim", entry(shape=[4.0]), r"tensor 'a' has invalid shape \[4.0\]"),
    ("string dim", entry(shape=["4"]), "tensor 'a' has invalid shape"),
    ("bool dim", entry(shape=[True]), "tensor 'a' has invalid shape"),
    ("shape not a list", entry(shape=4), "tensor 'a' has invalid shape 4"),
    ("shape missing", entry(shape=None), "tensor 'a' has invalid shape None"),
    ("offsets one int", entry(data_offsets=[16]), r"tensor 'a' has invalid data_offsets \[16\]"),
    ("offsets three ints", entry(data_offsets=[0, 8, 16]), "tensor 'a' has invalid data_offsets"),
    ("offsets floats", entry(data_offsets=[0.0, 16.0]), "tensor 'a' has invalid data_offsets"),
    ("offsets strings", entry(data_offsets=["0", "16"]), "tensor 'a' has invalid data_offsets"),
    ("offsets negative", entry(data_offsets=[-16, 0]), "tensor 'a' has invalid data_offsets"),
    ("offsets an object", entry(data_offsets={"begin": 0, "end": 16}), "tensor 'a' has invalid data_offsets"),
    ("offsets past the data", entry(shape=[2**60], data_offsets=[0, 2**62]), "tensor 'a' span .* is past the data"),
    ("duplicate names", b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
     "duplicate tensor name 'a'"),
    ("duplicate key in an entry", b'{"a": {"dtype": "F32", "dtype": "F16", "shape": [4], "data_offsets": [0, 16]}}', "tensor 'a' has duplicate key 'dtype'"),
    ("entry not an object", b'{"a": [1, 2]}', "entry 'a' must be an object"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_headers_fail_before_mapping(tmp_path, monkeypatch, case):
    _, header, fragment = case
    path = write(tmp_path / "bad.safetensors", header)

    def no_map(*args, **kwargs):
        raise AssertionError("the file was mapped before its header was validated")

    with monkeypatch.context() as m:
        m.setattr(st.mmap, "mmap", no_map)
        with pytest.raises(rlx.ModelFormatError, match=fragment):
            st.load(path)
    with pytest.raises(rlx.ModelFormatError, match=fragment):
        st.load(path, mode="copy")
    still_loads(tmp_path)


@pytest.mark.parametrize("path", [None, 3, ["a.safetensors"]])
def test_path_of_wrong_type(tmp_path, path):
    with pytest.raises(rlx.ModelFormatError, match="safetensors: path must be a str or os.PathLike"):
        st.load(path)
    still_loads(tmp_path)


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_unreadable_paths_are_model_format_errors(tmp_path, what):
    path = tmp_path / "x.safetensors"
    if what == "directory":
        path.mkdir()
    with pytest.raises(rlx.ModelFormatError, match=r"safetensors '.*x.safetensors': cannot read"):
        st.load(str(path))
    still_loads(tmp_path)
