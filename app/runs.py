"""Runs that belong to the session, not to one script run.

A RunJob traces a document in a background thread (rmt_core does the work; nothing here
draws), so switching pages or touching a widget never cancels it: every page's script run
ends by watching the job (app.sidebar.watch_run) and shows its progress. Only Cancel stops it.

The per-session store (one per server, in memory) keeps each session's document, running
job and last finished trace under a random token that the page's URL carries (?doc=...),
so a reload finds them again.
"""
from __future__ import annotations

import rmt_core
import logging
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from rmt_core import RMTLensError
from rmt_core.explain import answers as rmt_answers

log = logging.getLogger("rmt_lens.app")
STORE_ENTRIES = 32  # sessions remembered for a reload (least recently used dropped first)


class RunJob:
    """Trace `text` with `model` in a thread; then read the answer if the text asks a question.

    Fields read by the pages (written only by the thread): done, total, phase, trace,
    answer, error, finished. cancel() stops after the current segment; the segments done are kept.
    """

    def __init__(self, model, document, text: str, question: str | None = None, window: int | None = None) -> None:
        self.model = model
        self.window = window
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

    def _work(self) -> None:
        try:
            stream = rmt_core.trace_iter(self.model, self.text, progress=lambda done, total: not self._cancel.is_set())
            self.total = len(stream.bounds)
            stream.trace.meta.update({"document": self.document.name, "fact_spans": self.document.fact_spans,
                                      "answer": self.document.answer, "question": self.question})
            self.phase = "Tracing"
            for record in stream:
                self.done = record.index + 1
            self.trace = stream.trace
            if self.trace.complete:
                self.phase = "Finding the answer"
                try:
                    site = rmt_answers.answer_site(self.trace)
                    if site is not None and site.segment > 0:
                        from rmt_core.explain.attribution import estimate_through_seconds

                        n, seconds = estimate_through_seconds(self.trace, site.segment, self.window)
                        self.phase = (f"Finding the answer: through-memory attribution over {n} earlier segments "
                                      f"(estimated {seconds:.0f} s)")
                    self.answer = rmt_answers.answer_from_trace(self.trace, max_segments=self.window)
                except RMTLensError as exc:
                    self.answer_error = str(exc)
        except RMTLensError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown as one line; the traceback goes to the server log
            log.error("run failed:\n%s", traceback.format_exc())
            self.error = f"The run failed ({type(exc).__name__}: {exc}). The server log has the details."
        finally:
            self.finished = True


# ---------------------------------------------------------------------- per-session store
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


class SessionStore:
    """token -> Saved, bounded, thread-safe."""

    def __init__(self, size: int = STORE_ENTRIES) -> None:
        self._items: OrderedDict[str, Saved] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, token: str | None) -> Saved | None:
        with self._lock:
            if not token or token not in self._items:
                return None
            self._items.move_to_end(token)
            return self._items[token]

    def put(self, token: str, saved: Saved) -> None:
        with self._lock:
            self._items[token] = saved
            self._items.move_to_end(token)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


@st.cache_resource(show_spinner=False)
def store() -> SessionStore:
    return SessionStore()


def new_token() -> str:
    return secrets.token_urlsafe(12)
