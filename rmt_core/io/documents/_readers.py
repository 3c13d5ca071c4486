"""The format readers by kind: each turns an Extraction's bytes into raw text (one home for the table,
shared by read_document and the reading process)."""
from __future__ import annotations

from typing import Callable

from ._base import Extraction
from .docx import extract_docx
from .html import extract_html
from .pdf import extract_pdf
from .text import extract_text

EXTRACTORS: dict[str, Callable[[Extraction], str]] = {
    "text": extract_text,
    "markdown": extract_text,
    "pdf": extract_pdf,
    "docx": extract_docx,
    "html": extract_html,
}
