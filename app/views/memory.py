"""Memory: trajectories in PCA space, slot norms and churn, slot similarity, logit lens; for an
associative memory (ARMT): its state size per layer, write strength and novelty per memory token,
and where a token's read is retrieved from."""
from __future__ import annotations

import streamlit as st

from rmt_core.explain import analysis, answers, associative, series
from rmt_core.viz import captions, figures

from app import services, sidebar, state, threads
from app.views.common import guarded, literal, require_trace, show_figure, visible_token

AUTO_RANK_SECONDS = 1.0  # the effective rank is computed with the page when it takes about this long at most
AUTO_SPLIT_SECONDS = 0.3  # a read is split into the earlier writes with the page when that takes about this long
# (the first token of a layer on a long trace walks its writes; later tokens reuse the walk: explain.associative)
JUMP = "mem_armt_jump"  # set by a click that opens another segment: the whole app reruns (the view is a fragment)


def render() -> None:
    st.header("Memory")
    trace = require_trace()
    if trace is None:
        return
    _views(trace, sidebar.selected_segment(trace))


@st.fragment
@guarded
def _views(trace, segment: int) -> None:
    if trace.memory_type == "associative":
        _associative(trace, segment)
        return
    tokenizer = trace.model.tokenizer if trace.model is not None else None
    dims = st.radio("Projection", [2, 3], horizontal=True, format_func=lambda d: f"{d}-D PCA", key="mem_dims")
    window = _window(trace)
    show_figure(_trajectory(trace, tokenizer, dims, window), key="mem_pca")
    # figures that do not depend on the selected segment: built once per trace (a segment change sends the same)
    c1, c2 = st.columns(2)
    with c1:
        show_figure(services.per_trace(trace, "memory: slot norms", lambda: figures.slot_segment_heatmap(
            series.slot_norms(trace)[1:], "Slot norms after each segment", "L2 norm")), key="mem_norms")
    with c2:
        show_figure(services.per_trace(trace, "memory: slot churn", lambda: figures.slot_segment_heatmap(
            series.slot_churn(trace), "Churn per slot (cosine distance in → out)", "churn")), key="mem_churn")
    states = series.memory_states(trace)  # (S + 1, m, d); every whole-trace series is computed once per trace
    show_figure(figures.slot_similarity_figure(analysis.slot_similarity(states[segment + 1]), segment), key="mem_sim")
    st.subheader(f"Logit lens of the memory written by segment {segment}")
    if not trace.has_slots:
        st.info(f"The logit lens decodes write slots; this model's memory type ({trace.memory_type!r}) has none. "
                "The figures above show its state's vectors.")
        return
    st.caption("The top tokens each write slot's hidden state decodes to through the final norm and the LM head, "
               "per layer (layer 0 = the memory as it entered).")
    lens = analysis.logit_lens(trace, segment, tokenizer)
    # one row per slot, one column per layer: a few columns, so none is cut off at the right
    rows = [{"slot": f"W{k}", **{f"layer {y}": "  ".join(visible_token(t) for t in layer[k]) for y, layer in enumerate(lens)}}
            for k in range(len(lens[0]) if lens else 0)]
    st.dataframe(rows, hide_index=True, width="stretch")


def _window(trace) -> tuple[int, int] | None:
    """The steps to draw, chosen with a range slider when the trace has more steps than the
    trajectory draws at once (None: all, evenly spaced)."""
    last = trace.num_segments  # steps 0..S: the initial memory, then the memory after each segment
    if last + 1 <= figures.TRAJECTORY_STEPS:
        return None
    first, end = st.slider(  # keyed by the trace's length: another trace starts with all its steps
        "Steps drawn", 0, last, (0, last), key=f"mem_window_{last}",
        help=f"The trajectory draws at most {figures.TRAJECTORY_STEPS} steps, evenly spaced. Narrow the range to "
             "see every step of a part of the document (step s = the memory after segment s − 1; the axes stay "
             "those of the whole trace).")
    return None if (first, end) == (0, last) else (first, end)


def _trajectory(trace, tokenizer, dims: int, window: tuple[int, int] | None):
    """The trajectory figure, with the logit-lens hover of the steps it draws only."""
    most = figures.TRAJECTORY_STEPS

    def build():
        shown = figures.trajectory_steps(trace.num_segments + 1, most, window)
        hover = series.lens_hover_at(trace, shown.tolist(), tokenizer) if trace.has_slots else None
        return figures.memory_trajectory(series.pca(trace, dims), hover, dims=dims, max_steps=most, window=window)

    if window is not None:  # a zoomed view is built each time (the hover text of its steps is kept)
        return build()
    return services.per_trace(trace, ("memory: trajectory", dims, id(tokenizer), most), build)


# ---------------------------------------------------------------------- associative memory (ARMT)
def _associative(trace, segment: int) -> None:
    """The associative memory's views: it has no slots (no trajectories, slot norms or logit lens),
    a matrix state per layer instead."""
    if st.session_state.pop(JUMP, False):
        st.rerun()  # a click inside this fragment chose another segment: the sidebar and every page follow
    st.caption("This model's memory is associative (ARMT): each layer keeps a matrix A (and a normaliser z) that "
               "its memory tokens P0.. write after every segment and every token of later segments reads from. It has "
               "no memory slots, so slot trajectories, slot norms and the logit lens do not apply.")
    _state_size(trace, segment)
    layers = int(trace.model_info["num_layers"])
    layer = st.selectbox("Layer", range(layers), index=layers - 1, key="mem_armt_layer",
                         help="The layer whose memory-token writes and reads are shown below.")
    _writes(trace, layer)
    _retrieved_from(trace, segment, layer)


def _state_size(trace, segment: int) -> None:
    st.subheader("State size per layer")
    norms = series.associative_rows(trace, "state_norms")
    ranks = None
    if all(s.state_rank is not None for s in trace.segments):
        ranks = associative.state_ranks(trace)
    elif trace.model is not None:
        seconds = associative.rank_seconds(trace)
        if seconds <= AUTO_RANK_SECONDS or st.button(f"Compute the effective rank of A (about {seconds:.0f} s)",
                                                     key="mem_armt_rank"):
            with threads.heavy(), st.spinner("Rebuilding the states and their singular values…"):
                ranks = associative.state_ranks(trace)
    bound = associative.rank_bound(trace)
    fig = services.per_trace(trace, ("memory: state size", ranks is not None), lambda: figures.state_size_figure(
        norms, series.associative_rows(trace, "z_norms"), ranks, rank_bound=bound))
    show_figure(fig, key="mem_state_size")
    st.caption(literal(captions.state_size_caption(norms, ranks, bound)))


def _writes(trace, layer: int) -> None:
    st.subheader(f"What the memory tokens write (layer {layer})")
    names = [f"P{i}" for i in range(trace.num_mem_tokens)]
    beta = series.associative_rows(trace, "write_strength")[:, layer]
    gamma = series.associative_rows(trace, "novelty")[:, layer]
    c1, c2 = st.columns(2)
    with c1:
        show_figure(services.per_trace(trace, ("memory: beta", layer), lambda: figures.slot_segment_heatmap(
            beta, "Write strength β", "β", row_names=names, zrange=(0, 1), row_title="memory token")),
            key="mem_beta")
    with c2:
        show_figure(services.per_trace(trace, ("memory: gamma", layer), lambda: figures.slot_segment_heatmap(
            gamma, "Novelty γ (what z adds of each key)", "γ", row_names=names, zrange=(0, 1),
            row_title="memory token")), key="mem_gamma")
    st.caption(literal(captions.write_caption(beta, gamma, layer)))
    overwrite = st.expander("Overwrite |v − v̄| (how far each written value is from what the state already returned)",
                            key="mem_armt_overwrite", on_change="rerun")
    if overwrite.open:  # built and sent only when opened
        with overwrite:
            show_figure(services.per_trace(trace, ("memory: overwrite", layer), lambda: figures.slot_segment_heatmap(
                series.associative_rows(trace, "overwrite")[:, layer], f"Overwrite |v − v̄| (layer {layer})",
                "|v − v̄|", row_names=names, row_title="memory token")), key="mem_overwrite")


def _default_position(trace, segment: int) -> int:
    """The answer's position when the document asks a question in this segment, else its last token."""
    site = answers.answer_site(trace)
    if site is not None and site.segment == segment:
        return site.position
    return trace.segments[segment].num_tokens - 1


def _open(segment: int) -> None:
    """Select `segment` everywhere (a callback: the app reruns whole, see JUMP)."""
    sidebar.request_segment(segment)
    st.session_state[JUMP] = True


def _open_bar(key: str) -> None:
    """A click on a bar of the retrieved-from chart selects that segment everywhere."""
    points = (st.session_state.get(key) or {}).get("selection", {}).get("points", [])
    if points:
        _open(int(points[0]["x"]))


@st.fragment
@guarded
def _retrieved_from(trace, segment: int, layer: int) -> None:
    """Its own fragment: another token (or a Split click) reruns and re-sends this part only, not the page's
    other charts. A bar click that opens a segment reruns the whole app (JUMP)."""
    if st.session_state.pop(JUMP, False):
        st.rerun()
    st.subheader(f"Retrieved from: what a token of segment {segment} reads (layer {layer})")
    if segment == 0:
        st.info("Segment 0 reads nothing: the state is empty until the first segment has written. Select a later "
                "segment (sidebar) to see where its tokens' reads come from.")
        return
    if trace.model is None:
        st.info("Splitting a read into the earlier writes re-runs the segment: load the trace with the checkpoint "
                "it was made with.")
        return
    seg = trace.segments[segment]
    position = st.selectbox("Token (its read at the layer above)", range(seg.num_tokens),
                            index=_default_position(trace, segment), key=f"mem_armt_pos_{segment}",
                            format_func=lambda j: f"{j}: {visible_token(seg.tokens[j])}")
    cache = st.session_state.setdefault(state.ATTRIBUTION_CACHE, {})
    key = (id(trace), "retrieved from", segment, position, layer)
    if key not in cache:
        seconds = associative.retrieval_seconds(trace, segment, layer)
        if seconds > AUTO_SPLIT_SECONDS and not st.button(
                f"Split this token's read into the writes of the {segment} earlier segments (about {seconds:.1f} s)",
                key="mem_armt_split", help="The earlier writes of this layer are walked once: after this, any token "
                                           "of this or an earlier segment is split with the page."):
            return
        with threads.heavy(), st.spinner("Splitting the read into the earlier writes…"):
            result = associative.retrieved_from(trace, segment, position, layer)
            cache[key] = (result, figures.retrieved_from_figure(result))  # the figure too: drawn again on each visit
    result, fig = cache[key]
    ratio = float(seg.read_ratio[layer, position])
    st.caption(literal(captions.retrieved_from_caption(result.shares, segment, position, seg.tokens[position], layer,
                                                       ratio)))
    chart = f"mem_retrieved_{segment}_{position}_{layer}"
    show_figure(fig, key=chart, on_select=lambda: _open_bar(chart), selection_mode="points")
    how = ("a bar's height is its share of y (projection on y over |y|², all sum to 1), stacked by memory token"
           if segment <= figures.RETRIEVAL_BARS else
           f"with {segment} earlier segments, a bar is a segment's share of y (projection on y over |y|², all sum to "
           "1; its memory tokens together) and the heatmap under the bars splits it by memory token (the same shares, "
           f"drawn so because {segment} × {trace.num_mem_tokens} stacked bars take the browser seconds)")
    st.caption(f"The token's read y is exactly the sum of one term per earlier segment and memory token (A is a sum "
               f"of their rank-1 writes); {how}. Click a bar to open that segment.")
    top = result.top_segment
    if top is not None:
        st.button(f"Open segment {top} (it holds the largest share)", key="mem_armt_open",
                  on_click=_open, args=(top,))
