"""Figure builders: pure functions from arrays (or a Trace) to plotly figures.

The app and the command line use the same builders. Conventions: colour-blind-safe
scales (viridis / cividis; RdBu for signed values), labelled axes with units, a
light template, and browser-side download as SVG (FIGURE_CONFIG).

Plotly draws text as a small HTML subset: ``<b>``, ``<br>``, ``<sup>``, ``<a>`` ... are
markup and ``&lt;`` an entity, in tick labels, hover text, annotations, legends and
titles alike. Every string that comes from a user or a tokenizer goes through
:func:`plotly_text` before it reaches a figure, so ``<b>x</b>`` is drawn as typed. The
builders here do it for what they are given (token labels, hover text, titles, names):
callers pass plain text. Token labels are also passed through token_text.token_label
(visible newlines, a mark for continuation pieces).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..explain import analysis
from ..explain.attribution import Attribution
from ..token_text import token_label
from ..tracing.trace import Trace

SEQUENTIAL = "Viridis"
ATTENTION = "Cividis"
DIVERGING = "RdBu"
SLOT_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")  # Okabe-Ito
TEMPLATE = "plotly_white"
MAX_MARKERS = 400  # segment curves: above this many segments, lines only
FIGURE_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "svg", "scale": 1}}


def plotly_text(text: str) -> str:
    """Text drawn literally by plotly: ``&``, ``<`` and ``>`` as entities (plotly decodes them
    once), so tags such as ``<b>``/``<br>`` and entities such as ``&lt;`` in user or token
    text are shown as typed. Use it for every string from a user, a document or a tokenizer
    that reaches a figure (ticks, hover, annotations, legend names, titles)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def token_ticks(tokens: Sequence[str]) -> list[str]:
    """Unique tick text ``"j:label"`` for token labels (repeated tokens stay distinct), escaped."""
    return [f"{j}:{plotly_text(token_label(tok))}" for j, tok in enumerate(tokens)]


def _style(fig: go.Figure, title: str, height: int | None = None) -> go.Figure:
    """Common layout; `title` is plain text (escaped here)."""
    fig.update_layout(template=TEMPLATE, title={"text": plotly_text(title), "x": 0.01}, font={"size": 13},
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    if height:
        fig.update_layout(height=height)
    return fig


def slot_color(k: int) -> str:
    return SLOT_COLORS[k % len(SLOT_COLORS)]


# ---------------------------------------------------------------------- timeline
def segment_curves(trace: Trace, selected: int | None = None) -> go.Figure:
    """Per-segment loss, memory churn, and read / write attention mass, stacked."""
    from ..explain import series as per_trace  # whole-trace series, computed once per trace

    x = np.arange(trace.num_segments)
    churn = per_trace.slot_churn(trace).mean(axis=1)
    series = [
        ("loss (nats/token)", per_trace.cached(trace, "losses", trace.losses)),
        ("memory churn (cosine distance)", churn),
        ("tokens→read mass", per_trace.block_mass(trace, "tokens->read")),
        ("write→tokens mass", per_trace.block_mass(trace, "write->tokens")),
    ]
    fig = make_subplots(rows=len(series), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[name for name, _ in series])
    mode = "lines+markers" if len(x) <= MAX_MARKERS else "lines"  # thousands of markers cost the browser most
    for row, (name, values) in enumerate(series, start=1):
        fig.add_trace(go.Scatter(x=x, y=values, mode=mode, name=name, marker={"size": 5},
                                 line={"color": SLOT_COLORS[row - 1]},
                                 hovertemplate="segment %{x}<br>%{y:.4f}<extra>" + name + "</extra>"),
                      row=row, col=1)
    if selected is not None:
        fig.add_vline(x=selected, line={"color": "#D55E00", "dash": "dash"})
    fig.update_xaxes(title_text="segment", row=len(series), col=1)
    fig.update_layout(showlegend=False)
    return _style(fig, "Per-segment summary", height=170 * len(series) + 60)


# ---------------------------------------------------------------------- attention
def attention_heatmap(attention: np.ndarray, labels: Sequence[str], num_mem: int, title: str = "Attention") -> go.Figure:
    """(q, k) attention of one head with the read block, tokens and write block marked."""
    n = attention.shape[0]
    ticks = token_ticks(labels)
    fig = go.Figure(go.Heatmap(z=attention, x=ticks, y=ticks, colorscale=ATTENTION, zmin=0, zmax=float(max(attention.max(), 1e-9)),
                               colorbar={"title": "weight"},
                               hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.4f}<extra></extra>"))
    n_tokens = n - 2 * num_mem if n >= 2 * num_mem else n - num_mem
    for edge in (num_mem - 0.5, num_mem + n_tokens - 0.5):
        if 0 < edge < n - 0.5:
            fig.add_shape(type="line", x0=edge, x1=edge, y0=-0.5, y1=n - 0.5, line={"color": "#D55E00", "width": 1.5})
            fig.add_shape(type="line", y0=edge, y1=edge, x0=-0.5, x1=n - 0.5, line={"color": "#D55E00", "width": 1.5})
    # every row and column labelled (plotly would skip every other one on a crowded axis)
    font = {"size": 10 if n <= 60 else 8}
    fig.update_yaxes(autorange="reversed", title_text="query (R = read slot, W = write slot)", tickmode="array",
                     tickvals=ticks, ticktext=ticks, tickfont=font)
    fig.update_xaxes(title_text="key", tickangle=-60, tickmode="array", tickvals=ticks, ticktext=ticks, tickfont=font)
    return _style(fig, title, height=max(420, min(1400, (13 if n <= 60 else 10) * n + 170)))


def block_grid_figure(grid: np.ndarray, pair: str) -> go.Figure:
    """(layers, heads) attention mass of one block pair."""
    layers, heads = grid.shape
    fig = go.Figure(go.Heatmap(z=grid, x=[f"head {h}" for h in range(heads)], y=[f"layer {y}" for y in range(layers)],
                               colorscale=SEQUENTIAL, zmin=0, zmax=1, colorbar={"title": "mass"},
                               text=np.round(grid, 2), texttemplate="%{text}",
                               hovertemplate="%{y}, %{x}<br>mass %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _style(fig, f"Attention mass {pair.replace('->', '→')} per layer and head", height=120 + 50 * layers)


def slot_token_heatmap(weights: np.ndarray, tokens: Sequence[str], title: str, value_name: str = "attention",
                       prefix: str = "W", signed: bool = False) -> go.Figure:
    """(m, L) values of each memory slot over a segment's tokens (attention or attribution)."""
    m, L = weights.shape
    ticks = token_ticks(tokens)
    bound = float(np.nanmax(np.abs(weights))) if weights.size else 1.0
    fig = go.Figure(go.Heatmap(
        z=weights, x=ticks, y=[f"{prefix}{k}" for k in range(m)],
        colorscale=DIVERGING if signed else ATTENTION, zmid=0 if signed else None,
        zmin=-bound if signed else 0, zmax=bound or 1.0, colorbar={"title": value_name},
        hovertemplate="slot %{y}<br>token %{x}<br>" + value_name + " %{z:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="memory slot")
    fig.update_xaxes(title_text="token", tickangle=-60)
    return _style(fig, title, height=160 + 26 * m)


# ---------------------------------------------------------------------- memory
def memory_trajectory(projection: analysis.Projection, hover: Sequence[Sequence[str]] | None = None, dims: int = 2,
                      max_steps: int = 600) -> go.Figure:
    """One line per slot through the segments in PCA space (step 0 = initial memory).

    hover[s][k]: extra text (e.g. logit-lens tokens) for slot k after step s.
    max_steps: at most this many steps are drawn (evenly spaced, first and last kept; the
        title says so): a figure of every step of a long book is megabytes the browser stalls on.
    """
    coords = projection.coords
    steps, slots, _ = coords.shape
    shown = np.arange(steps)
    if steps > max_steps:  # thousands of segments: evenly spaced steps, first and last kept
        shown = np.unique(np.linspace(0, steps - 1, max_steps).round().astype(int))
    coords = coords[shown]
    fig = go.Figure()
    ratio = projection.explained_variance_ratio
    for k in range(slots):
        text = [f"slot {k}, {'initial' if s == 0 else f'after segment {s - 1}'}"
                + (f"<br>{plotly_text(hover[s][k])}" if hover is not None else "") for s in shown.tolist()]
        common = dict(mode="lines+markers", name=f"slot {k}", text=text, hovertemplate="%{text}<extra></extra>",
                      line={"color": slot_color(k)}, marker={"size": 4, "color": slot_color(k)})
        # start (initial memory) = open circle, end (after the last segment) = filled square
        sizes = [4] * steps
        symbols = ["circle"] * steps
        sizes[0], symbols[0] = 11, "circle-open"
        sizes[-1], symbols[-1] = 11, "square"
        common["marker"] = {"size": sizes, "color": slot_color(k), "symbol": symbols}
        if dims == 3:
            fig.add_trace(go.Scatter3d(x=coords[:, k, 0], y=coords[:, k, 1], z=coords[:, k, 2], **common))
        else:
            fig.add_trace(go.Scatter(x=coords[:, k, 0], y=coords[:, k, 1], **common))
    fig.add_annotation(text="○ start (initial memory) · ■ end (after the last segment)", xref="paper", yref="paper",
                       x=0, y=1.02, xanchor="left", yanchor="bottom", showarrow=False, font={"size": 11})
    labels = [f"PC{i + 1} ({100 * ratio[i]:.0f}% var.)" for i in range(dims)]
    if dims == 3:
        fig.update_layout(scene={"xaxis_title": labels[0], "yaxis_title": labels[1], "zaxis_title": labels[2]})
    else:
        fig.update_xaxes(title_text=labels[0])
        fig.update_yaxes(title_text=labels[1])
    every = f"; {len(shown)} of {steps} steps drawn" if len(shown) < steps else ""
    return _style(fig, f"Memory trajectory ({dims}-D PCA over all slots and segments{every})", height=520)


def slot_segment_heatmap(values: np.ndarray, title: str, value_name: str, first_step: int = 0) -> go.Figure:
    """(steps, m) values as a slot x segment heatmap."""
    steps, slots = values.shape
    fig = go.Figure(go.Heatmap(z=values.T, x=np.arange(first_step, first_step + steps), y=[f"slot {k}" for k in range(slots)],
                               colorscale=SEQUENTIAL, colorbar={"title": value_name},
                               hovertemplate="%{y}, segment %{x}<br>" + value_name + " %{z:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="segment")
    return _style(fig, title, height=160 + 26 * slots)


def slot_similarity_figure(similarity: np.ndarray, segment: int) -> go.Figure:
    m = similarity.shape[0]
    names = [f"slot {k}" for k in range(m)]
    fig = go.Figure(go.Heatmap(z=similarity, x=names, y=names, colorscale=DIVERGING, zmid=0, zmin=-1, zmax=1,
                               colorbar={"title": "cosine"}, text=np.round(similarity, 2), texttemplate="%{text}",
                               hovertemplate="%{y} · %{x}<br>cosine %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _style(fig, f"Slot-by-slot cosine similarity of the memory written by segment {segment}", height=140 + 34 * m)


# ---------------------------------------------------------------------- attribution & results
def slot_bar(scores: np.ndarray, title: str, prefix: str = "R", value_name: str = "attribution") -> go.Figure:
    colors = ["#0072B2" if s >= 0 else "#D55E00" for s in scores]
    fig = go.Figure(go.Bar(x=[f"{prefix}{k}" for k in range(len(scores))], y=scores, marker_color=colors,
                           hovertemplate="%{x}<br>" + value_name + " %{y:.4f}<extra></extra>"))
    fig.update_yaxes(title_text=value_name, zeroline=True)
    fig.update_xaxes(title_text="memory slot")
    return _style(fig, title, height=360)


def attribution_figure(result: Attribution, title: str | None = None) -> go.Figure:
    """The figure of an attribution (rmt_core.explain.attribution.attribute), by its kind:

    read     a bar per read slot R_k
    write    a heatmap write slot W_k x the segment's tokens
    through  a bar per token of the segments unrolled (document position:token), segment starts marked
    Colours: positive raises the explained value, negative lowers it. title: plain text
    (default: result.title).
    """
    title = result.title if title is None else title
    if result.kind == "read":
        return slot_bar(result.scores, title, prefix="R")
    if result.kind == "write":
        return slot_token_heatmap(result.scores, result.tokens, title, value_name="attribution", signed=True)
    start, end = result.window
    scores = np.asarray(result.scores[start:end], dtype=np.float64)
    ticks = [f"{start + i}:{plotly_text(token_label(tok))}" for i, tok in enumerate(result.tokens)]
    fig = go.Figure(go.Bar(x=ticks, y=scores, marker_color=["#0072B2" if v >= 0 else "#D55E00" for v in scores],
                           customdata=np.stack([result.token_segment, result.token_position], axis=1),
                           hovertemplate="token %{x}<br>segment %{customdata[0]}, position %{customdata[1]}"
                                         "<br>attribution %{y:.4f}<extra></extra>"))
    for i in np.flatnonzero(np.asarray(result.token_position) == 0).tolist():
        fig.add_vline(x=i - 0.5, line={"color": "#999999", "dash": "dot"})
        fig.add_annotation(x=i - 0.5, y=1, yref="paper", text=f"§{int(result.token_segment[i])}", showarrow=False,
                           xanchor="left", yanchor="bottom", font={"size": 11})
    fig.update_yaxes(title_text="attribution", zeroline=True)
    fig.update_xaxes(title_text="token (document position:token)", tickangle=-60)
    return _style(fig, title, height=420)


def intervention_losses(loss_before: np.ndarray, loss_after: np.ndarray, after_name: str,
                        title: str = "Per-segment loss before and after the intervention") -> go.Figure:
    """Per-segment loss (nats/token) of a trace as recorded (solid) and after a memory intervention
    (dashed, named `after_name`): both (S,), e.g. InterventionResult.loss_before / loss_after of
    rmt_core.explain.interventions."""
    x = np.arange(len(loss_before))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=loss_before, name="original", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=x, y=loss_after, name=plotly_text(after_name), mode="lines+markers", line={"dash": "dash"}))
    fig.update_layout(template=TEMPLATE, title=plotly_text(title), xaxis_title="segment",
                      yaxis_title="loss (nats/token)", height=380)
    return fig


def accuracy_vs_segments(rows: Sequence[dict], title: str = "Accuracy vs number of segments",
                         reference: dict[str, dict[int, float]] | None = None) -> go.Figure:
    """rows: dicts with 'segments', 'accuracy_memory', 'accuracy_reset' (and optional 'chance')."""
    seg = [r["segments"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=seg, y=[r["accuracy_memory"] for r in rows], name="RMT (with memory)", mode="lines+markers",
                             line={"color": SLOT_COLORS[0]}))
    fig.add_trace(go.Scatter(x=seg, y=[r["accuracy_reset"] for r in rows], name="memory reset every segment",
                             mode="lines+markers", line={"color": SLOT_COLORS[1], "dash": "dash"}))
    if rows and "chance" in rows[0]:
        fig.add_trace(go.Scatter(x=seg, y=[r["chance"] for r in rows], name="chance", mode="lines",
                                 line={"color": "#999999", "dash": "dot"}))
    for name, points in (reference or {}).items():
        xs = sorted(points)
        fig.add_trace(go.Scatter(x=xs, y=[points[x] for x in xs], name=plotly_text(name), mode="markers",
                                 marker={"symbol": "diamond", "size": 10}))
    fig.update_xaxes(title_text="segments", type="log", tickvals=seg)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.05])
    return _style(fig, title, height=420)


# ---------------------------------------------------------------------- standard set
def standard_figures(trace: Trace, segment: int | None = None, layer: int = -1, head: int = 0) -> dict[str, go.Figure]:
    """Every standard figure of a trace, by file-friendly name (used by the CLI and exports).

    Attention heatmaps need the model attached (they are recomputed); without it they are skipped.
    """
    from ..explain import series  # whole-trace series, computed once per trace

    segment, layer, head = trace.check_view(segment, layer, head)
    seg = trace.segments[segment]
    figures = {
        "timeline": segment_curves(trace, selected=segment),
        "memory_pca_2d": memory_trajectory(series.pca(trace, 2), dims=2),
        "memory_pca_3d": memory_trajectory(series.pca(trace, 3), dims=3),
        "slot_norms": slot_segment_heatmap(series.slot_norms(trace)[1:], "Memory slot norms", "L2 norm"),
        "slot_churn": slot_segment_heatmap(series.slot_churn(trace), "Memory churn per slot (cosine distance in→out)",
                                           "churn"),
        "slot_similarity": slot_similarity_figure(analysis.slot_similarity(seg.memory_out), segment),
        "block_grid_write_tokens": block_grid_figure(analysis.block_grid(trace, segment, "write->tokens"), "write->tokens"),
        "block_grid_tokens_read": block_grid_figure(analysis.block_grid(trace, segment, "tokens->read"), "tokens->read"),
        "write_to_tokens_attention": slot_token_heatmap(
            seg.write_to_tokens[layer].astype(np.float64).mean(axis=0), seg.tokens,
            f"How much each write slot attends to each token (segment {segment}, layer {layer}, heads averaged)"),
    }
    if trace.model is not None:
        att = trace.attention(segment)
        figures["attention"] = attention_heatmap(att[layer, head], trace.attention_labels(segment), trace.num_mem_tokens,
                                                 f"Attention, segment {segment}, layer {layer}, head {head}")
    return figures
