"""Read user documents (.txt, .md, .pdf, .docx, .html) as plain text, safely.

One entry point, :func:`read_document`, turns a file on disk or an uploaded
file's bytes into a :class:`Document`.  Every way a document can fail to read
raises :class:`~rmt_core.errors.DocumentError` with a message that names the
problem and what to do about it.

Safety: nothing in a document is executed or fetched.  Sizes are checked
before anything is decoded or extracted: the file size against
``DocumentLimits.max_bytes``; for .docx, the sizes the zip archive declares
(and their compression ratios) against ``max_unzipped_bytes`` before a single
byte is inflated (Python's ``zipfile`` never inflates past a declared size, so
a lying header fails its CRC check instead of filling memory).  python-docx
parses XML with lxml with entity resolution off and no network; HTML is parsed
with BeautifulSoup's pure-Python ``html.parser``, which never loads anything.
"""
from __future__ import annotations

import codecs
import io
import os
import re
import stat
import unicodedata
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import DocumentError

__all__ = ["Document", "DocumentLimits", "read_document", "supported_extensions"]

# extension -> kind
_KINDS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
}

_MB = 1_000_000


@dataclass(frozen=True)
class DocumentLimits:
    """Caps on what :func:`read_document` accepts; raise any of them to accept more.

    max_bytes: size of the file itself.  max_chars: length of the extracted
    text.  max_unzipped_bytes: total size a .docx archive declares for its
    contents.  max_pdf_pages: pages read from a PDF.
    """

    max_bytes: int = 20 * _MB
    max_chars: int = 2_000_000
    max_unzipped_bytes: int = 200 * _MB
    max_pdf_pages: int = 2000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_chars", "max_unzipped_bytes", "max_pdf_pages"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DocumentError(f"DocumentLimits.{name} must be a positive whole number, not {value!r}.")


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
    return tuple(_KINDS)


def read_document(
    path_or_name: str | os.PathLike,
    data: bytes | None = None,
    limits: DocumentLimits | None = None,
    truncate: bool = False,
    unknown_as_text: bool = False,
) -> Document:
    """Read a document as plain text.

    With ``data``, ``path_or_name`` is only the file's name (as uploaded), used
    for its extension; without it, the file at that path is read.  Text longer
    than ``limits.max_chars`` (and a PDF longer than ``limits.max_pdf_pages``)
    raises, unless ``truncate`` is true: then the start is kept and ``note``
    says so.  ``unknown_as_text`` reads a file of any other extension as plain text
    (with all the text checks) instead of refusing it.  Raises DocumentError on
    anything that cannot be read.
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

    run = _Extraction(name=name, data=data, limits=limits, truncate=truncate)
    raw_text = _EXTRACTORS[kind](run)
    text, n_removed = _normalise(raw_text)
    if n_removed:
        run.notes.append(f"Removed {n_removed:,} control character{'s' if n_removed != 1 else ''}.")
    if not text.strip():
        raise DocumentError(f"{name} contains no text (only whitespace). Choose a file that contains text.")
    if len(text) > limits.max_chars:
        if not truncate:
            raise DocumentError(
                f"{name} has {len(text):,} characters, over the limit of {limits.max_chars:,}. "
                f"Pass truncate=True to keep the first {limits.max_chars:,}, or raise the limit with "
                f"DocumentLimits(max_chars={len(text)})."
            )
        run.notes.append(f"Truncated to the first {limits.max_chars:,} characters of {len(text):,}.")
        text = text[: limits.max_chars]
        run.truncated = True
    return Document(
        text=text,
        name=name,
        kind=kind,
        encoding=run.encoding,
        truncated=run.truncated,
        note=" ".join(run.notes) or None,
        n_bytes=len(data),
    )


@dataclass
class _Extraction:
    """One read in progress: the input, and what the format reader reports back besides the text."""

    name: str
    data: bytes
    limits: DocumentLimits
    truncate: bool
    encoding: str | None = None
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Shared steps


def _kind_of(name: str, unknown_as_text: bool = False) -> str:
    ext = Path(name).suffix.lower()
    if ext in _KINDS:
        return _KINDS[ext]
    if unknown_as_text:
        return "text"
    supported = ", ".join(_KINDS)
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
        shown = f"{_human(n_bytes)} ({n_bytes:,} bytes)"
        if at_least:
            shown = f"more than {_human(limits.max_bytes)}"
        raise DocumentError(
            f"{name} is {shown}, over the size limit of {_human(limits.max_bytes)} "
            f"({limits.max_bytes:,} bytes). Use a smaller file, or raise the limit with "
            f"DocumentLimits(max_bytes=...)."
        )


def _human(n: int) -> str:
    if n >= _MB:
        return f"{n / _MB:,.1f} MB"
    if n >= 1000:
        return f"{n / 1000:,.1f} kB"
    return f"{n} bytes"


# C0 controls except \t and \n (\r, \v, \f become newlines first), plus DEL.
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_NEWLINE_RE = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")


def _normalise(text: str) -> tuple[str, int]:
    """NFC, \\n newlines, no BOM and no control characters but \\n and \\t; also returns how many were removed."""
    text = text.lstrip("\ufeff")
    text = _NEWLINE_RE.sub("\n", text)
    text, n_removed = _CONTROL_RE.subn("", text)
    return unicodedata.normalize("NFC", text), n_removed


# ---------------------------------------------------------------------------
# Plain text and Markdown

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE, whose BOM is its prefix
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF (rename it to .pdf)"),
    (b"PK\x03\x04", "a zip archive, such as a .docx (rename it to .docx if it is one)"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office file (save it as .docx or .txt)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x7fELF", "a program"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"),
)


def _binary_error(name: str, data: bytes, why: str) -> DocumentError:
    looks = next((what for magic, what in _MAGIC if data.startswith(magic)), None)
    hint = f" It looks like {looks}." if looks else ""
    return DocumentError(
        f"{name} looks like a binary file, not text ({why}).{hint} "
        "Choose a text file, or save the document as UTF-8 text."
    )


def _decode_text(name: str, data: bytes) -> tuple[str, str, str | None]:
    """(text, encoding, note) for bytes meant to be text; DocumentError when they are not."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding), encoding, None
            except UnicodeDecodeError:
                raise _binary_error(name, data, f"it starts with a {encoding} byte-order mark but is not valid {encoding}") from None
    if b"\x00" in data:
        guess = _utf16_without_bom(data)
        if guess is None:
            raise _binary_error(name, data, "it contains NUL bytes")
        return data.decode(guess), guess, None
    try:
        return data.decode("utf-8"), "utf-8", None
    except UnicodeDecodeError:
        pass
    encoding = _guess_encoding(data)
    if encoding is None:
        raise _binary_error(name, data, "it could not be decoded in any known text encoding")
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        raise _binary_error(name, data, "it could not be decoded in any known text encoding") from None
    return text, encoding, f"Not UTF-8: decoded as {encoding} (best guess)."


def _guess_encoding(data: bytes) -> str | None:
    """charset-normalizer's best guess, preferring Windows-1252 (the commonest non-UTF-8 text) when it reads as well.

    On short Western texts the detector's raw pick is often a rare code page (mac_latin2, cp775...)
    whose reading is barely worse than cp1252's; a plausible cp1252 reading wins those ties.
    """
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    western = from_bytes(data, cp_isolation=["cp1252"]).best()
    if western is not None and (best is None or western.chaos <= best.chaos + 0.1):
        return "cp1252"
    return best.encoding if best is not None else None


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' when NUL bytes sit where BOM-less UTF-16 text puts them, else None."""
    sample = data[:4096]
    even, odd = sample[0::2], sample[1::2]
    if not odd:
        return None
    for encoding, zeros, other in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if zeros.count(0) > 0.6 * len(zeros) and other.count(0) < 0.02 * len(other) + 1:
            try:
                data.decode(encoding)
            except UnicodeDecodeError:
                continue
            return encoding
    return None


def _check_controls(name: str, data: bytes, text: str) -> None:
    sample = text[:100_000]
    n_controls = sum(1 for ch in sample if ch < " " and ch not in "\t\n\r\x0c")
    if sample and n_controls > max(0.05 * len(sample), 8):
        raise _binary_error(name, data, f"{n_controls:,} control characters in its first {len(sample):,}")


def _extract_text(run: _Extraction) -> str:
    text, run.encoding, note = _decode_text(run.name, run.data)
    _check_controls(run.name, run.data, text)
    if note:
        run.notes.append(note)
    return text


# ---------------------------------------------------------------------------
# PDF


def _extract_pdf(run: _Extraction) -> str:
    from pypdf import PdfReader

    name, data, limits = run.name, run.data, run.limits
    if b"%PDF-" not in data[:1024]:
        raise DocumentError(f"{name} is not a valid PDF (it does not start with %PDF-). Check that it is really a PDF.")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:  # pypdf raises many types on malformed input
        raise _corrupt_pdf(name, exc) from exc
    if encrypted:
        from pypdf.errors import DependencyError

        try:
            unlocked = bool(reader.decrypt(""))
        except DependencyError as exc:  # AES needs the optional cryptography package
            raise DocumentError(
                f"{name} is an encrypted PDF that needs the 'cryptography' package to open ({exc}). "
                "Install it (pip install cryptography), or save the PDF without encryption, and try again."
            ) from exc
        except Exception:
            unlocked = False
        if not unlocked:
            raise DocumentError(
                f"{name} is an encrypted (password-protected) PDF. "
                "Open it with its password and save or print it as a PDF without one, then try again."
            )
    try:
        n_pages = len(reader.pages)
    except Exception as exc:
        raise _corrupt_pdf(name, exc) from exc
    if n_pages == 0:
        raise DocumentError(f"{name} is a PDF with no pages. Check the file; it may be damaged.")
    if n_pages > limits.max_pdf_pages:
        if not run.truncate:
            raise DocumentError(
                f"{name} has {n_pages:,} pages, over the limit of {limits.max_pdf_pages:,}. Pass truncate=True "
                f"to read the first {limits.max_pdf_pages:,}, or raise the limit with "
                f"DocumentLimits(max_pdf_pages={n_pages})."
            )
        run.notes.append(f"Read only the first {limits.max_pdf_pages:,} pages of {n_pages:,}.")
        run.truncated = True

    texts: list[str] = []
    failed: list[int] = []
    for i in range(min(n_pages, limits.max_pdf_pages)):
        try:
            page_text = reader.pages[i].extract_text() or ""
        except Exception:
            failed.append(i + 1)
            continue
        texts.append(page_text.strip("\n"))
    if failed and not texts:
        raise _corrupt_pdf(name, None)
    if failed:
        shown = ", ".join(map(str, failed[:10])) + (" ..." if len(failed) > 10 else "")
        run.notes.append(f"Skipped {len(failed):,} unreadable page{'s' if len(failed) > 1 else ''} ({shown}).")
    if not any(t.strip() for t in texts):
        raise DocumentError(
            f"{name} has {n_pages:,} page{'s' if n_pages != 1 else ''} but no text layer (it is probably scanned "
            "images). Run it through OCR (for example ocrmypdf) and try the result."
        )
    text, folded = fold_presentation_forms("\n\n".join(texts))
    if folded:
        shown = ", ".join(f"{c}→{unicodedata.normalize('NFKC', c)}" for c in sorted(folded)[:6])
        n = sum(folded.values())
        run.notes.append(f"Folded {n:,} ligature or presentation-form character{'s' if n != 1 else ''} from the "
                         f"PDF's fonts to plain letters ({shown}{' ...' if len(folded) > 6 else ''}; NFKC, for "
                         "those characters only).")
    return text


# Unicode compatibility characters that only exist to draw text (a PDF font maps its glyphs to
# them): Latin/Armenian/Hebrew ligatures and forms (ﬁ ﬂ ﬀ ﬃ ﬄ ﬅ ﬆ ...), Arabic presentation forms
# A and B (contextual letter shapes), vertical forms and CJK compatibility forms.  NFKC maps
# each to the letters it draws; other compatibility characters (fullwidth letters, ², ½) are text.
_PRESENTATION_FORMS_RE = re.compile("[\ufb00-\ufdff\ufe10-\ufe1f\ufe30-\ufe4f\ufe70-\ufefe]")


def fold_presentation_forms(text: str) -> tuple[str, dict[str, int]]:
    """``text`` with ligatures and presentation forms replaced by their NFKC letters
    (``ﬁ`` → ``fi``); returns it and how often each folded character occurred."""
    counts: dict[str, int] = {}

    def fold(match: re.Match) -> str:
        c = match.group(0)
        plain = unicodedata.normalize("NFKC", c)
        if plain != c:
            counts[c] = counts.get(c, 0) + 1
        return plain

    return _PRESENTATION_FORMS_RE.sub(fold, text), counts


def _corrupt_pdf(name: str, exc: Exception | None) -> DocumentError:
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return DocumentError(
        f"{name} is a corrupt or unreadable PDF{detail}. "
        "Re-save or re-export it (for example print it to PDF) and try again."
    )


# ---------------------------------------------------------------------------
# DOCX

_MAX_ZIP_ENTRIES = 10_000
_MAX_ZIP_RATIO = 200  # inflated/compressed, checked for entries over _RATIO_MIN_BYTES
_RATIO_MIN_BYTES = 1 << 20


def _check_docx_zip(name: str, data: bytes, limits: DocumentLimits) -> None:
    """Refuse a .docx that is not a zip, lacks its main part, or would inflate absurdly: before inflating anything."""
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise DocumentError(
            f"{name} is not a .docx: it is an old Word .doc or a password-protected document. "
            "Open it in Word and save it as .docx without a password."
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise DocumentError(
            f"{name} is a corrupt .docx (not a valid zip archive: {exc}). Re-save it from Word and try again."
        ) from exc
    if len(infos) > _MAX_ZIP_ENTRIES:
        raise DocumentError(
            f"{name} looks like a zip bomb: it holds {len(infos):,} files (a .docx has a few dozen). Refused."
        )
    total = sum(info.file_size for info in infos)
    if total > limits.max_unzipped_bytes:
        raise DocumentError(
            f"{name} looks like a zip bomb: it would unpack to {_human(total)} ({total:,} bytes), over the limit of "
            f"{_human(limits.max_unzipped_bytes)}. Nothing was extracted. If the document is genuine, raise the "
            "limit with DocumentLimits(max_unzipped_bytes=...)."
        )
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_MIN_BYTES and ratio > _MAX_ZIP_RATIO:
            raise DocumentError(
                f"{name} looks like a zip bomb: its part {info.filename} is compressed {ratio:,.0f} to 1 "
                f"({info.compress_size:,} bytes unpack to {info.file_size:,}). Nothing was extracted. Refused."
            )
        if info.flag_bits & 0x1:
            raise DocumentError(f"{name} is an encrypted .docx. Save it from Word without a password and try again.")
    names = {info.filename for info in infos}
    if "word/document.xml" not in names:
        raise DocumentError(
            f"{name} is a corrupt .docx: it is a zip archive but has no word/document.xml. "
            "Check that it is a Word document and re-save it from Word."
        )


def _extract_docx(run: _Extraction) -> str:
    """The body's text in document order: paragraphs (with tracked insertions, without tracked
    deletions), tables, content controls, hyperlinks and field results; the note names the
    parts a reader sees elsewhere (headers, footers, footnotes, endnotes, comments, text boxes)."""
    name = run.name
    _check_docx_zip(name, run.data, run.limits)
    from docx.oxml.parser import parse_xml  # python-docx's lxml parser: no entities, no network

    try:
        with zipfile.ZipFile(io.BytesIO(run.data)) as zf:
            body = parse_xml(zf.read("word/document.xml")).find(f"{_W}body")
            if body is None:
                raise ValueError("word/document.xml has no w:body")
            reader = _DocxReader()
            blocks = reader.blocks(body)
            skipped = _docx_skipped_parts(zf) + reader.skipped()
    except DocumentError:
        raise
    except Exception as exc:  # zip, XML and package errors all mean a damaged file here
        raise DocumentError(
            f"{name} is a corrupt .docx ({type(exc).__name__}: {exc}). Re-save it from Word and try again."
        ) from exc
    if skipped:
        run.notes.append("Not read (only the document body and its tables are): " + ", ".join(skipped) + ".")
    return "\n\n".join(b for b in blocks if b.strip())


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_DELETED = frozenset({f"{_W}del", f"{_W}moveFrom"})  # tracked deletions and the old place of moved text
_NO_TEXT = frozenset({f"{_W}instrText", f"{_W}delText", f"{_W}delInstrText"})  # field codes, deleted text


def _is_properties(tag: str) -> bool:
    """w:pPr, w:rPr, w:sectPr, w:tblPr...: formatting, never text (w:pPr holds w:tabs, not tabs)."""
    return tag.startswith(_W) and tag.endswith("Pr")


class _DocxReader:
    """Walks WordprocessingML: block containers give paragraphs and tables, inline content gives text."""

    def __init__(self) -> None:
        self.text_boxes = 0

    def skipped(self) -> list[str]:
        n = self.text_boxes
        return [f"{n} text box{'es' if n != 1 else ''}"] if n else []

    def blocks(self, container, depth: int = 0) -> list[str]:
        out: list[str] = []
        for child in container:
            tag = child.tag
            if not isinstance(tag, str) or tag in _DELETED or _is_properties(tag):
                continue
            if tag == f"{_W}p":
                out.append(self.paragraph(child))
            elif tag == f"{_W}tbl":
                out.append(self.table(child, depth))
            elif tag == f"{_MC}AlternateContent":
                out.extend(self.blocks(_chosen_alternative(child), depth))
            else:  # w:sdt / w:sdtContent (content controls), w:customXml, w:ins, w:moveTo ...
                out.extend(self.blocks(child, depth))
        return out

    def paragraph(self, p) -> str:
        parts: list[str] = []
        self._inline(p, parts)
        return "".join(parts)

    def _inline(self, element, parts: list[str]) -> None:
        for child in element:
            tag = child.tag
            if not isinstance(tag, str) or tag in _DELETED or tag in _NO_TEXT or _is_properties(tag):
                continue
            if tag == f"{_W}t":
                parts.append(child.text or "")
            elif tag == f"{_W}tab" or tag == f"{_W}ptab":
                parts.append("\t")
            elif tag in (f"{_W}br", f"{_W}cr"):
                parts.append("\n")
            elif tag == f"{_W}noBreakHyphen":
                parts.append("\u2011")
            elif tag == f"{_W}txbxContent":  # a text box anchored in this run: not part of the flow
                if "".join(t.text or "" for t in child.iter(f"{_W}t")).strip():
                    self.text_boxes += 1
            elif tag == f"{_MC}AlternateContent":
                self._inline(_chosen_alternative(child), parts)
            else:  # w:r, w:ins, w:moveTo, w:hyperlink, w:smartTag, w:sdt, w:fldSimple, w:drawing ...
                self._inline(child, parts)

    def table(self, tbl, depth: int) -> str:
        rows: list[str] = []
        for tr in _children(tbl, f"{_W}tr"):
            properties = tr.find(f"{_W}trPr")
            if properties is not None and properties.find(f"{_W}del") is not None:
                continue  # a tracked row deletion
            cells: list[str] = []
            for tc in _children(tr, f"{_W}tc"):
                if depth < 8:
                    parts = [b for b in self.blocks(tc, depth + 1) if b.strip()]
                else:
                    parts = ["".join(t.text or "" for t in tc.iter(f"{_W}t"))]
                cells.append(" ".join(p.replace("\n", " ") for p in parts))
            rows.append("\t".join(cells))
        return "\n".join(rows)


def _children(element, tag: str):
    """Children with this tag, looking through content controls and custom XML around them."""
    for child in element:
        if child.tag == tag:
            yield child
        elif child.tag in (f"{_W}sdt", f"{_W}sdtContent", f"{_W}customXml"):
            yield from _children(child, tag)


def _chosen_alternative(alternate):
    """The first mc:Choice of an mc:AlternateContent (what Word shows), else its mc:Fallback: never both."""
    for child in alternate:
        if child.tag in (f"{_MC}Choice", f"{_MC}Fallback"):
            return child
    return ()


def _docx_skipped_parts(zf: zipfile.ZipFile) -> list[str]:
    """What holds text outside the body: header/footer parts, footnotes, endnotes and comments."""
    from docx.oxml.parser import parse_xml

    def has_text(element) -> bool:
        return any((t.text or "").strip() for t in element.iter(f"{_W}t"))

    names = set(zf.namelist())
    found: list[str] = []
    for kind in ("header", "footer"):
        parts = sorted(n for n in names if re.fullmatch(rf"word/{kind}\d*\.xml", n))
        n = sum(1 for part in parts if has_text(parse_xml(zf.read(part))))
        if n:
            found.append(f"{n} {kind}{'s' if n != 1 else ''}")
    for part, element, label in (("word/footnotes.xml", "footnote", "footnote"),
                                 ("word/endnotes.xml", "endnote", "endnote"),
                                 ("word/comments.xml", "comment", "comment")):
        if part in names:
            notes = [e for e in parse_xml(zf.read(part)).iter(f"{_W}{element}")
                     if e.get(f"{_W}type") not in ("separator", "continuationSeparator", "continuationNotice")]
            n = sum(1 for e in notes if has_text(e))
            if n:
                found.append(f"{n} {label}{'s' if n != 1 else ''}")
    return found


# ---------------------------------------------------------------------------
# HTML

_SKIP_TAGS = frozenset({
    "script", "style", "noscript", "template", "head", "title", "iframe", "object", "embed",
    "canvas", "svg", "math", "select", "datalist", "meta", "link", "base",
})
_PARAGRAPH_TAGS = frozenset({
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "dl",
    "figure", "hr", "section", "article", "header", "footer", "nav", "aside", "main", "form",
    "fieldset", "details", "address",
})
_LINE_TAGS = frozenset({
    "div", "li", "dt", "dd", "tr", "caption", "figcaption", "summary", "legend", "label",
    "body", "html", "center", "option", "tbody", "thead", "tfoot", "textarea",
})
_CELL_TAGS = frozenset({"td", "th"})
_SPACE_RE = re.compile(r"[ \t\n\r\f\v]+")


class _TextWriter:
    """Collects text pieces; breaks between blocks become at most one blank line."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pending = 0  # newlines owed before the next text
        self.at_line_start = True

    def brk(self, n: int) -> None:
        self.pending = max(self.pending, n)

    def cell(self) -> None:
        if not self.at_line_start and not self.pending:
            self.parts.append("\t")
            self.at_line_start = False

    def text(self, s: str, pre: bool) -> None:
        if not pre:
            s = _SPACE_RE.sub(" ", s)
            if not s.strip() and (self.pending or self.at_line_start):
                return
        if self.pending:
            if self.parts:
                self.parts.append("\n" * self.pending)
            self.pending = 0
            self.at_line_start = True
        if not pre and self.at_line_start:
            s = s.lstrip(" ")
        if not s:
            return
        self.parts.append(s)
        self.at_line_start = s.endswith("\n")

    def result(self) -> str:
        text = "".join(self.parts)
        text = re.sub(r"[ \t]+\n", "\n", text)
        text = re.sub(r" {2,}", " ", text)
        return re.sub(r"\n{3,}", "\n\n", text).strip()


def _visible_html_text(soup) -> str:
    """Visible text of a parsed page: no scripts, styles, hidden elements or comments; title first."""
    from bs4 import NavigableString, Tag
    from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

    writer = _TextWriter()
    title = soup.find("title")
    if title is not None:
        title_text = _SPACE_RE.sub(" ", title.get_text()).strip()
        if title_text:
            writer.text(title_text, pre=False)
            writer.brk(2)
    skipped_strings = (Comment, Declaration, Doctype, ProcessingInstruction)
    # Iterative walk (deeply nested pages must not hit the recursion limit): (node, in_pre, closing)
    stack: list[tuple[object, bool, bool]] = [(soup, False, False)]
    while stack:
        node, in_pre, closing = stack.pop()
        if isinstance(node, NavigableString):
            if not isinstance(node, skipped_strings):
                writer.text(str(node), in_pre)
            continue
        if not isinstance(node, Tag):
            continue
        tag = (node.name or "").lower()
        if closing:
            if tag in _PARAGRAPH_TAGS:
                writer.brk(2)
            elif tag in _LINE_TAGS:
                writer.brk(1)
            continue
        if tag in _SKIP_TAGS or _is_hidden(node):
            continue
        if tag == "br":
            writer.brk(1)
            continue
        if tag in _PARAGRAPH_TAGS:
            writer.brk(2)
        elif tag in _LINE_TAGS:
            writer.brk(1)
        elif tag in _CELL_TAGS:
            writer.cell()
        elif tag == "img" and node.get("alt"):
            writer.text(f" {node['alt']} ", in_pre)
            continue
        child_pre = in_pre or tag in ("pre", "textarea")
        stack.append((node, in_pre, True))
        stack.extend((child, child_pre, False) for child in reversed(node.contents))
    return writer.result()


def _is_hidden(tag) -> bool:
    attrs = tag.attrs or {}
    if "hidden" in attrs or str(attrs.get("aria-hidden", "")).lower() == "true":
        return True
    if tag.name == "input" and str(attrs.get("type", "")).lower() == "hidden":
        return True
    style = str(attrs.get("style", "")).replace(" ", "").lower()
    return "display:none" in style or "visibility:hidden" in style


def _extract_html(run: _Extraction) -> str:
    from bs4 import BeautifulSoup

    text, run.encoding, note = _decode_html(run.name, run.data)
    _check_controls(run.name, run.data, text)
    if note:
        run.notes.append(note)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "looks like a filename/URL" for a short page
        soup = BeautifulSoup(text, "html.parser")
    return _visible_html_text(soup)


_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


# Labels the HTML/WHATWG Encoding standard maps to windows-1252 (browsers never use ISO-8859-1 itself).
_WINDOWS_1252_LABELS = frozenset({
    "ansi_x3.4-1968", "ascii", "cp1252", "cp819", "csisolatin1", "ibm819", "iso-8859-1", "iso-ir-100",
    "iso8859-1", "iso88591", "iso_8859-1", "iso_8859-1:1987", "l1", "latin1", "us-ascii", "windows-1252",
    "x-cp1252",
})


def _declared_encoding(data: bytes) -> tuple[str | None, str | None]:
    """(the label a <meta> declares, the Python codec for it) in the page's first 4 kB; (None, None) if none.

    The codec is None for a label Python does not know. As the standard says, latin-1/ASCII
    labels mean windows-1252 and a UTF-16 label in a <meta> means UTF-8."""
    match = _META_CHARSET_RE.search(data[:4096])
    if not match:
        return None, None
    label = match.group(1).decode("ascii").lower()
    if label in _WINDOWS_1252_LABELS:
        return label, "cp1252"
    if label.replace("_", "-").startswith("utf-16"):
        return label, "utf-8"
    if label == "x-user-defined":
        return label, "cp1252"
    try:
        return label, codecs.lookup(label).name
    except LookupError:
        return label, None


_MESS_MARGIN = 0.05  # how much messier than the best reading a declared encoding's reading may be


def _reads_as(data: bytes, encoding: str) -> bool:
    """True when the bytes decode in `encoding` without errors AND read as text in it: charset-normalizer
    measures the mess (mojibake: mixed scripts inside words, odd symbols) of that reading, and it must be
    about as clean as the best reading of any encoding. A declaration that yields garbage is not trusted."""
    try:
        data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return False
    if max(data[:100_000], default=0) < 0x80:
        return True  # ASCII reads the same in every ASCII-compatible encoding
    from charset_normalizer import from_bytes

    reading = from_bytes(data, cp_isolation=[encoding]).best()
    if reading is None:
        return False
    best = from_bytes(data).best()
    return best is None or reading.chaos <= best.chaos + _MESS_MARGIN


def _decode_html(name: str, data: bytes) -> tuple[str, str, str | None]:
    """Decode HTML bytes in the HTML standard's order: a byte-order mark; else bytes that are valid
    UTF-8 are UTF-8; else the <meta> declaration, when the page reads as text in it; else a guess.
    The note (None for a plain UTF-8 page) says which encoding was used and why."""
    label, declared = _declared_encoding(data)
    said = f"the page declares {label!r}"
    bom = next((encoding for mark, encoding in _BOMS if data.startswith(mark)), None)
    if bom is not None:
        text, encoding, _ = _decode_text(name, data)
        conflict = label is not None and declared not in (None, codecs.lookup(encoding).name, "utf-8")
        return text, encoding, (f"Decoded as {encoding}: the file starts with its byte-order mark "
                                f"({said}, which was ignored).") if conflict else None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and b"\x00" not in data:
        ascii_only = max(data, default=0) < 0x80
        if label is None or declared == "utf-8" or ascii_only:
            return text, "utf-8", None
        return text, "utf-8", f"Decoded as UTF-8: {said}, but the bytes are valid UTF-8 (the declaration was ignored)."
    if declared is not None and declared != "utf-8" and b"\x00" not in data and _reads_as(data, declared):
        return data.decode(declared), declared, f"Decoded as {declared}, as {said}."
    text, encoding, _ = _decode_text(name, data)
    if label is None:
        why = "the page declares no encoding and is not UTF-8"
    elif declared is None:
        why = f"{said}, which is not a known encoding"
    else:
        why = f"{said}, but its bytes do not read as {label}"
    return text, encoding, f"Decoded as {encoding} (best guess): {why}."


_EXTRACTORS: dict[str, Callable[[_Extraction], str]] = {
    "text": _extract_text,
    "markdown": _extract_text,
    "pdf": _extract_pdf,
    "docx": _extract_docx,
    "html": _extract_html,
}
