"""rmt_core.io.documents: every input is built inside the test; each bad input gets its own message."""
from __future__ import annotations

import codecs
import io
import zipfile
from pathlib import Path

import pytest

from rmt_core.io.documents import Document, DocumentLimits, read_document, supported_extensions
from rmt_core.errors import DocumentError, RMTLensError


# ---------------------------------------------------------------------------
# helpers


def pdf_file(objects: list[bytes]) -> bytes:
    """PDF bytes from numbered object bodies (object 1 is the catalog), with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF, written by hand: one Helvetica text line per page, correct xref offsets."""
    n = len(pages)
    font_id = 3 + 2 * n
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (3 + 2 * i) for i in range(n)) + b"] /Count %d >>" % n,
    ]
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")
        content = b"BT /F1 12 Tf 72 720 Td (" + escaped + b") Tj ET"
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (font_id, 4 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return pdf_file(objects)


def make_docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph("First paragraph about memory tokens.")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([("Segment", "Tokens"), ("1", "512")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("After the table.")
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


IN_PROCESS = DocumentLimits(isolate=False)  # for tests that patch a library in this process


def error_of(*args, **kwargs) -> str:
    with pytest.raises(DocumentError) as info:
        read_document(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------
# plain text


def test_supported_extensions_and_error_base():
    exts = supported_extensions()
    assert {".txt", ".md", ".text", ".markdown", ".pdf", ".docx", ".html", ".htm"} == set(exts)
    assert issubclass(DocumentError, RMTLensError)


def test_utf8_file_from_path(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_bytes("Memory tokens carry state — café.\n".encode("utf-8"))
    doc = read_document(path)
    assert isinstance(doc, Document)
    assert doc == Document(text="Memory tokens carry state — café.\n", name="notes.txt", kind="text",
                           encoding="utf-8", truncated=False, note=None, n_bytes=path.stat().st_size)


def test_upload_bytes_use_name_for_extension_only():
    doc = read_document("folder/README.MD", data=b"# Title\r\n\r\nBody\r\n")
    assert (doc.kind, doc.name, doc.text) == ("markdown", "README.MD", "# Title\n\nBody\n")


@pytest.mark.parametrize("encoding, bom, expected", [
    ("utf-16-le", codecs.BOM_UTF16_LE, "utf-16-le"),
    ("utf-16-be", codecs.BOM_UTF16_BE, "utf-16-be"),
    ("utf-32-le", codecs.BOM_UTF32_LE, "utf-32-le"),
    ("utf-8", codecs.BOM_UTF8, "utf-8-sig"),
])
def test_bom_encodings_and_windows_newlines(encoding: str, bom: bytes, expected: str):
    raw = bom + "Line one\r\nLigne deux: été\r\n".encode(encoding)
    doc = read_document("a.txt", data=raw)
    assert doc.text == "Line one\nLigne deux: été\n"
    assert doc.encoding == expected
    assert "\ufeff" not in doc.text


def test_utf16_without_bom_is_detected():
    doc = read_document("a.txt", data="Plain words without a mark\n".encode("utf-16-le"))
    assert doc.text == "Plain words without a mark\n" and doc.encoding == "utf-16-le"


def test_latin1_is_guessed_and_reported():
    text = ("Le café était fermé, mais la crème brûlée restait délicieuse à côté du théâtre. " * 4).strip()
    doc = read_document("fr.txt", data=text.encode("latin-1"))
    assert doc.text == text
    assert doc.encoding == "cp1252" and "best guess" in doc.note
    assert read_document("de.txt", data="Schöne Grüße aus Köln".encode("latin-1")).text == "Schöne Grüße aus Köln"


def test_non_western_legacy_encoding_is_guessed():
    text = "Привет, мир! Это проверка кодировки текста для модели памяти."
    assert read_document("ru.txt", data=text.encode("cp1251")).text == text


def test_old_mac_newlines_nfc_and_control_chars_removed():
    doc = read_document("a.txt", data="one\rtwo\rcafe\u0301\x07\x1b end\tx".encode("utf-8"))
    assert doc.text == "one\ntwo\ncafé end\tx"
    assert doc.note == "Removed 2 control characters."


# ---------------------------------------------------------------------------
# bad inputs: one message each


def test_missing_file(tmp_path: Path):
    assert "No such file" in error_of(tmp_path / "nope.txt")


def test_folder_is_refused(tmp_path: Path):
    folder = tmp_path / "docs.txt"
    folder.mkdir()
    assert "is a folder" in error_of(folder)


def test_unknown_extension_lists_supported():
    message = error_of("sheet.xlsx", data=b"whatever")
    assert "'.xlsx' is not supported" in message and ".pdf" in message and ".docx" in message
    assert "no extension" in error_of("Makefile", data=b"all:")


def test_empty_and_whitespace_only(tmp_path: Path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    assert "is empty (0 bytes)" in error_of(path)
    assert "no text (only whitespace)" in error_of("blank.md", data=b" \r\n\t\n  ")


def test_binary_under_text_name():
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    message = error_of("photo.txt", data=png)
    assert "binary file" in message and "NUL bytes" in message and "PNG" in message


def test_control_character_soup_is_binary():
    message = error_of("weird.txt", data=bytes([1, 2, 3, 4, 5, 6, 14, 15, 16, 17]) * 50 + b"text")
    assert "binary file" in message and "control characters" in message


def test_undecodable_after_byte_order_mark():
    message = error_of("bad.txt", data=codecs.BOM_UTF16_LE + b"abc")
    assert "binary file" in message and "byte-order mark" in message


def test_over_size_limit_names_both_numbers(tmp_path: Path):
    limits = DocumentLimits(max_bytes=100)
    message = error_of("big.txt", data=b"a" * 150, limits=limits)
    assert "150 bytes" in message and "100 bytes" in message and "DocumentLimits(max_bytes=" in message
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * 150)
    assert "over the size limit" in error_of(path, limits=limits)
    assert read_document(path, limits=DocumentLimits(max_bytes=150)).text == "a" * 150


def test_over_char_limit_raises_or_truncates_with_note():
    data = b"abcdefghijklmnopqrstuvwxyz"
    limits = DocumentLimits(max_chars=10)
    message = error_of("abc.txt", data=data, limits=limits)
    assert "26 characters" in message and "limit of 10" in message and "truncate=True" in message
    doc = read_document("abc.txt", data=data, limits=limits, truncate=True)
    assert doc.text == "abcdefghij" and doc.truncated
    assert doc.note == "Truncated to the first 10 characters of 26."


def test_limits_must_be_positive():
    with pytest.raises(DocumentError, match="max_chars"):
        DocumentLimits(max_chars=0)


# ---------------------------------------------------------------------------
# PDF


def test_pdf_round_trip(tmp_path: Path):
    path = tmp_path / "hello.pdf"
    path.write_bytes(make_pdf(["Hello RMT Lens", "Second page"]))
    doc = read_document(path)
    assert doc.kind == "pdf" and doc.encoding is None and doc.note is None
    assert "Hello RMT Lens" in doc.text and "Second page" in doc.text
    assert doc.text.index("Hello") < doc.text.index("Second") and "\n\n" in doc.text


def test_pdf_page_limit_raises_or_truncates():
    data = make_pdf(["page one", "page two", "page three"])
    message = error_of("long.pdf", data=data, limits=DocumentLimits(max_pdf_pages=2))
    assert "3 pages" in message and "limit of 2" in message
    doc = read_document("long.pdf", data=data, limits=DocumentLimits(max_pdf_pages=2), truncate=True)
    assert "page two" in doc.text and "page three" not in doc.text
    assert doc.truncated and "first 2 pages of 3" in doc.note


def test_encrypted_pdf():
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt("secret")
    buf = io.BytesIO()
    writer.write(buf)
    assert "encrypted (password-protected) PDF" in error_of("locked.pdf", data=buf.getvalue())


def test_pdf_with_only_an_owner_password_is_read():
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["Hello RMT Lens"]))))
    writer.encrypt("", owner_password="owner")
    buf = io.BytesIO()
    writer.write(buf)
    assert "Hello RMT Lens" in read_document("open.pdf", data=buf.getvalue()).text


def test_aes_pdf_without_cryptography_says_what_to_install(monkeypatch):
    from pypdf import PdfReader, PdfWriter
    from pypdf.errors import DependencyError

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt("", owner_password="owner")
    buf = io.BytesIO()
    writer.write(buf)

    def needs_cryptography(self, password):
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")
    monkeypatch.setattr(PdfReader, "decrypt", needs_cryptography)  # in this process: read in it
    assert "needs the 'cryptography' package" in error_of("aes.pdf", data=buf.getvalue(), limits=IN_PROCESS)


def test_pdf_without_text_layer():
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.add_blank_page(width=200, height=200)
    buf = io.BytesIO()
    writer.write(buf)
    message = error_of("scan.pdf", data=buf.getvalue())
    assert "2 pages but no text layer" in message and "OCR" in message


def test_corrupt_pdf():
    assert "corrupt or unreadable PDF" in error_of("broken.pdf", data=b"%PDF-1.4\n" + b"\x00garbage" * 20)
    assert "does not start with %PDF-" in error_of("fake.pdf", data=b"just some text")


# ---------------------------------------------------------------------------
# DOCX


def test_docx_round_trip_with_table(tmp_path: Path):
    path = tmp_path / "report.docx"
    path.write_bytes(make_docx())
    doc = read_document(path)
    assert doc.kind == "docx" and doc.note is None
    assert doc.text == "First paragraph about memory tokens.\n\nSegment | Tokens\n1 | 512\n\nAfter the table."


def test_corrupt_docx_not_a_zip():
    assert "corrupt .docx (not a valid zip archive" in error_of("bad.docx", data=b"this is not a zip file at all")


def test_corrupt_docx_missing_document_xml():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "hi")
    assert "has no word/document.xml" in error_of("bad.docx", data=buf.getvalue())


def test_old_word_doc_under_docx_name():
    message = error_of("old.docx", data=b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64)
    assert "old Word .doc or a password-protected" in message


def _zip_of_zeros(n_mib: int, level: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        with zf.open("word/document.xml", mode="w", force_zip64=True) as fh:
            chunk = b"\x00" * (8 << 20)
            for _ in range(n_mib // 8):
                fh.write(chunk)
    return buf.getvalue()


def refuse_unzipping(monkeypatch) -> None:
    """From now on, any attempt to inflate a zip member fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a zip member was opened")
    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)
    monkeypatch.setattr(zipfile.ZipFile, "read", refuse)


def test_zip_bomb_docx_refused_without_extracting(monkeypatch):
    data = _zip_of_zeros(304, level=1)  # ~1.4 MB declaring 318.8 MB
    refuse_unzipping(monkeypatch)
    message = error_of("bomb.docx", data=data)
    assert "zip bomb" in message and "318.8 MB" in message and "200.0 MB" in message
    assert "Nothing was extracted" in message and "max_unzipped_bytes" in message


def test_zip_bomb_by_compression_ratio(monkeypatch):
    data = _zip_of_zeros(16, level=9)  # 16 MiB in ~16 kB: under the size limit, absurd ratio
    refuse_unzipping(monkeypatch)
    message = error_of("bomb.docx", data=data)
    assert "zip bomb" in message and "compressed" in message and "to 1" in message


# ---------------------------------------------------------------------------
# HTML


def test_html_visible_text_only():
    page = b"""<!DOCTYPE html><html><head><title>RMT  Lens</title>
    <style>body { color: red }</style><script>var x = 1;</script></head>
    <body><h1>Heading</h1><!-- a comment -->
    <p>First <b>bold</b>
       paragraph.</p><script>alert(1)</script><noscript>enable js</noscript>
    <div hidden>secret</div><div style="display: none">also secret</div>
    <ul><li>one</li><li>two</li></ul>
    <table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>
    line<br>break<template><p>tmpl</p></template></body></html>"""
    doc = read_document("page.html", data=page)
    assert doc.kind == "html"
    assert doc.text == "RMT Lens\n\nHeading\n\nFirst bold paragraph.\n\none\ntwo\n\na | b\nc | d\n\nline\nbreak"
    for hidden in ("alert", "color", "var x", "comment", "enable js", "secret", "tmpl"):
        assert hidden not in doc.text


def test_html_meta_charset_is_honoured():
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>crème brûlée</p></body></html>'
    doc = read_document("menu.htm", data=page.encode("latin-1"))
    # the HTML standard reads the label iso-8859-1 as windows-1252
    assert doc.text == "crème brûlée" and doc.encoding == "cp1252" and "iso-8859-1" in doc.note


def test_deeply_nested_html_does_not_recurse():
    page = "<div>" * 2000 + "deep" + "</div>" * 2000
    assert read_document("deep.html", data=page.encode()).text == "deep"


def test_unknown_extension_can_be_read_as_text(tmp_path):
    from rmt_core.io.documents import read_document

    path = tmp_path / "notes.log"
    path.write_text("Mary travelled to the office.\r\n")
    with pytest.raises(DocumentError, match="not supported"):
        read_document(path)
    assert read_document(path, unknown_as_text=True).text == "Mary travelled to the office.\n"
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DocumentError, match="binary"):
        read_document(tmp_path / "blob.bin", unknown_as_text=True)  # the text checks still apply


# ---------------------------------------------------------------------------
# Text in, text out (issue 17): ligatures, tracked changes, wrong declarations


def make_pdf_with_ligatures(text_codes: bytes, mapping: dict[int, str]) -> bytes:
    """A one-page PDF whose font maps some byte codes to other characters through a /ToUnicode CMap,
    as PDF fonts do for ligature glyphs: code -> the character a reader extracts."""
    bfchar = b"".join(b"<%02X> <%s>\n" % (code, "".join(f"{ord(c):04X}" for c in chars).encode())
                      for code, chars in mapping.items())
    cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
            b"/CMapName /Custom def /CMapType 2 def\n1 begincodespacerange <00> <FF> endcodespacerange\n"
            b"1 beginbfrange <20> <7E> <0020> endbfrange\n"
            + b"%d beginbfchar\n" % len(mapping) + bfchar + b"endbfchar\n"
            b"endcmap CMapName currentdict /CMap defineresource pop end end")
    escaped = text_codes.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    content = b"BT /F1 12 Tf 72 720 Td (" + escaped + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> "
        b"/Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 6 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream",
    ]
    return pdf_file(objects)


def test_pdf_ligature_glyphs_are_folded_with_a_note():
    data = make_pdf_with_ligatures(b"The \x01eld was \x02at, \x03ne and \x04cial.",
                                   {1: "\ufb01", 2: "\ufb02", 3: "\ufb00", 4: "\ufb03"})
    from pypdf import PdfReader

    raw = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert "\ufb01eld" in raw  # the PDF really yields the ligature characters
    doc = read_document("ligatures.pdf", data=data)
    assert doc.text == "The field was flat, ffne and fficial."
    assert "Folded 4 ligature" in doc.note and "ﬁ→fi" in doc.note and "NFKC" in doc.note


def test_presentation_forms_folded_but_other_compatibility_text_kept():
    from rmt_core.io.documents import fold_presentation_forms

    arabic_forms = "\ufe8d\ufee0\ufecc\ufeae\ufe91\ufef2"  # contextual Arabic letter shapes
    text, counts = fold_presentation_forms(f"x² ½ ＡＢ ﬁ {arabic_forms} \ufe35")
    assert text.startswith("x² ½ ＡＢ fi ")  # superscripts, fractions, fullwidth letters are text: kept
    assert "\ufe8d" not in text and "ا" in text and "︵" not in text and "(" in text
    assert counts["ﬁ"] == 1 and sum(counts.values()) == 2 + len(arabic_forms)


_W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def make_docx_xml(body_xml: str, extra_parts: dict[str, str] | None = None) -> bytes:
    """A .docx made by python-docx whose word/document.xml body is replaced by raw XML
    (tracked changes, content controls...), plus optional extra parts (headers, footnotes...)."""
    import docx

    buf = io.BytesIO()
    docx.Document().save(buf)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "word/document.xml":
                data = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                        f'<w:document xmlns:w="{_W_NS}" '
                        f'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
                        f"<w:body>{body_xml}<w:sectPr/></w:body></w:document>").encode()
            dst.writestr(info, data)
        for name, xml in (extra_parts or {}).items():
            dst.writestr(name, f'<?xml version="1.0" encoding="UTF-8"?>{xml}'.replace("W_NS", _W_NS))
    return out.getvalue()


def test_docx_tracked_insertions_read_and_deletions_dropped():
    body = (
        '<w:p><w:r><w:t xml:space="preserve">The model </w:t></w:r>'
        '<w:ins w:id="1" w:author="A" w:date="2024-01-01T00:00:00Z"><w:r><w:t xml:space="preserve">quickly </w:t></w:r></w:ins>'
        '<w:del w:id="2" w:author="A" w:date="2024-01-01T00:00:00Z"><w:r><w:delText xml:space="preserve">slowly </w:delText></w:r></w:del>'
        '<w:r><w:t>wrote memory.</w:t></w:r></w:p>'
        '<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs><w:rPr><w:ins w:id="3" w:author="A"/></w:rPr></w:pPr>'
        '<w:ins w:id="4" w:author="A"><w:r><w:t>A whole inserted paragraph.</w:t></w:r></w:ins></w:p>'
        '<w:p><w:del w:id="5" w:author="A"><w:r><w:delText>A deleted paragraph.</w:delText></w:r></w:del></w:p>'
        '<w:p><w:hyperlink w:anchor="x"><w:r><w:t>link text</w:t></w:r></w:hyperlink><w:r><w:tab/><w:t>after tab</w:t>'
        '<w:br/><w:t>new line</w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> PAGE </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t> 7</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
        '<w:sdt><w:sdtPr/><w:sdtContent><w:p><w:r><w:t>In a content control.</w:t></w:r></w:p></w:sdtContent></w:sdt>'
        '<w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell a</w:t></w:r></w:p></w:tc>'
        '<w:tc><w:p><w:ins w:id="6" w:author="A"><w:r><w:t>cell b</w:t></w:r></w:ins></w:p></w:tc></w:tr>'
        '<w:tr><w:trPr><w:del w:id="7" w:author="A"/></w:trPr><w:tc><w:p><w:r><w:t>deleted row</w:t></w:r></w:p></w:tc></w:tr></w:tbl>'
    )
    doc = read_document("tracked.docx", data=make_docx_xml(body))
    assert doc.text == ("The model quickly wrote memory.\n\nA whole inserted paragraph.\n\n"
                        "link text\tafter tab\nnew line 7\n\nIn a content control.\n\ncell a | cell b")
    assert "slowly" not in doc.text and "deleted" not in doc.text and "PAGE" not in doc.text
    assert doc.note is None


def test_docx_note_names_what_was_not_read():
    textbox = ('<w:p><w:r><w:t>Body.</w:t></w:r><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing>'
               '<w:txbxContent><w:p><w:r><w:t>Box text</w:t></w:r></w:p></w:txbxContent></w:drawing></mc:Choice>'
               '<mc:Fallback><w:pict><w:txbxContent><w:p><w:r><w:t>Box text</w:t></w:r></w:p></w:txbxContent>'
               '</w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>')
    parts = {
        "word/header1.xml": '<w:hdr xmlns:w="W_NS"><w:p><w:r><w:t>Running head</w:t></w:r></w:p></w:hdr>',
        "word/footer1.xml": '<w:ftr xmlns:w="W_NS"><w:p><w:r><w:t>Page</w:t></w:r></w:p></w:ftr>',
        "word/footer2.xml": '<w:ftr xmlns:w="W_NS"><w:p/></w:ftr>',
        "word/footnotes.xml": ('<w:footnotes xmlns:w="W_NS"><w:footnote w:type="separator" w:id="-1"><w:p><w:r>'
                               '<w:separator/></w:r></w:p></w:footnote><w:footnote w:id="1"><w:p><w:r><w:t>A note.'
                               '</w:t></w:r></w:p></w:footnote><w:footnote w:id="2"><w:p><w:r><w:t>Another.</w:t>'
                               '</w:r></w:p></w:footnote></w:footnotes>'),
        "word/comments.xml": ('<w:comments xmlns:w="W_NS"><w:comment w:id="0" w:author="B"><w:p><w:r><w:t>Check'
                              '</w:t></w:r></w:p></w:comment></w:comments>'),
    }
    doc = read_document("parts.docx", data=make_docx_xml(textbox, parts))
    assert doc.text == "Body."
    assert doc.note == ("Not read (only the document body and its tables are): 1 header, 1 footer, 2 footnotes, "
                        "1 comment, 1 text box.")


def test_html_declaration_contradicted_by_valid_utf8():
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>“Crème brûlée”, she said: café 👋</p></body></html>'
    doc = read_document("menu.html", data=page.encode("utf-8"))
    assert doc.text == "“Crème brûlée”, she said: café 👋" and doc.encoding == "utf-8"
    assert "declares 'iso-8859-1'" in doc.note and "valid UTF-8" in doc.note


def test_html_declaration_that_yields_garbage_is_not_trusted():
    page = '<html><head><meta charset="koi8-r"></head><body><p>crème brûlée, a café in the naïve style</p></body></html>'
    doc = read_document("menu.html", data=page.encode("cp1252"))
    assert doc.text == "crème brûlée, a café in the naïve style" and doc.encoding == "cp1252"
    assert "best guess" in doc.note and "do not read as koi8-r" in doc.note


def test_html_correct_non_utf8_declarations_are_used():
    for text, encoding in (("Привет, как дела? Это тест кодировки страницы.", "koi8-r"),
                           ("これは日本語のテストです。文字コードを確認します。", "shift_jis")):
        page = f'<html><head><meta http-equiv="Content-Type" content="text/html; charset={encoding}"></head>' \
               f"<body><p>{text}</p></body></html>"
        doc = read_document("page.html", data=page.encode(encoding))
        assert doc.text == text and codecs.lookup(doc.encoding).name == codecs.lookup(encoding).name
        assert f"as the page declares '{encoding}'" in doc.note


def test_html_bom_wins_over_declaration():
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>café</p></body></html>'
    doc = read_document("bom.html", data=codecs.BOM_UTF8 + page.encode("utf-8"))
    assert doc.text == "café" and "byte-order mark" in doc.note


def test_html_plain_utf8_page_has_no_note():
    page = '<html><head><meta charset="utf-8"></head><body><p>café</p></body></html>'
    doc = read_document("p.html", data=page.encode("utf-8"))
    assert doc.text == "café" and doc.encoding == "utf-8" and doc.note is None


# ---------------------------------------------------------------------------
# Bounded reading: crafted files (issue 29 item 4), table cells and titles (issue 28 item 9),
# entities (item 10), limits as facts (item 5)

import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import document_builders as B  # noqa: E402


def error(*args, **kwargs) -> DocumentError:
    with pytest.raises(DocumentError) as info:
        read_document(*args, **kwargs)
    return info.value


def count_extractions(monkeypatch) -> list[int]:
    """Counts pypdf page extractions in this process (for in-process reads)."""
    from pypdf import PageObject

    calls = [0]
    original = PageObject.extract_text

    def counting(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)
    monkeypatch.setattr(PageObject, "extract_text", counting)
    return calls


def test_pdf_pages_sharing_one_stream_are_read_once(monkeypatch):
    calls = count_extractions(monkeypatch)
    data = B.shared_stream_pdf(n_pages=300, n_lines=40)
    doc = read_document("shared.pdf", data=data, limits=IN_PROCESS)
    assert calls[0] == 1
    assert "299 pages draw the same content as an earlier page" in doc.note
    page = doc.text.split("\n\n")[0]
    assert doc.text.count(page) == 300  # the text is there once a page, as a viewer shows it
    # negative control: pages with their own streams are each read
    calls[0] = 0
    doc = read_document("plain.pdf", data=B.plain_pdf(5, n_lines=3), limits=IN_PROCESS)
    assert calls[0] == 5 and doc.note is None


def test_pdf_reading_stops_at_the_character_limit(monkeypatch):
    calls = count_extractions(monkeypatch)
    data = B.plain_pdf(40, n_lines=30)  # ~1,400 characters a page
    limits = DocumentLimits(max_chars=3000, isolate=False)
    err = error("long.pdf", data=data, limits=limits)
    assert err.limit == "max_chars" and err.truncatable and err.allowed == 3000 and err.actual > 3000
    assert "more than" in err.problem and "truncate=True" in str(err) and "truncate" not in err.problem
    assert calls[0] < 10  # stopped once twice the limit was read, not all 40 pages
    doc = read_document("long.pdf", data=data, limits=limits, truncate=True)
    assert len(doc.text) == 3000 and doc.truncated and "Truncated to the first 3,000 characters" in doc.note


def test_slow_pdf_is_killed_at_the_time_limit():
    data = B.shared_stream_pdf(n_pages=2000, n_lines=20_000)  # one page takes seconds to extract
    started = time.monotonic()
    err = error("slow.pdf", data=data, limits=DocumentLimits(max_seconds=0.5))
    assert time.monotonic() - started < 8
    assert err.limit == "max_seconds" and "time limit of 0.5 s" in str(err) and "max_seconds" in str(err)


def test_cancel_stops_the_reading_process():
    import psutil

    data = B.shared_stream_pdf(n_pages=2000, n_lines=20_000)
    asked = []

    def cancel() -> bool:
        asked.append(time.monotonic())
        return len(asked) > 3
    err = error("slow.pdf", data=data, cancel=cancel)
    assert err.limit == "cancelled" and "cancelled" in str(err)
    assert asked[-1] - asked[0] < 2
    assert not [p for p in psutil.Process().children() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_memory_limit_binds_the_reading_process():
    from xml.sax.saxutils import escape

    runs = b"".join(b"<w:r><w:t>" + escape(f"word{i} ").encode() + b"</w:t></w:r>" for i in range(150_000))
    data = B.docx(b"<w:p>" + runs + b"</w:p>")  # one paragraph: one block, parsed whole (~60 MB as a tree)
    err = error("one-block.docx", data=data, limits=DocumentLimits(max_memory_bytes=60_000_000))
    assert err.limit == "max_memory_bytes" and "60.0 MB" in str(err) and "max_memory_bytes" in str(err)
    # negative control: the same file within the default limit
    assert read_document("one-block.docx", data=data).text.startswith("word0 word1")


def test_large_html_is_streamed_and_stops_at_the_character_limit():
    data = B.html_page(600_000)
    doc = read_document("long.html", data=data, limits=DocumentLimits(max_chars=20_000), truncate=True)
    assert len(doc.text) == 20_000 and doc.truncated
    assert doc.text.startswith("A long page\n\nmemory") or doc.text.startswith("A long page\n\n")
    assert doc.text.count("A long page") == 1  # the title repeats the h1: read once


def test_html_title_kept_only_when_the_heading_does_not_say_it():
    def text_of(head: str, body: str) -> str:
        page = f"<html><head><title>{head}</title></head><body>{body}</body></html>"
        return read_document("p.html", data=page.encode()).text
    assert text_of("Report", "<h1>Report</h1><p>Body.</p>") == "Report\n\nBody."
    assert text_of("Report | Example site", "<h1>Report</h1><p>Body.</p>") == "Report\n\nBody."
    assert text_of("Quarterly numbers", "<h1>Report</h1><p>Body.</p>") == "Quarterly numbers\n\nReport\n\nBody."
    assert text_of("Notes", "<p>Body.</p>") == "Notes\n\nBody."


def test_table_cells_are_separated_and_rows_are_lines():
    doc = read_document("t.docx", data=B.table_docx([["Item", "Cost"], ["Tea", "3"], ["", "4"]]))
    assert doc.text == "Item | Cost\nTea | 3\n | 4"
    page = b"<table><tr><th>Item</th><th>Cost</th></tr><tr><td>Tea</td><td>3</td></tr></table>"
    assert read_document("t.html", data=page).text == "Item | Cost\nTea | 3"


def test_docx_undefined_entity_is_refused_not_dropped():
    message = str(error("e.docx", data=B.docx(B.paragraph("x")[:-len("</w:t></w:r></w:p>")]
                                              + b"A&x;B</w:t></w:r></w:p>")))
    assert "not well-formed" in message and "Entity 'x' not defined" in message
    # an entity defined in a DTD is refused too: a .docx never has a DTD
    head = (b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE w:document [<!ENTITY x "hidden">]>'
            b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>')
    body = b"<w:p><w:r><w:t>A&x;B</w:t></w:r></w:p>"
    for limits in (DocumentLimits(), IN_PROCESS):
        assert "declares a DTD" in str(error("dtd.docx", data=B.docx(body, head=head), limits=limits))
    # negative control: the predefined entities and character references are text
    ok = B.docx(b"<w:p><w:r><w:t>A&amp;B&#67;&lt;</w:t></w:r></w:p>")
    assert read_document("ok.docx", data=ok).text == "A&BC<"


def test_docx_declared_sizes_are_checked_before_inflating(monkeypatch):
    data = B.lying_size_docx(declared=4_000_000_000)
    refuse_unzipping(monkeypatch)
    err = error("liar.docx", data=data)
    assert err.limit == "max_unzipped_bytes" and err.actual > 4e9 and "Nothing was extracted" in str(err)
    monkeypatch.undo()
    # declaring less than the part holds: zipfile stops at the declared size and the CRC fails
    assert "corrupt .docx" in error_of("short.docx", data=B.lying_size_docx(declared=3))


def test_limit_facts_for_each_interface():
    err = error("big.txt", data=b"x" * 101, limits=DocumentLimits(max_bytes=100))
    assert (err.limit, err.actual, err.allowed, err.truncatable) == ("max_bytes", 101, 100, False)
    assert "DocumentLimits(max_bytes=...)" in str(err) and "DocumentLimits" not in err.problem
    err = error("long.txt", data=b"abc " * 30, limits=DocumentLimits(max_chars=50))
    assert (err.limit, err.actual, err.allowed, err.truncatable) == ("max_chars", 120, 50, True)
    err = error("pages.pdf", data=B.plain_pdf(3, n_lines=1), limits=DocumentLimits(max_pdf_pages=2))
    assert (err.limit, err.actual, err.allowed, err.truncatable) == ("max_pdf_pages", 3, 2, True)
    import pickle

    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.limit, again.actual, again.problem) == (str(err), err.limit, err.actual, err.problem)
    assert DocumentError("plain").problem == "plain" and DocumentError("plain").limit is None


def test_markdown_extension_reads_like_md():
    assert read_document("notes.markdown", data=b"# Title\n\ntext").kind == "markdown"
    assert ".markdown" in supported_extensions()


def test_time_and_memory_limits_are_validated():
    for bad in (dict(max_seconds=0), dict(max_seconds=float("inf")), dict(max_memory_bytes=0),
                dict(isolate="yes")):
        with pytest.raises(DocumentError):
            DocumentLimits(**bad)
