"""Keeping long runs' resident memory to what they hold.

Tracing a book frees a few MB of logits every few segments; glibc's allocator keeps such
freed blocks in its heap (its mmap threshold rises after the first large free), so RSS
grows with garbage the process will never reuse. Returning free heap pages to the OS
every so often keeps a 1M-token trace's footprint at what the trace itself holds.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only; absent on macOS / musl
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Hand free heap pages back to the OS (glibc malloc_trim); False where unavailable."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
