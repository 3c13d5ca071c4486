"""Reading a PDF, .docx or HTML file in a child process that a time and a memory budget bind.

The parent (:func:`extract_isolated`) starts a fresh Python (``python -I _child.py``: no
fork of a threaded server) whose stdin is an unlinked temporary file holding the request and
the file's bytes, and waits, polling every 0.1 s: it kills
the child once ``max_seconds`` (plus a second's grace for start-up) have passed, or as soon as
the caller's ``cancel()`` returns True (a session that ended).  The child caps its own address
space at ``max_memory_bytes`` (RLIMIT_AS: an allocation past it fails inside the child,
never in the server) and its CPU time (RLIMIT_CPU), then runs the same format reader as an
in-process read and answers with JSON (text, notes; or the DocumentError's facts).  Nothing is
unpickled.  RLIMIT_* exist on Unix; elsewhere only the time cap (the kill) applies.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from ...errors import DocumentError
from ._base import DocumentLimits, Extraction, memory_error, time_error

_POLL_S = 0.1
_GRACE_S = 1.0  # start-up of the child, on top of max_seconds, before it is killed
_CHILD = Path(__file__).with_name("_child.py")


def extract_isolated(kind: str, name: str, data: bytes, limits: DocumentLimits, truncate: bool,
                     cancel: Callable[[], bool] | None = None) -> dict:
    """Run the `kind` reader on `data` in a child process; returns the fields of an Extraction
    (text, encoding, truncated, stopped_early, notes). Raises DocumentError: the reader's own,
    or over the time limit (killed), over the memory limit, cancelled, or no child process."""
    header = json.dumps({"kind": kind, "name": name, "truncate": truncate, "n_bytes": len(data),
                         "limits": limits.as_dict()}).encode() + b"\n"
    started = time.monotonic()
    with tempfile.TemporaryFile() as request:  # the child's stdin: a file, so no pipe to keep fed
        request.write(header)
        request.write(data)
        request.seek(0)
        try:
            proc = subprocess.Popen([sys.executable, "-I", str(_CHILD)], stdin=request,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
        except OSError as exc:
            raise DocumentError(
                f"Cannot start a process to read {name} ({exc.strerror or exc}). Read it in this process with "
                "DocumentLimits(isolate=False) (then no memory limit applies).") from exc
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=_POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if cancel is not None and cancel():
                raise DocumentError(f"Reading {name} was cancelled.", limit="cancelled")
            if time.monotonic() - started > limits.max_seconds + _GRACE_S:
                raise time_error(name, limits.max_seconds)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return _answer(name, limits, proc.returncode, out, err)


def _answer(name: str, limits: DocumentLimits, returncode: int, out: bytes, err: bytes) -> dict:
    try:
        answer = json.loads(out) if out else None
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "error" in answer:
        facts = dict(answer["error"])
        raise DocumentError(facts.pop("message"), **facts)
    if isinstance(answer, dict) and "text" in answer:
        return answer
    if isinstance(answer, dict) and "unexpected" in answer:
        raise RuntimeError(f"reading {name} failed in the reading process:\n{answer['unexpected']}")
    if returncode == -getattr(signal, "SIGXCPU", 24):
        raise time_error(name, limits.max_seconds)
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] if err else []
    exc = memory_error(name, limits.max_memory_bytes)
    raise DocumentError(
        f"{exc.problem[:-1]}, or it crashed (exit status {returncode}{': ' + tail[0] if tail else ''}). "
        "If the file is genuine, raise the limit with DocumentLimits(max_memory_bytes=...).",
        problem=f"{exc.problem[:-1]}, or it crashed (exit status {returncode}).",
        limit="max_memory_bytes", actual=limits.max_memory_bytes, allowed=limits.max_memory_bytes)


def _limit_resources(limits: DocumentLimits) -> None:
    try:
        import resource
    except ImportError:  # not Unix: the parent's kill is the only cap
        return
    for which, value in ((resource.RLIMIT_AS, limits.max_memory_bytes),
                         (resource.RLIMIT_CPU, int(limits.max_seconds) + 2)):
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, hard))


def _peak_memory(field: str) -> int | None:
    """This process's peak resident memory (VmHWM: since exec, unlike ru_maxrss) or address space
    (VmPeak, what RLIMIT_AS caps) in bytes; None where /proc is not there."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def child_main() -> int:
    """The reading process: header line (JSON) and the file's bytes on stdin, JSON answer on stdout."""
    import traceback

    from ._readers import EXTRACTORS

    stdin = sys.stdin.buffer
    header = json.loads(stdin.readline())
    limits = DocumentLimits(**header["limits"])
    _limit_resources(limits)
    data = stdin.read(header["n_bytes"])
    try:
        run = Extraction(name=header["name"], data=data, limits=limits, truncate=header["truncate"],
                         deadline=time.monotonic() + max(limits.max_seconds - 0.25, 0.05))
        text = EXTRACTORS[header["kind"]](run)
        answer = {"text": text, "encoding": run.encoding, "truncated": run.truncated,
                  "stopped_early": run.stopped_early, "notes": run.notes}
    except DocumentError as exc:
        answer = {"error": {"message": str(exc), "problem": exc.problem, "limit": exc.limit, "actual": exc.actual,
                            "allowed": exc.allowed, "truncatable": exc.truncatable}}
    except MemoryError:
        del data
        exc = memory_error(header["name"], limits.max_memory_bytes)
        answer = {"error": {"message": str(exc), "problem": exc.problem, "limit": exc.limit, "actual": exc.actual,
                            "allowed": exc.allowed, "truncatable": False}}
    except Exception:
        answer = {"unexpected": traceback.format_exc()}
    answer["peak_rss_bytes"], answer["peak_vm_bytes"] = _peak_memory("VmHWM"), _peak_memory("VmPeak")
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    os._exit(0)  # skip tearing down big objects
