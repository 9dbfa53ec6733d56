"""Read safetensors files with the header checked first, and bind their weights zero-copy.

The header is validated here rather than trusted to a library: the JSON must parse without
duplicate names (or duplicate keys inside an entry) and without deep nesting, every dtype must be
a known name, every shape a list of non-negative ints numpy can hold (zero dims included), every
span a pair of ints inside the file that matches the shape x dtype size and overlaps no other
span. Any violation is a ``ModelFormatError`` naming the tensor, raised before a single tensor is
mapped; a missing or unreadable file is one too.

Two modes:

* ``mode="mmap"`` (default): tensors are read-only numpy views of a memory map of the file, so
  binding them to a pipeline copies nothing. Truncating or rewriting the file while it is mapped
  makes the process die with SIGBUS (an OS rule for memory maps): use ``mode="copy"`` for files
  that may change underneath you.
* ``mode="copy"``: the file is read into memory once; tensors are views of that buffer.
"""

from __future__ import annotations

import json
import mmap
import os
from typing import Callable, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from rlx._rlx import ModelFormatError

__all__ = ["SafeTensors", "load", "save", "MAX_HEADER_BYTES"]

#: Headers longer than this are rejected (the format's reference reader uses the same bound).
MAX_HEADER_BYTES = 100 * 1024 * 1024

#: numpy cannot describe an array whose dims (zeros counted as 1) x itemsize reach this.
_MAX_SPAN = 2**63

_DTYPES: Dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class _Obj(dict):
    """A JSON object that remembers its first duplicate key (reported with its context)."""

    dup: Optional[str] = None


def _no_duplicates(pairs: list) -> dict:
    seen = _Obj()
    for key, value in pairs:
        if key in seen and seen.dup is None:
            seen.dup = key
        seen[key] = value
    return seen


def parse_header(head: bytes, file_size: int) -> Tuple[int, Dict[str, Tuple[np.dtype, Tuple[int, ...], int, int]]]:
    """Validates a header; returns (data start, name -> (dtype, shape, begin, end)).

    ``head`` holds at least the 8 length bytes and the JSON that follows them.
    """
    if file_size < 8 or len(head) < 8:
        raise ModelFormatError(f"safetensors: file of {file_size} bytes is too short for a header")
    n = int.from_bytes(head[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise ModelFormatError(f"safetensors: header of {n} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    if 8 + n > file_size:
        raise ModelFormatError(f"safetensors: header of {n} bytes is longer than the file ({file_size} bytes)")
    try:
        raw = json.loads(head[8 : 8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFormatError(f"safetensors: header is not valid JSON: {e}") from None
    except RecursionError:
        raise ModelFormatError("safetensors: header JSON is nested too deeply") from None
    if not isinstance(raw, dict):
        raise ModelFormatError("safetensors: header must be a JSON object")
    if getattr(raw, "dup", None) is not None:
        raise ModelFormatError(f"safetensors header: duplicate tensor name {getattr(raw, 'dup')!r}")
    data_start, data_size = 8 + n, file_size - 8 - n
    entries: Dict[str, Tuple[np.dtype, Tuple[int, ...], int, int]] = {}
    for name, spec in raw.items():
        if name == "__metadata__":
            if not isinstance(spec, dict) or getattr(spec, "dup", None) is not None or not all(isinstance(v, str) for v in spec.values()):
                raise ModelFormatError("safetensors: __metadata__ must map strings to strings")
            continue
        entries[name] = _entry(name, spec, data_size)
    spans = sorted((b, e, name) for name, (_, _, b, e) in entries.items() if e > b)
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ModelFormatError(f"safetensors: tensors {n0!r} and {n1!r} overlap at bytes [{b1}, {e0})")
    return data_start, entries


def _entry(name: str, spec: object, data_size: int) -> Tuple[np.dtype, Tuple[int, ...], int, int]:
    if not isinstance(spec, dict):
        raise ModelFormatError(f"safetensors: entry {name!r} must be an object")
    if getattr(spec, "dup", None) is not None:
        raise ModelFormatError(f"safetensors: tensor {name!r} has duplicate key {getattr(spec, 'dup')!r}")
    code = spec.get("dtype")
    dtype = _DTYPES.get(code) if isinstance(code, str) else None
    if dtype is None:
        raise ModelFormatError(f"safetensors: tensor {name!r} has unsupported dtype {spec.get('dtype')!r}")
    shape, offsets = spec.get("shape"), spec.get("data_offsets")
    ints = lambda v, n=None: isinstance(v, list) and (n is None or len(v) == n) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v
    )
    if not ints(shape):
        raise ModelFormatError(f"safetensors: tensor {name!r} has invalid shape {shape!r} (a list of non-negative ints)")
    if not ints(offsets, 2) or offsets[0] > offsets[1]:  # type: ignore[index]
        raise ModelFormatError(f"safetensors: tensor {name!r} has invalid data_offsets {offsets!r} (a pair of ints, begin <= end)")
    begin, end = offsets  # type: ignore[misc]
    if end > data_size:
        raise ModelFormatError(f"safetensors: tensor {name!r} span [{begin}, {end}) is past the data ({data_size} bytes)")
    numel, span = 1, dtype.itemsize
    for d in shape:  # type: ignore[union-attr]
        numel *= d
        span *= max(d, 1)
    if span >= _MAX_SPAN:
        raise ModelFormatError(f"safetensors: tensor {name!r} shape {shape} is too large for an array")
    if numel * dtype.itemsize != end - begin:
        raise ModelFormatError(
            f"safetensors: tensor {name!r} {shape} x {dtype} needs {numel * dtype.itemsize} bytes, span has {end - begin}"
        )
    return dtype, tuple(shape), begin, end  # type: ignore[arg-type]


class SafeTensors(Mapping[str, np.ndarray]):
    """Validated tensors of one file, as read-only numpy arrays (views, never copies)."""

    def __init__(self, path: str, mode: str = "mmap", rename: Optional[Callable[[str], Optional[str]]] = None):
        if mode not in ("mmap", "copy"):
            raise ValueError(f"mode must be 'mmap' or 'copy', got {mode!r}")
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise ModelFormatError(f"safetensors: path must be a str or os.PathLike, got {type(path).__name__}")
        self.path, self.mode = os.fsdecode(path), mode
        try:
            buf, data_start, entries = self._read()
        except OSError as e:
            raise ModelFormatError(f"safetensors {self.path!r}: cannot read: {e.strerror or e}") from e
        self._buffer = buf
        whole = np.frombuffer(buf, dtype=np.uint8)  # type: ignore[call-overload]
        whole.flags.writeable = False
        self._arrays: Dict[str, np.ndarray] = {}
        for name, (dtype, shape, begin, end) in entries.items():
            key = rename(name) if rename else name
            if key is None:
                continue
            if key in self._arrays:
                raise ModelFormatError(f"safetensors: rename maps two tensors to {key!r}")
            raw = whole[data_start + begin : data_start + end]
            self._arrays[key] = raw.view(dtype).reshape(shape)

    def _read(self) -> Tuple[object, int, Dict[str, Tuple[np.dtype, Tuple[int, ...], int, int]]]:
        """The validated header and the buffer (a map or a copy) its spans index."""
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if len(head) == 8 and 8 + n <= size and n <= MAX_HEADER_BYTES:
                head += f.read(n)
            data_start, entries = parse_header(head, size)
            if self.mode == "mmap":
                buf: object = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            else:
                f.seek(0)
                buf = bytearray(f.read())
        # The spans were checked against the size seen first; a file that changed size since
        # (another process writing or truncating it) no longer matches its header.
        if len(buf) != size:  # type: ignore[arg-type]
            raise ModelFormatError(
                f"safetensors {self.path!r}: the file changed size while it was read "
                f"({size} bytes, then {len(buf)}); is another process writing it?"  # type: ignore[arg-type]
            )
        return buf, data_start, entries

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def __repr__(self) -> str:
        return f"SafeTensors({self.path!r}, mode={self.mode!r}, {len(self)} tensors, {self.nbytes} bytes)"


def load(path: str, mode: str = "mmap", rename: Optional[Callable[[str], Optional[str]]] = None) -> SafeTensors:
    """Opens ``path`` after validating its header. ``rename`` maps file names to the names the
    graph uses (return None to skip a tensor)."""
    return SafeTensors(path, mode=mode, rename=rename)


def save(path: str, tensors: Mapping[str, np.ndarray]) -> None:
    """Writes ``tensors`` (name -> array of a safetensors dtype) to ``path`` in the safetensors
    layout (8-byte little-endian header length, JSON header, 8-byte-aligned data), through a
    temp file in the same directory renamed into place."""
    codes = {v: k for k, v in _DTYPES.items()}
    header: Dict[str, object] = {}
    arrays = []
    offset = 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr)
        code = codes.get(a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype)
        if code is None or a.dtype.byteorder == ">":
            raise ModelFormatError(f"safetensors.save: {name!r} has dtype {a.dtype}, which safetensors has no code for")
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        arrays.append(a)
        offset += a.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-(8 + len(head)) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(len(head).to_bytes(8, "little"))
            f.write(head)
            for a in arrays:
                f.write(a.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
