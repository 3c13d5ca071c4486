"""The training corpus, vendored gzip-compressed, with held-out parts of each source.

Two sources (see each folder's PROVENANCE.md):

* ``"austen"``: Jane Austen's six novels, ``rmt_core/data/austen/austen_<name>.txt.gz``
  (public domain, hard-wrapped lines).  ``persuasion`` is held out.
* ``"pydocs"``: the Python 3.11 documentation as plain text,
  ``rmt_core/data/pydocs/pydocs_<section>.txt.gz`` (PSF licence, one line per
  paragraph).  ``howto`` and ``faq`` are held out.

:func:`load_corpus` keeps its meaning (Austen only); :func:`load_source` reads any
source's split and :func:`load_mix` all of them.
"""

from __future__ import annotations

import functools
import gzip
import re
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import ArgumentError

DATA_DIR: Path = Path(__file__).resolve().parents[1] / "data" / "austen"

NOVELS: tuple[str, ...] = (
    "emma",
    "mansfieldpark",
    "northangerabbey",
    "persuasion",
    "prideprejudice",
    "sensesensibility",
)
HELDOUT_NOVEL: str = "persuasion"
TRAIN_NOVELS: tuple[str, ...] = tuple(n for n in NOVELS if n != HELDOUT_NOVEL)

Split = Literal["train", "heldout", "all"]

PYDOCS_DIR: Path = Path(__file__).resolve().parents[1] / "data" / "pydocs"
PYDOCS_SECTIONS: tuple[str, ...] = ("tutorial", "reference", "library", "howto", "faq")
PYDOCS_HELDOUT: tuple[str, ...] = ("howto", "faq")
SOURCES: tuple[str, ...] = ("austen", "pydocs")

# Novels are joined with a blank-line gap so a paragraph break separates them.
NOVEL_SEPARATOR = "\n\n\n\n"


def novel_path(name: str) -> Path:
    """Path of the compressed text of novel ``name`` (one of :data:`NOVELS`)."""
    if name not in NOVELS:
        raise ArgumentError(f"unknown novel {name!r}; choose one of {', '.join(NOVELS)}")
    return DATA_DIR / f"austen_{name}.txt.gz"


@functools.lru_cache(maxsize=None)
def load_novel(name: str) -> str:
    """Full text of one novel (UTF-8, ``\\n`` line ends, hard-wrapped lines)."""
    path = novel_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file missing: {path}")
    with gzip.open(path, "rb") as f:
        return f.read().decode("utf-8")


@functools.lru_cache(maxsize=None)
def load_corpus(split: Split = "train") -> str:
    """Concatenated novels of a split.

    ``"train"``: every novel except :data:`HELDOUT_NOVEL`; ``"heldout"``: only
    :data:`HELDOUT_NOVEL`; ``"all"``: all six.  Novels are joined with
    :data:`NOVEL_SEPARATOR`, in :data:`NOVELS` order.
    """
    if split == "train":
        names = TRAIN_NOVELS
    elif split == "heldout":
        names = (HELDOUT_NOVEL,)
    elif split == "all":
        names = NOVELS
    else:
        raise ArgumentError(f"unknown split {split!r}; use 'train', 'heldout' or 'all'")
    return NOVEL_SEPARATOR.join(load_novel(n) for n in names)


@functools.lru_cache(maxsize=None)
def _load_pydocs_section(section: str) -> str:
    path = PYDOCS_DIR / f"pydocs_{section}.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"corpus file missing: {path}")
    with gzip.open(path, "rb") as f:
        return f.read().decode("utf-8")


@functools.lru_cache(maxsize=None)
def load_source(source: str, split: Split = "train") -> str:
    """Text of one source's split (``"train"``, ``"heldout"`` or ``"all"``).

    ``"austen"`` is :func:`load_corpus`; ``"pydocs"`` joins its sections (training:
    tutorial, reference, library; held out: howto, faq) with :data:`NOVEL_SEPARATOR`.
    Raises ``ValueError`` for an unknown source or split.
    """
    if source == "austen":
        return load_corpus(split)
    if source != "pydocs":
        raise ValueError(f"unknown corpus source {source!r}; choose one of {', '.join(SOURCES)}")
    if split == "train":
        names = tuple(s for s in PYDOCS_SECTIONS if s not in PYDOCS_HELDOUT)
    elif split == "heldout":
        names = PYDOCS_HELDOUT
    elif split == "all":
        names = PYDOCS_SECTIONS
    else:
        raise ValueError(f"unknown split {split!r}; use 'train', 'heldout' or 'all'")
    return NOVEL_SEPARATOR.join(_load_pydocs_section(n) for n in names)


def load_mix(split: Split = "train") -> dict[str, str]:
    """``{source: text}`` for every source in :data:`SOURCES` (see :func:`load_source`)."""
    return {source: load_source(source, split) for source in SOURCES}


# A sentence end: . ! or ? , optional closing quotes/brackets/underscores (Austen's
# italics), whitespace, and then something that looks like a sentence start.
_SENT_END_RE = re.compile(r"[.!?][\"')\]_]*[ \t\r\n]+(?=[\"'(\[_]*[A-Z])")
# A paragraph break: a blank line (possibly several), then text.
_PARA_RE = re.compile(r"\n[ \t\r]*\n\s*(?=\S)")
_WORD_BEFORE_RE = re.compile(r"(\w+)$")
# Words whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    {"Mr", "Mrs", "Ms", "Dr", "St", "Messrs", "Capt", "Col", "Gen", "Lt", "Rev", "No", "vol", "Vol"}
)


def sentence_boundaries(text: str) -> np.ndarray:
    """Sorted character offsets in ``text`` where a new sentence may start.

    An offset qualifies when it is the first character after ``.``, ``!`` or ``?``
    (plus any closing quotes) and the whitespace that follows, provided the next
    word is capitalised and the period does not belong to an abbreviation such as
    "Mr." or an initial; or when it is the first character after a paragraph break
    (a blank line); or 0 when the text starts with a non-space character.
    Inserting ``"Fact sentence. "`` at such an offset keeps the text well formed.
    """
    out: list[int] = []
    if text and not text[0].isspace():
        out.append(0)
    for m in _SENT_END_RE.finditer(text):
        s = m.start()
        if text[s] == ".":
            w = _WORD_BEFORE_RE.search(text, max(0, s - 12), s)
            if w is not None:
                word = w.group(1)
                if word in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                    continue
        out.append(m.end())
    out.extend(m.end() for m in _PARA_RE.finditer(text))
    return np.unique(np.asarray(out, dtype=np.int64))


__all__ = [
    "DATA_DIR",
    "PYDOCS_DIR",
    "PYDOCS_HELDOUT",
    "PYDOCS_SECTIONS",
    "SOURCES",
    "load_mix",
    "load_source",
    "HELDOUT_NOVEL",
    "NOVELS",
    "NOVEL_SEPARATOR",
    "TRAIN_NOVELS",
    "load_corpus",
    "load_novel",
    "novel_path",
    "sentence_boundaries",
]
