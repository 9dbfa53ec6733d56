"""The harness both fuzz files share: the example budget (RLX_FUZZ_EXAMPLES), the hang
watchdog (RLX_FUZZ_TIMEOUT), a module fixture that bounds each run's memory, and the property
itself (`attempt`: only rlx errors may escape). Import it only after
`pytest.importorskip("hypothesis")`."""

from __future__ import annotations

import faulthandler
import os
import sys
import traceback

import pytest
from hypothesis import HealthCheck, event, settings

import rlx

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


# -- the property ------------------------------------------------------------------------------

VERBOSE = os.environ.get("RLX_FUZZ_VERBOSE") == "1"  # error messages in the statistics' events

#: Known rlx bugs the fuzzers may hit, by name: predicate(step, exception) -> tolerated. Empty:
#: every bug found is fixed and kept as a regression test.
KNOWN: dict = {}


class Violation(AssertionError):
    pass


def attempt(step: str, fn, *args, allow: tuple = (), **kwargs):
    """(True, result) or (False, the rlx error); fails on any other exception."""
    try:
        return True, fn(*args, **kwargs)
    except (rlx.RlxError, MemoryError) as e:
        event(f"{step}: {type(e).__name__}" + (f": {str(e)[:70]}" if VERBOSE else ""))
        return False, e
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # PanicException derives from BaseException
        if allow and isinstance(e, allow):
            event(f"{step}: {type(e).__name__} (documented)")
            return False, e
        for name, matches in KNOWN.items():
            if matches(step, e):
                event(f"known bug tolerated: {name}")
                return False, e
        raise violation(step, e) from None


def violation(what: str, e: BaseException) -> Violation:
    """The failure for `what` raising `e`, which is not an rlx error, with its traceback."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return Violation(f"{what} raised {type(e).__module__}.{type(e).__qualname__} (not an rlx error): {e}\n{tb}")
