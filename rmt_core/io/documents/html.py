"""HTML: a page's visible text, read as a stream by lxml's (libxml2's) HTML tokenizer.

No tree is built: the page is fed in chunks to an lxml parser whose target writes text out
as it comes, and only the stack of open elements is kept, so memory follows the
text, not the markup (a tree of an 18 MB page of small elements took 4 GB), and the time
budget and character limit are checked between chunks.  Nothing is loaded or run: scripts,
styles, templates, embedded objects, hidden elements and comments are skipped.

The ``<title>``: a browser shows it in the tab, not in the page.  It is read as the text's
first paragraph only when the page's first heading does not already say it (a title that
repeats the ``<h1>``, or the ``<h1>`` plus the site's name, is left out).

Tables come out one row a line, cells separated by :data:`CELL_SEPARATOR` (as for .docx).
"""
from __future__ import annotations

import codecs
import re

from ._base import Extraction
from .docx import CELL_SEPARATOR
from .text import BOMS, check_controls, decode_text

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
_VOID_TAGS = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr",
    "keygen",
})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_CHUNK = 1 << 16  # characters fed to the tokenizer at a time (the budget is checked between chunks)


class _TextWriter:
    """Collects text pieces; breaks between blocks become at most one blank line."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.n_chars = 0  # characters written so far
        self.pending = 0  # newlines owed before the next text
        self.at_line_start = True

    def brk(self, n: int) -> None:
        self.pending = max(self.pending, n)

    def cell(self) -> None:
        if not self.at_line_start and not self.pending:
            self.parts.append(CELL_SEPARATOR)
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
        self.n_chars += len(s)
        self.at_line_start = s.endswith("\n")

    def result(self) -> str:
        text = "".join(self.parts)
        text = re.sub(r"[ \t]+\n", "\n", text)
        text = re.sub(r" {2,}", " ", text)
        return re.sub(r"\n{3,}", "\n\n", text).strip()



class _VisibleText:
    """A parser target (lxml calls start / end / data as libxml2's HTML tokenizer goes; no tree
    is built) that writes a page's visible text: a stack of open elements says what is skipped
    (script, style, head, hidden ...) and where blocks, lines and cells break.

    libxml2 closes elements the way HTML does (a <p> ends where a block starts, every element
    still open ends at the end), so each start has its end; an end with no open element of
    that name is ignored.
    """

    def __init__(self) -> None:
        self.writer = _TextWriter()
        self.stack: list[tuple[str, bool]] = []  # (tag, skipped: this element or one around it is not shown)
        self.pre_depth = 0
        self.title: list[str] = []
        self.in_title = False
        self.first_heading: list[str] | None = None  # text of the first h1-h6, while / once read
        self.heading_open = False

    def _skipped(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def start(self, tag, attrib) -> None:
        if not isinstance(tag, str):
            return
        tag = tag.lower()
        if tag == "title" and not self.title:
            self.in_title = True
        if tag in _VOID_TAGS:
            self._void(tag, attrib)
            return
        skipped = self._skipped() or tag in _SKIP_TAGS or _is_hidden(tag, attrib)
        self.stack.append((tag, skipped))
        if not skipped:
            self._open(tag)

    def _void(self, tag: str, attributes) -> None:
        if self._skipped() or _is_hidden(tag, attributes):
            return
        if tag == "br":
            self.writer.brk(1)
        elif tag == "hr":
            self.writer.brk(2)
        elif tag == "img" and attributes.get("alt"):
            self.writer.text(f" {attributes['alt']} ", self.pre_depth > 0)

    def _open(self, tag: str) -> None:
        if tag in _PARAGRAPH_TAGS:
            self.writer.brk(2)
        elif tag in _LINE_TAGS:
            self.writer.brk(1)
        elif tag in _CELL_TAGS:
            self.writer.cell()
        if tag in ("pre", "textarea"):
            self.pre_depth += 1
        if tag in _HEADINGS and self.first_heading is None:
            self.first_heading, self.heading_open = [], True

    def end(self, tag) -> None:
        if not isinstance(tag, str):
            return
        tag = tag.lower()
        if tag == "title":
            self.in_title = False
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                while len(self.stack) > i:
                    self._close(*self.stack.pop())
                return

    def _close(self, tag: str, skipped: bool) -> None:
        if skipped:
            return
        if tag in ("pre", "textarea"):
            self.pre_depth -= 1
        if tag in _HEADINGS and self.heading_open:
            self.heading_open = False
        if tag in _PARAGRAPH_TAGS:
            self.writer.brk(2)
        elif tag in _LINE_TAGS:
            self.writer.brk(1)

    def data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        if self._skipped():
            return
        if self.heading_open:
            self.first_heading.append(data)
        self.writer.text(data, self.pre_depth > 0)

    def comment(self, text) -> None:  # comments are not text
        pass

    def close(self) -> str:
        while self.stack:
            self._close(*self.stack.pop())
        return self.writer.result()


def _same_words(text: str) -> str:
    return _SPACE_RE.sub(" ", text).strip().casefold()


def _title_to_keep(title: str, first_heading: str | None) -> str | None:
    """The title, unless it is empty or the first heading already says it (equal, or one inside the other)."""
    title_words = _same_words(title)
    if not title_words:
        return None
    heading = _same_words(first_heading or "")
    if heading and (heading in title_words or title_words in heading):
        return None
    return _SPACE_RE.sub(" ", title).strip()


def _is_hidden(tag: str, attrs: dict) -> bool:
    if "hidden" in attrs or str(attrs.get("aria-hidden") or "").lower() == "true":
        return True
    if tag == "input" and str(attrs.get("type") or "").lower() == "hidden":
        return True
    style = str(attrs.get("style") or "").replace(" ", "").lower()
    return "display:none" in style or "visibility:hidden" in style


def extract_html(run: Extraction) -> str:
    text, run.encoding, note = _decode_html(run.name, run.data)
    check_controls(run.name, run.data, text)
    if note:
        run.notes.append(note)
    from lxml import etree

    target = _VisibleText()
    parser = etree.HTMLParser(target=target, no_network=True, remove_comments=True, remove_pis=True,
                              huge_tree=True)  # no tree is built: the size caps are ours (max_bytes, max_chars)
    for start in range(0, len(text), _CHUNK):
        parser.feed(text[start:start + _CHUNK])
        run.n_chars = target.writer.n_chars
        run.check_time()
        if run.full():
            run.notes.append(f"Stopped reading part-way: the text already fills the limit of "
                             f"{run.limits.max_chars:,} characters.")
            break
    del text
    body = parser.close()
    title = _title_to_keep("".join(target.title), "".join(target.first_heading or []))
    return f"{title}\n\n{body}" if title and body else (title or body)


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
    bom = next((encoding for mark, encoding in BOMS if data.startswith(mark)), None)
    if bom is not None:
        text, encoding, _ = decode_text(name, data)
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
    text, encoding, _ = decode_text(name, data)
    if label is None:
        why = "the page declares no encoding and is not UTF-8"
    elif declared is None:
        why = f"{said}, which is not a known encoding"
    else:
        why = f"{said}, but its bytes do not read as {label}"
    return text, encoding, f"Decoded as {encoding} (best guess): {why}."

