"""Token text: the one place where text becomes token ids and character offsets, and where
ids and offsets become text to show.

Encoding:

* :func:`encode_with_offsets` — text → token ids and (start, end) character offsets.
* :func:`encode_ids` — text → token ids.

Both add no special tokens and call a fast tokenizer's Rust backend directly.

Display. The rule: **the concatenation of a document's displayed tokens equals the document**,
for any Unicode text. Byte-level BPE (GPT-2, Llama 3, ...) may split one character
into several tokens (``é`` is the two bytes ``c3 a9``; an emoji with joiners is a dozen
bytes), and a tokenizer reports the same character span for each piece, so showing
``text[start:end]`` per token repeats the character. Here the character is shown ONCE,
merged into the first piece that holds part of it; the continuation pieces show the
empty string. Text that no token covers (whitespace a WordLevel tokenizer drops) goes
to the following token, the leading-space convention of BPE vocabularies; text after
the last token goes to the last one.

* :func:`token_pieces` — text + (T, 2) offsets → T strings that join to the text.
* :func:`id_pieces` — ids only (no text): byte-level tokenizers rebuild the decoded
  text the same way; other tokenizers decode each distinct id once.
* :func:`display_tokens` — the two above behind one call (what a Trace stores).
* :func:`token_label` — one piece as a visible one-line label for axes, tables and
  bertviz: an empty continuation piece shows :data:`CONTINUATION`, newlines and other
  control characters show as escapes.
* :func:`decode_token` — the label of a single id out of context (top-k predictions,
  logit lens, attribution targets); a partial character shows its bytes.
* :func:`decode_distinct` — :func:`decode_token` of each distinct id of an array, once.

All display functions are vectorised over the distinct ids (a book repeats its vocabulary), so a
1M-token document costs one list of slices, not a tokenizer call per token.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

CONTINUATION = "\u25cc"  # ◌ DOTTED CIRCLE: Unicode's placeholder for "part of the character before"
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _plain_backend(tokenizer: Any) -> Any:
    """The Rust tokenizer of a fast Hugging Face tokenizer when calling it directly gives what
    ``tokenizer(text)`` gives; else None. A tokenizer.json may switch truncation or padding on
    (a user's checkpoint can): the wrapper turns them off per call, the bare backend would
    silently cut or pad the document, so such tokenizers go through the wrapper."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(backend, "truncation", None) is not None or getattr(backend, "padding", None) is not None:
        return None
    return backend


def encode_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (no special tokens) and each token's (start, end) character offsets.

    Returns two lists of length T: ids, and spans as tokenizers report them (pieces of one
    character may share a span; see :func:`token_pieces`). A fast Hugging Face tokenizer is
    called through its ``backend_tokenizer`` (the Rust ``tokenizers`` library, the same result
    without the Python wrapper's per-call cost); other tokenizers through
    ``tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)``.
    """
    backend = _plain_backend(tokenizer)
    if backend is not None:
        enc = backend.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), list(enc["offset_mapping"])


def encode_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (T,), as :func:`encode_with_offsets` makes them."""
    backend = _plain_backend(tokenizer)
    if backend is not None:
        return backend.encode(text, add_special_tokens=False).ids
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def token_pieces(text: str, spans: np.ndarray, to_end: bool = True) -> list[str]:
    """Display strings of tokens with character offsets into ``text``; they join to ``text``.

    spans: (T, 2) start/end character offsets as tokenizers report them
        (``return_offsets_mapping=True``); pieces of one character may share a span.
    to_end: the last token also shows the text after its span (False for the tokens of a
        document's first part only, e.g. a cancelled trace).
    Returns T strings: token i shows ``text[E[i-1]:E[i]]`` with E the running maximum of
    the ends (E[-1] = 0, the last token's E = len(text) when to_end). A piece whose
    character was already shown is ``""``.
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    n = spans.shape[0]
    if n == 0:
        return []
    ends = np.maximum.accumulate(np.clip(spans[:, 1], 0, len(text)))  # (T,) text shown up to here
    bounds = np.concatenate([[0], ends])
    if to_end:
        bounds[-1] = len(text)
    b = bounds.tolist()
    return [text[b[i]:b[i + 1]] for i in range(n)]


@lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table (byte-level BPE token strings -> bytes)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and type(decoder).__name__ == "ByteLevel"


def token_bytes(tokenizer: Any, ids: Sequence[int]) -> list[bytes] | None:
    """The UTF-8 bytes each id stands for, for a byte-level BPE tokenizer; else None."""
    if not _is_byte_level(tokenizer):
        return None
    table = _byte_of_char()
    out = []
    for token in tokenizer.convert_ids_to_tokens([int(i) for i in ids]):
        try:
            out.append(bytes(table[c] for c in token))
        except (KeyError, TypeError):  # an added token outside the byte alphabet
            return None
    return out


def id_pieces(tokenizer: Any, ids: np.ndarray) -> list[str]:
    """Display strings of token ids without a source text.

    Byte-level tokenizers: the pieces join to the decoded text (``tokenizer.decode(ids)``)
    whenever those bytes are valid UTF-8; each character goes to the token holding its first
    byte. Otherwise (other tokenizers, or a byte stream cut inside a character) each distinct
    id is decoded on its own. Without a tokenizer the ids are shown as numbers.
    """
    ids = np.asarray(ids).reshape(-1)
    if ids.size == 0:
        return []
    if tokenizer is None:
        return [str(int(i)) for i in ids]
    unique, inverse = np.unique(ids, return_inverse=True)
    blobs = token_bytes(tokenizer, unique.tolist())
    if blobs is not None:
        order = inverse.tolist()
        data = b"".join([blobs[i] for i in order])
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            raw = np.frombuffer(data, dtype=np.uint8)
            chars_before = np.concatenate([[0], np.cumsum((raw & 0xC0) != 0x80)])  # chars begun before byte b
            lengths = np.array([len(b) for b in blobs], dtype=np.int64)[inverse]
            bounds = chars_before[np.concatenate([[0], np.cumsum(lengths)])].tolist()
            return [text[bounds[i]:bounds[i + 1]] for i in range(ids.size)]
    decoded = [tokenizer.decode([int(i)]) for i in unique.tolist()]
    return [decoded[i] for i in inverse.tolist()]


def display_tokens(tokenizer: Any, text: str | None, ids: np.ndarray, spans: np.ndarray | None) -> list[str]:
    """What a Trace shows for its tokens: :func:`token_pieces` when the text and offsets are
    known (they join to ``text``), else :func:`id_pieces`."""
    if text is not None and spans is not None and np.asarray(spans).size and np.asarray(spans).min() >= 0:
        return token_pieces(text, spans)
    return id_pieces(tokenizer, ids)


def token_label(piece: str) -> str:
    """One displayed piece as a visible one-line label (axes, tables, bertviz).

    ``""`` (a continuation piece) shows :data:`CONTINUATION`; newline, carriage return and
    tab show as ``\\n``, ``\\r``, ``\\t``; other control characters, and a piece made only of
    invisible format characters (a lone zero-width joiner), as ``\\u200d``-style escapes.
    Labels are for reading, not for joining: use the pieces themselves to rebuild text.
    """
    if piece == "":
        return CONTINUATION
    invisible = all(unicodedata.category(c) in ("Cf", "Cc") for c in piece)
    out = []
    for c in piece:
        if c in _NAMED:
            out.append(_NAMED[c])
        elif unicodedata.category(c) == "Cc" or (invisible and unicodedata.category(c) == "Cf"):
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


def decode_token(tokenizer: Any, token_id: int) -> str:
    """The text of one id out of context (a prediction, a logit-lens entry, a target).

    A byte-level piece that holds only part of a character shows its bytes (``<e2 80>``)
    instead of the replacement character U+FFFD; without a tokenizer, the id as a number.
    """
    if tokenizer is None:
        return str(int(token_id))
    text = tokenizer.decode([int(token_id)])
    if "\ufffd" in text:
        blobs = token_bytes(tokenizer, [int(token_id)])
        if blobs is not None:
            decoded = blobs[0].decode("utf-8", errors="replace")
            if "\ufffd" in decoded and b"\xef\xbf\xbd" not in blobs[0]:
                return "<" + " ".join(f"{b:02x}" for b in blobs[0]) + ">"
    return text


def decode_distinct(tokenizer: Any, ids: Any) -> dict[int, str]:
    """{id: :func:`decode_token` of it} for each distinct id of ``ids`` (an array of any shape),
    each decoded once (a logit lens repeats a few ids many times)."""
    return {int(i): decode_token(tokenizer, int(i)) for i in np.unique(np.asarray(ids))}


__all__ = ["CONTINUATION", "decode_distinct", "decode_token", "display_tokens", "encode_ids", "encode_with_offsets", "id_pieces", "token_bytes", "token_label", "token_pieces"]
