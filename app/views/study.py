"""The Study page: run a small grid in the background (or open a study folder), its heatmap of
length x fact depth, a cell's samples, any sample opened as a trace on every page, and two
studies side by side with their difference. Layout only: rmt_core.studies and app.study_jobs work."""
from __future__ import annotations

import streamlit as st

from rmt_core.errors import RMTLensError
from rmt_core.studies import aggregate
from rmt_core.viz import study as study_figures

from app import services, sidebar, study_jobs
from app.views.common import show_error, show_figure

JOB = "study_job"  # this session's StudyJob (session state survives page switches)
FOLDER = "study_folder"  # the folder box (widget state is dropped when another page runs)
KEPT_FOLDER = "study_folder_kept"  # the folder, kept across page switches
OTHER = "study_other_folder"
CELL = "study_cell"  # (segments, depth) picked on the heatmap
TASKS = ("detect", "qa1", "qa2")


def render() -> None:
    st.header("Study: many samples at once")
    st.caption("A BABILong-style grid: length in segments x fact depth (% of the tokens before the asking segment) "
               "x samples; each sample is traced and measured into one row. Click a cell for its samples; open any "
               "sample as a trace on every page.")
    model = sidebar.current_model()
    _run_controls(model)
    if FOLDER not in st.session_state:  # back from another page: the box shows the folder again
        st.session_state[FOLDER] = st.session_state.get(KEPT_FOLDER, "")
    folder = st.text_input("Study folder", key=FOLDER, help="a folder written by `rmt-lens study run` or by this page")
    st.session_state[KEPT_FOLDER] = folder
    if not folder.strip():
        st.info("Start a small grid above, or give a study folder.")
        return
    try:
        study, rows = study_jobs.load_study(folder.strip())
    except RMTLensError as exc:
        st.error(str(exc))
        return
    _summary(study, rows)
    _heatmap(study, rows, model)
    _compare(study, rows)


@st.fragment(run_every=2.0)
def _progress() -> None:
    job = st.session_state.get(JOB)
    if job is None:
        return
    if job.running:
        st.progress(min(1.0, job.done / (job.total or 1)), text=f"Study: {job.done} of {job.total or '?'} samples "
                                                                 f"in {job.directory}")
        st.button("Stop the study", on_click=job.cancel, key="study_cancel",
                  help="stops after the current sample; the rows done are kept (rmt-lens study run into the folder resumes it)")
    elif job.error:
        st.error(job.error)
    else:
        st.success(f"Study finished: {job.done} of {job.total} samples in {job.directory}.")


def _run_controls(model) -> None:
    job = st.session_state.get(JOB)
    with st.expander("Run a small grid in the background", expanded=job is None):
        with st.form("study_form"):
            c1, c2, c3 = st.columns(3)
            task = c1.selectbox("Task", TASKS)
            segments = c2.text_input("Lengths (segments)", "2,4,8")
            depths = c3.text_input("Fact depths (%)", "10,50,90")
            c4, c5, c6 = st.columns(3)
            samples = int(c4.number_input("Samples per cell", 1, 50, 3))
            seed = int(c5.number_input("Seed", 0, 1_000_000, 0))
            steps = int(c6.number_input("Attribution steps", 0, 64, 8, help="integrated-gradient steps (0: none)"))
            start = st.form_submit_button("Start", type="primary", disabled=model is None or (job is not None and job.running))
        if start and model is not None:
            _start(model, task, segments, depths, samples, seed, steps)
    _progress()


def _start(model, task: str, segments: str, depths: str, samples: int, seed: int, steps: int) -> None:
    from rmt_core.studies.source import BabilongSource

    try:
        source = BabilongSource(task, segments, depths, samples, seed)
    except RMTLensError as exc:
        st.error(str(exc))
        return
    folder = study_jobs.new_study_folder(task)
    st.session_state[JOB] = study_jobs.StudyJob(folder, source, model.name, model, steps).start()
    st.session_state[FOLDER] = st.session_state[KEPT_FOLDER] = str(folder)
    st.rerun()


def _summary(study: dict, rows: list[dict]) -> None:
    errors = sum(r.get("error") is not None for r in rows)
    st.markdown(f"**{study.get('checkpoint_name')}** (weights `{study.get('weights_hash')}`), "
                f"{len(rows)} of {study.get('samples_total')} rows, {errors} with an error recorded; "
                f"status: {study.get('status')}; executor: {study.get('executor', {}).get('kind')}.")


def _heatmap(study: dict, rows: list[dict], model) -> None:
    g = aggregate.grid(rows, "correct")
    if not g.segments:
        st.info("No grid rows yet (a document study has no length x depth grid).")
        return
    fig = study_figures.grid_heatmap(g.values, g.segments, g.depths, g.counts, "Accuracy by length and fact depth",
                                     clickable=True)
    event = st.plotly_chart(fig, key="study_heatmap", on_select="rerun", selection_mode="points",
                            config={"displaylogo": False})
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if points and points[0].get("customdata"):
        cd = points[0]["customdata"]
        st.session_state[CELL] = (int(cd[0]), float(cd[1]))
    cell = st.session_state.get(CELL) or (g.segments[0], g.depths[0])
    c1, c2 = st.columns(2)
    segs = c1.selectbox("Length", g.segments, index=g.segments.index(cell[0]) if cell[0] in g.segments else 0)
    dep = c2.selectbox("Depth", g.depths, index=g.depths.index(cell[1]) if cell[1] in g.depths else 0,
                       format_func=lambda d: f"{d:g}%")
    samples = aggregate.cell_rows(rows, segs, dep)
    skipped = aggregate.not_applicable(rows)
    own = ("fact_read_top", "fact_write_strength") if "retention_lens" in skipped else ("retention_lens",)
    st.dataframe([{k: r.get(k) for k in ("sample_id", "answer", "predicted", "correct", "p_answer", "fact_segment",
                                         "memory_segment", *own, "error")} for r in samples],
                 hide_index=True, use_container_width=True)
    if skipped:
        st.caption("Not applicable to this model's memory (left empty by definition): "
                   + "; ".join(f"{column}: {why}" for column, why in skipped.items()) + ".")
    if not samples:
        return
    chosen = st.selectbox("Sample", [r["sample_id"] for r in samples], key="study_sample")
    same = model is not None and model.weights_hash() == study.get("weights_hash")
    if not same:
        st.warning(f"Select the study's checkpoint **{study.get('checkpoint_name')}** in the sidebar to open its samples.")
    if st.button("Open as a trace on every page", disabled=not same or sidebar.running(), type="primary"):
        _open(study, chosen, model)


def _open(study: dict, sample_id: str, model) -> None:
    from rmt_core.studies.source import source_from_spec

    try:
        source = source_from_spec(study["source"])
        spec = next(s for s in source.specs() if s.sample_id == sample_id)
        sample = source.build(spec, model)
    except (RMTLensError, StopIteration) as exc:
        show_error(exc) if isinstance(exc, RMTLensError) else st.error(f"{sample_id} is not in this study's source.")
        return
    document = services.Document(f"study sample {sample_id}", sample.text + " " + sample.answer,
                                 fact_spans=list(sample.fact_chars), answer=sample.answer, body=None,
                                 note=f"From the study in {st.session_state.get(KEPT_FOLDER)}: {sample_id}.")
    sidebar.start(model, document)
    st.success(f"Tracing {sample_id}: every page shows it when the run ends (progress in the sidebar).")


def _compare(study: dict, rows: list[dict]) -> None:
    with st.expander("Compare with another study (e.g. another checkpoint on the same grid)"):
        other = st.text_input("Other study folder", key=OTHER)
        if not other.strip():
            return
        try:
            other_study, other_rows = study_jobs.load_study(other.strip())
        except RMTLensError as exc:
            st.error(str(exc))
            return
        a, b = aggregate.grid(rows), aggregate.grid(other_rows)
        diff = aggregate.difference(a, b)
        if not diff.segments:
            st.warning("The two studies share no cell (length x depth).")
            return
        c1, c2 = st.columns(2)
        with c1:
            show_figure(study_figures.grid_heatmap(a.values, a.segments, a.depths, a.counts,
                                                   f"this study: {study.get('checkpoint_name')}"))
        with c2:
            show_figure(study_figures.grid_heatmap(b.values, b.segments, b.depths, b.counts,
                                                   f"other: {other_study.get('checkpoint_name')}"))
        show_figure(study_figures.grid_heatmap(diff.values, diff.segments, diff.depths, diff.counts,
                                               "Accuracy difference (this - other) on the shared cells",
                                               "difference", diverging=True))
