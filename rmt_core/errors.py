"""Exception types of RMT Lens: each names what is wrong and what to do about it; and how an
unexpected exception becomes one line plus a logged traceback (CLI and app)."""
from __future__ import annotations

import os
import tempfile
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


class RMTLensError(Exception):
    """Base class: every error RMT Lens raises on purpose derives from it."""


class ArgumentError(RMTLensError, ValueError):
    """A function argument is out of its allowed range or not one of its allowed values.

    The message names the argument, what is allowed and how to fix the call.
    """


class ConfigError(RMTLensError, ValueError):
    """An RMT configuration is invalid or does not fit the backbone."""


class CheckpointError(RMTLensError):
    """A checkpoint folder is missing, incomplete, corrupt or does not fit its config."""


@dataclass(frozen=True)
class CheckpointNeed:
    """Something loading a checkpoint needs from its caller, in each interface's terms.

    key: the setting ("segment_size", "backbone", "trust_pickle", "memory_options.n_heads");
    what: a phrase for people ("the segment size it was trained with"); python: the argument of
    rmt_core.load that gives it; flag: the command-line flag; box: the app's box; detail: a note on
    where the answer may be found (" (config.json names base_model_name 'gpt2')"), or "".
    """

    key: str
    what: str
    python: str
    flag: str
    box: str
    detail: str = ""

    @property
    def hint(self) -> str:
        """How to give it, in every interface: "python (command line: flag; in the app: box)"."""
        return f"{self.python} (command line: {self.flag}; in the app: {self.box})"

    def text(self) -> str:
        """The need for Python callers: "what: hint" plus the detail."""
        return f"{self.what}: {self.hint}{self.detail}"


class CheckpointArgumentError(CheckpointError, ArgumentError):
    """A checkpoint that needs something its caller did not give, or was given something that does
    not fit it: the caller's to fix (a usage error: exit status 2 on the command line, a box in the
    app), not a missing or corrupt file (those stay a plain CheckpointError).

    ``str(exc)`` is the whole message for Python callers. The facts, for every interface's own words:
    - problem: what is wrong, without advice (defaults to the whole message);
    - needs: what is missing, each a CheckpointNeed, in order (empty when something given is wrong);
    - argument: the argument at fault when something given is wrong ("memory_options", "rmt_config",
      "num_mem_tokens", "memory"), else None; option / value: the memory option and the value given.
    """

    def __init__(self, message: str, *, problem: str | None = None, needs: tuple[CheckpointNeed, ...] = (),
                 argument: str | None = None, option: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.problem = problem or message
        self.needs = tuple(needs)
        self.argument = argument
        self.option = option
        self.value = value

    def __reduce__(self):  # keep the facts through pickling (e.g. across processes)
        return (_rebuild_checkpoint_argument_error, (str(self), self.problem, self.needs, self.argument, self.option,
                                                     self.value))


def _rebuild_checkpoint_argument_error(message, problem, needs, argument, option, value) -> CheckpointArgumentError:
    return CheckpointArgumentError(message, problem=problem, needs=needs, argument=argument, option=option, value=value)


class TraceError(RMTLensError):
    """A trace cannot be made, saved, loaded or re-attached."""


class TraceArgumentError(TraceError, ArgumentError):
    """A segment, position or slot index that does not exist in the trace."""


class TraceCancelled(RMTLensError):
    """Raised inside a progress callback to stop a trace; the segments done are kept."""


class DocumentError(RMTLensError):
    """A document cannot be read as text.

    ``str(exc)`` is the whole message for Python callers (what is wrong, then what to do in
    Python). When the document is over one of the reading limits, the facts are fields too, so
    every interface can give its own advice (CLI flags, an app button):

    - problem: what is wrong, without the advice (defaults to the whole message);
    - limit: the ``DocumentLimits`` field the document is over (``"max_bytes"``, ``"max_chars"``,
      ``"max_pdf_pages"``, ``"max_unzipped_bytes"``, ``"max_seconds"``, ``"max_memory_bytes"``),
      else None;
    - actual / allowed: the document's size and the limit, in that limit's units (bytes,
      characters, pages, seconds); ``actual`` is a lower bound where reading stopped early;
    - truncatable: True when reading with ``truncate=True`` keeps the start of the document.
    """

    def __init__(self, message: str, *, problem: str | None = None, limit: str | None = None,
                 actual: float | None = None, allowed: float | None = None, truncatable: bool = False) -> None:
        super().__init__(message)
        self.problem = problem or message
        self.limit = limit
        self.actual = actual
        self.allowed = allowed
        self.truncatable = truncatable

    def with_advice(self, advice: str) -> "DocumentError":
        """The same facts, with an interface's own `advice` after the problem (instead of the advice for Python)."""
        return DocumentError(f"{self.problem} {advice}", problem=self.problem, limit=self.limit, actual=self.actual,
                             allowed=self.allowed, truncatable=self.truncatable)

    def __reduce__(self):  # keep the facts through pickling (e.g. across processes)
        return (_rebuild_document_error, (str(self), self.problem, self.limit, self.actual, self.allowed,
                                          self.truncatable))


def _rebuild_document_error(message, problem, limit, actual, allowed, truncatable) -> DocumentError:
    return DocumentError(message, problem=problem, limit=limit, actual=actual, allowed=allowed,
                         truncatable=truncatable)


# ---------------------------------------------------------------------- unexpected errors
ISSUES_HINT = "This is a bug in RMT Lens: please report it with that log file."


def error_log_path() -> Path:
    """Where tracebacks of unexpected errors are appended: $RMT_LENS_LOG if set, else
    $XDG_CACHE_HOME/rmt-lens/errors.log (default ~/.cache/rmt-lens/errors.log)."""
    explicit = os.environ.get("RMT_LENS_LOG")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "rmt-lens" / "errors.log"


def log_unexpected(exc: BaseException, context: str = "") -> Path | None:
    """Append the traceback of `exc` (with a time stamp and `context`) to error_log_path();
    falls back to the temporary folder. Returns the file written, or None if none could be."""
    record = (f"---- {datetime.now().isoformat(timespec='seconds')} rmt-lens {context}\n"
              + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    for path in (error_log_path(), Path(tempfile.gettempdir()) / "rmt-lens-errors.log"):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(record)
            return path
        except OSError:
            continue
    return None


def unexpected_error_message(exc: BaseException, context: str = "") -> str:
    """One line for an exception RMT Lens did not raise on purpose: what it was, where its
    traceback was logged (see log_unexpected) and a request to report it."""
    path = log_unexpected(exc, context)
    what = " ".join(str(exc).split())
    what = f"{type(exc).__name__}: {what}" if what else type(exc).__name__
    if len(what) > 300:
        what = what[:297] + "..."
    where = f"the traceback is in {path}" if path is not None else "no log file could be written"
    return f"unexpected error ({what}); {where}. {ISSUES_HINT}"
class QuestionError(RMTLensError, ValueError):
    """A question cannot be asked of this model (empty, not in its training form, too long)."""
