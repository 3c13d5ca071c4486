"""The guided tour: one fact-recall sample walked through step by step.

make_tour() traces a held-out sample with a model and computes everything the steps
show (attributions, churn, a counterfactual); tour_steps() turns that into a list of
(title, explanation, figure) steps. The app only displays them; any seed works.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from ..explain import analysis, answers, attribution, interventions
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


# What the tour's steps need (capabilities): its slot steps (logit lens, read / write attribution,
# slot attention) read the tokens memory's slots.
TOUR_NEEDS = Needs(memory_types=("tokens",), slots=True, model=True)


def make_tour(model, seed: int = 7, segments: int = 8, n_steps: int = 32) -> Tour:
    """Build and analyse one held-out fact-recall sample whose fact is not in the last segment.

    Raises TraceError (saying why) for a model whose memory the tour's steps cannot show (TOUR_NEEDS)."""
    from ..training.corpus import load_corpus
    from ..training.tasks import babi

    seg = model.config.segment_size
    rng = np.random.default_rng(seed)
    sample = babi.build_sample(load_corpus("heldout"), segments * seg, "detect", rng, model.tokenizer, keep_out_tail=seg)
    encoded = babi.encode_sample(sample, model.tokenizer)
    trace = trace_document(model, sample.text + sample.answer)
    missing = TOUR_NEEDS.missing(trace)
    if missing:
        raise TraceError(f"The guided tour cannot show this model. {missing}")
    trace.meta.update({"document": f"fact-recall sample (seed {seed})", "fact_spans": list(sample.facts),
                       "answer": sample.answer.strip()})
    start, end = encoded.fact_token_spans[0]
    fact_segment = start // seg
    site = answers.answer_site(trace)  # the token ending "Answer:" predicts the answer
    position = site.position
    predicted = answers.stored_predictions(trace, site, 1)[0].text
    return Tour(
        trace=trace, seed=seed, fact_tokens=(start, end), fact_segment=fact_segment,
        answer=sample.answer.strip(), predicted=predicted,
        write=attribution.attribute(trace, "write", fact_segment, n_steps=n_steps),
        read=attribution.attribute(trace, "read", site.segment, position, n_steps=n_steps),
        reset_after_fact=interventions.reset_memory(trace, fact_segment + 1),
    )


def tour_steps(tour: Tour) -> list[TourStep]:
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


def _churn_figure(churn: np.ndarray, fact_segment: int) -> go.Figure:
    colors = ["#D55E00" if i == fact_segment else "#0072B2" for i in range(len(churn))]
    fig = go.Figure(go.Bar(x=np.arange(len(churn)), y=churn, marker_color=colors,
                           hovertemplate="segment %{x}<br>churn %{y:.3f}<extra></extra>"))
    fig.update_layout(template=figures.TEMPLATE, title="Memory churn per segment (orange = the fact segment)",
                      xaxis_title="segment", yaxis_title="mean cosine distance in → out", height=380)
    return fig

