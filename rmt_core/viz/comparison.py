"""Figures of two runs side by side (rmt_core.explain.compare.Comparison) and of a memory
patching sweep (rmt_core.explain.interventions.PatchSweep): pure functions, data -> figure,
shared by the app, the CLI and the report. Conventions as in figures.py (viridis for
distances, RdBu for signed changes, labelled axes with units, user text escaped)."""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..explain.compare import Comparison
from ..tracing.records import BLOCK_PAIRS
from .figures import DIVERGING, MAX_MARKERS, SEQUENTIAL, SLOT_COLORS, _style, plotly_text


def _pair_labels(c: Comparison) -> list[str]:
    """x labels of the paired segments: "i" when both have the same index, else "a|b"."""
    return [str(a) if a == b else f"{a}|{b}" for a, b in zip(c.segments_a.tolist(), c.segments_b.tolist())]


def _x(c: Comparison) -> np.ndarray:
    return np.asarray(c.segments_a)


def memory_distance_heatmap(c: Comparison, metric: str = "cosine") -> go.Figure:
    """(part x paired segment) distance between the two runs' memories LEAVING each segment
    (memory_out, what the segment wrote); a dashed line at diverge_at (explain.compare.DIVERGE_RULE).

    metric (tokens memory): "cosine" (1 - cos per slot, 0..2) or "l2" (hidden-size units). An
    associative memory's rows are its layers' A_l then z_l, by relative Frobenius distance (0..2;
    explain.compare.MEMORY_DISTANCES) whatever `metric` says. The x axis is A's segment index
    (hover names B's). A figure with a note when the memories were not comparable."""
    associative = c.frobenius_A is not None
    values = c.distance if associative or metric == "cosine" else c.l2
    name = c.distance_name if associative or metric == "cosine" else "L2 distance"
    per = "per layer" if associative else "per slot"
    title = f"Memory distance between {c.names[0]} and {c.names[1]} ({name} {per}, memory leaving each segment)"
    if values is None:
        fig = go.Figure()
        fig.add_annotation(text=plotly_text(f"Not comparable: {c.memory_reason}"), showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
        return _style(fig, title, height=200)
    hover = np.array([[f"{a}|{b}" for a, b in zip(c.segments_a.tolist(), c.segments_b.tolist())]] * values.shape[1])
    fig = go.Figure(go.Heatmap(z=values.T, x=_x(c), y=c.distance_labels, customdata=hover, colorscale=SEQUENTIAL,
                               zmin=0, colorbar={"title": {"text": name}},
                               hovertemplate="%{y}, memory leaving segment (A|B) %{customdata}<br>" + name +
                                             " %{z:.4g}<extra></extra>"))
    if c.diverge_at is not None and (associative or metric == "cosine"):
        fig.add_vline(x=float(c.segments_a[c.diverge_at]), line={"color": "#D55E00", "dash": "dash"},
                      annotation_text="first diverges leaving this segment", annotation_position="top left")
    fig.update_yaxes(autorange="reversed", type="category",
                     title_text="state (A or z) and layer" if associative else "memory slot")
    fig.update_xaxes(title_text=f"segment of {plotly_text(c.names[0])}")
    return _style(fig, title, height=170 + 24 * values.shape[1])


def state_size_figure(c: Comparison) -> go.Figure:
    """An associative memory's state size ||A_l||_F after each paired segment, per layer, of both runs
    (solid: A, dashed: B); a figure with a note for another memory."""
    title = f"State size ||A||_F per layer: {c.names[0]} vs {c.names[1]}"
    fig = go.Figure()
    if c.state_norm_a is None:
        fig.add_annotation(text="Only an associative memory (ARMT) has a state matrix per layer.", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
        return _style(fig, title, height=200)
    x = _x(c)
    mode = "lines+markers" if len(x) <= MAX_MARKERS else "lines"
    for y, layer in enumerate(c.layers):
        for k, (name, values, dash) in enumerate(((c.names[0], c.state_norm_a, None), (c.names[1], c.state_norm_b, "dash"))):
            label = plotly_text(f"{name}, {layer}")
            fig.add_trace(go.Scatter(x=x, y=values[:, y], mode=mode, name=label, marker={"size": 5},
                                     line={"color": SLOT_COLORS[y % len(SLOT_COLORS)], "dash": dash},
                                     hovertemplate="segment %{x}<br>||A||_F %{y:.4g}<extra>" + label + "</extra>"))
    fig.update_yaxes(title_text="||A_l||_F")
    fig.update_xaxes(title_text=f"segment of {plotly_text(c.names[0])}")
    return _style(fig, title, height=360)


def loss_answer_curves(c: Comparison, selected: int | None = None) -> go.Figure:
    """Per-segment loss (nats/token) of both runs, and the answer token's probability under the
    logit lens of the memory each segment wrote (empty, with the reason, when not computed)."""
    x = _x(c)
    answer = c.answer if c.answer is not None else "the answer"
    titles = ["per-segment mean loss (nats/token)",
              f"p({answer!r}) in the written memory (logit lens, best slot)"]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=[plotly_text(t) for t in titles])
    mode = "lines+markers" if len(x) <= MAX_MARKERS else "lines"
    for row, (ya, yb) in enumerate(((c.loss_a, c.loss_b), (c.p_answer_a, c.p_answer_b)), start=1):
        for k, (name, y, dash) in enumerate(((c.names[0], ya, None), (c.names[1], yb, "dash"))):
            fig.add_trace(go.Scatter(x=x, y=y, mode=mode, name=plotly_text(name), legendgroup=name,
                                     showlegend=row == 1, marker={"size": 5},
                                     line={"color": SLOT_COLORS[k], "dash": dash},
                                     hovertemplate="segment %{x}<br>%{y:.4g}<extra>" + plotly_text(name) + "</extra>"),
                          row=row, col=1)
    if c.lens_reason is not None:
        fig.add_annotation(text=plotly_text(f"Not shown: {c.lens_reason}"), showarrow=False, xref="x2 domain",
                           yref="y2 domain", x=0.5, y=0.5)
    if selected is not None:
        fig.add_vline(x=selected, line={"color": "#D55E00", "dash": "dot"})
    fig.update_yaxes(title_text="nats/token", row=1, col=1)
    fig.update_yaxes(title_text="probability", range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text=f"segment of {plotly_text(c.names[0])}", row=2, col=1)
    return _style(fig, f"Loss and the answer's probability: {c.names[0]} vs {c.names[1]}", height=520)


def block_mass_figure(c: Comparison, pairs: tuple[str, ...] = ("tokens->read", "write->tokens")) -> go.Figure:
    """Block attention mass per segment of both runs (mean over layers and heads; a fraction of
    each query block's attention), one panel per block pair."""
    x = _x(c)
    fig = make_subplots(rows=len(pairs), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[f"{p.replace('->', '→')} mass" for p in pairs])
    mode = "lines+markers" if len(x) <= MAX_MARKERS else "lines"
    for row, pair in enumerate(pairs, start=1):
        p = BLOCK_PAIRS.index(pair)
        for k, (name, y, dash) in enumerate(((c.names[0], c.mass_a[:, p], None), (c.names[1], c.mass_b[:, p], "dash"))):
            fig.add_trace(go.Scatter(x=x, y=y, mode=mode, name=plotly_text(name), legendgroup=name,
                                     showlegend=row == 1, line={"color": SLOT_COLORS[k], "dash": dash},
                                     marker={"size": 5},
                                     hovertemplate="segment %{x}<br>%{y:.4f}<extra>" + plotly_text(name) + "</extra>"),
                          row=row, col=1)
        fig.update_yaxes(title_text="mass", row=row, col=1)
    fig.update_xaxes(title_text=f"segment of {plotly_text(c.names[0])}", row=len(pairs), col=1)
    return _style(fig, f"Block attention mass: {c.names[0]} vs {c.names[1]}", height=180 * len(pairs) + 100)


def comparison_figures(c: Comparison) -> dict[str, go.Figure]:
    """The standard comparison figures by file stem (CLI, report)."""
    if c.state_norm_a is not None:  # an associative memory: distances per layer, its state size (no slot blocks)
        return {"memory_distance": memory_distance_heatmap(c), "loss_and_answer": loss_answer_curves(c),
                "state_size": state_size_figure(c)}
    return {"memory_distance": memory_distance_heatmap(c, "cosine"),
            "memory_distance_l2": memory_distance_heatmap(c, "l2"),
            "loss_and_answer": loss_answer_curves(c), "block_mass": block_mass_figure(c)}


def patching_heatmap(sweep: Any, value: str = "p_source_answer_change") -> go.Figure:
    """A patching sweep as a (slot x segment) heatmap ("where does the fact live?"); an associative
    memory's sweep: (layer x segment), each layer's (A, z) patched.

    sweep: an interventions.PatchSweep. value: one of its (segments, columns) arrays:
    "p_source_answer_change" (p(source's answer) after - before, signed), "p_source_answer"
    (after), "loss_change" (the target's mean loss change over the re-run segments, nats/token)."""
    z = np.asarray(getattr(sweep, value), dtype=np.float64)  # (n_segments, n_columns)
    signed = value != "p_source_answer"
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    names = {"p_source_answer_change": f"Δp({sweep.source_answer!r})",
             "p_source_answer": f"p({sweep.source_answer!r})", "loss_change": "Δloss (nats/token)"}
    flipped = np.array([["yes" if f else "no" for f in row] for row in sweep.flipped]).T
    answers = np.array(sweep.answer_after, dtype=object).T
    fig = go.Figure(go.Heatmap(
        z=z.T, x=list(sweep.segments), y=list(sweep.columns), customdata=np.dstack([answers, flipped]),
        colorscale=DIVERGING if signed else SEQUENTIAL, zmid=0 if signed else None,
        zmin=-bound if signed else 0, zmax=bound if signed else 1,
        colorbar={"title": {"text": plotly_text(names[value])}},
        hovertemplate=("patch %{y} before segment %{x}<br>" + plotly_text(names[value]) +
                       " %{z:.4g}<br>answer after: %{customdata[0]}<br>became the source's: %{customdata[1]}"
                       "<extra></extra>")))
    axis = getattr(sweep, "axis", "slot")
    fig.update_yaxes(autorange="reversed", type="category",
                     title_text=f"patched memory ({axis}{' (A, z)' if axis == 'layer' else ''}, or all)")
    fig.update_xaxes(title_text="segment patched (memory entering it)", type="category")
    title = (f"Memory patched from the source into the target: {names[value]} "
             f"(target's answer before: {sweep.target_answer!r})")
    return _style(fig, title, height=200 + 26 * len(sweep.columns))
