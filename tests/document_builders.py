"""Crafted documents for the document-reading tests, the answer tests and benchmarks/bench_documents.py.

Each builder returns the file's bytes, made here (no fixtures on disk): a PDF whose pages all
share one content stream, a large HTML page of small elements, a .docx with a large body, a
.docx whose zip directory declares a huge size, and a .docx with an undefined XML entity.
"""
from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

_WORDS = ("memory", "segment", "token", "garden", "kitchen", "Mary", "went", "to", "the", "hallway",
          "John", "picked", "up", "apple", "office", "bathroom", "Daniel", "moved", "Sandra", "journeyed")


def pdf(page_streams: list[int], streams: list[bytes], compress: bool = True) -> bytes:
    """A PDF with len(page_streams) pages; page i draws streams[page_streams[i]] (shared objects
    when indices repeat), with Helvetica as /F1. Objects: 1 catalog, 2 pages, 3 font, then the
    streams, then the pages; the xref table is exact."""
    n_streams, n_pages = len(streams), len(page_streams)
    first_page = 4 + n_streams
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (first_page + i) for i in range(n_pages))
        + b"] /Count %d >>" % n_pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for content in streams:
        body = zlib.compress(content, 9) if compress else content
        filt = b" /Filter /FlateDecode" if compress else b""
        objects.append(b"<< /Length %d%s >>\nstream\n" % (len(body), filt) + body + b"\nendstream")
    for s in page_streams:
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (4 + s))
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + obj + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def text_stream(n_lines: int, seed: int = 0) -> bytes:
    """A page content stream showing n_lines lines of words (about 60 bytes of operators a line)."""
    rng = random.Random(seed)
    lines = [b"BT /F1 10 Tf 72 760 Td 12 TL"]
    for _ in range(n_lines):
        words = " ".join(rng.choice(_WORDS) for _ in range(6))
        lines.append(b"(" + words.encode() + b") '")
    lines.append(b"ET")
    return b"\n".join(lines)


def shared_stream_pdf(n_pages: int = 2000, n_lines: int = 20_000) -> bytes:
    """n_pages pages that all draw ONE content stream of n_lines text lines (a few hundred kB
    compressed at the defaults, 2,000 pages of about 1.1 MB of drawing operators each)."""
    return pdf([0] * n_pages, [text_stream(n_lines)])


def plain_pdf(n_pages: int, n_lines: int = 45) -> bytes:
    """An ordinary PDF: n_pages pages, each with its own stream of n_lines text lines."""
    return pdf(list(range(n_pages)), [text_stream(n_lines, seed=i) for i in range(n_pages)])


def html_page(n_bytes: int, seed: int = 0) -> bytes:
    """A page of about n_bytes: paragraphs of short words in many small inline elements."""
    rng = random.Random(seed)
    parts = [b"<!DOCTYPE html><html><head><title>A long page</title></head><body><h1>A long page</h1>\n"]
    size = len(parts[0])
    while size < n_bytes:
        words = [rng.choice(_WORDS) for _ in range(8)]
        para = ("<p>" + " ".join(f"<b>{w}</b>" if i % 2 else f"<i>{w}</i>" for i, w in enumerate(words))
                + "</p>\n").encode()
        parts.append(para)
        size += len(para)
    parts.append(b"</body></html>\n")
    return b"".join(parts)


_CONTENT_TYPES = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                  b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                  b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                  b'<Default Extension="xml" ContentType="application/xml"/>'
                  b'<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
                  b'officedocument.wordprocessingml.document.main+xml"/></Types>')
_RELS = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
         b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
         b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
         b'officeDocument" Target="word/document.xml"/></Relationships>')
_DOC_HEAD = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
             b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>')
_DOC_TAIL = b"<w:sectPr/></w:body></w:document>"


def docx(body_xml: bytes, head: bytes = _DOC_HEAD) -> bytes:
    """A minimal .docx whose word/document.xml body is body_xml (WordprocessingML, prefix w:)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _RELS)
        zf.writestr("word/document.xml", head + body_xml + _DOC_TAIL)
    return out.getvalue()


def paragraph(text: str) -> bytes:
    from xml.sax.saxutils import escape

    return b"<w:p><w:r><w:t xml:space=\"preserve\">" + escape(text).encode() + b"</w:t></w:r></w:p>"


def big_docx(xml_bytes: int, seed: int = 0) -> bytes:
    """A .docx whose document.xml is about xml_bytes: paragraphs of runs with formatting, as Word
    writes them (random words, so it compresses about as much as real text, ~15x)."""
    rng = random.Random(seed)
    parts, size = [], 0
    while size < xml_bytes:
        runs = b"".join(b'<w:r><w:rPr><w:b/><w:sz w:val="24"/></w:rPr><w:t xml:space="preserve">'
                        + f"{rng.choice(_WORDS)}{rng.randrange(1000)} ".encode() + b"</w:t></w:r>"
                        for _ in range(12))
        para = b"<w:p><w:pPr><w:spacing w:after=\"120\"/></w:pPr>" + runs + b"</w:p>"
        parts.append(para)
        size += len(para)
    return docx(b"".join(parts))


def table_docx(rows: list[list[str]]) -> bytes:
    """A .docx holding one table with these rows of cells."""
    from xml.sax.saxutils import escape

    body = b"<w:tbl>" + b"".join(
        b"<w:tr>" + b"".join(b"<w:tc><w:p><w:r><w:t>" + escape(c).encode() + b"</w:t></w:r></w:p></w:tc>"
                             for c in row) + b"</w:tr>" for row in rows) + b"</w:tbl>"
    return docx(body)


def lying_size_docx(declared: int) -> bytes:
    """A small .docx whose zip directory says word/document.xml unpacks to `declared` bytes."""
    data = bytearray(docx(paragraph("hello")))
    # Patch the uncompressed size in the central directory entry of word/document.xml (ZIP64 not used).
    name = b"word/document.xml"
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0:
            raise AssertionError("no central directory entry for word/document.xml")
        n_name = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46:pos + 46 + n_name]) == name:
            struct.pack_into("<I", data, pos + 24, min(declared, 0xFFFFFFFE))
            break
        pos += 4
    return bytes(data)


def austen_story(segments: int, fact: str = "Sandra went to the garden.", fact_word: int = 60) -> str:
    """Held-out Austen text of about `segments` segments of the default model (24 words each) with
    `fact` inserted at the first sentence boundary after `fact_word` words (tests of answers)."""
    from rmt_core.training.corpus import load_corpus

    words = load_corpus("heldout")[20000:].split()
    text = " ".join(words[: segments * 24])
    cut = text.find(". ", len(" ".join(words[:fact_word]))) + 2
    return text[:cut] + fact + " " + text[cut:]
