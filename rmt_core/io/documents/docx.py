"""Word .docx: the body's text in document order, read from the zip archive's XML, within budget.

Checked before a byte is inflated: the archive's directory (entry count, the total size it
declares against ``max_unzipped_bytes``, each part's compression ratio, each compressed size
against the file's own size); Python's ``zipfile`` never inflates past a declared size, so a
lying header fails its CRC check instead of filling memory.  The XML is parsed by lxml as a
stream (``iterparse``): each top-level block (paragraph, table, content control) is read and
then freed, so memory follows the largest block, not the file; no DTD is accepted (Office Open
XML parts never have one), no entity is expanded, nothing is loaded from disk or network.

Tables come out one row a line, cells separated by :data:`CELL_SEPARATOR`.
"""
from __future__ import annotations

import io
import re
import zipfile

from ...errors import DocumentError
from ._base import Extraction, human

CELL_SEPARATOR = " | "  # between a table row's cells (docx and HTML): reads as a separator in plain text

_MAX_ZIP_ENTRIES = 10_000
_MAX_ZIP_RATIO = 200  # inflated/compressed, checked for entries over _RATIO_MIN_BYTES
_RATIO_MIN_BYTES = 1 << 20

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_DELETED = frozenset({f"{_W}del", f"{_W}moveFrom"})  # tracked deletions and the old place of moved text
_NO_TEXT = frozenset({f"{_W}instrText", f"{_W}delText", f"{_W}delInstrText"})  # field codes, deleted text


def check_docx_zip(name: str, data: bytes, limits) -> None:
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
        problem = (f"{name} looks like a zip bomb: it would unpack to {human(total)} ({total:,} bytes), over the "
                   f"limit of {human(limits.max_unzipped_bytes)}. Nothing was extracted.")
        raise DocumentError(
            f"{problem} If the document is genuine, raise the limit with DocumentLimits(max_unzipped_bytes=...).",
            problem=problem, limit="max_unzipped_bytes", actual=total, allowed=limits.max_unzipped_bytes)
    for info in infos:
        if info.compress_size > len(data):
            raise DocumentError(
                f"{name} is a corrupt .docx: its part {info.filename} declares {info.compress_size:,} compressed "
                f"bytes in a file of {len(data):,}. Nothing was extracted. Re-save it from Word and try again.")
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


def extract_docx(run: Extraction) -> str:
    """The body's text in document order: paragraphs (with tracked insertions, without tracked
    deletions), tables, content controls, hyperlinks and field results; the note names the
    parts a reader sees elsewhere (headers, footers, footnotes, endnotes, comments, text boxes)."""
    name = run.name
    check_docx_zip(name, run.data, run.limits)
    from lxml import etree

    try:
        with zipfile.ZipFile(io.BytesIO(run.data)) as zf:
            reader = _DocxReader(name)
            blocks: list[str] = []
            found_body = False
            for block in _body_blocks(name, zf, run):
                found_body = True
                for text in reader.blocks([block]):
                    if text.strip():
                        blocks.append(text)
                        run.add(len(text) + 2)
            if not found_body:
                raise ValueError("word/document.xml has no w:body")
            skipped = _docx_skipped_parts(name, zf) + reader.skipped()
    except DocumentError:
        raise
    except etree.XMLSyntaxError as exc:
        if _out_of_memory(exc):
            raise MemoryError(str(exc)) from exc
        detail = exc.error_log[0].message if len(exc.error_log) else str(exc)
        raise DocumentError(
            f"{name} is a corrupt .docx: its XML is not well-formed ({detail}). Re-save it from Word and try again."
        ) from exc
    except MemoryError:  # over the memory budget: not a damaged file
        raise
    except Exception as exc:  # zip, XML and package errors all mean a damaged file here
        raise DocumentError(
            f"{name} is a corrupt .docx ({type(exc).__name__}: {exc}). Re-save it from Word and try again."
        ) from exc
    if run.stopped_early:
        run.notes.append(f"Stopped reading part-way: the text already fills the limit of "
                         f"{run.limits.max_chars:,} characters.")
    if skipped:
        run.notes.append("Not read (only the document body and its tables are): " + ", ".join(skipped) + ".")
    return "\n\n".join(blocks)


def _out_of_memory(exc) -> bool:
    """True when libxml2 stopped because an allocation failed (it reports that as a syntax error)."""
    log = list(exc.error_log)
    if any(e.type_name == "ERR_NO_MEMORY" or "memory" in e.message.lower() for e in log):
        return True
    return not log and "unknown error" in str(exc)


def _parse_events(name: str, zf: zipfile.ZipFile, part: str, events=("start", "end")):
    """lxml iterparse over one part, as it inflates: no DTD (refused), no entities, no network."""
    from lxml import etree

    stream = zf.open(part)
    context = etree.iterparse(stream, events=events, resolve_entities=False, load_dtd=False, no_network=True,
                              huge_tree=False, remove_comments=True, remove_pis=True)
    checked = False
    for event, element in context:
        if not checked:
            checked = True
            if element.getroottree().docinfo.internalDTD is not None or element.getroottree().docinfo.doctype:
                raise DocumentError(
                    f"{name} is not a valid .docx: its part {part} declares a DTD (<!DOCTYPE ...>), which Office "
                    "Open XML forbids and Word never writes (a DTD can define entities that hide or invent "
                    "text). Refused. Re-save the document from Word and try again.")
        yield event, element


def _body_blocks(name: str, zf: zipfile.ZipFile, run: Extraction):
    """Each child of w:body, whole, in order; freed once the caller moves on (memory stays one block)."""
    depth = 0
    body = None
    for event, element in _parse_events(name, zf, "word/document.xml"):
        if event == "start":
            depth += 1
            if depth == 2 and element.tag == f"{_W}body":
                body = element
            continue
        depth -= 1
        if body is not None and depth == 2 and element.getparent() is body:
            yield element
            element.clear()
            while element.getprevious() is not None:  # drop what was read, and the placeholders lxml keeps
                del body[0]
            run.check_time()
            if run.full():
                return
        elif element is body:
            return


def _is_properties(tag: str) -> bool:
    """w:pPr, w:rPr, w:sectPr, w:tblPr...: formatting, never text (w:pPr holds w:tabs, not tabs)."""
    return tag.startswith(_W) and tag.endswith("Pr")


def _refuse_entity(name: str, element) -> None:
    from lxml import etree

    if isinstance(element, etree._Entity):
        raise DocumentError(
            f"{name} refers to an XML entity ({element.text}) whose text cannot be read. Refused rather than "
            "dropping text. Re-save the document from Word and try again.")


class _DocxReader:
    """Walks WordprocessingML: block containers give paragraphs and tables, inline content gives text."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.text_boxes = 0

    def skipped(self) -> list[str]:
        n = self.text_boxes
        return [f"{n} text box{'es' if n != 1 else ''}"] if n else []

    def blocks(self, container, depth: int = 0) -> list[str]:
        out: list[str] = []
        for child in container:
            tag = child.tag
            if not isinstance(tag, str):
                _refuse_entity(self.name, child)
                continue
            if tag in _DELETED or _is_properties(tag):
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
            if not isinstance(tag, str):
                _refuse_entity(self.name, child)
                continue
            if tag in _DELETED or tag in _NO_TEXT or _is_properties(tag):
                continue
            if tag == f"{_W}t":
                for piece in child:  # a w:t holds only text; an entity reference inside would hide some
                    _refuse_entity(self.name, piece)
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
                cells.append(" ".join(p.replace("\n", " ").strip() for p in parts))
            rows.append(CELL_SEPARATOR.join(cells).rstrip())
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


def _part_has_text(name: str, zf: zipfile.ZipFile, part: str, element: str | None = None) -> int:
    """How many `element`s of a part hold text (with None: 1 when the part holds any), read as a
    stream with each finished element freed."""
    n = 0
    counting = False  # inside an `element` that counts (not a separator)
    has_text = False
    for event, el in _parse_events(name, zf, part):
        tag = el.tag
        if element is not None and tag == f"{_W}{element}":
            if event == "start":
                counting = el.get(f"{_W}type") not in ("separator", "continuationSeparator", "continuationNotice")
                has_text = False
            else:
                n += counting and has_text
                counting = False
                el.clear()
            continue
        if event == "end" and tag == f"{_W}t" and (el.text or "").strip():
            if element is None:
                return 1
            has_text = True
    return n


def _docx_skipped_parts(name: str, zf: zipfile.ZipFile) -> list[str]:
    """What holds text outside the body: header/footer parts, footnotes, endnotes and comments."""
    names = set(zf.namelist())
    found: list[str] = []
    for kind in ("header", "footer"):
        parts = sorted(n for n in names if re.fullmatch(rf"word/{kind}\d*\.xml", n))
        n = sum(_part_has_text(name, zf, part) for part in parts)
        if n:
            found.append(f"{n} {kind}{'s' if n != 1 else ''}")
    for part, element, label in (("word/footnotes.xml", "footnote", "footnote"),
                                 ("word/endnotes.xml", "endnote", "endnote"),
                                 ("word/comments.xml", "comment", "comment")):
        if part in names:
            n = _part_has_text(name, zf, part, element)
            if n:
                found.append(f"{n} {label}{'s' if n != 1 else ''}")
    return found
