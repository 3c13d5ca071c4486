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

import copy
import functools
from typing import Any, Callable, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..explain import analysis
from ..explain.attribution import Attribution
from ..explain.capacity import CapacityResult
from ..explain.memory_reach import NAMES as REACH_NAMES
from ..explain.memory_reach import MemoryReach
from ..token_text import token_label
from ..tracing.capabilities import ANY, VECTORS, Needs
from ..tracing.trace import Trace

SEQUENTIAL = "Viridis"
ATTENTION = "Cividis"
DIVERGING = "RdBu"
SLOT_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")  # Okabe-Ito
TEMPLATE = "plotly_white"
MAX_MARKERS = 400  # segment curves: above this many segments, lines only
TRAJECTORY_STEPS = 600  # memory trajectory: at most this many steps drawn (evenly spaced)
TRAJECTORY_MARKERS = 1600  # memory trajectory: above this many points (slots x steps), lines without dots
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


def use_template_by_default() -> None:
    """Make TEMPLATE plotly's default template in this process (the app calls it once).

    Every builder here gives its figure TEMPLATE either way. Set explicitly, plotly validates
    the whole template again for each figure (10-30 ms a figure); as the default, plotly
    assigns it when the figure is made, without that check. The figures are the same.
    Cheap to call again (setting plotly's default validates the template: done once)."""
    import plotly.io as pio

    if pio.templates.default != TEMPLATE:
        pio.templates.default = TEMPLATE


# Tick labels of values that may be tiny (saliency gradients of 2e-7): 3 significant digits,
# exponent notation when small (d3-format ".3~g": "2e-7", "0.25", "12"). Plotly's default
# uses SI prefixes, which read as units ("200n").
NUMBER_FORMAT = ".3~g"
HOVER_NUMBER = ":.4~g"


def _layout(title: str, height: int | None = None) -> dict:
    """The common layout as a dict; `title` is plain text (escaped here). The template is left
    out when it is already plotly's default (use_template_by_default): the figure has it."""
    import plotly.io as pio

    layout = {"title": {"text": plotly_text(title), "x": 0.01}, "font": {"size": 13},
              "margin": {"l": 60, "r": 20, "t": 50, "b": 50}}
    if pio.templates.default != TEMPLATE:
        layout["template"] = TEMPLATE
    if height:
        layout["height"] = height
    return layout


def _style(fig: go.Figure, title: str, height: int | None = None) -> go.Figure:
    """Common layout; `title` is plain text (escaped here)."""
    fig.update_layout(_layout(title, height))
    return fig


def slot_color(k: int) -> str:
    return SLOT_COLORS[k % len(SLOT_COLORS)]


# ---------------------------------------------------------------------- timeline
def segment_curves(trace: Trace, selected: int | None = None) -> go.Figure:
    """Per-segment loss, memory churn, and read / write attention mass, stacked. An associative
    memory (ARMT): loss, the state's size |A|_F, the mean write strength beta and the mean read
    ratio |y| / |h| (layers averaged), which is what its memory does instead of slots."""
    from ..explain import series as per_trace  # whole-trace series, computed once per trace

    x = np.arange(trace.num_segments)
    series = [("per-segment mean loss (nats/token)", per_trace.cached(trace, "losses", trace.losses))]
    if trace.memory_type == "associative":
        series += [
            ("state size ‖A‖_F (mean over layers)", per_trace.associative_rows(trace, "state_norms").mean(axis=1)),
            ("write strength β (mean over layers and memory tokens)",
             per_trace.associative_rows(trace, "write_strength").mean(axis=(1, 2))),
            ("read ratio |y|/|h| (mean over layers and tokens)",
             per_trace.associative_rows(trace, "segment_read_ratio").mean(axis=1)),
        ]
    else:
        series += [
            ("memory churn (cosine distance)", per_trace.slot_churn(trace).mean(axis=1)),
            ("tokens→read mass", per_trace.block_mass(trace, "tokens->read")),
            ("write→tokens mass", per_trace.block_mass(trace, "write->tokens")),
        ]
    mode = "lines+markers" if len(x) <= MAX_MARKERS else "lines"  # thousands of markers cost the browser most
    rows = [(name, [{"x": x, "y": values, "mode": mode, "name": name, "marker": {"size": 5},
                     "line": {"color": SLOT_COLORS[row]},
                     "hovertemplate": "segment %{x}<br>%{y:.4f}<extra>" + name + "</extra>"}])
            for row, (name, values) in enumerate(series)]
    return stacked_lines(rows, "Per-segment summary", height=170 * len(series) + 60, x_title="segment",
                         spacing=0.04, selected=selected, layout={"showlegend": False})


@functools.lru_cache(maxsize=32)
def _stacked_layout(titles: tuple[str, ...], spacing: float) -> dict:
    """The layout make_subplots gives `len(titles)` rows sharing their x axis (axes, domains, the
    subplot titles) with TEMPLATE in it, as a plain dict: made once per shape (make_subplots takes
    about 60 ms a call). Callers copy it."""
    fig = make_subplots(rows=len(titles), cols=1, shared_xaxes=True, vertical_spacing=spacing,
                        subplot_titles=list(titles))
    fig.update_layout(template=TEMPLATE)
    return fig.to_dict()["layout"]


def _merge(into: dict, update: dict) -> None:
    """update_layout's merge on plain dicts: nested dicts merged key by key, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def stacked_lines(rows: Sequence[tuple[str, Sequence[dict[str, Any]]]], title: str, height: int, x_title: str,
                  spacing: float, selected: float | None = None, y_format: str | None = None,
                  layout: dict[str, Any] | None = None) -> go.Figure:
    """Rows of line charts stacked over one shared x axis: rows = [(subplot title, [scatter
    properties, e.g. {"x": ..., "y": ..., "name": ...}, one dict per line]), ...]; x_title under
    the last row; selected: a dashed vertical line at that x on every row (what add_vline draws);
    y_format: every y axis' tickformat; layout: more layout properties (merged). Titles and names
    are plotly text: escape what comes from users (plotly_text).

    The figure is the one make_subplots + add_trace + add_vline + update_layout build (the same
    JSON: tests/test_armt_trace.py), put together from a layout made once per shape and not
    validated again: 2-5 ms instead of 100-200 ms for 4 rows of 1,600 points, on every segment
    change of the Timeline and Overview pages."""
    titles = tuple(name for name, _ in rows)
    out = copy.deepcopy(_stacked_layout(titles, spacing))
    common = _layout(title, height)
    common.pop("template", None)  # the cached layout has it
    _merge(out, common)
    last = len(rows)
    _merge(out, {f"xaxis{last if last > 1 else ''}": {"title": {"text": x_title}}})
    if y_format is not None:
        for row in range(1, last + 1):
            _merge(out, {f"yaxis{row if row > 1 else ''}": {"tickformat": y_format}})
    _merge(out, layout or {})
    data, shapes = [], []
    for row, (_, lines) in enumerate(rows, start=1):
        x_axis, y_axis = f"x{row if row > 1 else ''}", f"y{row if row > 1 else ''}"
        data += [{"type": "scatter", **line, "xaxis": x_axis, "yaxis": y_axis} for line in lines]
        if lines:  # add_vline marks the rows that have data
            shapes.append({"type": "line", "x0": selected, "x1": selected, "xref": x_axis, "y0": 0, "y1": 1,
                           "yref": f"{y_axis} domain", "line": {"color": "#D55E00", "dash": "dash"}})
    if selected is not None:
        out["shapes"] = shapes
    return go.Figure({"data": data, "layout": out}, _validate=False)


# ---------------------------------------------------------------------- attention
def attention_heatmap(attention: np.ndarray, labels: Sequence[str], num_mem: int, title: str = "Attention",
                      edges: Sequence[int] | None = None) -> go.Figure:
    """(q, k) attention of one head with the read block, tokens and write block marked.

    edges: the rows where a new block starts (default: after num_mem read slots and before the
    write block); row_edges(trace, segment) gives them for any memory type (an associative
    memory: its memory tokens P0.. after the segment's tokens)."""
    n = attention.shape[0]
    ticks = token_ticks(labels)
    heatmap = {"type": "heatmap", "z": attention, "x": ticks, "y": ticks, "colorscale": ATTENTION, "zmin": 0,
               "zmax": float(max(attention.max(), 1e-9)), "colorbar": {"title": {"text": "weight"}},
               "hovertemplate": "query %{y}<br>key %{x}<br>weight %{z:.4f}<extra></extra>"}
    n_tokens = n - 2 * num_mem if n >= 2 * num_mem else n - num_mem
    shapes = []
    for edge in ((num_mem - 0.5, num_mem + n_tokens - 0.5) if edges is None else [e - 0.5 for e in edges]):
        if 0 < edge < n - 0.5:
            line = {"type": "line", "line": {"color": "#D55E00", "width": 1.5}}
            shapes += [{**line, "x0": edge, "x1": edge, "y0": -0.5, "y1": n - 0.5},
                       {**line, "y0": edge, "y1": edge, "x0": -0.5, "x1": n - 0.5}]
    # every row and column labelled (plotly would skip every other one on a crowded axis)
    font = {"size": 10 if n <= 60 else 8}
    axis = {"tickmode": "array", "tickvals": ticks, "ticktext": ticks, "tickfont": font}
    layout = _layout(title, height=max(420, min(1400, (13 if n <= 60 else 10) * n + 170)))
    rows = "query (R = read slot, W = write slot)" if edges is None else "query (P = memory token)"
    layout.update(shapes=shapes,
                  yaxis={**axis, "autorange": "reversed", "title": {"text": rows}},
                  xaxis={**axis, "title": {"text": "key"}, "tickangle": -60})
    return go.Figure(data=[heatmap], layout=layout)  # one construction: plotly validates it once


def row_edges(trace: Trace, segment: int) -> list[int] | None:
    """Where the blocks of a segment row start, for attention_heatmap: None for the tokens memory
    (its read / write blocks: the default), [L] for an associative memory (its memory tokens follow
    the L tokens), [] for a memory that adds no rows."""
    if trace.memory_type == "tokens":
        return None
    n_tokens = trace.segments[trace.check_segment(segment)].num_tokens
    return [n_tokens] if trace.memory_type == "associative" else []


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
        zmin=-bound if signed else 0, zmax=bound or 1.0, colorbar={"title": value_name, "tickformat": NUMBER_FORMAT},
        hovertemplate="slot %{y}<br>token %{x}<br>" + value_name + " %{z" + HOVER_NUMBER + "}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="memory slot")
    fig.update_xaxes(title_text="token", tickangle=-60)
    return _style(fig, title, height=160 + 26 * m)


# ---------------------------------------------------------------------- memory
def trajectory_steps(num_steps: int, max_steps: int = TRAJECTORY_STEPS, window: tuple[int, int] | None = None) -> np.ndarray:
    """The steps memory_trajectory draws: every step of `window` (first, last step, inclusive;
    default: all `num_steps`), or, when there are more than `max_steps`, `max_steps` of them
    evenly spaced with the first and the last kept. Returns sorted int indices."""
    first, last = (0, num_steps - 1) if window is None else (int(window[0]), int(window[1]))
    if not 0 <= first <= last < num_steps:
        raise ValueError(f"window {window} is not a range of steps 0..{num_steps - 1}")
    if last - first + 1 <= max_steps:
        return np.arange(first, last + 1)
    return np.unique(np.linspace(first, last, max_steps).round().astype(int))


def memory_trajectory(projection: analysis.Projection, hover: Sequence[Sequence[str]] | None = None, dims: int = 2,
                      max_steps: int = TRAJECTORY_STEPS, window: tuple[int, int] | None = None) -> go.Figure:
    """One line per slot through the segments in PCA space (step 0 = initial memory).

    hover[s][k]: extra text (e.g. logit-lens tokens) for slot k after step s: a list over all
        steps, or a mapping that holds at least the steps drawn (trajectory_steps).
    max_steps: at most this many steps are drawn (evenly spaced, first and last kept; the
        title says so): a figure of every step of a long book is megabytes the browser stalls on.
        Above TRAJECTORY_MARKERS points in all, the lines have no dots (hover still shows each step).
    window: (first, last) step to draw (inclusive; default all); narrow it to see every step
        of a part of a long trace. The projection (axes) stays the one of the whole trace.
    Traces: data[k] is slot k's line; data[m + k] marks its first (○) and last (■) drawn step.
    """
    coords = projection.coords
    steps, slots, _ = coords.shape
    shown = trajectory_steps(steps, max_steps, window)
    coords = coords[shown]
    # thousands of dots cost the browser most (each is an SVG path styled one by one): lines only then
    mode = "lines+markers" if slots * len(shown) <= TRAJECTORY_MARKERS else "lines"
    data, ends = [], []
    for k in range(slots):
        text = [f"slot {k}, {'initial' if s == 0 else f'after segment {s - 1}'}"
                + (f"<br>{plotly_text(hover[s][k])}" if hover is not None else "") for s in shown.tolist()]
        common = {"type": "scatter3d" if dims == 3 else "scatter", "name": f"slot {k}", "legendgroup": f"slot {k}",
                  "hovertemplate": "%{text}<extra></extra>"}
        xyz = {axis: coords[:, k, i] for i, axis in enumerate("xyz"[:dims])}
        data.append({**common, **xyz, "mode": mode, "text": text, "line": {"color": slot_color(k)},
                     "marker": {"size": 4, "color": slot_color(k)}})
        # the first drawn step = open circle, the last = filled square: a trace of their own, so the line's
        # markers share one style (a style per point made the browser style each of thousands one by one)
        ends.append({**common, **{axis: values[[0, -1]] for axis, values in xyz.items()}, "mode": "markers",
                     "text": [text[0], text[-1]], "showlegend": False,
                     "marker": {"size": 11, "color": slot_color(k), "symbol": ["circle-open", "square"]}})
    data += ends
    ratio = projection.explained_variance_ratio
    labels = [f"PC{i + 1} ({100 * ratio[i]:.0f}% var.)" for i in range(dims)]
    whole = window is None or (shown[0] == 0 and shown[-1] == steps - 1)
    marks = ("○ start (initial memory) · ■ end (after the last segment)" if whole else
             f"○ start (step {shown[0]}) · ■ end (step {shown[-1]}); step s = the memory after segment s − 1")
    span = shown[-1] - shown[0] + 1
    every = "" if whole else f"; steps {shown[0]}–{shown[-1]}"
    every += f"; {len(shown)} of {span} steps drawn" if len(shown) < span else ""
    layout = _layout(f"Memory trajectory ({dims}-D PCA over all slots and segments{every})", height=520)
    layout["legend"] = {"tracegroupgap": 0}  # one group per slot (line + marks): no gaps between the entries
    layout["annotations"] = [{"text": marks, "xref": "paper", "yref": "paper", "x": 0, "y": 1.02, "xanchor": "left",
                              "yanchor": "bottom", "showarrow": False, "font": {"size": 11}}]
    if dims == 3:
        layout["scene"] = {"xaxis": {"title": {"text": labels[0]}}, "yaxis": {"title": {"text": labels[1]}},
                           "zaxis": {"title": {"text": labels[2]}}}
    else:
        layout["xaxis"] = {"title": {"text": labels[0]}}
        layout["yaxis"] = {"title": {"text": labels[1]}}
    return go.Figure(data=data, layout=layout)  # one construction: plotly validates it once


def slot_segment_heatmap(values: np.ndarray, title: str, value_name: str, first_step: int = 0,
                         row_names: Sequence[str] | None = None, zrange: tuple[float, float] | None = None,
                         row_title: str | None = None) -> go.Figure:
    """(steps, m) values as a slot x segment heatmap (a column per segment, a row per slot).

    row_names: the rows' labels (default "slot k"; an associative memory's memory tokens: "P0"..);
    zrange: (low, high) of the colour scale (default: the data's); row_title: the y axis title."""
    steps, slots = values.shape
    names = [f"slot {k}" for k in range(slots)] if row_names is None else [plotly_text(n) for n in row_names]
    low, high = (None, None) if zrange is None else zrange
    fig = go.Figure(go.Heatmap(z=values.T, x=np.arange(first_step, first_step + steps), y=names,
                               colorscale=SEQUENTIAL, zmin=low, zmax=high,
                               colorbar={"title": value_name, "tickformat": NUMBER_FORMAT},
                               hovertemplate="%{y}, segment %{x}<br>" + value_name + " %{z" + HOVER_NUMBER
                                             + "}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text=row_title)
    fig.update_xaxes(title_text="segment")
    return _style(fig, title, height=160 + 26 * slots)


# ---------------------------------------------------------------------- associative memory (ARMT)
def state_size_figure(norms: np.ndarray, z_norms: np.ndarray, ranks: np.ndarray | None = None,
                      selected: int | None = None, rank_bound: int | None = None) -> go.Figure:
    """An associative memory's state size per layer over the segments: |A_l|_F, |z_l| and (when
    given) the effective rank of A_l, one line per layer, stacked. norms, z_norms, ranks: (S, Y)
    after each segment's write (explain.associative); rank_bound: the largest rank A can have
    (drawn as a dotted line); selected: a segment to mark."""
    steps, layers = norms.shape
    rows = [("‖A‖_F (Frobenius norm)", norms), ("‖z‖ (L2 norm)", z_norms)]
    if ranks is not None:
        rows.append(("effective rank of A" + (f" (at most {rank_bound})" if rank_bound else ""), ranks))
    x = np.arange(steps)
    mode = "lines+markers" if steps <= MAX_MARKERS else "lines"
    lines = [(name, [{"x": x, "y": values[:, y], "mode": mode, "name": f"layer {y}", "legendgroup": f"layer {y}",
                      "showlegend": row == 0, "marker": {"size": 4}, "line": {"color": slot_color(y)},
                      "hovertemplate": f"layer {y}, segment %{{x}}<br>{name} %{{y{HOVER_NUMBER}}}<extra></extra>"}
                     for y in range(layers)])
             for row, (name, values) in enumerate(rows)]
    return stacked_lines(lines, "State size per layer over the segments", height=190 * len(rows) + 80,
                         x_title="segment (state after its write)", spacing=0.06, selected=selected,
                         y_format=NUMBER_FORMAT)


RETRIEVAL_BARS = 200  # retrieved-from: up to this many earlier segments, a bar per segment stacked by memory token


def retrieved_from_figure(retrieval, title: str | None = None, max_stacked: int = RETRIEVAL_BARS) -> go.Figure:
    """Where one token's read comes from (explain.associative.Retrieval): a bar per earlier segment,
    stacked by memory token P_i, of its share of the read (projection on y over |y|^2; the shares
    sum to 1). Positive raises the read along y, negative points against it.

    More than `max_stacked` earlier segments: the bars are each segment's total (its memory tokens
    together) and a heatmap under them (memory token x segment, diverging colour) holds each memory
    token's share: the same numbers, drawn as one bar per segment and one image instead of
    segments x M stacked bars (12,500 at 50k tokens, which took Chromium several seconds to draw)."""
    shares = retrieval.shares  # (segment, M)
    segments, m = shares.shape
    x = np.arange(segments)
    if title is None:
        title = (f"Retrieved from: token {retrieval.position} “{token_label(retrieval.token)}” of segment "
                 f"{retrieval.segment}, layer {retrieval.layer}")
    if segments > max_stacked:
        return _retrieved_from_long(shares, title)
    data = [go.Bar(x=x, y=shares[:, i], name=f"P{i}", marker_color=slot_color(i),
                   hovertemplate=f"segment %{{x}}, memory token P{i}<br>share %{{y:.3f}}<extra></extra>")
            for i in range(m)]
    fig = go.Figure(data=data)
    fig.update_layout(barmode="relative", legend={"title": {"text": "memory token"}})
    fig.update_xaxes(title_text="earlier segment (whose write is read)", tickmode="linear" if segments <= 40 else "auto",
                     range=[-0.5, max(segments, 1) - 0.5])
    fig.update_yaxes(title_text="share of the read", zeroline=True, tickformat=NUMBER_FORMAT)
    return _style(fig, title, height=380)


def _retrieved_from_long(shares: np.ndarray, title: str) -> go.Figure:
    """retrieved_from_figure for many earlier segments: per-segment totals as bars, the memory tokens' shares
    as a heatmap under them (shared x axis)."""
    segments, m = shares.shape
    x = np.arange(segments)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.55, 0.45],
                        subplot_titles=["share of the read per earlier segment (its memory tokens together)",
                                        "share per memory token"])
    fig.add_trace(go.Bar(x=x, y=shares.sum(axis=1), name="segment", marker_color=slot_color(0), showlegend=False,
                         hovertemplate="segment %{x}<br>share %{y:.3f}<extra></extra>"), row=1, col=1)
    bound = float(max(np.abs(shares).max(), 1e-12))
    fig.add_trace(go.Heatmap(z=shares.T, x=x, y=[f"P{i}" for i in range(m)], colorscale=DIVERGING, zmid=0,
                             zmin=-bound, zmax=bound, colorbar={"title": "share", "tickformat": NUMBER_FORMAT,
                                                                "len": 0.45, "y": 0.2},
                             hovertemplate="segment %{x}, memory token %{y}<br>share %{z:.3f}<extra></extra>"),
                  row=2, col=1)
    fig.update_xaxes(range=[-0.5, segments - 0.5])
    fig.update_xaxes(title_text="earlier segment (whose write is read)", row=2, col=1)
    fig.update_yaxes(title_text="share of the read", zeroline=True, tickformat=NUMBER_FORMAT, row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=2, col=1)
    return _style(fig, title, height=160 + 22 * m + 300)


def capacity_figure(result: CapacityResult) -> go.Figure:
    """The App. B capacity estimate (explain.capacity.CapacityResult): left, the estimate
    k = n (v alpha - 1) / (v - 1) against the pairs written n, with k = n (every pair held) dotted;
    right, the accuracy alpha with chance 1 / v dotted. Both on log-scaled n; hover: exact numbers."""
    n = result.pairs.astype(np.float64)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["capacity estimate k = n(vα − 1)/(v − 1)", "accuracy α of the pairs asked"])
    fig.add_trace(go.Scatter(x=n, y=n, mode="lines", name="k = n (every pair held)",
                             line={"color": "#999999", "dash": "dot"}, hoverinfo="skip"), row=1, col=1)
    fig.add_trace(go.Scatter(x=n, y=result.estimate, mode="lines+markers", name=f"layer {result.layer}",
                             line={"color": slot_color(0)},
                             hovertemplate="n = %{x} pairs written<br>estimate k = %{y:.1f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=n, y=result.accuracy, mode="lines+markers", name="accuracy α", showlegend=False,
                             line={"color": slot_color(0)},
                             error_y={"type": "data", "array": result.accuracy_trials.std(axis=0), "visible": True},
                             hovertemplate="n = %{x}<br>α = %{y:.3f}<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[n[0], n[-1]], y=[1 / result.n_values] * 2, mode="lines",
                             name=f"chance 1/v = 1/{result.n_values}", line={"color": "#999999", "dash": "dash"},
                             hoverinfo="skip"), row=1, col=2)
    fig.update_xaxes(type="log", title_text="key-value pairs written (n)")
    fig.update_yaxes(type="log", title_text="pairs held (k)", tickformat=NUMBER_FORMAT, row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.05], row=1, col=2)
    keys = "keys through W_mk" if result.keys == "model" else "random keys"
    name = f"{result.checkpoint}: " if result.checkpoint else ""
    return _style(fig, f"{name}memory capacity of layer {result.layer} (App. B estimate; {keys}, v = "
                       f"{result.n_values}, {result.trials} trials)", height=420)


REACH_STYLE = {"full": {"color": slot_color(0)}, "reset": {"color": slot_color(1), "dash": "dash"},
               "previous": {"color": slot_color(2), "dash": "dot"}}


def memory_reach_figure(result: MemoryReach, selected: int | None = None) -> go.Figure:
    """Per-segment loss (nats/token) with the full memory, with memory reset every segment and with the
    previous segment's memory only (explain.memory_reach.MemoryReach), one line each (top), and each
    condition's loss minus the full memory's (bottom: what memory beyond it buys per segment; a
    single document's loss varies far more between segments than between conditions). Hover: the
    exact loss and the segment's token count. selected: a segment to mark."""
    x = np.arange(result.num_segments)
    mode = "lines+markers" if result.num_segments <= MAX_MARKERS else "lines"
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4],
                        subplot_titles=["per-segment mean loss", "minus the full memory's loss"])
    for condition in ("full", "reset", "previous"):
        values = getattr(result, condition)
        fig.add_trace(go.Scatter(
            x=x, y=values, mode=mode, name=REACH_NAMES[condition], line=REACH_STYLE[condition], legendgroup=condition,
            customdata=result.counts, hovertemplate=f"{REACH_NAMES[condition]}<br>segment %{{x}} (%{{customdata}} "
                                                    f"tokens)<br>loss %{{y{HOVER_NUMBER}}} nats/token<extra></extra>"),
            row=1, col=1)
        if condition != "full":
            fig.add_trace(go.Scatter(
                x=x, y=values - result.full, mode=mode, name=REACH_NAMES[condition], line=REACH_STYLE[condition],
                legendgroup=condition, showlegend=False,
                hovertemplate=f"{REACH_NAMES[condition]}<br>segment %{{x}}<br>loss − full %{{y{HOVER_NUMBER}}} "
                              "nats/token<extra></extra>"), row=2, col=1)
    fig.add_hline(y=0, line={"color": "#999999", "width": 1}, row=2, col=1)
    if selected is not None:
        fig.add_vline(x=selected, line={"color": "#D55E00", "dash": "dash"})
    fig.update_xaxes(title_text="segment", row=2, col=1)
    fig.update_yaxes(title_text="nats/token", tickformat=NUMBER_FORMAT)
    name = f" ({result.document})" if result.document else ""
    return _style(fig, f"Loss per segment: full memory, none, previous segment only{name}", height=560)


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
                           hovertemplate="%{x}<br>" + value_name + " %{y" + HOVER_NUMBER + "}<extra></extra>"))
    fig.update_yaxes(title_text=value_name, zeroline=True, tickformat=NUMBER_FORMAT)
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
                                         "<br>attribution %{y" + HOVER_NUMBER + "}<extra></extra>"))
    for i in np.flatnonzero(np.asarray(result.token_position) == 0).tolist():
        fig.add_vline(x=i - 0.5, line={"color": "#999999", "dash": "dot"})
        fig.add_annotation(x=i - 0.5, y=1, yref="paper", text=f"§{int(result.token_segment[i])}", showarrow=False,
                           xanchor="left", yanchor="bottom", font={"size": 11})
    fig.update_yaxes(title_text="attribution", zeroline=True, tickformat=NUMBER_FORMAT)
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
def standard_figure_builders(trace: Trace, segment: int | None = None, layer: int = -1,
                             head: int = 0) -> dict[str, Callable[[], go.Figure]]:
    """name -> a function that builds that standard figure of a trace (see standard_figures);
    nothing is built until it is called, so a view that shows one figure pays for one.

    Raises ArgumentError for a segment, layer or head out of range. The attention heatmap
    needs the model attached (it is recomputed); without it, it is left out.
    """
    from ..explain import series  # whole-trace series, computed once per trace

    segment, layer, head = trace.check_view(segment, layer, head)
    seg = trace.segments[segment]
    builders: dict[str, Callable[[], go.Figure]] = {**_associative_builders(trace, segment, layer),
        "timeline": lambda: segment_curves(trace, selected=segment),
        "memory_pca_2d": lambda: memory_trajectory(series.pca(trace, 2), dims=2),
        "memory_pca_3d": lambda: memory_trajectory(series.pca(trace, 3), dims=3),
        "slot_norms": lambda: slot_segment_heatmap(series.slot_norms(trace)[1:], "Memory slot norms", "L2 norm"),
        "slot_churn": lambda: slot_segment_heatmap(series.slot_churn(trace),
                                                   "Memory churn per slot (cosine distance in→out)", "churn"),
        "slot_similarity": lambda: slot_similarity_figure(analysis.slot_similarity(seg.memory_out), segment),
        "block_grid_write_tokens": lambda: block_grid_figure(analysis.block_grid(trace, segment, "write->tokens"),
                                                             "write->tokens"),
        "block_grid_tokens_read": lambda: block_grid_figure(analysis.block_grid(trace, segment, "tokens->read"),
                                                            "tokens->read"),
        "write_to_tokens_attention": lambda: slot_token_heatmap(
            seg.write_to_tokens[layer].astype(np.float64).mean(axis=0), seg.tokens,
            f"How much each write slot attends to each token (segment {segment}, layer {layer}, heads averaged)"),
    }
    for name in [n for n in builders if not FIGURE_NEEDS.get(n, ANY).supports(trace)]:
        del builders[name]  # a figure of slots the trace's memory does not have
    if trace.model is not None:
        builders["attention"] = lambda: attention_heatmap(
            trace.attention(segment)[layer, head], trace.attention_labels(segment), trace.num_slots,
            f"Attention, segment {segment}, layer {layer}, head {head}", edges=row_edges(trace, segment))
    return builders


def _associative_builders(trace: Trace, segment: int, layer: int) -> dict[str, Callable[[], go.Figure]]:
    """The associative memory's standard figures (none for another memory type): its state size per
    layer, the write strength and novelty of `layer`'s memory tokens per segment and, with the model
    attached, the paper's analyses (viz.paper): the loss per segment with full / reset / previous
    memory (2 replays per segment) and `layer`'s memory-capacity estimate (App. B)."""
    from ..explain import series

    if trace.memory_type != "associative":
        return {}
    rows = lambda name: series.associative_rows(trace, name)  # noqa: E731
    names = [f"P{i}" for i in range(trace.num_mem_tokens)]
    paper = {}
    if trace.model is not None:
        if trace.carries_memory:  # with memory reset there is no full-memory curve to compare
            paper["loss_per_segment"] = lambda: _paper_figure("reach", trace, segment, layer)
        paper["memory_capacity"] = lambda: _paper_figure("capacity", trace, segment, layer)
    return {
        "state_size": lambda: state_size_figure(rows("state_norms"), rows("z_norms"), selected=segment),
        "write_strength": lambda: slot_segment_heatmap(
            rows("write_strength")[:, layer], f"Write strength β per memory token (layer {layer})", "β",
            row_names=names, zrange=(0, 1), row_title="memory token"),
        "novelty": lambda: slot_segment_heatmap(
            rows("novelty")[:, layer], f"Novelty γ per memory token (layer {layer})", "γ", row_names=names,
            zrange=(0, 1), row_title="memory token"),
        **paper,
    }


def _paper_figure(kind: str, trace: Trace, segment: int, layer: int) -> go.Figure:
    """The ARMT paper's analyses of a trace with its model: loss per segment, or `layer`'s capacity."""
    if kind == "reach":
        from ..explain.memory_reach import loss_per_segment

        return memory_reach_figure(loss_per_segment(trace), selected=segment)
    from ..explain.capacity import memory_capacity

    return capacity_figure(memory_capacity(trace.model, layer))


# Standard figures that need more than any memory type gives (capabilities; the rest work for all):
# the slot-attention figures read the tokens memory's read / write blocks; the memory-vector figures
# need the state as vectors (not the associative memory's matrices).
FIGURE_NEEDS: dict[str, Needs] = {name: Needs(memory_types=("tokens",)) for name in (
    "block_grid_write_tokens", "block_grid_tokens_read", "write_to_tokens_attention")}
FIGURE_NEEDS.update({name: VECTORS for name in ("memory_pca_2d", "memory_pca_3d", "slot_norms", "slot_churn",
                                                 "slot_similarity")})


def standard_figures(trace: Trace, segment: int | None = None, layer: int = -1, head: int = 0) -> dict[str, go.Figure]:
    """Every standard figure of a trace, by file-friendly name (used by the CLI and exports).

    Attention heatmaps need the model attached (they are recomputed); without it they are skipped.
    """
    return {name: build() for name, build in standard_figure_builders(trace, segment, layer, head).items()}
