"""The sidebar: pick a model and a document, run, cancel; model facts.

Runs happen in the background (app.runs): a page switch never cancels one, every page shows
its progress (watch_run, called after the page), and a reload in the same browser finds the
document and the last finished trace again through the URL's ?doc= token. Demos are traced
once per server and shared (app.runs.shared_demo_job); they never enter the store.
"""
from __future__ import annotations

import streamlit as st

from rmt_core import RMTLensError
from rmt_core.explain import answers as rmt_answers
from rmt_core.demos import ALGORITHMIC_TASKS

from app import runs, services, state, threads
from app.views import local_checkpoint
from app.views.common import literal

LOCAL = "Local folder…"
PASTE = "Paste text"
UPLOAD = "Upload a file"
POLL_S = 0.25  # how often a page watching a run redraws its progress


def _choose_checkpoint() -> str | None:
    shipped = services.shipped_checkpoints()
    options = [c["name"] for c in shipped] or [services.FALLBACK_NAME]
    descriptions = {c["name"]: c["description"] for c in shipped}
    options.append(LOCAL)
    default = services.default_checkpoint_name()
    # The index only matters before the widget has a state (a restored session sets the state itself).
    index = 0 if state.CHECKPOINT in st.session_state else (options.index(default) if default in options else 0)
    choice = st.selectbox("Model", options, index=index, key=state.CHECKPOINT,
                          help=descriptions.get(st.session_state.get(state.CHECKPOINT) or default) or None)
    if choice == services.FALLBACK_NAME:
        st.warning("No trained checkpoint is shipped in checkpoints/: using a small untrained model built in code.")
    if choice == LOCAL:
        return local_checkpoint.choose()
    return choice


def current_model():
    """The selected model, or None with an error shown (the app keeps working)."""
    name = st.session_state.get(state.CHECKPOINT) or services.default_checkpoint_name()
    options = {}
    local = name == LOCAL
    try:
        if local:
            name = (st.session_state.get(state.LOCAL_FOLDER) or "").strip()
            if not name:
                return None
            name = services.allowed_checkpoint(name)  # what a browser types stays inside the allowed folders
            options = local_checkpoint.load_options(name)
        return services.load_model(name, **options)
    except RMTLensError as exc:  # a local checkpoint's: named by the box that gives what does not fit
        shown = local_checkpoint.message(exc) if local else services.app_message(exc)
        st.error(literal(f"Could not load this model: {shown}"))
        return None


def _job():
    return st.session_state.get(state.JOB)


def running() -> bool:
    job = _job()
    return job is not None and job.running


def _choose_document(model) -> tuple[services.Document | None, bool, str | None]:
    """(document, Run clicked in the paste form, why Run cannot start)."""
    sources = list(services.DEMOS) + [PASTE, UPLOAD]
    symbolic = model.config.task in ALGORITHMIC_TASKS
    index = 0 if state.SOURCE in st.session_state else (2 if symbolic else 0)
    source = st.radio("Document", sources, key=state.SOURCE, index=index)
    if symbolic and source != services.DEMOS[2]:
        st.warning(f"This model was trained on the {literal(model.config.task)} task: ordinary text is mostly unknown "
                   "tokens to it. Pick “Copy task (demo)” to see it work.")
    if source in services.DEMOS:
        try:
            return services.demo_document(source, model), False, None
        except (ValueError, RuntimeError, RMTLensError) as exc:  # a demo this model's tokenizer cannot express
            st.error(literal(f"This demo does not fit the selected model: {services.app_message(exc)}"))
            return None, False, "this demo does not fit the model"
    if source == PASTE:
        # A form: the text travels with the Run click, so the first click after typing runs it.
        with st.form("paste_form", border=False, enter_to_submit=False):
            text = st.text_area("Text", key=state.PASTED, height=120,
                                placeholder="Paste any text… (end it with “Question: Where is Mary?\\nAnswer:” "
                                            "to get the model's answer)")
            clicked = st.form_submit_button("Run", type="primary", width="stretch", disabled=running(),
                                            help="Trace the text in the box")
        text = text or ""
        if not text.strip():
            if clicked:
                st.warning("The text box is empty: paste or type some text, then Run.")
            return None, False, "the text box is empty (paste or type some text)"
        return services.Document("Pasted text", text), clicked, None
    upload = st.file_uploader("File (.txt .md .pdf .docx .html, or a saved trace .rmtrace)",
                              type=[ext.lstrip(".") for ext in services.upload_extensions()]
                              + [services.TRACE_SUFFIX.lstrip(".")])
    if upload is None:
        return None, False, "no file chosen yet"
    if upload.name.lower().endswith(services.TRACE_SUFFIX):
        _open_saved_trace(upload, model)
        return None, False, "a saved trace is shown as it was saved (Run traces a document)"
    read = st.session_state.get(state.UPLOADED)
    if read is None or read[0] != upload.file_id:  # read once per upload (a refusal too), not on every rerun
        with st.spinner("Reading the file…"):
            try:
                read = (upload.file_id, services.read_upload(upload.name, upload.getvalue()))
            except RMTLensError as exc:
                read = (upload.file_id, exc)
        st.session_state[state.UPLOADED] = read
    if isinstance(read[1], RMTLensError):
        st.error(literal(services.app_message(read[1])))
        action = services.truncate_action(read[1])  # e.g. "Read the first 2,000,000 characters"
        if action is None or not st.button(action, key="read_start_of_upload"):
            return None, False, "the file could not be read (see the message above)"
        with st.spinner("Reading the file…"):
            try:
                read = (upload.file_id, services.read_upload(upload.name, upload.getvalue(), truncate=True))
            except RMTLensError as exc:
                read = (upload.file_id, exc)
        st.session_state[state.UPLOADED] = read
        if isinstance(read[1], RMTLensError):
            st.error(literal(services.app_message(read[1])))
            return None, False, "the file could not be read (see the message above)"
    document = read[1]
    if document.note:
        st.info(literal(document.note))
    return document, False, None


def _open_saved_trace(upload, model) -> None:
    """Show an uploaded .rmtrace (once per file): checked against the selected model
    (services.open_trace); a refusal stays on screen while the file is in the uploader."""
    opened = st.session_state.get(state.OPENED_TRACE)
    if opened is not None and opened[0] == (upload.file_id, model.weights_hash()):
        if opened[1]:
            st.error(literal(opened[1]))
        return
    if running():
        st.warning("A run is in progress: wait for it or Cancel it, then open the trace.")
        return
    try:
        trace = services.open_trace(upload.getvalue(), model, name=upload.name)
    except RMTLensError as exc:
        st.session_state[state.OPENED_TRACE] = ((upload.file_id, model.weights_hash()), str(exc))
        st.error(literal(exc))
        return
    st.session_state[state.OPENED_TRACE] = ((upload.file_id, model.weights_hash()), None)
    services.prepare_in_background(trace)  # an ARMT trace's states, rebuilt ahead for the pages that replay
    document = services.traced_document(trace)
    answer, answer_error = None, None
    if trace.complete:  # the answer when the document ends with a question, as after a run
        with st.spinner("Finding the answer…"), threads.heavy():
            try:
                answer = rmt_answers.answer_from_trace(trace)
            except RMTLensError as exc:
                answer_error = f"The answer could not be attributed: {services.app_message(exc)}"
    st.session_state.update({state.TRACE: trace, state.DOCUMENT: document, state.ANSWER: answer,
                             state.RUN_ERROR: answer_error, state.ATTENTION_CACHE: {}, state.ATTRIBUTION_CACHE: {}})
    _opened(trace, answer)
    state_note = "" if trace.complete else " (a partial trace)"
    st.session_state[state.RUN_MESSAGE] = (f"Opened {upload.name}: {trace.num_tokens:,} tokens in "
                                           f"{trace.num_segments} segments{state_note}, made with {model.name}.")
    owner = st.session_state.get(state.OWNER)
    if owner:  # kept for a reload in this browser only (app.runs.SessionStore)
        runs.store().put(st.session_state[state.TOKEN], owner, runs.Saved(
            source=st.session_state.get(state.SOURCE), document=document,
            checkpoint=st.session_state.get(state.CHECKPOINT), trace=trace, answer=answer))


def start(model, document: services.Document, question: str | None = None, window: int | None = None) -> None:
    """Start a background run of `document` for this session (the caller checked none is running);
    window: earlier segments the answer's through-memory attribution unrolls (None: the default).

    A demo joins the server's one run of it (shared, never stored); anything else is this
    session's own run, kept in the store for a reload in this browser."""
    demo = question is None and window is None and st.session_state.get(state.SOURCE) in services.DEMOS \
        and document == services.demo_document(st.session_state[state.SOURCE], model)
    if demo:
        job = runs.shared_demo_job(model, document)
    else:
        job = services.start_run(model, document, question, window)
    st.session_state[state.JOB] = job
    st.session_state[state.RUN_ERROR] = None
    owner = st.session_state.get(state.OWNER)
    if not demo and owner:
        runs.store().put(st.session_state[state.TOKEN], owner, runs.Saved(
            source=st.session_state.get(state.SOURCE), document=document,
            checkpoint=st.session_state.get(state.CHECKPOINT), job=job,
            trace=st.session_state.get(state.TRACE), answer=st.session_state.get(state.ANSWER)))


def _restore() -> None:
    """Once per session: adopt the URL's ?doc= token and what the store kept under it for this
    browser (another browser holding the URL gets a fresh session and a token of its own)."""
    if st.session_state.get(state.RESTORED):
        return
    st.session_state[state.RESTORED] = True
    secret = runs.browser_secret()
    owner = runs.owner_of(secret) if secret else None
    st.session_state[state.OWNER] = owner
    token = st.query_params.get("doc")
    saved = runs.store().get(token, owner)
    st.session_state[state.TOKEN] = token if saved is not None else runs.new_token()
    if saved is None:
        return
    if saved.checkpoint:
        st.session_state[state.CHECKPOINT] = saved.checkpoint
    if saved.source in services.DEMOS:
        st.session_state[state.SOURCE] = saved.source
    elif saved.document is not None:  # pasted or uploaded: back as pasted text
        st.session_state[state.SOURCE] = PASTE
        st.session_state[state.PASTED] = saved.document.text
    st.session_state[state.DOCUMENT] = saved.document
    if saved.trace is not None:
        st.session_state[state.TRACE] = saved.trace
        st.session_state[state.ANSWER] = saved.answer
        _opened(saved.trace, saved.answer)
    if saved.job is not None:
        st.session_state[state.JOB] = saved.job
        if saved.job.finished and saved.trace is saved.job.trace:
            st.session_state[state.COLLECTED] = saved.job
    name = saved.document.name if saved.document is not None else "the document"
    st.session_state[state.RUN_MESSAGE] = f"Restored after a reload: {name}."


def _collect() -> None:
    """Install a finished job's result (before any widget of this run reads the state)."""
    job = _job()
    if job is None or job.running or st.session_state.get(state.COLLECTED) is job:
        return
    st.session_state[state.COLLECTED] = job
    st.session_state[state.ATTENTION_CACHE] = {}
    st.session_state[state.ATTRIBUTION_CACHE] = {}
    if job.error:
        st.session_state[state.RUN_ERROR] = job.error
        st.session_state[state.RUN_MESSAGE] = None
        return
    trace = job.trace
    if trace is None or trace.num_segments == 0:
        st.session_state[state.RUN_MESSAGE] = "Cancelled before the first segment: the previous trace is kept."
        return
    st.session_state[state.TRACE] = trace
    st.session_state[state.DOCUMENT] = job.document
    st.session_state[state.ANSWER] = job.answer
    _opened(trace, job.answer)
    if not trace.complete:
        st.session_state[state.RUN_MESSAGE] = f"Cancelled: kept the {trace.num_segments} segments done."
    else:
        st.session_state[state.RUN_MESSAGE] = (
            f"Traced {trace.num_tokens:,} tokens in {trace.num_segments} segments ({trace.seconds:.1f} s): "
            f"{job.document.name}.")
    if job.answer_error:
        st.session_state[state.RUN_ERROR] = f"The answer could not be attributed: {job.answer_error}"
    if st.session_state.get(state.OWNER) and not job.shared:
        runs.store().update(st.session_state[state.TOKEN], st.session_state[state.OWNER], trace, job.answer)


def _opened(trace, answer) -> None:
    """A new trace is shown: select the segment where its answer's evidence is (services.opening_segment,
    said under the document), and put its question, as traced, in the Ask box and no older refusal, so
    the box, the answer and the document's caption all speak of the same question."""
    segment, why = services.opening_segment(trace, answer)
    st.session_state[state.SEGMENT] = segment
    st.session_state[state.OPENED_AT] = (trace, segment, why)
    st.session_state[state.ASK_ERROR] = None
    st.session_state[state.ASK_QUESTION] = traced_question(trace) or ""


def traced_question(trace) -> str | None:
    """The question the trace's document ends with ("Where is Sandra?"; "" for a bare "Answer:"), None when it asks none."""
    site = rmt_answers.answer_site(trace) if trace is not None else None
    return site.question if site is not None and site.is_question else None


def _cancel() -> None:
    job = _job()
    if job is not None:
        job.cancel()


def render():
    """Draw the sidebar; returns the placeholder where watch_run draws a run's progress."""
    _restore()
    _collect()
    if state.PENDING_SEGMENT in st.session_state:
        st.session_state[state.SEGMENT] = st.session_state.pop(state.PENDING_SEGMENT)
    if st.session_state.get(state.TOKEN):
        st.query_params["doc"] = st.session_state[state.TOKEN]
    st.session_state.pop("current_model_name", None)  # set again below once a model is loaded
    with st.sidebar:
        checkpoint = _choose_checkpoint()
        model = current_model() if checkpoint else None
        if model is None:
            st.info("Choose a model to start.")
            return None
        st.session_state["current_model_name"] = model.name
        if model.tokenizer is None:  # e.g. the authors' weights with a backbone folder of config.json alone
            st.error("This model has no tokenizer, so it cannot read documents: give a backbone folder (the "
                     "backbone box) that holds the backbone's tokenizer files beside its config.json.")
            _model_facts(model)
            return None
        document, clicked, why = _choose_document(model)
        busy = running()
        if st.session_state.get(state.SOURCE) != PASTE:
            clicked = st.button("Run", type="primary", disabled=document is None or busy, width="stretch",
                                key="run_button")
        if why and not busy:
            st.caption(f"Nothing to run: {why}.")
        first_visit = (state.TRACE not in st.session_state and _job() is None and document is not None
                       and st.session_state.get(state.SOURCE) in services.DEMOS)
        if (clicked or first_visit) and document is not None and not busy:
            start(model, document)
            st.rerun()  # redraw at once with Run disabled and Cancel shown
        progress = st.empty()
        if busy and _job().shared:
            st.caption("The demo is traced once for everyone on this server: it keeps going when you switch "
                       "pages, and its result is shared.")
        elif busy:
            st.caption("A run is in progress: it keeps going when you switch pages. Cancel it to start another.")
            st.button("Cancel", key="cancel_run", on_click=_cancel,
                      help="Stop after the current segment (or leave the queue); the segments done are kept.")
        if st.session_state.get(state.RUN_ERROR):
            st.error(literal(st.session_state[state.RUN_ERROR]))
        if st.session_state.get(state.RUN_MESSAGE):
            st.caption(literal(st.session_state[state.RUN_MESSAGE]))
        trace = st.session_state.get(state.TRACE)
        traced = st.session_state.get(state.DOCUMENT)
        if trace is not None and traced is not None and document is not None and not busy and document.ask_body() != traced.ask_body():
            # the message above speaks of the traced run: say that the chosen document is not it
            st.caption(f"Not traced yet: {literal(document.name)}. The pages still show {literal(traced.name)}; "
                       "press Run to trace the new one.")
        if trace is not None and trace.num_segments > 1:
            st.session_state.setdefault(state.SEGMENT, trace.num_segments - 1)
            st.session_state[state.SEGMENT] = min(st.session_state[state.SEGMENT], trace.num_segments - 1)
            st.slider("Segment", 0, trace.num_segments - 1, key=state.SEGMENT)
        _model_facts(model)
        return progress


def _model_facts(model) -> None:
    with st.expander("Model facts", expanded=False):
        st.table({k: [literal(v)] for k, v in services.model_facts(model).items()}, border="horizontal")


def watch_run(progress) -> None:
    """After the page is drawn: show the session's run's progress until it ends, then redraw.

    A widget change or a page switch interrupts this script run (never the job); the next
    run watches again."""
    job = _job()
    if job is None or progress is None or st.session_state.get(state.COLLECTED) is job:
        return
    if job.finished:  # it ended during this script run: redraw with its result
        st.rerun()
    def draw(bar=None):
        text = f"Segment {job.done} of {job.total}" if job.phase == "Tracing" else job.phase
        value = min(1.0, job.done / (job.total or 1))
        return st.progress(value, text=text) if bar is None else bar.progress(value, text=text)

    with progress.container():
        bar = draw()  # the same label from the first draw: a short run may end before the next poll
    while not job.wait(POLL_S):
        draw(bar)
    progress.empty()
    st.rerun()


def request_segment(segment: int) -> None:
    """Select `segment` on the next run (usable in callbacks and after the slider exists)."""
    st.session_state[state.PENDING_SEGMENT] = int(segment)


def selected_segment(trace) -> int:
    return min(int(st.session_state.get(state.SEGMENT, trace.num_segments - 1)), trace.num_segments - 1)
