"""Rebuild the vendored Python-documentation corpus (rmt_core/data/pydocs/).

Source: Debian's ``python3.11-doc`` package (HTML documentation of CPython 3.11.2,
PSF License Agreement; see rmt_core/data/pydocs/PROVENANCE.md).  Usage::

    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb x
    python scripts/build_pydocs_corpus.py x/usr/share/doc/python3.11/html

Each section becomes one gzip file of plain text: the rendered prose of every page
(headings, paragraphs, list items, definitions, code blocks as they read), pages
separated by blank lines, paragraphs by one blank line, no line wrapping.
"""
from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

from bs4 import BeautifulSoup

# section -> pages (relative to the html root).  "library" is a fixed list of
# chapters so the corpus stays about the size of the Austen training text.
SECTIONS: dict[str, list[str]] = {
    "tutorial": ["tutorial/*.html"],
    "reference": ["reference/*.html"],
    "library": [f"library/{n}.html" for n in (
        "intro", "functions", "stdtypes", "exceptions", "string", "re", "datetime", "collections",
        "itertools", "functools", "pathlib", "os", "json", "csv", "logging", "argparse", "unittest",
        "threading", "subprocess", "asyncio-task", "dataclasses", "typing", "random", "statistics",
        "math", "decimal", "sqlite3", "io", "time", "contextlib", "abc", "enum", "heapq", "bisect",
        "copy", "pickle", "shutil", "tempfile", "glob", "urllib.request", "email", "socket", "venv",
        "pdb", "timeit", "doctest", "inspect", "sys", "textwrap", "difflib", "zipfile", "hashlib",
    )],
    "howto": ["howto/*.html"],
    "faq": ["faq/*.html"],
}
BLOCKS = ("h1", "h2", "h3", "h4", "p", "li", "dt", "dd", "pre", "td")


def page_text(path: Path) -> str:
    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    body = soup.find("div", attrs={"role": "main"}) or soup.body
    for junk in body.select("a.headerlink, div.sphinxsidebar, div.related, span.linenos, div.contents, nav.contents"):
        junk.decompose()
    parts: list[str] = []
    for el in body.find_all(BLOCKS):
        if el.find_parent(BLOCKS) is not None:  # nested blocks are read with their parent
            continue
        if el.name == "pre":
            text = el.get_text().rstrip()
        else:
            text = re.sub(r"\s+", " ", el.get_text()).strip()
            text = text.replace("\u00b6", "").strip()
        if text:
            parts.append(text)
    return "\n\n".join(parts)


def main(root: str) -> None:
    html = Path(root)
    out_dir = Path(__file__).resolve().parents[1] / "rmt_core" / "data" / "pydocs"
    for section, patterns in SECTIONS.items():
        pages: list[Path] = []
        for pattern in patterns:
            pages.extend(sorted(html.glob(pattern)))
        texts = [page_text(p) for p in pages]
        text = "\n\n\n".join(t for t in texts if t.strip()) + "\n"
        with gzip.GzipFile(out_dir / f"pydocs_{section}.txt.gz", "wb", mtime=0, compresslevel=9) as f:
            f.write(text.encode("utf-8"))
        print(f"{section}: {len(pages)} pages, {len(text):,} characters")


if __name__ == "__main__":
    main(sys.argv[1])
