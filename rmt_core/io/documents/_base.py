"""What every format reader shares: the limits, one read in progress with its budget, sizes in words."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

from ...errors import DocumentError

_MB = 1_000_000

# extension -> kind
KINDS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
}


@dataclass(frozen=True)
class DocumentLimits:
    """Caps on what :func:`read_document` accepts and spends; raise any of them to accept more.

    max_bytes: size of the file itself.  max_chars: length of the extracted text.
    max_unzipped_bytes: total size a .docx archive declares for its contents.  max_pdf_pages:
    pages read from a PDF.  max_seconds: wall time for reading one PDF, .docx or HTML file.
    max_memory_bytes: address space of the process that reads it (see ``isolate``).
    isolate: read PDF, .docx and HTML in a child process that the time and memory caps bind
    (it is killed when it passes them, or when the caller cancels); False reads in this
    process, where the time cap is checked between pages / blocks and the memory cap is not
    enforced (for trusted files, or where no child process can be started).
    """

    max_bytes: int = 20 * _MB
    max_chars: int = 2_000_000
    max_unzipped_bytes: int = 200 * _MB
    max_pdf_pages: int = 2000
    max_seconds: float = 60.0
    max_memory_bytes: int = 1000 * _MB
    isolate: bool = True

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_chars", "max_unzipped_bytes", "max_pdf_pages", "max_memory_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DocumentError(f"DocumentLimits.{name} must be a positive whole number, not {value!r}.")
        value = self.max_seconds
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise DocumentError(f"DocumentLimits.max_seconds must be a positive number of seconds, not {value!r}.")
        if not isinstance(self.isolate, bool):
            raise DocumentError(f"DocumentLimits.isolate must be True or False, not {self.isolate!r}.")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Extraction stops once it holds this many times max_chars: normalising (\r\n -> \n, control
# characters removed) only shortens text, so what is kept still fills the limit.
EARLY_STOP_FACTOR = 2


@dataclass
class Extraction:
    """One read in progress: the input, its budget, and what the reader reports besides the text.

    n_chars counts the characters extracted so far (call :meth:`add`); :meth:`full` says when
    to stop extracting (enough text for the limit); :meth:`check_time` raises once the
    time budget is spent.
    """

    name: str
    data: bytes
    limits: DocumentLimits
    truncate: bool
    encoding: str | None = None
    truncated: bool = False
    stopped_early: bool = False  # extraction stopped at the character limit: the text is a prefix
    notes: list[str] = field(default_factory=list)
    n_chars: int = 0
    deadline: float = field(default=0.0)

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = time.monotonic() + self.limits.max_seconds

    def add(self, n: int) -> None:
        self.n_chars += n

    def full(self) -> bool:
        """True once enough text was extracted to fill max_chars (the rest cannot be kept)."""
        if self.n_chars > EARLY_STOP_FACTOR * self.limits.max_chars:
            self.stopped_early = True
            return True
        return False

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise time_error(self.name, self.limits.max_seconds)


def time_error(name: str, seconds: float) -> DocumentError:
    problem = f"Reading {name} took longer than the time limit of {seconds:g} s, so it was stopped."
    return DocumentError(
        f"{problem} The file may be crafted to be slow to read; if it is genuine, raise the limit with "
        "DocumentLimits(max_seconds=...).",
        problem=problem, limit="max_seconds", actual=seconds, allowed=seconds)


def memory_error(name: str, n_bytes: int) -> DocumentError:
    problem = (f"Reading {name} needed more memory than the limit of {human(n_bytes)}, so it was stopped "
               "(the file may be crafted to fill memory).")
    return DocumentError(
        f"{problem} If it is genuine, raise the limit with DocumentLimits(max_memory_bytes=...).",
        problem=problem, limit="max_memory_bytes", actual=n_bytes, allowed=n_bytes)


def human(n: float) -> str:
    """A size in bytes in words: '20.0 MB', '4.5 kB', '312 bytes' (decimal units)."""
    if n >= _MB:
        return f"{n / _MB:,.1f} MB"
    if n >= 1000:
        return f"{n / 1000:,.1f} kB"
    return f"{int(n)} bytes"


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
