"""The per-trace cache: what is computed once from a trace and kept beside it.

One home for every whole-trace result that pages ask for again and again (explain.series'
series, explain.associative's walked writes, figures built once per trace): cached(trace, key,
compute) runs compute() once per (trace, key, number of segments), so a streamed trace that gains
segments gets fresh results. The cache holds the trace weakly (it goes with the trace); the app's
sessions run in threads, so it is locked. Callers must not modify what they get.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

from ..tracing.trace import Trace

_CACHE: "weakref.WeakKeyDictionary[Trace, dict[Any, Any]]" = weakref.WeakKeyDictionary()
LOCK = threading.Lock()  # guards _CACHE (and what series keeps in it step by step)


def cached(trace: Trace, key: Any, compute: Callable[[], Any]) -> Any:
    """compute() once per (trace, key, number of segments); the same object afterwards. Two threads
    asking at once may both compute; the first result stored is the one both get."""
    full_key = (key, trace.num_segments)
    with LOCK:
        entry = _CACHE.setdefault(trace, {})
        if full_key in entry:
            return entry[full_key]
    value = compute()
    with LOCK:
        return entry.setdefault(full_key, value)
