"""CPU threads for the app's model work, shared fairly by every session of one server.

torch's thread count is process-wide: by default each job uses one thread per core, so two
sessions (or a session and another program) run 2x the threads the cores can hold, and
OpenMP's spinning workers slow everything down many times over (Ask took 20-44 s instead of
1.6-2 s on a 2-core machine with two sessions). The server therefore sets, once:

* RMT_LENS_THREADS: torch threads per job (default: half the CPUs this process may use, at least 1);
* RMT_LENS_JOBS: model jobs that run at once (default: CPUs // threads, at least 1).

Every piece of model work (a segment of a run, finding an answer, an attribution, an
intervention, recomputed attention) runs inside `heavy()`, which waits for one of the
RMT_LENS_JOBS places, so threads x jobs never exceeds the CPUs. A long run takes its place one
segment at a time, so a short job of another session waits at most one segment.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, Iterator

THREADS_ENV = "RMT_LENS_THREADS"
JOBS_ENV = "RMT_LENS_JOBS"

_lock = threading.Lock()
_slots: threading.BoundedSemaphore | None = None
_settings: tuple[int, int] | None = None
_held = threading.local()  # how deep this thread is inside heavy() (a nested call holds no second place)


def cpus() -> int:
    """CPUs this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={raw!r} is not a positive whole number; fix or unset it.")
    return value


def settings() -> tuple[int, int]:
    """(torch threads per job, jobs at once) from $RMT_LENS_THREADS / $RMT_LENS_JOBS or the defaults
    above. Raises ValueError naming the variable when one is not a positive whole number."""
    n = cpus()
    threads = _env_int(THREADS_ENV) or max(1, n // 2)
    jobs = _env_int(JOBS_ENV) or max(1, n // threads)
    return threads, jobs


def configure() -> tuple[int, int]:
    """Once per process: torch's thread count and the job places (later calls return the same)."""
    global _slots, _settings
    with _lock:
        if _settings is None:
            import torch

            threads, jobs = settings()
            torch.set_num_threads(threads)
            _slots = threading.BoundedSemaphore(jobs)
            _settings = (threads, jobs)
        return _settings


@contextlib.contextmanager
def heavy(waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold one of the job places while the block runs; `waiting()` is called first when none is free.
    Re-entrant: a heavy() inside another in the same thread takes no second place."""
    configure()
    assert _slots is not None
    depth = getattr(_held, "depth", 0)
    if depth == 0 and not _slots.acquire(blocking=False):
        if waiting is not None:
            waiting()
        _slots.acquire()
    _held.depth = depth + 1
    try:
        yield
    finally:
        _held.depth = depth
        if depth == 0:
            _slots.release()
