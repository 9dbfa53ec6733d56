"""What tests/test_aot_cache.py shares with the child processes it starts: the tiny model (one
source text, run here and in every child), the entry layout (parse and re-encode entries, so a
crafted entry can carry valid checksums), child runners (plain, and under strace to inject
syscall faults and hold a syscall to make a race certain) and a small pure-Python BLAKE3."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

# The model, as source: exec'd here and prepended to every child script, so the parent and the
# children build exactly the same graph, params and inputs.
MODEL_SRC = textwrap.dedent(
    """
    import numpy as np
    import rlx

    def build_graph():
        g = rlx.Graph("aot_tiny", dims={"batch": (1, 64)})
        x = g.input("x", ("batch", 8))
        h = g.linear(x, g.param("w", (8, 16)), g.param("b", (16,)), activation="gelu")
        g.output("y", g.softmax(h, axis=-1))
        return g

    GRAPH = build_graph()
    _rng = np.random.default_rng(1234)
    PARAMS = {
        "w": (_rng.standard_normal((8, 16)) * 0.5).astype(np.float32),
        "b": (_rng.standard_normal(16) * 0.1).astype(np.float32),
    }

    def feed(batch):
        return np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)

    def compile_run(aot_dir, batch=3, **options):
        \"\"\"A fresh pipeline on `aot_dir`: (output bytes, stats).\"\"\"
        pipe = rlx.ModelCompilePipeline(GRAPH, aot_dir=aot_dir, **options)
        pipe.bind_params(PARAMS)
        y = pipe.get_or_compile(batch=batch).run(x=feed(batch))["y"]
        return y.tobytes(), pipe.stats
    """
)

_model: dict = {}
exec(MODEL_SRC, _model)
GRAPH, PARAMS, feed, compile_run = _model["GRAPH"], _model["PARAMS"], _model["feed"], _model["compile_run"]

# -- the entry file (crates/rlx-runtime/src/aot/format.rs) -----------------------------------------

MAGIC = b"RLXAOT\0\n"
FIXED = 8 + 4 + 4 + 8 + 32 + 32
FORMAT = 2  # crates/rlx-runtime/src/aot/format.rs


def split_entry(data: bytes) -> Tuple[str, bytes]:
    """(key text, payload) of an intact entry."""
    assert data[:8] == MAGIC, data[:8]
    key_len = struct.unpack_from("<I", data, 12)[0]
    return data[FIXED : FIXED + key_len].decode(), data[FIXED + key_len :]


def encode_entry(key: str, payload: bytes, version: int = FORMAT) -> bytes:
    """An entry with valid lengths and checksums (what format::encode writes)."""
    k = key.encode()
    fields = MAGIC + struct.pack("<IIQ", version, len(k), len(payload)) + blake3(payload)
    return fields + blake3(fields + k) + k + payload


def label_of(key: str) -> str:
    """'template' or 'variant {batch=3}'."""
    kind = re.search(r"kind=(\w+)", key).group(1)
    binding: Optional[re.Match] = re.search(r"binding=(\{[^}]*\})", key)
    return kind if kind == "template" else f"{kind} {binding.group(1) if binding else '?'}"


def entries(d: Path) -> Dict[str, Path]:
    """The entries in `d` by label (only intact ones can be labelled)."""
    out = {}
    for p in sorted(Path(d).glob("*.rlx")):
        out[label_of(split_entry(p.read_bytes())[0])] = p
    return out


# -- running children ------------------------------------------------------------------------------

def run_child(tmp_path, body, *args, timeout=60, preexec_fn=None):
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    script = scripts / f"child{len(list(scripts.iterdir()))}.py"
    script.write_text(MODEL_SRC + textwrap.dedent(body))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, preexec_fn=preexec_fn)


CHILD_REPORT = """
import hashlib, json, sys
y, s = compile_run(sys.argv[1])
s = {k: (str(v) if k == "aot_dir" else v) for k, v in s.items()}
print(json.dumps({"sha": hashlib.sha256(y).hexdigest(), "stats": s}))
"""


def fifo_watch(path: Path, seconds=5.0):
    """A timer that, if something blocks opening the FIFO `path` for reading, unblocks it (and
    records that it had to): a hang becomes a failure, not a stuck suite."""
    opened = []

    def unblock():
        try:
            if stat.S_ISFIFO(os.stat(path).st_mode):
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only with a reader
                opened.append(path)
                os.close(fd)
        except OSError:
            pass

    t = threading.Timer(seconds, unblock)
    t.daemon = True
    t.start()
    return t, opened


STRACE = shutil.which("strace")


def strace_works():
    if STRACE is None:
        return False
    try:
        return subprocess.run([STRACE, "-qq", "-o", os.devnull, sys.executable, "-c", "pass"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False



STRACED_CHILD = """
import json, sys
y, s = compile_run(sys.argv[1])
s = {k: (str(v) if k == "aot_dir" else v) for k, v in s.items()}
print(json.dumps({"y": y.hex(), "stats": s}))
"""


def straced(tmp_path, d, strace_args, during=None, path=None, when=1, delay_us=1_000_000, hang_after=None,
            unhang=None):
    """Runs STRACED_CHILD on `d` under strace with `strace_args`. With `during`, the `when`-th
    openat of `path` is held for `delay_us` at syscall entry and `during()` runs meanwhile (the
    race, made certain). With `hang_after`, a child not done that many seconds after `during()`
    counts as hung: it is unblocked by `unhang()` where possible, else killed. Returns
    (stats, output bytes, stderr, hung)."""
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    script = scripts / "straced.py"
    script.write_text(MODEL_SRC + textwrap.dedent(STRACED_CHILD))
    log = tmp_path / "strace.log"
    cmd = [STRACE, "-qq", "-f", "-e", "signal=none", "-o", str(log)]
    if during is not None:
        cmd += ["-P", str(path), "-e", "trace=openat", "-e", f"inject=openat:delay_enter={delay_us}:when={when}"]
    cmd += [*strace_args, sys.executable, str(script), str(d)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    hung = False
    try:
        if during is not None:
            deadline = time.time() + 60
            while True:  # until the held openat shows in the log, unfinished
                calls = [ln for ln in log.read_text().splitlines() if "openat(" in ln] if log.exists() else []
                if len(calls) >= when and " = " not in calls[when - 1]:
                    break
                assert p.poll() is None and time.time() < deadline, (calls, p.poll())
                time.sleep(0.005)
            during()
        try:
            out, err = p.communicate(timeout=hang_after or 60)
        except subprocess.TimeoutExpired:
            hung = True
            if unhang is not None:
                unhang()
            try:
                out, err = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0 or hung, (p.returncode, err[-2000:])
    if not out.strip():
        return None, None, err, hung
    res = json.loads(out.strip().splitlines()[-1])
    return res["stats"], bytes.fromhex(res["y"]), err, hung


# -- BLAKE3 (hash mode, any length), only to give crafted entries valid checksums -----------------

_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_PERM = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_M = 0xFFFFFFFF
_START, _END, _PARENT, _ROOT = 1, 2, 4, 8
_G = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
      (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))


def _compress(cv, m, counter, block_len, flags):
    s = list(cv) + list(_IV[:4]) + [counter & _M, (counter >> 32) & _M, block_len, flags]
    m = list(m)
    for r in range(7):
        for i, (a, b, c, d) in enumerate(_G):
            x, y = m[2 * i], m[2 * i + 1]
            s[a] = (s[a] + s[b] + x) & _M
            s[d] ^= s[a]
            s[d] = (s[d] >> 16 | s[d] << 16) & _M
            s[c] = (s[c] + s[d]) & _M
            s[b] ^= s[c]
            s[b] = (s[b] >> 12 | s[b] << 20) & _M
            s[a] = (s[a] + s[b] + y) & _M
            s[d] ^= s[a]
            s[d] = (s[d] >> 8 | s[d] << 24) & _M
            s[c] = (s[c] + s[d]) & _M
            s[b] ^= s[c]
            s[b] = (s[b] >> 7 | s[b] << 25) & _M
        if r < 6:
            m = [m[i] for i in _PERM]
    return [s[i] ^ s[i + 8] for i in range(8)]


def _chunk(data, counter, root):
    blocks = [data[i : i + 64] for i in range(0, len(data), 64)] or [b""]
    cv = list(_IV)
    for i, b in enumerate(blocks):
        last = i == len(blocks) - 1
        flags = (_START if i == 0 else 0) | (_END if last else 0) | (_ROOT if root and last else 0)
        words = struct.unpack("<16I", b.ljust(64, b"\0"))
        cv = _compress(cv, words, counter, len(b), flags)
    return cv


def _node(data, first_chunk, root):
    if len(data) <= 1024:
        return _chunk(data, first_chunk, root)
    left = 1024
    while left * 2 < len(data):
        left *= 2
    cv = _node(data[:left], first_chunk, False) + _node(data[left:], first_chunk + left // 1024, False)
    return _compress(_IV, cv, 0, 64, _PARENT | (_ROOT if root else 0))


def blake3(data: bytes) -> bytes:
    return struct.pack("<8I", *_node(bytes(data), 0, True))


# Official test vectors (input: bytes i % 251), checked by the suite before it trusts this code.
BLAKE3_VECTORS = {
    0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    1024: "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
    1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    3072: "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2",
}
