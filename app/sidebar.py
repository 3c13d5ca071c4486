"""The sidebar: pick a model and a document, run, cancel; model facts."""
from __future__ import annotations

import streamlit as st

from rmt_core import RMTLensError

from app import services, state
from app.views import local_checkpoint

LOCAL = "Local folder…"


def _choose_checkpoint() -> str | None:
    shipped = services.shipped_checkpoints()
    options = [c["name"] for c in shipped] or [services.FALLBACK_NAME]
    descriptions = {c["name"]: c["description"] for c in shipped}
    options.append(LOCAL)
    default = services.default_checkpoint_name()
    choice = st.selectbox("Model", options, index=options.index(default) if default in options else 0,
                          key=state.CHECKPOINT, format_func=lambda n: n if n != LOCAL else "Local folder…")
    if choice in descriptions and descriptions[choice]:
        st.caption(descriptions[choice])
    if choice == services.FALLBACK_NAME:
        st.warning("No trained checkpoint is shipped in checkpoints/: using a small untrained model built in code.")
    if choice == LOCAL:
        return local_checkpoint.choose()
    return choice


def current_model():
    """The selected model, or None with an error shown (the app keeps working)."""
    name = st.session_state.get(state.CHECKPOINT) or services.default_checkpoint_name()
    options = {}
    if name == LOCAL:
        name = (st.session_state.get(state.LOCAL_FOLDER) or "").strip()
        if not name:
            return None
        options = local_checkpoint.load_options()
    try:
        return services.load_model(name, **options)
    except RMTLensError as exc:
        st.error(f"Could not load this model: {exc}")
        return None


def _choose_document(model) -> services.Document | None:
    sources = list(services.DEMOS) + ["Paste text", "Upload a file"]
    symbolic = model.config.task in ("copy", "reverse", "retrieval")
    source = st.radio("Document", sources, key=state.SOURCE, index=2 if symbolic else 0)
    if symbolic and source != services.DEMOS[2]:
        st.warning(f"This model was trained on the {model.config.task} task: ordinary text is mostly unknown "
                   "tokens to it. Pick “Copy task (demo)” to see it work.")
    if source in services.DEMOS:
        try:
            return services.demo_document(source, model)
        except (ValueError, RuntimeError, RMTLensError) as exc:  # a demo this model's tokenizer cannot express
            st.error(f"This demo does not fit the selected model: {exc}")
            return None
    if source == "Paste text":
        text = st.text_area("Text", key=state.PASTED, height=150, placeholder="Paste any text…")
        return services.Document("Pasted text", text) if text.strip() else None
    upload = st.file_uploader("File (.txt .md .pdf .docx .html)", type=["txt", "md", "pdf", "docx", "html", "htm"])
    if upload is None:
        return None
    try:
        document = services.read_upload(upload.name, upload.getvalue())
    except RMTLensError as exc:
        st.error(str(exc))
        return None
    if document.note:
        st.info(document.note)
    return document


def _run(model, document: services.Document) -> None:
    st.session_state[state.RUNNING] = True
    st.session_state[state.ATTENTION_CACHE] = {}
    st.session_state[state.ATTRIBUTION_CACHE] = {}
    st.button("Cancel", key="cancel_run", help="Stop after the current segment; the segments done are kept.")
    bar = st.progress(0.0, text="Starting…")

    def on_segment(trace, done: int, total: int) -> None:
        st.session_state[state.TRACE] = trace  # kept even if Cancel interrupts the run
        bar.progress(done / total, text=f"Segment {done} of {total}")

    try:
        trace = services.run_trace(model, document, on_segment)
    except RMTLensError as exc:
        st.session_state[state.RUNNING] = False
        st.error(str(exc))
        return
    st.session_state[state.TRACE] = trace
    st.session_state[state.RUNNING] = False
    st.session_state[state.SEGMENT] = trace.num_segments - 1
    st.session_state[state.RUN_MESSAGE] = (
        f"Traced {trace.num_tokens:,} tokens in {trace.num_segments} segments ({trace.seconds:.1f} s).")
    bar.empty()


def render() -> None:
    with st.sidebar:
        st.title("🔁 RMT Lens")
        checkpoint = _choose_checkpoint()
        model = current_model() if checkpoint else None
        if model is None:
            st.info("Choose a model to start.")
            return
        document = _choose_document(model)
        if st.session_state.get(state.RUNNING):  # a Cancel click interrupted the last run
            st.session_state[state.RUNNING] = False
            trace = st.session_state.get(state.TRACE)
            if trace is not None:
                st.session_state[state.SEGMENT] = max(0, trace.num_segments - 1)
                st.session_state[state.RUN_MESSAGE] = f"Cancelled: kept the {trace.num_segments} segments done."
        run_clicked = st.button("Run", type="primary", disabled=document is None, width="stretch")
        first_visit = state.TRACE not in st.session_state and document is not None
        if run_clicked or first_visit:  # the first screen runs the demo with no clicks
            _run(model, document)
        if st.session_state.get(state.RUN_MESSAGE):
            st.caption(st.session_state[state.RUN_MESSAGE])
        trace = st.session_state.get(state.TRACE)
        if trace is not None and trace.num_segments > 1:
            st.session_state.setdefault(state.SEGMENT, trace.num_segments - 1)
            st.session_state[state.SEGMENT] = min(st.session_state[state.SEGMENT], trace.num_segments - 1)
            st.slider("Segment", 0, trace.num_segments - 1, key=state.SEGMENT)
        with st.expander("Model facts", expanded=False):
            st.table({k: [str(v)] for k, v in services.model_facts(model).items()}, border="horizontal")


def selected_segment(trace) -> int:
    return min(int(st.session_state.get(state.SEGMENT, trace.num_segments - 1)), trace.num_segments - 1)
