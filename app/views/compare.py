"""Compare: this run beside a second one (another document, another checkpoint, a saved trace),
on one segment axis; both attention maps of a segment; memory patched from one run into the other."""
from __future__ import annotations

import numpy as np
import streamlit as st

from rmt_core.viz import comparison as cfig
from rmt_core.viz import figures

from app import comparing, services, sidebar, state
from app.views.common import guarded, literal, require_trace, show_figure

SOURCES = ("Another document", "Another checkpoint", "This document, memory reset", "A saved trace (.rmtrace)")
MAX_HEATMAP = 200  # positions per axis of an attention map (as the Attention page)


def render() -> None:
    st.header("Compare two runs")
    trace = require_trace()
    if trace is None:
        return
    _second_run(trace)
    other = comparing.second_trace()
    if other is None:
        st.info("Choose a second run above: the same model on another document (e.g. one fact changed), another "
                "checkpoint on this document, or a trace saved from the Export page or `rmt-lens trace`.")
        return
    _side_by_side(trace, other)


@guarded
def _second_run(trace) -> None:
    with st.expander("Second run", expanded=comparing.second_trace() is None):
        source = st.radio("Compare this run with", SOURCES, horizontal=True, key="cmp_source")
        if source == SOURCES[0]:
            _another_document(trace)
        elif source == SOURCES[1] and trace.text is None:
            st.info("This run was traced from token ids, not text: another checkpoint (another tokenizer) cannot "
                    "read it. Compare with a saved trace instead.")
        elif source == SOURCES[1]:
            names = [c["name"] for c in services.shipped_checkpoints()]
            current = trace.model_info.get("name")
            choice = st.selectbox("Checkpoint", [n for n in names if n != current] or names, key="cmp_checkpoint")
            st.caption(f"The same document, question included: {literal(comparing.question_line(trace))}.")
            if st.button("Trace this document with it and compare", key="cmp_run_ckpt", type="primary"):
                with st.spinner(f"Tracing the document with {choice}…"):
                    comparing.set_second(comparing.trace_text(services.load_model(choice), trace.text), choice)
        elif source == SOURCES[2]:
            st.caption("The same model and document, question included "
                       f"({literal(comparing.question_line(trace))}), with the memory reset to its initial state "
                       "before every segment: each segment is read as if it were the first (the RMT papers' "
                       "no-memory baseline). What differs is what memory carried.")
            if not trace.carries_memory:
                st.info("This run already resets its memory before every segment: compare it with another run.")
            elif st.button("Trace with memory reset and compare", key="cmp_run_reset", type="primary"):
                with st.spinner("Tracing the document with memory reset…"):
                    comparing.set_second(comparing.reset_trace(trace), "memory reset")
        else:
            upload = st.file_uploader("Trace file saved by RMT Lens", key="cmp_upload",
                                      help="Checked against the model it was made with: a trace of another model "
                                           "is refused, naming the checkpoint it needs.")
            if upload is not None and st.button("Open and compare", key="cmp_open", type="primary"):
                comparing.set_second(comparing.open_saved(upload.getvalue(), upload.name, trace.model), upload.name)


def _another_document(trace) -> None:
    """The second document: this run's document (without its question) to edit, and the question
    asked of it, stated: the same as this run's unless changed or cleared."""
    body, question, answer = comparing.split_document(trace)
    asked = (f"This run was asked {literal(comparing.question_line(trace))}"
             + (f" (the document's answer: “{literal(answer)}”)." if answer else "."))
    text = st.text_area("Document (edit a fact, e.g. “garden” → “kitchen”)", value=body, height=160,
                        key=f"cmp_text_{id(trace)}", help="This run's document without its question: the question "
                                                           "asked of the second document is the box below.")
    typed = st.text_input("Question asked of the second document", value=question or "",
                          key=f"cmp_question_{id(trace)}", placeholder="(none: the next token after the document)",
                          help="Appended as “Question: …\nAnswer:”. Starts as this run's question; clear it to "
                               "ask none.")
    if typed.strip():
        st.caption(f"{asked} The second document will be asked “{literal(typed.strip())}”"
                   + (", the same question." if question and typed.strip() == question else "."))
    else:
        st.caption(f"{asked} The second document will be asked no question: its answer is the model's next "
                   "token after the document.")
    if st.button("Trace and compare", key="cmp_run_text", type="primary"):
        second = comparing.second_document(trace.model, text, typed)
        with st.spinner("Tracing the second document…"):
            comparing.set_second(comparing.trace_text(trace.model, second), "another document")


@st.fragment
@guarded
def _side_by_side(trace, other) -> None:
    c = comparing.comparison(trace, other)
    st.markdown(f"**This run** vs **{literal(c.names[1])}**: {literal(c.alignment_text)}")
    st.markdown(f"Question answered — this run: {literal(comparing.question_line(trace))} · "
                f"{literal(c.names[1])}: {literal(comparing.question_line(other))}.")
    answers = [f"{literal(name)}: **{literal(a.answer)}** (p = {a.probability:.3f})" for name, a in
               zip(("this run", c.names[1]), c.answers) if a is not None]
    if answers:
        st.markdown("Answer at the question — " + " · ".join(answers) + ".")
    (st.warning if c.diverge_at is not None else st.success)(c.divergence_text)
    for note in c.notes:
        st.caption(note)
    show_figure(cfig.memory_distance_heatmap(c), key="cmp_distance")
    if c.distance is not None:
        st.caption(f"Memory distance: {literal(c.summary()['distance_meaning'])}.")
    show_figure(cfig.loss_answer_curves(c, selected=sidebar.selected_segment(trace)), key="cmp_curves")
    if c.lens_reason:
        st.caption(f"Answer curve: {c.lens_reason}")
    if c.state_norm_a is not None:  # an associative memory: its state's size, no slot blocks to weigh
        show_figure(cfig.state_size_figure(c), key="cmp_state_size")
    elif c.slots:
        show_figure(cfig.block_mass_figure(c), key="cmp_mass")
    # Only the open tab is built (on_change="rerun"): the first one draws nothing heavy until asked
    tab_patch, tab_attention = st.tabs(["Patch memory across the runs", "Attention, both runs"], key="cmp_tab",
                                       on_change="rerun")
    if tab_attention.open:
        with tab_attention:
            _attention(trace, other, c)
    if tab_patch.open:
        with tab_patch:
            _patching(trace, other)


def _attention(trace, other, c) -> None:
    pairs = list(zip(c.segments_a.tolist(), c.segments_b.tolist()))
    default = min(sidebar.selected_segment(trace), len(pairs) - 1) if c.align == "start" else len(pairs) - 1
    k = st.select_slider("Segment pair (this run | second run)", range(len(pairs)), value=max(default, 0),
                         format_func=lambda i: f"{pairs[i][0]} | {pairs[i][1]}", key="cmp_pair")
    layers, heads = int(trace.model_info["num_layers"]), int(trace.model_info["num_heads"])
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", range(layers), index=layers - 1, key="cmp_layer")
    head = c2.selectbox("Head", range(heads), key="cmp_head")
    left, right = st.columns(2)
    for column, run, segment, name in ((left, trace, pairs[k][0], "this run"), (right, other, pairs[k][1], c.names[1])):
        with column:
            if run.model is None:
                st.info(f"{name}: attention needs its model attached.")
                continue
            y, h = min(layer, int(run.model_info["num_layers"]) - 1), min(head, int(run.model_info["num_heads"]) - 1)
            matrix = services.attention_for(run, segment)[y, h]
            labels, m = run.attention_labels(segment), run.num_slots  # read slots first (tokens memory)
            tail = len(labels) - m - run.segments[segment].num_tokens  # write slots, or memory tokens P0..
            edges = figures.row_edges(run, segment)
            if len(labels) > MAX_HEATMAP:
                keep = list(range(MAX_HEATMAP - tail)) + list(range(len(labels) - tail, len(labels)))
                matrix, labels = matrix[np.ix_(keep, keep)], [labels[i] for i in keep]
                edges = [MAX_HEATMAP - tail] if edges else edges
            show_figure(figures.attention_heatmap(matrix, labels, m, f"{name}: segment {segment}, layer {y}, head {h}",
                                                  edges=edges), key=f"cmp_att_{'a' if run is trace else 'b'}")


def _patching(trace, other) -> None:
    part = ("one layer's associative state (A, z) at a time, and all layers" if trace.memory_type == "associative"
            else "one slot at a time, and all slots")
    st.caption("Activation patching across documents: run one document from a segment on with the memory the other "
               f"had there — {part} — and see whether its answer becomes the other's. "
               "A cell is the memory entering that segment, patched.")
    direction = st.radio("Patch", ["the second run's memory into this run", "this run's memory into the second run"],
                         horizontal=True, key="cmp_direction")
    target, source = comparing.sweep_pair(trace, other, 0 if direction.startswith("the second") else 1)
    columns = comparing.sweep_columns(target)
    last = min(target.num_segments, source.num_segments) - 1
    first_default = max(0, last - 7)
    first, end = st.slider("Segments patched", 0, last, (first_default, last), key=f"cmp_segments_{id(target)}")
    segments = list(range(first, end + 1))
    names = ("this run", "second run") if target is trace else ("second run", "this run")
    sweep = comparing.current_sweep()
    if st.button(f"Run the sweep ({len(segments)} segments × {len(columns)} patches: {', '.join(columns)})",
                 key="cmp_sweep"):
        with st.spinner("Patching…"):
            sweep = comparing.sweep(target, source, segments, names)
    if sweep is None or sweep.names != names:
        return
    st.markdown(f"Target's answer: **{literal(str(sweep.target_answer))}**; source's answer: "
                f"**{literal(str(sweep.source_answer))}** (p in the target before: "
                f"{sweep.p_source_answer_before:.3f}). Click a cell to open that patched run.")
    event = st.plotly_chart(cfig.patching_heatmap(sweep), key="cmp_patch_map", on_select="rerun",
                            selection_mode="points", config=figures.FIGURE_CONFIG)
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) or hasattr(event, "get") else []
    if points:
        point = points[0]
        row, column = sweep.segments.index(int(point["x"])), sweep.columns.index(str(point["y"]))
        result = sweep.cell(target, source, row, column)
        st.markdown(f"**{literal(result.name)}** — answer before: **{literal(str(result.answer_before))}** "
                    f"(p = {result.p_answer_before:.3f}) · after: **{literal(str(result.answer_after))}** "
                    f"(p = {result.p_answer_after:.3f}); p(source's answer) {result.p_source_answer_before:.3f} → "
                    f"{result.p_source_answer_after:.3f}.")
        show_figure(figures.intervention_losses(result.loss_before, result.loss_after, result.name), key="cmp_cell_loss")
