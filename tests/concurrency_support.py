"""What the thread and fork suites share: threads started together and joined under a hang
watchdog, and waiting for a forked child under one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from typing import Callable, Optional, Sequence, TypeVar

import pytest

T = TypeVar("T")


def _stacks(threads: Sequence[threading.Thread]) -> str:
    frames = sys._current_frames()
    parts = []
    for t in threads:
        frame = frames.get(t.ident) if t.ident is not None else None
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (no frame)\n"
        parts.append(f"--- {t.name} ---\n{stack}")
    return "".join(parts)


def parallel(
    worker: Callable[[int], object],
    n: int,
    *,
    timeout: float = 60.0,
    background: Sequence[Callable[[threading.Event], object]] = (),
    during: Optional[Callable[[], T]] = None,
) -> Optional[T]:
    """Runs `worker(i)` for i in range(n) on n threads released together by a barrier, and each
    callable of `background` on a thread of its own as `bg(stop)`, where `stop` is set once the
    workers have ended. `during()` runs on the calling thread meanwhile; its result is returned.

    Every thread is joined against one deadline `timeout` seconds from the start: a thread still
    alive then is a hang, which fails the test with the Python stacks of the stuck threads
    (they are daemons, so a hang cannot keep the interpreter from exiting). The first exception
    raised on any thread is re-raised here."""
    errors: list[BaseException] = []
    stop = threading.Event()
    barrier = threading.Barrier(n)

    def guard(fn: Callable[..., object], arg: object) -> None:
        try:
            fn(arg)
        except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
            errors.append(e)

    def body(i: int) -> None:
        barrier.wait(timeout)
        worker(i)

    workers = [threading.Thread(target=guard, args=(body, i), name=f"worker-{i}", daemon=True) for i in range(n)]
    others = [
        threading.Thread(target=guard, args=(bg, stop), name=f"background-{j}", daemon=True)
        for j, bg in enumerate(background)
    ]
    deadline = time.monotonic() + timeout
    for t in others + workers:
        t.start()
    try:
        result = during() if during is not None else None
    finally:
        for t in workers:
            t.join(max(0.0, deadline - time.monotonic()))
        stop.set()
        for t in others:
            t.join(max(0.0, deadline - time.monotonic()))
    alive = [t for t in others + workers if t.is_alive()]
    if alive:
        pytest.fail(f"hang: {len(alive)} thread(s) still running after {timeout:.0f} s\n{_stacks(alive)}")
    if errors:
        raise errors[0]
    return result


def _stacks(pid: int) -> str:
    """The native stacks of a hung process (gdb, when installed), to tell where it waits."""
    if shutil.which("gdb") is None:
        return "(no gdb to show the hung child's stacks)"
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 25"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"(gdb failed: {e})"
    return "\n".join(line for line in out.splitlines() if line.startswith(("#", "Thread")))


def expect_clean_exit(pid: int, hang: str, timeout: float = 60.0) -> None:
    """Waits for the forked child `pid`; a child still running after `timeout` is killed and
    `hang` fails the test; any exit status other than 0 fails it too."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            stacks = _stacks(pid)
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"{hang}\n{stacks}")
        time.sleep(0.005)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
