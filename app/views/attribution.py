"""Attribution: which read slots a prediction used, what write slots took from which tokens,
which earlier tokens a prediction uses through memory, and memory interventions."""
from __future__ import annotations

import numpy as np
import streamlit as st

from rmt_core import RMTLensError
from rmt_core.explain import answers, attribution, interventions
from rmt_core.token_text import encode_ids
from rmt_core.viz import figures
from rmt_core.viz.render import document_html

from app import sidebar, state
from app import services, threads
from app.views.common import guarded, literal, require_trace_with_model, show_figure, visible_token


def _cached(trace, key: tuple, compute):
    cache = st.session_state.setdefault(state.ATTRIBUTION_CACHE, {})
    full_key = (id(trace),) + key
    if full_key not in cache:
        with threads.heavy():  # one of the server's job places (app/threads.py)
            cache[full_key] = compute()
    return cache[full_key]


def render() -> None:
    st.header("Attribution and interventions")
    trace = require_trace_with_model("Attribution")
    if trace is None:
        return
    _views(trace, sidebar.selected_segment(trace))


def _default_position(trace, segment: int) -> int:
    """The answer's position when the document asks a question in this segment, else the last token
    that has a next token."""
    site = answers.answer_site(trace)
    if site is not None and site.segment == segment:
        return site.position
    seg = trace.segments[segment]
    last = seg.num_tokens - 1
    return max(0, last - 1) if segment == trace.num_segments - 1 else last


@st.fragment
@guarded
def _views(trace, segment: int) -> None:
    seg = trace.segments[segment]
    tokenizer = trace.model.tokenizer
    c1, c2, c3 = st.columns([3, 2, 1])
    position = c1.selectbox("Position (the prediction made at this token)", range(seg.num_tokens),
                            index=_default_position(trace, segment), key=f"attr_pos_{segment}",
                            format_func=lambda j: f"{j}: {visible_token(seg.tokens[j])}")
    custom = c2.text_input("Target token (empty = the token that follows; at the end, the model's top prediction)", key="attr_target")
    method = c3.selectbox("Method", list(attribution.METHODS), key="attr_method")
    target = None
    if custom:
        ids = encode_ids(tokenizer, custom) if tokenizer is not None else []
        if len(ids) != 1:
            st.error(f"“{literal(custom)}” is {len(ids)} tokens for this model; give a single token (e.g. with its leading space).")
            return
        target = ids[0]
    elif segment == trace.num_segments - 1 and position == seg.num_tokens - 1:
        # nothing follows the document's last token (a question ending in "Answer:"): explain the
        # model's own answer there, its top stored prediction
        target = int(seg.topk_ids[position][0])
    # Only the open tab runs (on_change="rerun" makes tab.open known): an intervention re-runs the
    # document from its segment on, which must not happen on every visit to this page.
    tab_read, tab_write, tab_through, tab_int = st.tabs(
        ["Read slots", "Write slots", "Through memory", "Interventions"], key="attr_tab", on_change="rerun")
    try:
        if tab_read.open:
            with tab_read:
                if _available(trace, "read"):
                    _read(trace, segment, position, target, method)
        if tab_write.open:
            with tab_write:
                if _available(trace, "write"):
                    _write(trace, segment, method)
        if tab_through.open:
            with tab_through:
                _through(trace, segment, position, target, method)
        if tab_int.open:
            with tab_int:
                _interventions(trace)
                if trace.has_slots:
                    _slot_interventions(trace)
                elif interventions.NEEDS["reset_layer"].supports(trace):
                    _layer_interventions(trace)
    except RMTLensError as exc:
        st.error(literal(services.app_message(exc)))


def _available(trace, kind: str) -> bool:
    """Whether attribution `kind` works for this trace's memory; else say why (capabilities)."""
    missing = attribution.KINDS[kind].needs.missing(trace)
    if missing:
        st.info(f"Not available for this model. {missing}")
    return missing is None


def _baseline(kind: str, method: str, key: str) -> str | None:
    """The baseline chosen for `kind`, or None when the method brings its own (saliency: none,
    input_x_gradient: zero inputs; the caption says which)."""
    if attribution.METHODS[method].baseline != "chosen":
        return None
    choices = attribution.KINDS[kind].baselines
    return st.selectbox("Baseline (what the inputs are compared with)", list(choices), key=key,
                        format_func=lambda name: f"{name}: {choices[name]}")


def _caption(result) -> None:
    text = f"Method: {result.how}."
    if result.delta is not None:
        delta = float(np.nanmax(np.abs(np.atleast_1d(result.delta))))
        if result.kind == "write":
            text += f" Each slot's scores sum to its f(input) − f(baseline) within {delta:.2e} (convergence delta)."
        else:
            text += (f" Sum of scores {np.nansum(result.scores):.4f} vs f(input) − f(baseline) = "
                     f"{result.f_input - result.f_baseline:.4f} (convergence delta {delta:.2e}).")
    st.caption(text)


def _download(result, key: str) -> None:
    st.download_button("Download every score (CSV)", result.to_csv(), mime="text/csv", key=key,
                       file_name=f"attribution-{result.kind}-segment{result.segment}-{result.method}.csv")


def _read(trace, segment, position, target, method) -> None:
    baseline = _baseline("read", method, "attr_read_baseline")
    result = _cached(trace, ("read", segment, position, target, method, baseline),
                     lambda: attribution.attribute(trace, "read", segment, position, target=target, method=method,
                                                   baseline=baseline))
    show_figure(figures.attribution_figure(result), key="attr_read")
    _caption(result)
    _download(result, "attr_read_csv")


def _write(trace, segment, method) -> None:
    baseline = _baseline("write", method, "attr_write_baseline")
    key = ("write", segment, method, baseline)
    if not st.button("Attribute the write slots of this segment", key="attr_write_go"):
        if (id(trace),) + key not in st.session_state.get(state.ATTRIBUTION_CACHE, {}):
            st.caption("Which tokens of this segment produced what each write slot wrote "
                       "(target: the slot's output along its own update direction).")
            return
    with st.spinner("Attributing every write slot…"):
        result = _cached(trace, key, lambda: attribution.attribute(trace, "write", segment, method=method,
                                                                   baseline=baseline))
    show_figure(figures.attribution_figure(result), key="attr_write")
    _caption(result)
    _download(result, "attr_write_csv")


def _through(trace, segment, position, target, method) -> None:
    baseline = _baseline("through", method, "attr_through_baseline")
    bound = attribution.MAX_THROUGH_SEGMENTS
    window = int(st.number_input("Window (earlier segments unrolled)", min_value=0, max_value=100_000,
                                 value=min(segment, bound), step=8, key=f"attr_through_window_{segment}",
                                 help=f"Default: back to the document's start, up to {bound} segments (the cost "
                                      "bound); a window longer than the document is clamped to its start."))
    key = ("through", segment, position, target, method, baseline, window)
    if (id(trace),) + key not in st.session_state.get(state.ATTRIBUTION_CACHE, {}):
        n, seconds = attribution.estimate_through_seconds(trace, segment, window)
        reach = ("back to the document's start" if n >= segment else
                 f"segments {segment - n}..{segment - 1}; segments 0..{segment - n - 1} will not be scored")
        st.caption(f"Attribution through the memory chain over {n} earlier segments ({reach}); estimated "
                   f"{seconds:.0f} s (ablation re-runs them once per token: much longer).")
        if not st.button("Attribute through memory", key="attr_through_go"):
            return
    bar = st.progress(0.0, text="Attributing…")
    result = _cached(trace, key,
                     lambda: attribution.attribute(trace, "through", segment, position, target=target, method=method,
                                                   baseline=baseline, max_segments=window,
                                                   progress=lambda d, t: bar.progress(d / t, text=f"forward pass {d}/{t}")))
    bar.empty()
    first, last = result.scored_segments
    st.markdown(f"Scored segments **{first}..{last}**" + ("" if result.reaches_start else
                f" — the window stops short of the document's start (segments 0..{first - 1} not scored)") + ".")
    if result.note:
        st.info(literal(result.note))
    st.caption(f"Document coloured by attribution of log p({literal(repr(result.target_token))}) at position {position} of "
               f"segment {segment}: orange = raises it, blue = lowers it.")
    html, note = document_html(trace, values=np.nan_to_num(result.scores, nan=0.0), value_name="attribution",
                               selected_segment=segment, signed=True,
                               marked_chars=[tuple(s) for s in trace.meta.get("fact_spans", [])])
    with st.container(height=360):
        st.html(html)
    _caption(result)
    rows = [{**row, "token": visible_token(row["token"])} for row in result.to_rows()]

    def top(selected) -> list[dict]:  # the 10 largest |scores|, ranked
        ranked = sorted(selected, key=lambda r: -abs(r["score"]))[:10]
        return [{"rank": i, **r} for i, r in enumerate(ranked, 1)]

    earlier = top(r for r in rows if r["segment"] < segment)
    own = top(r for r in rows if r["segment"] == segment)
    st.markdown("**Through memory**: the largest credits of tokens in earlier segments")
    if earlier:
        st.dataframe(earlier, hide_index=True, key="attr_through_earlier")
    else:
        st.caption("No earlier segment was scored (the prediction is in the first segment, or the window is 0).")
    st.markdown(f"**Direct, not through memory**: tokens of segment {segment} itself (the prediction's own segment)")
    st.dataframe(own, hide_index=True, key="attr_through_own")
    _download(result, "attr_through_csv")


def _default_intervention_segment(trace) -> int:
    """Where an intervention shows something: right after the segment memory carried the answer
    from, else the middle (never 0: the memory entering segment 0 is the initial memory already)."""
    answer = st.session_state.get(state.ANSWER)
    if answer is not None and answer.trace is trace and answer.memory_segment is not None:
        return min(answer.memory_segment + 1, trace.num_segments - 1)
    return min(max(1, trace.num_segments // 2), trace.num_segments - 1)


def _interventions(trace) -> None:
    c1, c2 = st.columns(2)
    offered = {"reset to initial memory": "reset", "zero memory": "zero", "shuffle slots": "shuffle",
               "skip the previous segment's write": "skip_write"}
    works = [label for label, edit in offered.items() if interventions.NEEDS[edit].supports(trace)]
    left_out = [f"{label}: {interventions.NEEDS[edit].missing(trace)}" for label, edit in offered.items()
                if label not in works]
    if left_out:
        st.caption("Not offered for this model's memory — " + " ".join(left_out))
    if not works:
        return
    kind = c1.selectbox("Intervention", works, key="int_kind")
    at = c2.selectbox("Before segment", range(trace.num_segments), index=_default_intervention_segment(trace),
                      key=f"int_segment_{id(trace)}")
    if kind == "reset to initial memory" and at == 0:
        st.info("The memory entering segment 0 is the initial memory already: resetting it there changes nothing. "
                "Pick a later segment.")
        return
    if kind == "skip the previous segment's write" and at == 0:
        st.info("No segment writes before segment 0: pick a later segment (the write of the segment before it is "
                "dropped, and the document re-run from there).")
        return
    run = {"reset to initial memory": interventions.reset_memory, "zero memory": interventions.zero_memory,
           "shuffle slots": interventions.shuffle_slots,
           "skip the previous segment's write": lambda t, s: interventions.skip_write(t, s - 1)}[kind]
    result = _cached(trace, ("intervene", kind, at), lambda: run(trace, at))
    _intervention_result(trace, result, "int_fig")


def _slot_interventions(trace) -> None:
    """One slot of the memory entering a segment: reset to the initial memory's slot, or patched from
    the Compare page's second run (interventions.reset_slot / patch_memory)."""
    st.subheader("One memory slot")
    kinds = ["reset one slot"]
    other = st.session_state.get(state.COMPARE_TRACE)  # the Compare page's second run
    if other is not None:
        kinds.append("patch one slot from the compared run")
    c1, c2, c3 = st.columns(3)
    kind = c1.selectbox("Slot intervention", kinds, key="int_slot_kind",
                        help="Patching needs a second run: choose one on the Compare page.")
    at = c2.selectbox("Before segment", range(trace.num_segments), index=_default_intervention_segment(trace),
                      key=f"int_slot_segment_{id(trace)}")
    slot = c3.selectbox("Slot", range(trace.num_mem_tokens), format_func=lambda k: f"M{k}", key="int_slot")
    if kind == "reset one slot":
        result = _cached(trace, ("reset slot", at, slot), lambda: interventions.reset_slot(trace, at, slot))
    elif at >= other.num_segments:
        st.info(f"The compared run has {other.num_segments} segments: pick a segment before {other.num_segments}.")
        return
    else:
        result = _cached(trace, ("patch slot", id(other), at, slot),
                         lambda: interventions.patch_memory(trace, at, other, slots=[slot]))
    _intervention_result(trace, result, "int_slot_fig")


def _layer_interventions(trace) -> None:
    """An associative memory (ARMT): one layer's state (A_l, z_l) before a segment reset (interventions.reset_layer)
    or patched from the Compare page's second run (interventions.patch_memory(..., layers=[l]))."""
    st.subheader("One layer's state")
    kinds = ["reset one layer"]
    other = st.session_state.get(state.COMPARE_TRACE)  # the Compare page's second run
    if other is not None and other.memory_type == trace.memory_type:
        kinds.append("patch one layer from the compared run")
    c0, c1, c2 = st.columns(3)
    kind = c0.selectbox("Layer intervention", kinds, key="int_layer_kind",
                        help="Patching needs a second run of an associative memory: choose one on the Compare page.")
    at = c1.selectbox("Before segment", range(trace.num_segments), index=_default_intervention_segment(trace),
                      key=f"int_layer_segment_{id(trace)}")
    layers = int(trace.model_info["num_layers"])
    layer = c2.selectbox("Layer", range(layers), index=layers - 1, key="int_layer",
                         help="That layer's associative matrix A and normaliser z are set to zero (its reads are then "
                              "0 until the next write), or copied from the compared run; the other layers keep theirs.")
    if kind == "reset one layer":
        if at == 0:
            st.info("The state entering segment 0 is empty already: pick a later segment.")
            return
        result = _cached(trace, ("reset layer", at, layer), lambda: interventions.reset_layer(trace, at, layer))
    elif at >= other.num_segments:
        st.info(f"The compared run has {other.num_segments} segments: pick a segment before {other.num_segments}.")
        return
    else:
        result = _cached(trace, ("patch layer", id(other), at, layer),
                         lambda: interventions.patch_memory(trace, at, other, layers=[layer]))
    _intervention_result(trace, result, "int_layer_fig")


def _intervention_result(trace, result, key: str) -> None:
    show_figure(figures.intervention_losses(result.loss_before, result.loss_after, result.name), key=key)
    if result.answer_before is not None:
        site = answers.answer_site(trace)
        what = "Answer after “Answer:”" if site is not None else "Next token predicted after the document"
        line = (f"{what} before: **“{literal(result.answer_before)}”** (p = {result.p_answer_before:.3f}) · after: "
                f"**“{literal(result.answer_after)}”** (p = {result.p_answer_after:.3f})"
                + (" — **the answer changed**." if result.answer_changed else "."))
        if result.expected is not None and result.p_expected_after is not None:
            line += (f" The document's own next token “{literal(result.expected)}”: p = {result.p_expected_before:.3f} → "
                     f"{result.p_expected_after:.3f}.")
        st.markdown(line)
