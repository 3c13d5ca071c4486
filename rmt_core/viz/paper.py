"""The papers' key figures, remade from a live model (reference section 3 and 4).

- write pattern: write memory attends to the segment along a diagonal (copy task);
- read pattern: while producing the target, tokens read the memory slots in turn;
- keep / rewrite: write memory attends to read memory, most where nothing new comes in (the
  papers' pattern; keep_rewrite_caption says whether the figure shows it);
- accuracy versus number of segments against the no-memory baseline, with the papers' numbers;
- ARMT (Rodkin et al. 2024): the memory-capacity estimate of App. B / Fig. 2a (capacity_figure, from
  explain.capacity.memory_capacity) and the loss per segment with full, reset and previous-segment
  memory of Fig. 6 / App. K (memory_reach_figure, from explain.memory_reach.loss_per_segment).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from ..explain import analysis
from ..explain.capacity import CapacityResult
from ..explain.memory_reach import MemoryReach
from . import captions, figures
from ..tracing.trace import BLOCK_PAIRS, Trace

# Paper numbers (reference section 4): per-character accuracy, copy 24 symbols.
PAPER_COPY = {"RMT (paper)": {3: 1.0, 6: 1.0, 9: 1.0}, "no-memory baseline (paper)": {3: 0.12, 6: 0.10, 9: 0.10}}
# BABILong qa1 with GPT-2 + RMT (1.0 up to 16k tokens); for the recall plot as a reference line.
PAPER_RECALL = {"GPT-2 + RMT on BABILong qa1 (paper, 512-token segments)": {1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0, 16: 1.0, 32: 1.0}}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def diagonal_score(weights: np.ndarray) -> float:
    """How monotonically the argmax column rises with the row index (Spearman rho of row vs argmax).

    weights: (rows, cols), e.g. write slots x tokens. 1.0 = a perfect rising diagonal.
    """
    return _spearman(np.arange(weights.shape[0]), weights.argmax(axis=1))


def sharpness(weights: np.ndarray) -> float:
    """Mean over rows of the largest weight: 1.0 = every row attends to exactly one column."""
    return float(weights.max(axis=1).mean())


def injectivity(weights: np.ndarray) -> float:
    """Distinct argmax columns / possible ones: 1.0 = every row attends to a different column."""
    return len(set(weights.argmax(axis=1).tolist())) / min(weights.shape)


@dataclass
class PatternResult:
    """A slot-token attention pattern at the layer where it is sharpest (heads averaged).

    Memory slots are exchangeable (in "paper" mask mode write slots see each other
    symmetrically), so a model may learn the diagonal in any slot order: `order` sorts
    the slots by the token they attend to most, which turns a permuted diagonal into the
    paper's picture; `diagonal` is the score before that reordering.
    """

    figure: go.Figure
    layer: int
    sharpness: float
    injectivity: float
    diagonal: float
    order: np.ndarray
    segment: int


def _pattern(per_head: np.ndarray, tokens, title: str, prefix: str, segment: int) -> PatternResult:
    """per_head: (Y, H, slots, tokens)."""
    per_layer = per_head.astype(np.float64).mean(axis=1)  # (Y, slots, tokens)
    layer = int(np.argmax([sharpness(w) for w in per_layer]))
    weights = per_layer[layer]
    order = np.argsort(weights.argmax(axis=1), kind="stable")
    fig = figures.slot_token_heatmap(weights[order], tokens, f"{title}: segment {segment}, layer {layer}, heads averaged "
                                     "(slots ordered by the token they read most)", prefix=prefix)
    fig.update_yaxes(ticktext=[f"{prefix}{k}" for k in order], tickvals=[f"{prefix}{k}" for k in range(len(order))])
    return PatternResult(fig, layer, sharpness(weights), injectivity(weights), diagonal_score(weights), order, segment)


def write_pattern(trace: Trace, segment: int = 0) -> PatternResult:
    """Write slots' attention over the segment's tokens (the papers' write pattern)."""
    segment = trace.check_segment(segment)
    seg = trace.segments[segment]
    return _pattern(seg.write_to_tokens, seg.tokens, "Write pattern", "W", segment)


def read_pattern(trace: Trace, segment: int | None = None) -> PatternResult:
    """Which read slot each token of a target segment attends to most (default: the last segment)."""
    segment = trace.check_segment(trace.num_segments - 1 if segment is None else segment)
    seg = trace.segments[segment]
    result = _pattern(seg.tokens_to_read.transpose(0, 1, 3, 2), seg.tokens, "Read pattern", "R", segment)
    result.figure.update_yaxes(title_text="read slot")
    return result


def keep_rewrite(trace: Trace, highlight: int | None = None) -> go.Figure:
    """Per segment: write→read attention mass (keeping old memory) against churn (rewriting)."""
    x = np.arange(trace.num_segments)
    keep = analysis.block_mass(trace, "write->read")
    write_new = analysis.block_mass(trace, "write->tokens")
    churn = analysis.slot_churn(trace.memory_states(), reset=not trace.carries_memory).mean(axis=1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=keep, name="write → read (keep)", mode="lines+markers", line={"color": figures.slot_color(0)}))
    fig.add_trace(go.Scatter(x=x, y=write_new, name="write → tokens (write new)", mode="lines+markers",
                             line={"color": figures.slot_color(1)}))
    fig.add_trace(go.Scatter(x=x, y=churn, name="churn (cosine distance in → out)", mode="lines+markers",
                             line={"color": figures.slot_color(2), "dash": "dot"}))
    if highlight is not None:
        fig.add_vrect(x0=highlight - 0.5, x1=highlight + 0.5, fillcolor="#D55E00", opacity=0.12, line_width=0,
                      annotation_text="fact", annotation_position="top left")
    fig.update_layout(template=figures.TEMPLATE, title="Memory keep / rewrite pattern", xaxis_title="segment",
                      yaxis_title="attention mass (layers, heads averaged) / churn", height=420)
    return fig


def keep_rewrite_caption(figure: go.Figure, fact_segment: int | None) -> str:
    """The caption of a keep_rewrite figure, read off the very lines it draws (captions.keep_rewrite_caption)."""
    lines = {trace.name: np.asarray(trace.y, dtype=np.float64) for trace in figure.data}
    return captions.keep_rewrite_caption(lines["write → read (keep)"], lines["write → tokens (write new)"], fact_segment)


def accuracy_figure(rows: list[dict], task: str) -> go.Figure:
    """Accuracy vs segments with memory and with memory reset, the papers' numbers beside ours."""
    reference = PAPER_COPY if task in ("copy",) else PAPER_RECALL
    return figures.accuracy_vs_segments(rows, f"{task}: accuracy vs number of segments", reference=reference)


def accuracy_table(rows: list[dict], task: str) -> list[dict]:
    """Our measured rows with the paper's numbers in extra columns where they exist."""
    reference = PAPER_COPY if task == "copy" else PAPER_RECALL
    out = []
    for row in rows:
        extra = {name: values.get(row["segments"]) for name, values in reference.items()}
        out.append({"segments": row["segments"], "ours, with memory": row["accuracy_memory"],
                    "ours, memory reset": row["accuracy_reset"], **extra})
    return out


# ---------------------------------------------------------------------- ARMT (Rodkin et al. 2024)
# The figures live with the other associative-memory figures (figures.capacity_figure,
# figures.memory_reach_figure: standard figures of an ARMT trace); their captions here.
capacity_figure = figures.capacity_figure
memory_reach_figure = figures.memory_reach_figure


def capacity_figure_caption(result: CapacityResult) -> str:
    """captions.capacity_caption of a CapacityResult (the arrays capacity_figure draws)."""
    return captions.capacity_caption(result.pairs, result.accuracy, result.estimate, result.n_values, result.layer,
                                     result.keys, result.feature_size)


def memory_reach_figure_caption(result: MemoryReach) -> str:
    """captions.memory_reach_caption of a MemoryReach (the arrays memory_reach_figure draws)."""
    return captions.memory_reach_caption(result.full, result.reset, result.previous, result.counts)


__all__ = ["capacity_figure", "capacity_figure_caption", "memory_reach_figure", "memory_reach_figure_caption",
           "BLOCK_PAIRS", "diagonal_score", "sharpness", "injectivity", "write_pattern", "read_pattern", "keep_rewrite", "keep_rewrite_caption", "accuracy_figure",
           "accuracy_table", "PatternResult"]
