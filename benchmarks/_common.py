"""Helpers shared by bench_gemm.py and bench_minilm.py: machine description, timing."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import time
from importlib import metadata
from typing import Callable, List, Optional, Tuple


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else lscpu, else platform."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags_summary() -> str:
    """The widest x86 SIMD extensions the CPU reports (the model name alone can be generic)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
    except OSError:
        return ""
    keep = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16"]
    return " ".join(k for k in keep if k in flags)


def rlx_isa() -> str:
    """The kernel path rlx picked (`rlx.cpu_isa()`), or "unknown" on builds without it."""
    import rlx

    fn = getattr(rlx, "cpu_isa", None)
    if fn is None:
        return "unknown"
    try:
        return str(fn() if callable(fn) else fn)
    except Exception as e:  # a probe must never stop the benchmark
        return f"unknown ({e})"


def version(dist: str) -> str:
    """A distribution's installed version without importing it (imports can start threads)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def warn_openblas_overrides() -> None:
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"WARNING: {var}={os.environ[var]} is set; numpy/OpenBLAS may not run its best "
                  f"kernel. Run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`.")


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat, all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    """CPU seconds of this process plus its waited-for children (a finished worker, say)."""
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


class Background:
    """`with Background() as bg: ...` then `bg.cores`: the cores' worth of CPU that OTHER
    processes used during the block (machine busy time minus ours and our children's), i.e.
    load that competes with the benchmark. ~0 on a quiet machine."""

    cores = 0.0

    def __enter__(self) -> "Background":
        try:
            self._t, self._busy, self._own = time.perf_counter(), _machine_busy_s(), _own_s()
        except OSError:
            self._t = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._t is not None:
            wall = time.perf_counter() - self._t
            other = (_machine_busy_s() - self._busy) - (_own_s() - self._own)
            self.cores = max(0.0, other / wall) if wall > 0 else 0.0


def cpu_busy(interval: float = 0.5) -> float:
    """Background load (cores) over `interval` while this process sleeps."""
    with Background() as bg:
        time.sleep(interval)
    return bg.cores


BUSY_LIMIT = 0.25  # cores; above this the machine is not quiet enough for trustworthy numbers


def header(title: str, packages: List[str]) -> None:
    """Prints what a reader needs to judge the numbers: CPU, cores, rlx ISA path, versions."""
    print(title)
    flags = cpu_flags_summary()
    print(f"CPU: {cpu_model()}" + (f"  [{flags}]" if flags else ""))
    print(f"cores: {os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable by this process")
    print(f"rlx ISA path: {rlx_isa()}")
    print("versions: " + ", ".join(f"{p} {version(p)}" for p in packages))
    warn_openblas_overrides()
    busy = cpu_busy(1.0)
    print(f"background load: {busy:.2f} cores busy" + (
        "  WARNING: the machine is not idle; timings will be skewed" if busy > BUSY_LIMIT else ""))


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def adaptive_median(fn: Callable[[], object], warmup: int = 3, target_s: float = 1.0,
                    min_n: int = 5, max_n: int = 50) -> Tuple[float, int]:
    """Median seconds over N timed calls after `warmup` untimed ones. N is chosen from the last
    warmup call so the timed phase lasts about `target_s`, clamped to [min_n, max_n]."""
    last = 0.0
    for _ in range(warmup):
        last = timed(fn)
    n = max(min_n, min(max_n, int(target_s / max(last, 1e-9))))
    return statistics.median(timed(fn) for _ in range(n)), n


def best_time(fn: Callable[[], object], repeat: int = 7) -> float:
    fn()
    return min(timed(fn) for _ in range(repeat))


def fmt_ms(t: Optional[float]) -> str:
    return "n/a" if t is None else f"{t * 1e3:.2f}"


def fmt_ratio(a: Optional[float], b: Optional[float]) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}"


def rows_table(head: List[str], rows: List[List[str]]) -> str:
    """Right-aligned plain-text table with a separator under the header."""
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: " | ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths)] + [line(r) for r in rows])

