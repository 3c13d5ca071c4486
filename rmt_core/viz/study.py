"""Figures of a study (pure functions: plain numbers in, a plotly figure out).

The numbers come from :mod:`rmt_core.studies.aggregate` (the CLI's report, the app's Study page
and the tests all draw through these). Every title says what the data is.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

from . import figures
from .figures import SLOT_COLORS, _style, plotly_text, slot_color


def grid_heatmap(values: np.ndarray, segments: Sequence[int], depths: Sequence[float], counts: np.ndarray | None = None,
                 title: str = "Accuracy by length and fact depth", label: str = "accuracy",
                 zmin: float | None = 0.0, zmax: float | None = 1.0, diverging: bool = False,
                 clickable: bool = False) -> go.Figure:
    """Heatmap of values (len(segments), len(depths)): rows = length in segments, columns = fact
    depth in %. Each cell's customdata is (segments, depth) so a click names its cell; hover shows
    the value and the number of samples. `diverging` centres a red-blue scale on 0 (differences).
    `clickable` adds one invisible marker per cell (trace 1, same customdata): a click or box on it
    is a point selection (Streamlit's on_select reports scatter points, not heatmap cells)."""
    values = np.asarray(values, dtype=np.float64)
    counts = np.zeros(values.shape, dtype=int) if counts is None else np.asarray(counts)
    seg = [int(s) for s in segments]
    dep = [float(d) for d in depths]
    depth_grid, seg_grid = np.meshgrid(dep, seg)  # (S, D) each
    custom = np.dstack([seg_grid, depth_grid, counts]).astype(object)  # (S, D, 3): segments, depth, samples
    text = [[("" if not np.isfinite(v) else f"{v:.2f}") for v in row] for row in values]
    scale = "RdBu" if diverging else "Viridis"
    if diverging:
        bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        zmin, zmax = -max(bound, 1e-9), max(bound, 1e-9)
    fig = go.Figure(go.Heatmap(
        z=values, x=[f"{d:g}%" for d in dep], y=[f"{s} seg" for s in seg], customdata=custom, text=text,
        texttemplate="%{text}", colorscale=scale, zmin=zmin, zmax=zmax, colorbar={"title": {"text": plotly_text(label)}},
        hovertemplate="%{customdata[0]} segments, fact at %{customdata[1]}%<br>" + plotly_text(label)
                      + " %{z:.3f} over %{customdata[2]} samples<extra></extra>"))
    if clickable:
        xs = [f"{d:g}%" for _ in seg for d in dep]
        ys = [f"{s} seg" for s in seg for _ in dep]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", customdata=custom.reshape(-1, 3), showlegend=False,
                                 marker={"size": 28, "opacity": 0.01, "color": "#000000", "symbol": "square"},
                                 hoverinfo="skip", name="cells"))
    fig.update_xaxes(title_text="fact depth (% of the tokens before the asking segment)", type="category")
    fig.update_yaxes(title_text="length (segments)", type="category")
    return _style(fig, title, height=120 + 48 * max(len(seg), 3))


def accuracy_by_length(rows: Sequence[dict[str, Any]], title: str,
                       reference: dict[str, dict[int, float]] | None = None) -> go.Figure:
    """Accuracy vs length with memory and with memory reset (rows: segments, accuracy_memory,
    accuracy_reset), the papers' numbers beside as diamonds (see viz.paper)."""
    return figures.accuracy_vs_segments(list(rows), title, reference=reference)


def retention_curves(lens: Sequence[dict[str, Any]], probe: dict[str, Sequence[float | None]] | None = None,
                     title: str = "Retention: is the fact still decodable from memory?") -> go.Figure:
    """x = segments since the fact was written. lens rows: age, lens_decodable (fraction of samples
    whose answer is in the logit lens of the written memory); probe: name -> held-out probe
    accuracy per age (e.g. the best slot, all slots)."""
    fig = go.Figure()
    if lens:
        fig.add_trace(go.Scatter(x=[r["age"] for r in lens], y=[r["lens_decodable"] for r in lens], mode="lines+markers",
                                 name="logit lens: answer in a slot's top 5", line={"color": SLOT_COLORS[0]}))
    for k, (name, values) in enumerate((probe or {}).items()):
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=[np.nan if v is None else v for v in values],
                                 mode="lines+markers", name=plotly_text(name), line={"color": slot_color(k + 1), "dash": "dash"}))
    fig.update_xaxes(title_text="segments since the write (0 = the memory the fact's segment writes)")
    fig.update_yaxes(title_text="fraction decodable / probe accuracy", range=[0, 1.05])
    return _style(fig, title, height=420)


def probe_accuracy(accuracy: np.ndarray, chance: float, title: str | None = None, axis: str = "slot") -> go.Figure:
    """Heatmap of held-out probe accuracy (slots, ages), or (layers, ages) for an associative memory's
    probes (axis "layer": each layer's state summary); `chance` named in the title's colour bar."""
    acc = np.asarray(accuracy, dtype=np.float64)
    title = title or f"Linear probe accuracy per {axis} (held-out samples)"
    fig = go.Figure(go.Heatmap(z=acc, x=list(range(acc.shape[1])), y=[f"{axis} {k}" for k in range(acc.shape[0])],
                               colorscale="Viridis", zmin=0, zmax=1,
                               text=[[("" if not np.isfinite(v) else f"{v:.2f}") for v in row] for row in acc],
                               texttemplate="%{text}", colorbar={"title": {"text": f"accuracy (chance {chance:.2f})"}},
                               hovertemplate="%{y}, %{x} segments after the write: %{z:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="segments since the write")
    fig.update_yaxes(title_text="memory slot" if axis == "slot" else f"state summary per {axis} (1^T A)",
                     autorange="reversed")
    return _style(fig, title, height=140 + 28 * acc.shape[0])


__all__ = ["grid_heatmap", "accuracy_by_length", "retention_curves", "probe_accuracy"]
