"""A one-file HTML report of a trace that opens with no network.

Contents: the provenance block, the per-segment table (with a CSV download as a data: URL),
every standard figure (plotly.js inlined once), the document with its segment boundaries,
and a bertviz head view of the chosen segment (when the model is attached) in a sandboxed
``<iframe srcdoc=...>``. Nothing is loaded from the web: no ``<script src>``, no remote
``src``/``href``.
"""
from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import TraceError

__all__ = ["build_report", "report_html"]

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1100px; padding: 16px 24px; color: #222; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 4px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #777; font-size: 13px; }
li.warning { color: #8a4b00; }
.figure { margin: 8px 0 20px 0; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
iframe { border: 1px solid #ddd; width: 100%; }
.rmt-doc-box { max-height: 600px; overflow-y: auto; border: 1px solid #ddd; padding: 8px 12px; }
"""


def build_report(trace, path: str | os.PathLike, segment: int | None = None, layer: int = -1, head: int = 0,
                 provenance: Mapping[str, Any] | None = None, compare_with=None) -> Path:
    """Write the report of `trace` to `path` (one self-contained HTML file) and return the path.

    segment: the segment shown in detail (default: the last). The attention heatmap and the
    bertviz head view need the model attached (Trace.load(path, model=...)); without it they
    are left out with a note. compare_with: a second Trace; the report then gains a comparison
    section (rmt_core.compare(trace, compare_with): alignment, divergence, its figures).
    """
    text = report_html(trace, segment=segment, layer=layer, head=head, provenance=provenance,
                       compare_with=compare_with)
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def report_html(trace, segment: int | None = None, layer: int = -1, head: int = 0,
                provenance: Mapping[str, Any] | None = None, compare_with=None) -> str:
    """The report as one HTML string (see build_report)."""
    from plotly.offline import get_plotlyjs

    from . import export, figures, render

    if not trace.segments:
        raise TraceError("This trace has no segments to report on.")
    segment, layer, head = trace.check_view(segment, layer, head)
    prov = dict(provenance) if provenance is not None else export.provenance(
        trace, segment=segment, layer=layer, head=head)

    title = f"RMT Lens report: {prov.get('document') or 'trace'} with {prov.get('checkpoint')}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="RMT Lens {html.escape(str(prov.get("rmt_lens_version", "")))}">',
        f"<title>{html.escape(title)}</title>", f"<style>{_STYLE}</style>",
        # plotly.js, inlined once; every figure below uses it.
        f'<script type="text/javascript">{_inline_js(get_plotlyjs())}</script>',
        f'<script type="application/json" id="{export.PROVENANCE_KEY}">{_script_json(prov)}</script>',
        "</head>", "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{trace.num_tokens:,} tokens in {trace.num_segments} segments, mean loss '
        f"{trace.mean_loss():.3f} nats/token (token-weighted)"
        f'{"" if trace.complete else " (partial trace: stopped before the end)"}; '
        f"segment {segment}, layer {layer}, head {head} shown in detail. "
        "This file is self-contained and opens without a network connection.</p>",
    ]
    parts += _provenance_section(prov)
    parts += _answer_section(trace)
    parts += _segment_section(trace, export.segment_table(trace), segment)
    parts += _figure_section(figures.standard_figures(trace, segment, layer, head), trace)
    if compare_with is not None:
        parts += _comparison_section(trace, compare_with)
    doc_html, note = render.document_html(trace, selected_segment=segment)
    parts += ["<h2>Document</h2>",
              '<p class="note">Tokens coloured by surprise (nats); §<i>k</i> marks the start of segment <i>k</i>; '
              f"segment {segment} is outlined.</p>"]
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append(f'<div class="rmt-doc-box">{doc_html}</div>')
    parts += _head_view_section(trace, segment, layer)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------- sections
def _provenance_section(prov: Mapping[str, Any]) -> list[str]:
    rows = [("checkpoint", prov.get("checkpoint")), ("weights hash", prov.get("weights_hash")),
            ("RMT Lens version", prov.get("rmt_lens_version")), ("trace made with version", prov.get("trace_made_with_version")),
            ("document", prov.get("document")), ("exported at (UTC)", prov.get("exported_at"))]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return ["<h2>Provenance</h2>", f'<table class="provenance">{cells}</table>',
            "<details><summary>Full provenance (JSON: settings and RMT config)</summary>",
            f"<pre>{html.escape(json.dumps(prov, indent=2, sort_keys=True))}</pre></details>"]


def _answer_section(trace) -> list[str]:
    """The document's answer with its warnings, when the document ends with "Answer:" (no attribution:
    a report is written without a long run; `rmt-lens ask` gives the attribution)."""
    from ..explain import answers

    result = answers.answer_from_trace(trace, attribute=False)
    if result is None:
        return []
    lines = answers.answer_lines(result)
    items = "".join(f'<li class="{"warning" if line.startswith("warning") else "line"}">{html.escape(line)}</li>'
                    for line in lines)
    return ["<h2>Answer</h2>", f'<p class="note">Question: {html.escape(result.site.question or "")} · mean loss '
            f"{trace.mean_loss():.3f} nats/token (token-weighted)</p>", f'<ul class="answer">{items}</ul>']


def _segment_section(trace, rows: list[dict[str, Any]], selected: int) -> list[str]:
    from .export import segment_columns, table_csv

    if not rows:
        return []
    columns = segment_columns(trace)
    cols = list(rows[0])
    head = "".join(f'<th title="{html.escape(columns.get(c, ""))}">{html.escape(c)}</th>' for c in cols)
    body = []
    for row in rows:
        style = ' style="background:#fdebd9"' if row["segment"] == selected else ""
        cells = "".join(f'<td class="num">{_fmt(row[c])}</td>' for c in cols)
        body.append(f"<tr{style}>{cells}</tr>")
    csv_url = "data:text/csv;base64," + base64.b64encode(table_csv(rows).encode("utf-8")).decode("ascii")
    meanings = "".join(f"<li><b>{html.escape(c)}</b>: {html.escape(columns[c])}</li>"
                       for c in cols if c in columns)
    return ["<h2>Per-segment numbers</h2>",
            f'<p class="note"><a download="segments.csv" href="{csv_url}">Download as CSV</a>.</p>',
            f"<details><summary>What the columns hold</summary><ul>{meanings}</ul></details>",
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"]


def _figure_section(figs: Mapping[str, Any], trace) -> list[str]:
    from .figures import FIGURE_CONFIG

    parts = ["<h2>Figures</h2>"]
    if trace.model is None:
        parts.append('<p class="note">The attention heatmap needs the model: build the report with the '
                     f"checkpoint the trace was made with ('{html.escape(str(trace.model_info['name']))}').</p>")
    for name, fig in figs.items():
        div = fig.to_html(full_html=False, include_plotlyjs=False, config=FIGURE_CONFIG, div_id=f"fig-{name}")
        parts.append(f'<div class="figure" id="figure-{html.escape(name)}">{div}</div>')
    return parts


def _comparison_section(trace, other) -> list[str]:
    """Two runs side by side: this trace (A) and `other` (B), rmt_core.explain.compare."""
    from ..explain.compare import compare
    from .comparison import comparison_figures
    from .figures import FIGURE_CONFIG

    c = compare(trace, other)
    prov_b = c.provenance["b"]
    facts = [c.alignment_text, c.divergence_text] + c.notes + ([f"Answer curve: {c.lens_reason}"] if c.lens_reason else [])
    csv_url = "data:text/csv;base64," + base64.b64encode(c.to_csv().encode("utf-8")).decode("ascii")
    parts = ["<h2>Comparison</h2>",
             f'<p class="note">A: this trace. B: {html.escape(str(prov_b.get("document") or "a second trace"))} with '
             f'{html.escape(str(prov_b.get("checkpoint")))} (weights {html.escape(str(prov_b.get("weights_hash")))}), '
             f'{prov_b.get("segments")} segments. <a download="comparison.csv" href="{csv_url}">Download the '
             "per-segment comparison as CSV</a>.</p>",
             "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in facts) + "</ul>"]
    for name, fig in comparison_figures(c).items():
        div = fig.to_html(full_html=False, include_plotlyjs=False, config=FIGURE_CONFIG, div_id=f"cmp-{name}")
        parts.append(f'<div class="figure" id="comparison-{html.escape(name)}">{div}</div>')
    return parts


def _head_view_section(trace, segment: int, layer: int) -> list[str]:
    from .bertviz_views import head_view_html

    parts = [f"<h2>Attention head view (segment {segment})</h2>"]
    if trace.model is None:
        parts.append('<p class="note">Left out: the head view recomputes attention and needs the model '
                     f"('{html.escape(str(trace.model_info['name']))}'). Build the report with its checkpoint.</p>")
        return parts
    m = trace.num_mem_tokens
    view = head_view_html(trace.attention(segment), trace.attention_labels(segment), layer=layer,
                          memory_slots=(m, m))
    parts.append('<p class="note">bertviz head view: R = read memory slots, W = write memory slots. '
                 "Pick a layer and click heads to show or hide them.</p>")
    if view.note:
        parts.append(f'<p class="note">{html.escape(view.note)}</p>')
    # srcdoc holds a whole document; html.escape(quote=True) escapes &, <, >, " and ' for the attribute.
    # The sandbox needs allow-same-origin: with an opaque origin bertviz's script stops before drawing
    # (checked in headless Chromium). It still blocks navigation of this page, pop-ups and forms.
    parts.append(f'<iframe title="attention head view" sandbox="allow-scripts allow-same-origin" '
                 f'height="{int(view.height)}" '
                 f'srcdoc="{html.escape(view.html, quote=True)}"></iframe>')
    return parts


# ---------------------------------------------------------------------- helpers
def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "–" if not np.isfinite(value) else f"{value:.4f}"
    return html.escape(str(value))


def _inline_js(js: str) -> str:
    """JS that cannot end its <script> element early."""
    return js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def _script_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=True)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
