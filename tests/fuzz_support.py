"""The harness both fuzz files share: the example budget (RLX_FUZZ_EXAMPLES), the hang
watchdog (RLX_FUZZ_TIMEOUT) and a module fixture that bounds each run's memory. Import it only
after `pytest.importorskip("hypothesis")`."""

from __future__ import annotations

import faulthandler
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

# -- budget ------------------------------------------------------------------------------------

_CI_EXAMPLES = 1000


def _examples() -> int:
    raw = os.environ.get("RLX_FUZZ_EXAMPLES", "")
    try:
        return max(1, int(raw)) if raw.strip() else _CI_EXAMPLES
    except ValueError:
        raise pytest.UsageError(f"RLX_FUZZ_EXAMPLES must be an int, got {raw!r}") from None


settings.register_profile(
    "rlx-fuzz",
    max_examples=_examples(),
    deadline=None,
    derandomize=False,
    database=None,  # nothing written into the repo; failures print the seed and a blob instead
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FUZZ = settings.get_profile("rlx-fuzz")


def budget(share: float) -> settings:
    """The profile with `share` of the examples (under RLX_FUZZ_EXAMPLES, every test gets N)."""
    n = _examples() if os.environ.get("RLX_FUZZ_EXAMPLES") else max(1, int(_CI_EXAMPLES * share))
    return settings(FUZZ, max_examples=n)


_TIMEOUT = float(os.environ.get("RLX_FUZZ_TIMEOUT", "60"))
_watchdog_fd = None


def watchdog() -> None:
    """(Re)arms the hang watchdog for one example: past RLX_FUZZ_TIMEOUT seconds every thread's
    stack goes to the real stderr (not pytest's capture) and the process exits."""
    if _watchdog_fd is not None:
        faulthandler.dump_traceback_later(_TIMEOUT, exit=True, file=_watchdog_fd)


@pytest.fixture(autouse=True, scope="module")
def _bounded_memory_and_time(request):
    """A 256 MiB budget per run (so no variant allocates much) and the watchdog's stderr."""
    global _watchdog_fd
    try:  # the copy of stderr pytest's faulthandler plugin made before capturing began
        from _pytest.faulthandler import fault_handler_stderr_fd_key

        _watchdog_fd = request.config.stash[fault_handler_stderr_fd_key]
    except (ImportError, KeyError):
        _watchdog_fd = sys.__stderr__.fileno()
    old = os.environ.get("RLX_MEMORY_LIMIT")
    os.environ["RLX_MEMORY_LIMIT"] = str(256 << 20)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        _watchdog_fd = None
        if old is None:
            os.environ.pop("RLX_MEMORY_LIMIT", None)
        else:
            os.environ["RLX_MEMORY_LIMIT"] = old
