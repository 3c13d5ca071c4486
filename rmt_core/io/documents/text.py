"""Plain text and Markdown: decoding bytes (byte-order marks, UTF-16 without one, legacy
encodings guessed by charset-normalizer), refusing binary files, and normalising the text.

Decoding is linear in the file's size and needs no parser, so text is read in the calling
process (peak memory a few times max_bytes: see benchmarks/bench_documents.py).
"""
from __future__ import annotations

import codecs
import re
import unicodedata

from ...errors import DocumentError
from ._base import Extraction

# C0 controls except \t and \n (\r, \v, \f become newlines first), plus DEL.
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_NEWLINE_RE = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")


def normalise(text: str) -> tuple[str, int]:
    """NFC, \\n newlines, no BOM and no control characters but \\n and \\t; also returns how many were removed."""
    text = text.lstrip("\ufeff")
    text = _NEWLINE_RE.sub("\n", text)
    text, n_removed = _CONTROL_RE.subn("", text)
    return unicodedata.normalize("NFC", text), n_removed


BOMS: tuple[tuple[bytes, str], ...] = (
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


def binary_error(name: str, data: bytes, why: str) -> DocumentError:
    looks = next((what for magic, what in _MAGIC if data.startswith(magic)), None)
    hint = f" It looks like {looks}." if looks else ""
    return DocumentError(
        f"{name} looks like a binary file, not text ({why}).{hint} "
        "Choose a text file, or save the document as UTF-8 text."
    )


def decode_text(name: str, data: bytes) -> tuple[str, str, str | None]:
    """(text, encoding, note) for bytes meant to be text; DocumentError when they are not."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding), encoding, None
            except UnicodeDecodeError:
                raise binary_error(name, data, f"it starts with a {encoding} byte-order mark but is not valid {encoding}") from None
    if b"\x00" in data:
        guess = _utf16_without_bom(data)
        if guess is None:
            raise binary_error(name, data, "it contains NUL bytes")
        return data.decode(guess), guess, None
    try:
        return data.decode("utf-8"), "utf-8", None
    except UnicodeDecodeError:
        pass
    encoding = _guess_encoding(data)
    if encoding is None:
        raise binary_error(name, data, "it could not be decoded in any known text encoding")
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        raise binary_error(name, data, "it could not be decoded in any known text encoding") from None
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


def check_controls(name: str, data: bytes, text: str) -> None:
    sample = text[:100_000]
    n_controls = sum(1 for ch in sample if ch < " " and ch not in "\t\n\r\x0c")
    if sample and n_controls > max(0.05 * len(sample), 8):
        raise binary_error(name, data, f"{n_controls:,} control characters in its first {len(sample):,}")


def extract_text(run: Extraction) -> str:
    text, run.encoding, note = decode_text(run.name, run.data)
    check_controls(run.name, run.data, text)
    if note:
        run.notes.append(note)
    return text

