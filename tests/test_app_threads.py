"""app.threads: torch threads per job and the job places every session's model work shares."""
from __future__ import annotations

import threading
import time

import pytest

from app import threads


@pytest.mark.parametrize("cpus, expected", [(1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (16, (8, 2))])
def test_default_threads_and_jobs_fill_the_cpus_once(monkeypatch, cpus, expected):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.delenv(threads.JOBS_ENV, raising=False)
    monkeypatch.setattr(threads, "cpus", lambda: cpus)
    per_job, jobs = threads.settings()
    assert (per_job, jobs) == expected and per_job * jobs <= cpus


def test_the_variables_set_them_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv(threads.THREADS_ENV, "4")
    monkeypatch.setenv(threads.JOBS_ENV, "3")
    assert threads.settings() == (4, 3)
    monkeypatch.setenv(threads.THREADS_ENV, "0")
    with pytest.raises(ValueError, match=threads.THREADS_ENV):
        threads.settings()


def test_heavy_runs_at_most_jobs_at_once_and_says_it_waits(monkeypatch):
    monkeypatch.setattr(threads, "_settings", (1, 1))
    monkeypatch.setattr(threads, "_slots", threading.BoundedSemaphore(1))
    running, most, waited = [0], [0], []
    lock = threading.Lock()

    def job(i: int) -> None:
        with threads.heavy(lambda: waited.append(i)):
            with threads.heavy():  # nested in the same thread: no second place, no deadlock
                with lock:
                    running[0] += 1
                    most[0] = max(most[0], running[0])
                time.sleep(0.05)
                with lock:
                    running[0] -= 1

    workers = [threading.Thread(target=job, args=(i,)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert most[0] == 1 and len(waited) >= 1  # one at a time; the others were told they wait
    # negative control: two places let two run at once
    monkeypatch.setattr(threads, "_slots", threading.BoundedSemaphore(2))
    running[0], most[0] = 0, 0
    workers = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert most[0] == 2
