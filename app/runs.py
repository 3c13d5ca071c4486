"""Runs that belong to the session, not to one script run.

A RunJob traces a document in a background thread (rmt_core does the work; nothing here
draws), so switching pages or touching a widget never cancels it: every page's script run
ends by watching the job (app.sidebar.watch_run) and shows its progress. Only Cancel stops it.

Runs wait in one server-wide queue (RunQueue: first come, first served, settings.workers()
at once); a waiting job shows its place in the queue as its phase. A demo is traced once per
server and model (shared_demo_job) and its trace shared read-only by every session.

The per-session store (one per server, in memory) keeps each session's document, running
job and last finished trace under a random token that the page's URL carries (?doc=...),
bound to the browser that made it: an HttpOnly cookie app/server.py sets (BROWSER_COOKIE). A
holder of the URL in another browser gets a fresh session; nobody reads or writes another's
work. It is bounded by memory and age (settings.store_bytes / store_seconds), least recently
used dropped first; demos never enter it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

import rmt_core
from rmt_core import RMTLensError
from rmt_core.explain import answers as rmt_answers

from app import settings, threads
from app.services import app_message

log = logging.getLogger("rmt_lens.app")
BROWSER_COOKIE = "rmt_lens_browser"  # set by app/server.py: HttpOnly, SameSite=Strict
DEMO_JOBS = 16  # shared demo traces kept (3 demos x the models load_model keeps)


class RunQueue:
    """First come, first served: at most `workers` jobs run; the others wait their turn."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._cond = threading.Condition()
        self._waiting: list[RunJob] = []
        self._running = 0

    def enter(self, job: "RunJob") -> bool:
        """Block until `job` may run (True), or until it is cancelled while waiting (False).
        While it waits, job.phase says how many runs are ahead of it."""
        with self._cond:
            self._waiting.append(job)
            while True:
                if job.cancelled:
                    self._waiting.remove(job)
                    self._cond.notify_all()
                    return False
                if self._running < self.workers and self._waiting[0] is job:
                    self._waiting.pop(0)
                    self._running += 1
                    self._cond.notify_all()
                    return True
                ahead = self._waiting.index(job) + self._running
                job.phase = (f"Waiting for the server: {ahead} run{'s' if ahead != 1 else ''} ahead of this one "
                             f"(place {self._waiting.index(job) + 1} in the queue)")
                job.queued = self._waiting.index(job) + 1
                self._cond.wait(0.25)

    def leave(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def counts(self) -> tuple[int, int]:
        """(running, waiting)."""
        with self._cond:
            return self._running, len(self._waiting)


_queue: RunQueue | None = None
_queue_lock = threading.Lock()


def queue() -> RunQueue:
    """The server's run queue (settings.workers() at once)."""
    global _queue
    with _queue_lock:
        if _queue is None:
            _queue = RunQueue(settings.workers())
        return _queue


class RunJob:
    """Trace `text` with `model` in a thread; then read the answer if the text asks a question.

    Fields read by the pages (written only by the thread): done, total, phase, trace,
    answer, error, finished. cancel() stops after the current segment; the segments done are kept.
    """

    def __init__(self, model, document, text: str, question: str | None = None, window: int | None = None,
                 shared: bool = False) -> None:
        self.model = model
        self.window = window
        self.shared = shared  # a demo traced once for every session: nobody cancels it
        self.queued = 0  # place in the server's queue while waiting
        self.document = document
        self.text = text
        self.question = question
        self.done = 0
        self.total = 0
        self.phase = "Starting…"
        self.trace = None
        self.answer: rmt_answers.AskResult | None = None
        self.answer_error: str | None = None
        self.error: str | None = None
        self.finished = False
        self.collected: set[str] = set()  # the sessions that installed the result
        self.started = time.monotonic()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._work, name="rmt-lens-run", daemon=True)

    def start(self) -> "RunJob":
        self._thread.start()
        return self

    def cancel(self) -> None:
        if not self.shared:
            self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        return not self.finished

    def wait(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return self.finished

    def _waiting(self) -> None:
        self.phase = "Waiting for another session's model work to finish"

    def _work(self) -> None:
        if not queue().enter(self):
            self.phase = "Cancelled while waiting"
            self.finished = True
            return
        self.queued = 0
        self.phase = "Starting…"
        try:
            stream = rmt_core.trace_iter(self.model, self.text, progress=lambda done, total: not self._cancel.is_set())
            self.total = len(stream.bounds)
            stream.trace.meta.update({"document": self.document.name, "fact_spans": self.document.fact_spans,
                                      "answer": self.document.answer, "question": self.question})
            self.phase = "Tracing"
            records = iter(stream)
            while True:  # one segment per job place (app.threads): other sessions' work interleaves
                with threads.heavy(self._waiting):
                    record = next(records, None)
                if record is None:
                    break
                self.done = record.index + 1
                self.phase = "Tracing"
            self.trace = stream.trace
            if self.trace.complete:
                self.phase = "Finding the answer"
                try:
                    site = rmt_answers.answer_site(self.trace)
                    phase = "Finding the answer"
                    if site is not None and site.segment > 0:
                        from rmt_core.explain.attribution import estimate_through_seconds

                        n, seconds = estimate_through_seconds(self.trace, site.segment, self.window)
                        phase = (f"Finding the answer: through-memory attribution over {n} earlier segments "
                                 f"(estimated {seconds:.0f} s)")
                    self.phase = phase
                    with threads.heavy(self._waiting):
                        self.phase = phase
                        self.answer = rmt_answers.answer_from_trace(self.trace, max_segments=self.window)
                except RMTLensError as exc:
                    self.answer_error = app_message(exc)
        except RMTLensError as exc:
            self.error = app_message(exc)
        except Exception as exc:  # noqa: BLE001 - shown as one line; the traceback goes to the server log
            log.error("run failed:\n%s", traceback.format_exc())
            self.error = f"The run failed ({type(exc).__name__}: {exc}). The server log has the details."
        finally:
            queue().leave()
            self.finished = True


# ---------------------------------------------------------------------- shared demos
_demo_jobs: OrderedDict[tuple, RunJob] = OrderedDict()
_demo_lock = threading.Lock()


def shared_demo_job(model, document) -> RunJob:
    """The one run of a demo document with a model for the whole server (started on first ask;
    started again only if it failed). Its trace is shared read-only by every session."""
    key = (model.name, model.weights_hash(), document.name, hashlib.sha256(document.text.encode()).hexdigest())
    with _demo_lock:
        job = _demo_jobs.get(key)
        if job is None or (job.finished and (job.error or job.trace is None or not job.trace.complete)):
            job = RunJob(model, document, document.text, shared=True).start()
            _demo_jobs[key] = job
            while len(_demo_jobs) > DEMO_JOBS:
                _demo_jobs.popitem(last=False)
        _demo_jobs.move_to_end(key)
        return job


# ---------------------------------------------------------------------- per-session store
def browser_secret() -> str | None:
    """This browser's secret (the BROWSER_COOKIE app/server.py set), or None (app/main.py run directly)."""
    try:
        value = st.context.cookies.get(BROWSER_COOKIE)
    except Exception:  # noqa: BLE001 - no browser context (a bare script run)
        return None
    return value if value and len(value) >= 16 else None


def owner_of(secret: str) -> str:
    """What the store keeps of a browser secret (its SHA-256, never the secret)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _array_bytes(value: Any, depth: int = 0) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # a torch tensor
        return int(value.element_size() * value.numel())
    if depth < 2 and isinstance(value, (list, tuple)):
        return sum(_array_bytes(v, depth + 1) for v in value)
    if depth < 2 and isinstance(value, dict):
        return sum(_array_bytes(v, depth + 1) for v in value.values())
    if depth < 2 and hasattr(value, "__dict__") and not isinstance(value, type):
        return sum(_array_bytes(v, depth + 1) for k, v in vars(value).items() if k != "_model")
    if isinstance(value, str):
        return len(value)
    return 0


def trace_bytes(trace) -> int:
    """An estimate of a trace's memory: its arrays (every segment record's) and its text, in bytes."""
    if trace is None:
        return 0
    return (_array_bytes(trace.text) + _array_bytes(trace.token_ids) + _array_bytes(trace.initial_memory)
            + sum(_array_bytes(record) for record in trace.segments))


@dataclass
class Saved:
    """What a reload gets back."""

    source: str | None = None
    document: Any = None  # services.Document
    checkpoint: str | None = None
    job: RunJob | None = None
    trace: Any = None  # the last finished trace
    answer: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    owner: str = ""  # owner_of(the browser secret of the session that made it)
    used: float = 0.0  # time.monotonic() of its last use
    nbytes: int = 0

    def size(self) -> int:
        """Bytes it holds: the document's text and the traces it keeps (shared demo traces not counted)."""
        traces = {id(t): t for t in (self.trace, self.job.trace if self.job else None) if t is not None}
        shared = self.job is not None and self.job.shared
        text = len(self.document.text) if self.document is not None else 0
        return text + (0 if shared else sum(trace_bytes(t) for t in traces.values()))


class SessionStore:
    """token -> Saved, bounded by memory and age, each entry readable and writable only by its owner.

    max_bytes: the sum of the entries' size() kept (least recently used dropped first; the
    entry just written always stays). max_age_s: entries unused for longer are dropped."""

    def __init__(self, max_bytes: int, max_age_s: float) -> None:
        self._items: OrderedDict[str, Saved] = OrderedDict()
        self._lock = threading.Lock()
        self.max_bytes, self.max_age_s = max_bytes, max_age_s

    def get(self, token: str | None, owner: str | None) -> Saved | None:
        """The entry under `token` if `owner` made it (None otherwise: unknown, expired or another's)."""
        with self._lock:
            self._expire()
            saved = self._items.get(token) if token else None
            if saved is None or not owner or not hmac.compare_digest(saved.owner, owner):
                return None
            saved.used = time.monotonic()
            self._items.move_to_end(token)
            return saved

    def put(self, token: str, owner: str, saved: Saved) -> bool:
        """Keep `saved` under `token` for `owner`; False (nothing written) when another owns the token."""
        with self._lock:
            old = self._items.get(token)
            if old is not None and not hmac.compare_digest(old.owner, owner):
                return False
            saved.owner, saved.used, saved.nbytes = owner, time.monotonic(), saved.size()
            self._items[token] = saved
            self._items.move_to_end(token)
            self._evict(keep=token)
            return True

    def update(self, token: str, owner: str, trace, answer) -> None:
        """Record a finished trace (and its answer) in the owner's entry."""
        with self._lock:
            saved = self._items.get(token)
            if saved is None or not hmac.compare_digest(saved.owner, owner):
                return
            saved.trace, saved.answer = trace, answer
            saved.used, saved.nbytes = time.monotonic(), saved.size()
            self._evict(keep=token)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, s in self._items.items() if now - s.used > self.max_age_s]:
            del self._items[token]

    def _evict(self, keep: str) -> None:
        self._expire()
        total = sum(s.nbytes for s in self._items.values())
        for token in list(self._items):
            if total <= self.max_bytes:
                break
            if token != keep:
                total -= self._items.pop(token).nbytes


@st.cache_resource(show_spinner=False)
def store() -> SessionStore:
    return SessionStore(settings.store_bytes(), settings.store_seconds())


def new_token() -> str:
    return secrets.token_urlsafe(16)
