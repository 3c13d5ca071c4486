"""The guided tour: one fact-recall sample walked through step by step.

make_tour() traces a held-out sample with a model and computes everything the steps
show; tour_steps() turns that into a list of (title, explanation, figure) steps. The app
only displays them; any seed works. Two tours, by the model's memory:

- tokens memory (RMT): segments, the [read | tokens | write] row, the fact written (write-slot
  attribution), churn, the read (read-slot attribution), memory reset after the fact (Tour);
- associative memory (ARMT): segments, the [tokens | memory tokens] row, the fact written (write
  strength beta and novelty gamma at the fact segment), the state's size over the segments, what
  the answer token retrieves from (explain.associative.retrieved_from), the fact segment's write
  skipped and one layer's state reset (AssociativeTour).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from ..explain import analysis, answers, associative, attribution, interventions
from . import captions, figures
from ..errors import TraceError
from ..tracing.capabilities import Needs
from ..tracing.recorder import trace_document
from ..tracing.trace import Trace


@dataclass
class Tour:
    trace: Trace
    seed: int
    fact_tokens: tuple[int, int]  # token span of the fact in the document
    fact_segment: int
    answer: str
    predicted: str
    write: attribution.Attribution  # write slots of the fact segment
    read: attribution.Attribution  # read slots of the last segment, target = the answer
    reset_after_fact: interventions.InterventionResult


@dataclass
class TourStep:
    title: str
    text: str
    figure: go.Figure | None = None
    html: str | None = None  # a rendered document, for steps that show text


@dataclass
class AssociativeTour:
    """The tour of an associative memory (ARMT) on one fact-recall sample.

    layer: the layer whose write strength at the fact segment stands out most from its other
    segments (fact_layer); retrievals: per layer, where the answer token's read comes from
    (explain.associative.Retrieval); skip_fact_write: the fact segment's write dropped;
    reset_layer_after_fact: `layer`'s state reset before the segment after the fact."""

    trace: Trace
    seed: int
    fact_tokens: tuple[int, int]
    fact_segment: int
    answer: str
    predicted: str
    layer: int
    retrievals: list[associative.Retrieval]
    skip_fact_write: interventions.InterventionResult
    reset_layer_after_fact: interventions.InterventionResult


# What the tour's steps need (capabilities): the tokens tour's slot steps (logit lens, read / write
# attribution, slot attention) read the tokens memory's slots; the associative tour its recorded
# rows and re-runs (retrieved_from, interventions).
TOUR_NEEDS = Needs(memory_types=("tokens",), slots=True, model=True)
ASSOCIATIVE_TOUR_NEEDS = Needs(memory_types=("associative",), model=True)


def make_tour(model, seed: int = 7, segments: int = 8, n_steps: int = 32) -> Tour | AssociativeTour:
    """Build and analyse one held-out fact-recall sample whose fact is not in the last segment: a Tour
    for the tokens memory, an AssociativeTour for an associative memory (n_steps: the tokens tour's
    integrated-gradients steps). Raises TraceError (saying why) for a model whose memory the tour's
    steps cannot show (TOUR_NEEDS, ASSOCIATIVE_TOUR_NEEDS)."""
    from ..training.corpus import load_corpus
    from ..training.tasks import babi

    seg = model.config.segment_size
    rng = np.random.default_rng(seed)
    sample = babi.build_sample(load_corpus("heldout"), segments * seg, "detect", rng, model.tokenizer, keep_out_tail=seg)
    encoded = babi.encode_sample(sample, model.tokenizer)
    trace = trace_document(model, sample.text + sample.answer)
    needs = ASSOCIATIVE_TOUR_NEEDS if trace.memory_type == "associative" else TOUR_NEEDS
    missing = needs.missing(trace)
    if missing:
        raise TraceError(f"The guided tour cannot show this model. {missing}")
    trace.meta.update({"document": f"fact-recall sample (seed {seed})", "fact_spans": list(sample.facts),
                       "answer": sample.answer.strip()})
    start, end = encoded.fact_token_spans[0]
    fact_segment = start // seg
    site = answers.answer_site(trace)  # the token ending "Answer:" predicts the answer
    position = site.position
    predicted = answers.stored_predictions(trace, site, 1)[0].text
    if trace.memory_type == "associative":
        layer = fact_layer(associative.write_strength(trace), fact_segment)
        return AssociativeTour(
            trace=trace, seed=seed, fact_tokens=(start, end), fact_segment=fact_segment, answer=sample.answer.strip(),
            predicted=predicted, layer=layer,
            retrievals=[associative.retrieved_from(trace, site.segment, position, y)
                        for y in range(int(trace.model_info["num_layers"]))],
            skip_fact_write=interventions.skip_write(trace, fact_segment),
            reset_layer_after_fact=interventions.reset_layer(trace, fact_segment + 1, layer))
    return Tour(
        trace=trace, seed=seed, fact_tokens=(start, end), fact_segment=fact_segment,
        answer=sample.answer.strip(), predicted=predicted,
        write=attribution.attribute(trace, "write", fact_segment, n_steps=n_steps),
        read=attribution.attribute(trace, "read", site.segment, position, n_steps=n_steps),
        reset_after_fact=interventions.reset_memory(trace, fact_segment + 1),
    )


def fact_layer(beta: np.ndarray, fact_segment: int) -> int:
    """The layer whose mean write strength at `fact_segment` stands out most above its median over all
    segments. beta: (S, Y, M) write strength per segment, layer and memory token."""
    per_segment = np.asarray(beta, dtype=np.float64).mean(axis=2)  # (S, Y)
    return int(np.argmax(per_segment[fact_segment] - np.median(per_segment, axis=0)))


def tour_steps(tour: Tour | AssociativeTour) -> list[TourStep]:
    """The tour's steps (six for either memory), each a title, a text whose findings are computed from
    the figure's data (captions), and a figure or a rendered document."""
    if isinstance(tour, AssociativeTour):
        return _associative_steps(tour)
    from .render import document_html

    trace, f = tour.trace, tour.fact_segment
    last = trace.num_segments - 1
    m = trace.num_mem_tokens
    layer = int(trace.model_info["num_layers"]) - 1
    doc, _ = document_html(trace, selected_segment=f, marked_chars=[tuple(s) for s in trace.meta["fact_spans"]])
    states = trace.memory_states()
    churn = analysis.slot_churn(states).mean(axis=1)
    seg_f = trace.segments[f]
    fact_positions = np.arange(max(tour.fact_tokens[0], seg_f.start), min(tour.fact_tokens[1], seg_f.end)) - seg_f.start
    steps = [
        TourStep(
            "1 · The text is cut into segments",
            f"The model reads {trace.num_tokens} tokens in {trace.num_segments} segments of at most "
            f"{trace.segments[0].num_tokens} tokens (§n marks where segment n starts). It never sees two segments at "
            f"once: the only way information crosses a boundary is its {m} memory vectors. The fact (underlined) is in "
            f"segment {f}; the question is at the end of segment {last}.", html=doc),
        TourStep(
            "2 · Read memory, tokens, write memory",
            f"Each segment is run as [read memory | tokens | write memory]. The read slots R0..R{m - 1} carry in what "
            "earlier segments wrote; the write slots W0.. see the whole segment and become the next memory. This is "
            f"the attention of segment {f} (last layer, heads averaged): orange lines separate the three blocks.",
            figures.attention_heatmap(trace.attention(f)[layer].mean(axis=0), trace.attention_labels(f), m,
                                      f"Segment {f}, layer {layer}, heads averaged")),
        TourStep(
            "3 · The fact is written",
            f"Integrated gradients ask which tokens of segment {f} produced what each write slot wrote (its update). "
            + captions.write_attribution_caption(tour.write.scores, fact_positions, f),
            figures.attribution_figure(tour.write, f"Write-slot attribution, segment {f}")),
        TourStep(
            "4 · Where memory moves",
            "Churn is the cosine distance between the memory entering and leaving a segment. "
            + captions.churn_caption(churn, f),
            _churn_figure(churn, f)),
        TourStep(
            "5 · The last segment reads the fact",
            f"At the position after “Answer:” the model predicts “{tour.predicted}” (the fact says “{tour.answer}”). "
            "Read-slot attribution shows which memory slots that prediction drew on. "
            + captions.read_slots_caption(tour.read.scores, tour.read.slots),
            figures.attribution_figure(tour.read, f"Read-slot attribution of log p('{tour.read.target_token.strip()}')")),
        TourStep(
            "6 · The counterfactual: erase memory after the fact",
            f"Reset the memory to its initial state right after segment {f} and run the rest again: the fact is gone, "
            f"and the answer becomes “{tour.reset_after_fact.answer_after}” "
            f"(p of the true answer {tour.reset_after_fact.p_expected_before:.2f} → {tour.reset_after_fact.p_expected_after:.2f}).",
            figures.intervention_losses(tour.reset_after_fact.loss_before, tour.reset_after_fact.loss_after,
                                        "memory reset after the fact", "Per-segment loss")),
    ]
    return steps


def _associative_steps(tour: AssociativeTour) -> list[TourStep]:
    from ..explain import series
    from .render import document_html

    trace, f, y = tour.trace, tour.fact_segment, tour.layer
    last = trace.num_segments - 1
    m = trace.num_mem_tokens
    top_layer = int(trace.model_info["num_layers"]) - 1
    doc, _ = document_html(trace, selected_segment=f, marked_chars=[tuple(s) for s in trace.meta["fact_spans"]])
    beta = series.associative_rows(trace, "write_strength")[:, y].mean(axis=1)  # (S,) at the tour's layer
    gamma = series.associative_rows(trace, "novelty")[:, y].mean(axis=1)
    norms = series.associative_rows(trace, "state_norms")
    retrieval = tour.retrievals[y]
    fact_shares = [float(r.segment_shares[f]) if r.reads and f < r.segment else float("nan") for r in tour.retrievals]
    skip, reset = tour.skip_fact_write, tour.reset_layer_after_fact
    return [
        TourStep(
            "1 · The text is cut into segments",
            f"The model reads {trace.num_tokens} tokens in {trace.num_segments} segments of at most "
            f"{trace.segments[0].num_tokens} tokens (§n marks where segment n starts). It never sees two segments at "
            f"once: after each segment its {m} memory tokens write into every layer's associative memory (a matrix A and "
            f"a vector z per layer), which every later token reads. The fact (underlined) is in segment {f}; the "
            f"question is at the end of segment {last}.", html=doc),
        TourStep(
            "2 · Tokens, then memory tokens",
            f"Each segment is run as [tokens | memory tokens P0..P{m - 1}]. The tokens never see the memory tokens; the "
            "memory tokens see the whole segment, and their outputs at each layer are what that layer writes (keys "
            "W_mk·o, values W_mv·o, strength β). Nothing comes in through the row: each layer adds what it reads "
            f"from its state to every row's input. This is the attention of segment {f} (last layer, heads averaged); "
            "the orange line separates the tokens from the memory tokens.",
            figures.attention_heatmap(trace.attention(f)[top_layer].mean(axis=0), trace.attention_labels(f),
                                      trace.num_slots, f"Segment {f}, layer {top_layer}, heads averaged",
                                      edges=figures.row_edges(trace, f))),
        TourStep(
            "3 · The fact is written",
            "Each memory token writes with a strength β (0..1) and a novelty γ (how new its key is to the state: 1 in "
            "segment 0, where nothing is stored). " + captions.fact_write_caption(beta, gamma, f, y),
            _per_segment_bars({"mean write strength β": beta, "mean novelty γ": gamma}, f,
                              f"Layer {y}: write strength and novelty per segment (orange = the fact segment)")),
        TourStep(
            "4 · The state grows",
            "Every write adds to A; its size ‖A‖_F after each segment shows where a layer stored most. "
            + captions.state_growth_caption(norms, f, y),
            figures.state_size_figure(norms, series.associative_rows(trace, "z_norms"), selected=f)),
        TourStep(
            "5 · The answer reads the fact segment",
            f"At the position after “Answer:” the model predicts “{tour.predicted}” (the fact says “{tour.answer}”). "
            "A read is a sum of the earlier writes, so it splits exactly into what each earlier segment wrote. "
            + captions.retrieved_from_caption(retrieval.shares, retrieval.segment, retrieval.position, retrieval.token,
                                              y, float(trace.segments[retrieval.segment].read_ratio[y, retrieval.position]))
            + " The fact segment's share per layer: "
            + ", ".join(f"layer {k} {100 * share:.0f}%" for k, share in enumerate(fact_shares)) + ".",
            figures.retrieved_from_figure(retrieval)),
        TourStep(
            "6 · The counterfactual: skip the fact's write",
            f"Run segment {f + 1} on from the state that entered segment {f}, as if the fact segment had written "
            f"nothing: the answer becomes “{skip.answer_after}” (p of the true answer {skip.p_expected_before:.2f} → "
            f"{skip.p_expected_after:.2f}). Resetting only layer {y}'s state after the fact instead gives "
            f"“{reset.answer_after}” (p {reset.p_expected_after:.2f}).",
            figures.intervention_losses(skip.loss_before, skip.loss_after, "fact segment's write skipped",
                                        "Per-segment loss")),
    ]


def _per_segment_bars(rows: dict[str, np.ndarray], fact_segment: int, title: str) -> go.Figure:
    """One bar row per named (S,) series, the fact segment's bar orange."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=list(rows))
    for row, (name, values) in enumerate(rows.items(), start=1):
        colors = ["#D55E00" if i == fact_segment else "#0072B2" for i in range(len(values))]
        fig.add_trace(go.Bar(x=np.arange(len(values)), y=values, marker_color=colors, name=name, showlegend=False,
                             hovertemplate="segment %{x}<br>" + name + " %{y:.3f}<extra></extra>"), row=row, col=1)
    fig.update_xaxes(title_text="segment", row=len(rows), col=1)
    fig.update_layout(template=figures.TEMPLATE, title=figures.plotly_text(title), height=200 * len(rows) + 120)
    return fig


def _churn_figure(churn: np.ndarray, fact_segment: int) -> go.Figure:
    colors = ["#D55E00" if i == fact_segment else "#0072B2" for i in range(len(churn))]
    fig = go.Figure(go.Bar(x=np.arange(len(churn)), y=churn, marker_color=colors,
                           hovertemplate="segment %{x}<br>churn %{y:.3f}<extra></extra>"))
    fig.update_layout(template=figures.TEMPLATE, title="Memory churn per segment (orange = the fact segment)",
                      xaxis_title="segment", yaxis_title="mean cosine distance in → out", height=380)
    return fig

