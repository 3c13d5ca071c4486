"""Read user documents (.txt, .md/.markdown, .pdf, .docx, .html) as plain text, safely and within a budget.

One entry point, :func:`read_document`, turns a file on disk or an uploaded file's bytes
into a :class:`Document`.  Every way a document can fail to read raises
:class:`~rmt_core.errors.DocumentError` with a message that names the problem and what to do
about it; when a limit is the problem the error also carries the facts (``limit``,
``actual``, ``allowed``, ``truncatable``) so each interface can say it in its own terms.

One module a format: ``text`` (plain text and Markdown: decoding), ``pdf`` (pypdf), ``docx``
(the zip archive's XML, streamed with lxml), ``html`` (lxml's HTML tokenizer,
streamed); ``sandbox`` runs the PDF, .docx and HTML readers in a child process.

Safety: nothing in a document is executed or fetched.  Every size is checked before
anything is allocated: the file size against ``DocumentLimits.max_bytes``; for .docx, the
sizes the zip archive declares (and their compression ratios, and each compressed size
against the file's own) before a single byte is inflated.  Reading a PDF, .docx or HTML file
runs in a child process capped at ``max_memory_bytes`` of address space and killed after
``max_seconds`` or when the caller's ``cancel()`` says so (``DocumentLimits.isolate``).
Readers stop extracting once the text fills ``max_chars``.  Peak memory for the largest
accepted upload of each format: benchmarks/bench_documents.py (figures in the README).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...errors import DocumentError
from ._base import KINDS, DocumentLimits, Extraction, human
from ._readers import EXTRACTORS
from .docx import CELL_SEPARATOR, check_docx_zip
from .pdf import fold_presentation_forms
from .text import normalise

__all__ = ["Document", "DocumentLimits", "read_document", "supported_extensions", "fold_presentation_forms",
           "CELL_SEPARATOR"]

# Formats read by a parser (in the child process when limits.isolate); text is decoded in place.
_PARSED = frozenset({"pdf", "docx", "html"})

@dataclass(frozen=True)
class Document:
    """Plain text read from a document, and how it was read.

    kind: "text", "markdown", "pdf", "docx" or "html".  encoding: the text
    encoding used (text and HTML files), else None.  note: a visible
    explanation of any truncation, skipped part or repair, else None.
    n_bytes: size of the original file.
    """

    text: str
    name: str
    kind: str
    encoding: str | None
    truncated: bool
    note: str | None
    n_bytes: int


def supported_extensions() -> tuple[str, ...]:
    """File extensions :func:`read_document` accepts, lower case with the dot."""
    return tuple(KINDS)


def read_document(
    path_or_name: str | os.PathLike,
    data: bytes | None = None,
    limits: DocumentLimits | None = None,
    truncate: bool = False,
    unknown_as_text: bool = False,
    cancel: Callable[[], bool] | None = None,
) -> Document:
    """Read a document as plain text.

    With ``data``, ``path_or_name`` is only the file's name (as uploaded), used
    for its extension; without it, the file at that path is read.  Text longer
    than ``limits.max_chars`` (and a PDF longer than ``limits.max_pdf_pages``)
    raises, unless ``truncate`` is true: then the start is kept and ``note``
    says so.  ``unknown_as_text`` reads a file of any other extension as plain text
    (with all the text checks) instead of refusing it.  ``cancel``, polled every 0.1 s
    while a PDF, .docx or HTML file is read in its child process, stops the read when it
    returns True (e.g. the session that asked for it ended).  Raises DocumentError on
    anything that cannot be read, or that is over a limit (see DocumentError's fields).
    """
    limits = limits or DocumentLimits()
    name = Path(os.fspath(path_or_name)).name or os.fspath(path_or_name)
    kind = _kind_of(name, unknown_as_text)
    if data is None:
        data = _read_file(Path(os.fspath(path_or_name)), limits)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        _check_size(name, len(data), limits)
    else:
        raise DocumentError(f"{name}: expected the file's bytes, got {type(data).__name__}.")
    if not data:
        raise DocumentError(f"{name} is empty (0 bytes). Choose a file that contains text.")

    if kind in _PARSED and limits.isolate:
        from .sandbox import extract_isolated

        if kind == "docx":
            check_docx_zip(name, data, limits)  # the zip's declared sizes, here, before a process starts

        read = extract_isolated(kind, name, data, limits, truncate, cancel)
    else:
        run = Extraction(name=name, data=data, limits=limits, truncate=truncate)
        text = EXTRACTORS[kind](run)
        read = {"text": text, "encoding": run.encoding, "truncated": run.truncated,
                "stopped_early": run.stopped_early, "notes": run.notes}
    return _finish(name, kind, len(data), read, limits, truncate)


def _finish(name: str, kind: str, n_bytes: int, read: dict, limits: DocumentLimits, truncate: bool) -> Document:
    """Normalise the extracted text and apply the character limit."""
    notes: list[str] = list(read["notes"])
    truncated, stopped_early, encoding = bool(read["truncated"]), bool(read["stopped_early"]), read["encoding"]
    text, n_removed = normalise(read.pop("text"))
    if n_removed:
        notes.append(f"Removed {n_removed:,} control character{'s' if n_removed != 1 else ''}.")
    if not text.strip():
        raise DocumentError(f"{name} contains no text (only whitespace). Choose a file that contains text.")
    if len(text) > limits.max_chars or stopped_early:
        shown = f"more than {len(text):,}" if stopped_early else f"{len(text):,}"
        if not truncate:
            problem = f"{name} has {shown} characters, over the limit of {limits.max_chars:,}."
            raise DocumentError(
                f"{problem} Pass truncate=True to keep the first {limits.max_chars:,}, or raise the limit with "
                f"DocumentLimits(max_chars={len(text) if not stopped_early else '...'}).",
                problem=problem, limit="max_chars", actual=len(text), allowed=limits.max_chars, truncatable=True)
        if len(text) > limits.max_chars:
            notes = [n for n in notes if not n.startswith("Stopped reading")]
            notes.append(f"Truncated to the first {limits.max_chars:,} characters of {shown}.")
            text = text[: limits.max_chars]
        truncated = True
    return Document(text=text, name=name, kind=kind, encoding=encoding, truncated=truncated,
                    note=" ".join(notes) or None, n_bytes=n_bytes)


def _kind_of(name: str, unknown_as_text: bool = False) -> str:
    ext = Path(name).suffix.lower()
    if ext in KINDS:
        return KINDS[ext]
    if unknown_as_text:
        return "text"
    supported = ", ".join(KINDS)
    what = f"File type '{ext}'" if ext else "A file with no extension"
    raise DocumentError(
        f"{what} is not supported ({name}). Supported: {supported}. "
        "Convert the document to one of these (or save it as plain .txt)."
    )


def _read_file(path: Path, limits: DocumentLimits) -> bytes:
    """The file's bytes, refusing a missing path, a folder or an oversized file before reading it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DocumentError(f"No such file: {path}. Check the path (and that the file was not moved).") from None
    except OSError as exc:
        raise DocumentError(f"Cannot open {path}: {exc.strerror or exc}.") from exc
    if stat.S_ISDIR(st.st_mode):
        raise DocumentError(f"{path} is a folder, not a file. Choose a document inside it.")
    if not stat.S_ISREG(st.st_mode):
        raise DocumentError(f"{path} is not a regular file (a device, pipe or socket). Choose a document file.")
    _check_size(path.name, st.st_size, limits)
    try:
        with path.open("rb") as fh:
            # Read one byte past the limit: special files report size 0 and files can grow.
            data = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise DocumentError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    _check_size(path.name, len(data), limits, at_least=True)
    return data


def _check_size(name: str, n_bytes: int, limits: DocumentLimits, at_least: bool = False) -> None:
    if n_bytes > limits.max_bytes:
        shown = f"{human(n_bytes)} ({n_bytes:,} bytes)"
        if at_least:
            shown = f"more than {human(limits.max_bytes)}"
        problem = (f"{name} is {shown}, over the size limit of {human(limits.max_bytes)} "
                   f"({limits.max_bytes:,} bytes).")
        raise DocumentError(
            f"{problem} Use a smaller file, or raise the limit with DocumentLimits(max_bytes=...).",
            problem=problem, limit="max_bytes", actual=n_bytes, allowed=limits.max_bytes)
