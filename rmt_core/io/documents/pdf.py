"""PDF: the text layer of each page, read with pypdf, within the reading budget.

Bounded work: pypdf's own decompression caps (75 MB a stream), at most ``max_pdf_pages``
pages, the time budget checked before every page, extraction stopped once the text fills
the character limit, and pages that draw the very same content streams (one stream shared by
2,000 pages is a known way to make a small file slow) read once: their text is repeated, as a
viewer shows it, and the note says so.
"""
from __future__ import annotations

import io
import re
import unicodedata

from ...errors import DocumentError
from ._base import Extraction, plural


def extract_pdf(run: Extraction) -> str:
    from pypdf import PdfReader

    name, data, limits = run.name, run.data, run.limits
    if b"%PDF-" not in data[:1024]:
        raise DocumentError(f"{name} is not a valid PDF (it does not start with %PDF-). Check that it is really a PDF.")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except MemoryError:  # over the memory budget: not a damaged file
        raise
    except Exception as exc:  # pypdf raises many types on malformed input
        raise _corrupt_pdf(name, exc) from exc
    if encrypted:
        _unlock(name, reader)
    try:
        n_pages = len(reader.pages)
    except MemoryError:  # over the memory budget: not a damaged file
        raise
    except Exception as exc:
        raise _corrupt_pdf(name, exc) from exc
    if n_pages == 0:
        raise DocumentError(f"{name} is a PDF with no pages. Check the file; it may be damaged.")
    if n_pages > limits.max_pdf_pages:
        if not run.truncate:
            problem = f"{name} has {n_pages:,} pages, over the limit of {limits.max_pdf_pages:,}."
            raise DocumentError(
                f"{problem} Pass truncate=True to read the first {limits.max_pdf_pages:,}, or raise the limit "
                f"with DocumentLimits(max_pdf_pages={n_pages}).",
                problem=problem, limit="max_pdf_pages", actual=n_pages, allowed=limits.max_pdf_pages,
                truncatable=True)
        run.notes.append(f"Read only the first {limits.max_pdf_pages:,} pages of {n_pages:,}.")
        run.truncated = True

    texts: list[str] = []
    failed: list[int] = []
    seen: dict[object, int] = {}  # content streams (and resources) -> index in texts of the page that drew them
    repeated = 0
    n_read = 0
    for i in range(min(n_pages, limits.max_pdf_pages)):
        run.check_time()
        if run.full():
            break
        n_read = i + 1
        try:
            page = reader.pages[i]
            key = _drawing_key(page)
            if key is not None and key in seen:
                page_text = texts[seen[key]]
                repeated += 1
            else:
                page_text = (page.extract_text() or "").strip("\n")
                if key is not None:
                    seen[key] = len(texts)
        except (DocumentError, MemoryError):  # a budget spent: not a damaged page
            raise
        except Exception:
            failed.append(i + 1)
            continue
        texts.append(page_text)
        run.add(len(page_text) + 2)
    if run.stopped_early and n_read < n_pages:
        run.notes.append(f"Stopped reading at page {n_read:,} of {n_pages:,}: the text already fills the "
                         f"limit of {limits.max_chars:,} characters.")
    if repeated:
        run.notes.append(f"{plural(repeated, 'page')} draw the same content as an earlier page (read once, "
                         "its text repeated).")
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


def _unlock(name: str, reader) -> None:
    """Open a PDF encrypted with the empty user password (owner-only protection); refuse any other."""
    from pypdf.errors import DependencyError

    try:
        unlocked = bool(reader.decrypt(""))
    except DependencyError as exc:  # AES needs the optional cryptography package
        raise DocumentError(
            f"{name} is an encrypted PDF that needs the 'cryptography' package to open ({exc}). "
            "Install it (pip install cryptography), or save the PDF without encryption, and try again."
        ) from exc
    except MemoryError:  # over the memory budget: not a damaged file
        raise
    except Exception:
        unlocked = False
    if not unlocked:
        raise DocumentError(
            f"{name} is an encrypted (password-protected) PDF. "
            "Open it with its password and save or print it as a PDF without one, then try again."
        )


def _ref(obj) -> object:
    """(object number, generation) of an indirect reference, else None (a direct object is never shared)."""
    idnum = getattr(obj, "idnum", None)
    return None if idnum is None else (idnum, getattr(obj, "generation", 0))


def _drawing_key(page) -> tuple | None:
    """What a page draws, by identity: its content stream objects and its resources; None when
    any of them is not an indirect object (then the page cannot be told to repeat another)."""
    contents = page.raw_get("/Contents") if "/Contents" in page else None
    if contents is None:
        return None
    refs = [_ref(contents)]
    if refs[0] is None and isinstance(contents, list):
        refs = [_ref(item) for item in contents]
    resources = page.raw_get("/Resources") if "/Resources" in page else None
    resources_key = _ref(resources) if resources is not None else None
    if resources_key is None and resources is not None:
        # Direct resources: the same when every font and XObject they name is the same object.
        resources_key = repr(sorted((str(k), repr(v)) for k, v in resources.items()))
    if not refs or any(r is None for r in refs):
        return None
    return (tuple(refs), resources_key)


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
