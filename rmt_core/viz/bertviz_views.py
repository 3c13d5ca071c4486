"""bertviz head view and model view as standalone HTML that renders offline.

bertviz 1.4.1 builds its views with ``html_action='return'``, but that HTML loads
require.js, d3 and jQuery from a CDN. Without internet, the views come up blank.
Here we call bertviz's own ``head_view`` / ``model_view``, then change what they
return:

* remove every ``<script src="http...">`` tag and bertviz's ``require.config``
  CDN paths;
* inline the copies of d3 5.7.0, jQuery 2.2.4 and require.js 2.3.6 kept in
  ``rmt_core/viz/vendor/``. d3 and jQuery run with ``define`` hidden, so they set
  ``window.d3`` and ``window.jQuery``. Then require.js runs, and two named
  ``define`` shims pass those globals to bertviz's
  ``requirejs(['jquery', 'd3'], ...)``;
* insert the token text as JSON with ``<``, ``>`` and ``&`` written as
  ``\\u003c`` etc., so a token such as ``</script>`` cannot end the script
  element. bertviz itself uses a plain ``json.dumps``, which is not safe there.

``attention`` is one RMT segment row's full attention: ``(layers, heads, n, n)``
over [read memory slots, tokens, write memory slots]. ``tokens`` holds the n
labels, e.g. ``Trace.attention_labels(i)``.
"""
from __future__ import annotations

import html as _html
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ArgumentError
from ..token_text import token_label

__all__ = ["ViewHTML", "head_view_html", "model_view_html", "memory_slot_counts", "vendored_js"]

VENDOR_DIR = Path(__file__).resolve().parent / "vendor"
_VENDOR_FILES = {"d3": "d3.min.js", "jquery": "jquery.min.js", "requirejs": "require.min.js"}

_READ_RE = re.compile(r"R\d+")
_WRITE_RE = re.compile(r"W\d+")
_PLACEHOLDER = "__rmt_lens_tok_{}__"
_PLACEHOLDER_JSON_RE = re.compile(r'"__rmt_lens_tok_(\d+)__"')
# A <script> that loads from the web: <script ... src="http(s)://..." ...></script>.
_REMOTE_SCRIPT_RE = re.compile(
    r"""<script\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//[^>]*>\s*</script\s*>""", re.IGNORECASE)
# bertviz's `require.config({ paths: { d3: 'https://...', jquery: 'https://...' } });`
_REQUIRE_CONFIG_RE = re.compile(r"require\.config\(\s*\{\s*paths\s*:\s*\{[^{}]*\}\s*,?\s*\}\s*\)\s*;?")
# bertviz's str.replace("PYTHON_PARAMS", json) also fills the marker in its own `// HACK:` comment, which
# doubles the size of the page. The comment runs to the end of its line; json.dumps output has no newline.
_PARAMS_COMMENT_RE = re.compile(r"// HACK: \{.*$", re.MULTILINE)
_DECIMALS = 4  # attention weights are rounded to this many decimals to keep the HTML small


@dataclass(frozen=True)
class ViewHTML:
    """One bertviz view as a complete, offline HTML document.

    html: standalone document for ``streamlit.components.v1.html(html, height=...)`` or a report.
    truncated: True when positions were dropped to respect ``max_tokens``.
    note: what was dropped and why, for display next to the view (None when nothing was).
    height: suggested iframe height in pixels.
    """

    html: str
    truncated: bool
    note: str | None
    height: int = 600


# --------------------------------------------------------------------------- public API
def head_view_html(attention: np.ndarray, tokens: Sequence[str], max_tokens: int = 200,
                   layer: int | None = None, heads: list[int] | None = None, *,
                   memory_slots: tuple[int, int] | None = None) -> ViewHTML:
    """bertviz head view of one segment, with no network access needed.

    layer: initially selected layer (default 0). heads: initially selected heads (default all).
    Every layer and head is still embedded, so the user can switch in the view.
    memory_slots: (n_read, n_write) if known; otherwise found from R<k>/W<k> labels at the ends.
    """
    att, labels = _check(attention, tokens)
    n_layers, n_heads = att.shape[:2]
    if layer is not None and not 0 <= layer < n_layers:
        raise ArgumentError(f"layer {layer} is out of range: the attention has {n_layers} layers (0..{n_layers - 1}).")
    heads = _check_heads(heads, n_heads)
    att, labels, truncated, note = _truncate(att, labels, max_tokens, memory_slots)

    from bertviz import head_view

    placeholders = [_PLACEHOLDER.format(i) for i in range(len(labels))]
    raw = head_view(_as_bertviz(att), placeholders, prettify_tokens=False, layer=layer, heads=heads,
                    html_action="return").data
    body = _make_offline(raw, labels)
    height = int(len(labels) * 22.5 + 30 + 60)  # head_view.js: n * BOXHEIGHT + TEXT_TOP, plus the layer picker
    return _document("Attention head view", body, truncated, note, height)


def model_view_html(attention: np.ndarray, tokens: Sequence[str], max_tokens: int = 200,
                    layers: list[int] | None = None, heads: list[int] | None = None, *,
                    display_mode: str = "light",
                    memory_slots: tuple[int, int] | None = None) -> ViewHTML:
    """bertviz model view (one thumbnail per layer and head) of one segment, with no network access needed.

    layers / heads: only include these (default all). Fewer thumbnails make long segments faster.
    display_mode: 'light' or 'dark'. memory_slots: as in head_view_html.
    """
    if display_mode not in ("light", "dark"):
        raise ArgumentError(f"display_mode must be 'light' or 'dark', got {display_mode!r}.")
    att, labels = _check(attention, tokens)
    n_layers, n_heads = att.shape[:2]
    if layers is not None:
        layers = [int(x) for x in layers]
        bad = [x for x in layers if not 0 <= x < n_layers]
        if bad or not layers:
            raise ArgumentError(f"layers must be a non-empty list of indices in 0..{n_layers - 1}, got {layers}.")
    heads = _check_heads(heads, n_heads)
    att, labels, truncated, note = _truncate(att, labels, max_tokens, memory_slots)

    from bertviz import model_view

    placeholders = [_PLACEHOLDER.format(i) for i in range(len(labels))]
    raw = model_view(_as_bertviz(att), placeholders, prettify_tokens=False, display_mode=display_mode,
                     include_layers=layers, include_heads=heads, html_action="return").data
    body = _make_offline(raw, labels)
    n, n_shown_layers = len(labels), len(layers) if layers else n_layers
    # model_view.js: thumbnails of n * 7 * 12 / total_heads px, or the detail panel, whichever is taller.
    thumb = n * 7 * (12 / n_heads) + 10
    detail = n * 18 + 2 * 15 + 25
    height = int(max(n_shown_layers * thumb + 38, detail) + 60)
    return _document("Attention model view", body, truncated, note, height,
                     background="#000" if display_mode == "dark" else "#fff")


def memory_slot_counts(tokens: Sequence[str]) -> tuple[int, int]:
    """(n_read, n_write): the run of R<k> labels at the start and of W<k> labels at the end."""
    n = len(tokens)
    n_read = 0
    while n_read < n and _READ_RE.fullmatch(str(tokens[n_read])):
        n_read += 1
    n_write = 0
    while n_write < n - n_read and _WRITE_RE.fullmatch(str(tokens[n - 1 - n_write])):
        n_write += 1
    return n_read, n_write


@lru_cache(maxsize=None)
def vendored_js(name: str) -> str:
    """Text of a vendored library: 'd3', 'jquery' or 'requirejs'."""
    path = VENDOR_DIR / _VENDOR_FILES[name]
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:  # pragma: no cover - broken install
        raise RuntimeError(f"Vendored JavaScript {path} is missing ({exc}); reinstall rmt-lens.") from exc


# --------------------------------------------------------------------------- helpers
def _check(attention: Any, tokens: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Check shapes. Returns float64 attention with NaN/inf set to 0, and the labels as str."""
    att = np.asarray(attention, dtype=np.float64)
    if att.ndim != 4 or att.shape[2] != att.shape[3]:
        raise ArgumentError(f"attention must have shape (layers, heads, n, n), got {att.shape}.")
    if 0 in att.shape:
        raise ArgumentError(f"attention is empty: shape {att.shape}.")
    labels = [str(t) for t in tokens]
    if len(labels) != att.shape[2]:
        raise ArgumentError(f"attention covers {att.shape[2]} positions but {len(labels)} token labels were given.")
    return np.nan_to_num(att, nan=0.0, posinf=0.0, neginf=0.0), labels


def _check_heads(heads: list[int] | None, n_heads: int) -> list[int] | None:
    if heads is None:
        return None
    heads = [int(h) for h in heads]
    if not heads or any(not 0 <= h < n_heads for h in heads):
        raise ArgumentError(f"heads must be a non-empty list of indices in 0..{n_heads - 1}, got {heads}.")
    return heads


def _truncate(att: np.ndarray, labels: list[str], max_tokens: int, memory_slots: tuple[int, int] | None
              ) -> tuple[np.ndarray, list[str], bool, str | None]:
    """Keep every memory slot and the first tokens, up to max_tokens positions in all (memory wins)."""
    if max_tokens < 1:
        raise ArgumentError(f"max_tokens must be at least 1, got {max_tokens}.")
    n = len(labels)
    if n <= max_tokens:
        return att, labels, False, None
    n_read, n_write = memory_slot_counts(labels) if memory_slots is None else map(int, memory_slots)
    if n_read < 0 or n_write < 0 or n_read + n_write > n:
        raise ArgumentError(f"memory_slots {memory_slots} do not fit {n} positions.")
    n_text = n - n_read - n_write
    keep_text = max(0, min(n_text, max_tokens - n_read - n_write))
    idx = np.r_[np.arange(n_read + keep_text), np.arange(n - n_write, n)]
    att = att[:, :, idx][:, :, :, idx]
    labels = [labels[i] for i in idx]
    note = (f"Showing {len(idx)} of {n} positions: all {n_read + n_write} memory slots "
            f"({n_read} read, {n_write} write) and the first {keep_text} of {n_text} tokens. "
            "Rows are not renormalised after the cut, so they can sum to less than 1. "
            "Long segments make the view slow.")
    return att, labels, True, note


def _as_bertviz(att: np.ndarray) -> tuple:
    """bertviz wants one (1, heads, n, n) torch tensor per layer. Values are rounded to keep the JSON small."""
    import torch

    rounded = np.round(att, _DECIMALS)
    return tuple(torch.from_numpy(np.ascontiguousarray(rounded[i:i + 1])) for i in range(rounded.shape[0]))


def _display_label(token: str) -> str:
    """A label as shown: token_text.token_label (visible newlines and tabs, the continuation
    mark for an empty piece); the text itself is kept as given (no Ġ/▁ rewriting)."""
    return token_label(token)


def _script_safe_json(value: Any) -> str:
    """JSON that is safe inside <script>: it cannot close the element or start an HTML comment."""
    text = json.dumps(value, ensure_ascii=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _inline_script(js: str) -> str:
    """Neutralise anything in the JS that would end the <script> element early."""
    js = re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)
    return js.replace("<!--", "<\\!--")


def _hidden_amd(js: str) -> str:
    """Run a UMD bundle with define/module/exports hidden, so it sets a browser global."""
    js = re.sub(r"^//# sourceMappingURL=.*$", "", js, flags=re.MULTILINE)
    return "(function (define, module, exports) {\n" + js + "\n}).call(window);"


_AMD_SHIMS = """(function () {
  var shims = {jquery: function () { return window.jQuery; }, d3: function () { return window.d3; }};
  Object.keys(shims).forEach(function (name) {
    if (!require.specified(name)) { define(name, [], shims[name]); }
  });
})();"""


def _vendor_scripts() -> str:
    parts = [
        ("d3 5.7.0 (BSD-3-Clause), vendored from npm d3@5.7.0", _hidden_amd(vendored_js("d3"))),
        ("jQuery 2.2.4 (MIT), vendored from npm jquery@2.2.4", _hidden_amd(vendored_js("jquery"))),
        ("RequireJS 2.3.6 (MIT), vendored from npm requirejs@2.3.6", vendored_js("requirejs")),
        ("AMD shims: bertviz requires 'jquery' and 'd3'", _AMD_SHIMS),
    ]
    return "\n".join(f'<script type="text/javascript">\n/* {what} */\n{_inline_script(js)}\n</script>'
                     for what, js in parts)


def _make_offline(raw: str, labels: list[str]) -> str:
    """Remove CDN loads from bertviz's HTML, inline the vendored JS and put back the escaped token text."""
    body, n_remote = _REMOTE_SCRIPT_RE.subn("", raw)
    body, n_config = _REQUIRE_CONFIG_RE.subn("/* require.config CDN paths removed by RMT Lens (libraries inlined) */",
                                             body)
    if n_config != 1:
        raise RuntimeError("bertviz's HTML has changed: could not find its require.config block "
                           f"(found {n_config}). The offline views are tested against bertviz 1.4.1.")
    if re.search(r"""\bsrc\s*=\s*["']?(?:https?:)?//""", body, re.IGNORECASE) or \
            re.search(r"""\bpaths\s*:\s*\{[^{}]*https?://""", body):
        raise RuntimeError("bertviz's HTML still loads something from the web after clean-up; "
                           "the offline views are tested against bertviz 1.4.1.")

    body = _PARAMS_COMMENT_RE.sub("// HACK: the params are inlined above (copy removed by RMT Lens).", body)
    seen: set[int] = set()

    def put_back(match: re.Match) -> str:
        i = int(match.group(1))
        seen.add(i)
        return _script_safe_json(_display_label(labels[i]))

    body = _PLACEHOLDER_JSON_RE.sub(put_back, body)
    if seen != set(range(len(labels))):
        raise RuntimeError("bertviz's HTML has changed: token labels were not found where expected.")
    return _vendor_scripts() + "\n" + body


def _document(title: str, body: str, truncated: bool, note: str | None, height: int,
              background: str = "#fff") -> ViewHTML:
    note_html = (f'<p class="rmt-note" style="font:13px sans-serif;color:#888;margin:0 0 6px 0">'
                 f"{_html.escape(note)}</p>\n") if note else ""
    doc = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           f"<title>{_html.escape(title)}</title>\n"
           f"<style>body{{margin:0;padding:8px;background:{background};}}</style>\n</head>\n<body>\n"
           f"{note_html}{body}\n</body>\n</html>\n")
    return ViewHTML(html=doc, truncated=truncated, note=note, height=height + (30 if note else 0))
