"""The papers' figures, remade in one click from the shipped models."""
from __future__ import annotations

import json

import numpy as np
import streamlit as st

import rmt_core
from rmt_core.viz import captions, paper
from rmt_core.demos import make_task_batch

from app import services
from app.views.common import show_figure

COPY = "copy-paper"


@st.cache_resource(show_spinner="Tracing a copy-task sample…", max_entries=8)
def _copy_trace(seed: int):
    model = services.load_model(COPY)
    ids = make_task_batch("copy", 24, 1, np.random.default_rng(seed), model.tokenizer)["input_ids"][0]
    return rmt_core.trace(model, ids)


def _card(name: str) -> dict:
    path = rmt_core.io.checkpoint.SHIPPED_DIR / name / "config.json"
    return json.loads(path.read_text())["card"].get("evaluation_results", {})


def render() -> None:
    st.header("The papers' figures, from the live models")
    shipped = [c["name"] for c in services.shipped_checkpoints()]
    if COPY not in shipped or rmt_core.DEFAULT_CHECKPOINT not in shipped:
        st.warning("These figures need the shipped copy-task and default checkpoints.")
        return
    seed = int(st.number_input("Copy-task sample (seed)", 0, 10_000, 0, key="paper_seed"))
    trace = _copy_trace(seed)
    tab_write, tab_read, tab_keep, tab_acc = st.tabs(["Write pattern", "Read pattern", "Keep / rewrite", "Accuracy vs segments"])
    with tab_write:
        segment = st.selectbox("Segment (the source is in segments 0–2)", range(trace.num_segments), key="paper_wseg")
        result = paper.write_pattern(trace, segment)
        st.caption(captions.write_pattern_caption(result.sharpness, result.injectivity, result.diagonal,
                                                  trace.num_segments))
        show_figure(result.figure, key="paper_write")
    with tab_read:
        segment = st.selectbox("Target segment", range(trace.num_segments), index=trace.num_segments - 2, key="paper_rseg")
        result = paper.read_pattern(trace, segment)
        st.caption(f"While producing the copy, tokens read the memory slots (sharpness {result.sharpness:.2f}).")
        show_figure(result.figure, key="paper_read")
    with tab_keep:
        tour, _ = services.guided_tour(rmt_core.DEFAULT_CHECKPOINT, 7)
        figure = paper.keep_rewrite(tour.trace, highlight=tour.fact_segment)
        st.caption("Default model on a fact-recall sample. " + paper.keep_rewrite_caption(figure, tour.fact_segment))
        show_figure(figure, key="paper_keep")
    with tab_acc:
        copy_rows = _card(COPY).get("algorithmic", [])
        recall_rows = _card(rmt_core.DEFAULT_CHECKPOINT).get("fact_recall", [])
        st.markdown("**Copy task** (per-character accuracy; measured on 500 samples, paper numbers beside ours)")
        st.dataframe(paper.accuracy_table(copy_rows, "copy"), hide_index=True)
        show_figure(paper.accuracy_figure(copy_rows, "copy"), key="paper_acc_copy")
        st.markdown("**Fact recall (detect)** in held-out Austen text")
        st.dataframe(paper.accuracy_table(recall_rows, "detect"), hide_index=True)
        show_figure(paper.accuracy_figure(recall_rows, "detect"), key="paper_acc_recall")
