"""HTML renderings of a document (pure functions; every token is HTML-escaped)."""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np

from ..tracing.trace import Trace

_ORANGE = (230, 159, 0)  # Okabe-Ito orange: readable on white, colour-blind safe
_BLUE = (0, 114, 178)


def _background(value: float, vmax: float, signed: bool) -> str:
    if not np.isfinite(value) or vmax <= 0:
        return "transparent"
    strength = float(min(1.0, abs(value) / vmax))
    rgb = _BLUE if (signed and value < 0) else _ORANGE
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{0.08 + 0.82 * strength:.3f})"


def document_html(
    trace: Trace,
    values: np.ndarray | None = None,
    value_name: str = "surprise (nats)",
    selected_segment: int | None = None,
    marked_chars: Sequence[tuple[int, int]] = (),
    max_tokens: int = 6000,
    signed: bool = False,
    first_segment: int = 0,
) -> tuple[str, str | None]:
    """The document as HTML: one span per token coloured by `values` (default: surprise),
    a numbered marker at every segment boundary, marked character ranges underlined.

    Shows the segments from `first_segment` on, at most `max_tokens` tokens (a window of a
    long document; see window_start). Returns (html, note); note says which part is shown
    when it is not the whole document.
    """
    if values is None:
        values = np.concatenate([s.surprise for s in trace.segments]) if trace.segments else np.zeros(0)
    finite = values[np.isfinite(values)]
    vmax = float(np.percentile(np.abs(finite), 98)) if finite.size else 1.0
    parts = ['<div class="rmt-doc" style="font-family: Georgia, serif; line-height: 1.9; font-size: 15px; '
             'white-space: pre-wrap; word-wrap: break-word;">']
    shown = 0
    note = None
    first_segment = max(0, min(int(first_segment), trace.num_segments - 1)) if trace.segments else 0
    last_shown = first_segment - 1
    for seg in trace.segments[first_segment:]:
        if shown >= max_tokens:
            break
        last_shown = seg.index
        selected = seg.index == selected_segment
        parts.append(
            f'<span title="segment {seg.index}" style="display:inline-block; font: 11px sans-serif; color: white; '
            f'background: {"#D55E00" if selected else "#555"}; border-radius: 3px; padding: 0 4px; margin: 0 3px;">'
            f'§{seg.index}</span>')
        for j, token in enumerate(seg.tokens):
            pos = seg.start + j
            value = float(values[pos]) if pos < len(values) else float("nan")
            start, end = seg.char_spans[j].tolist()
            marked = any(start < e and end > s for s, e in marked_chars) if start >= 0 else False
            style = f"background:{_background(value, vmax, signed)};"
            if marked:
                style += "text-decoration: underline 2px #009E73; font-weight: bold;"
            if selected:
                style += "outline: 1px solid rgba(213,94,0,0.35);"
            tip = f"token {pos} · segment {seg.index} · {value_name} {value:.3f}" if np.isfinite(value) else f"token {pos}"
            parts.append(f'<span style="{style}" title="{html.escape(tip)}">{html.escape(token)}</span>')
        shown += seg.num_tokens
    parts.append("</div>")
    if first_segment > 0 or last_shown < trace.num_segments - 1:
        note = (f"Showing segments {first_segment}–{last_shown} ({shown:,} of {trace.num_tokens:,} tokens); "
                "pick another segment to see another part.")
    return "".join(parts), note


def window_start(trace: Trace, segment: int, max_tokens: int = 6000) -> int:
    """The first segment of a window of about `max_tokens` tokens centred on `segment`."""
    if not trace.segments:
        return 0
    size = max(1, max(s.num_tokens for s in trace.segments[:1]))
    span = max(1, max_tokens // size)
    first = max(0, min(int(segment) - span // 2, trace.num_segments - span))
    return first
