"""Runs pytest under valgrind memcheck and reports the errors whose stack passes through rlx.

    python tools/memcheck.py [pytest args...]        (make memcheck)

CPython, numpy and onnxruntime have their own valgrind noise (uninitialised reads in their
allocators and SIMD code), so the verdict counts only error blocks with an rlx frame (the
`_rlx` extension module or an `rlx_*` crate); the others are summed and shown. Valgrind's
synthetic CPU has no AVX-512, so rlx detects and runs its AVX2 path (and RLX_ISA is cleared).
Exit status: 0 when no error touches rlx, 1 otherwise, 2 when valgrind is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

# One error block starts with "==PID== <kind>" and ends at a blank "==PID== " line.
KINDS = re.compile(r"^==\d+== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|"
                   r"Syscall param|Mismatched free|Source and destination overlap|"
                   r"Argument .* of function)")
RLX_FRAME = re.compile(r"_rlx\.|rlx_(runtime|ir|opt|py)::|/crates/rlx-")


def blocks(log: str):
    cur: list[str] = []
    for line in log.splitlines():
        if KINDS.match(line):
            if cur:
                yield cur
            cur = [line]
        elif cur:
            if re.match(r"^==\d+== ?$", line):
                yield cur
                cur = []
            else:
                cur.append(line)
    if cur:
        yield cur


def main(argv: list[str]) -> int:
    if shutil.which("valgrind") is None:
        print("memcheck: valgrind is not installed (apt-get install valgrind)")
        return 2
    args = argv or ["tests"]
    env = dict(os.environ, PYTHONMALLOC="malloc", RLX_MEMCHECK="1", RLX_FUZZ_EXAMPLES=os.environ.get("RLX_FUZZ_EXAMPLES", "10"))
    env.pop("RLX_ISA", None)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "valgrind.log")
        cmd = ["valgrind", "--tool=memcheck", "--error-limit=no", "--leak-check=no",
               "--track-origins=no", "--trace-children=no", f"--log-file={log_path}",
               sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
        print("memcheck:", " ".join(cmd), flush=True)
        t = time.monotonic()
        rc = subprocess.call(cmd, env=env)
        took = time.monotonic() - t
        with open(log_path, errors="replace") as f:
            log = f.read()
    ours, other = [], 0
    for b in blocks(log):
        if any(RLX_FRAME.search(line) for line in b):
            ours.append(b)
        else:
            other += 1
    summary = re.findall(r"ERROR SUMMARY: (\d+) errors from (\d+) contexts", log)
    print(f"memcheck: pytest exit {rc} after {took:.0f} s under valgrind; "
          f"error blocks with an rlx frame: {len(ours)}; without: {other}; "
          f"valgrind summary: {summary[-1] if summary else 'none'}")
    for b in ours[:20]:
        print("\n".join(b[:30]), "\n")
    return 0 if not ours and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
