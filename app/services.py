"""The app's service layer: loading models, demo documents, running traces.

Pages call these functions; they call rmt_core's public API. Nothing here draws.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import streamlit as st

import rmt_core

FALLBACK_NAME = "built-in untrained model"
MAX_UPLOAD_ENV = "RMT_LENS_MAX_UPLOAD_BYTES"  # optional: a smaller (or larger) cap on uploaded files, in bytes
DEMOS = ("Fact recall (demo)", "Austen chapter (demo)", "Copy task (demo)")

# rmt_core's advice that names Python arguments, in the app's terms (what an app user can do instead);
# document limits have their own: upload_error (DocumentError's facts)
APP_WORDING: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"pass target= \(a token id\)"), "type the token to explain in the “Target token” box"),
    (re.compile(r"Save traces with trace\.save\(\)\."),
     "Open a trace saved by RMT Lens (the Export page's trace file, or `rmt-lens trace --out`)."),
    (re.compile(r"Load the checkpoint it was made with\."),
     "Choose that checkpoint under Model in the sidebar, then open the trace again."),
    (re.compile(r"Give it at most ([\d,]+) tokens \(CLI: --max-tokens \d+\), or use a checkpoint with "
                r"reset_positions=True \(positions restart in every segment\)\."),
     r"Give it a shorter document (at most \1 tokens), or choose a checkpoint whose positions restart in "
     r"every segment."),
]


def app_message(error: BaseException | str) -> str:
    """An rmt_core error's message worded for the app: advice that names Python arguments or CLI
    flags (`target=`, `--max-tokens`, `trace.save()`) becomes what a browser user can do
    (APP_WORDING). Other text is returned unchanged."""
    text = str(error)
    for pattern, replacement in APP_WORDING:
        text = pattern.sub(replacement, text)
    return text


def upload_extensions() -> tuple[str, ...]:
    """File types the uploader takes: what rmt_core reads (.md and .markdown, .htm and .html ...)."""
    from rmt_core.io.documents import supported_extensions

    return supported_extensions()


@dataclass
class Document:
    """A document ready to trace, with what the app knows about it."""

    name: str
    text: str
    fact_spans: list[tuple[int, int]] = field(default_factory=list)  # character ranges to mark
    answer: str | None = None  # expected answer of a fact-recall sample
    answer_position: int | None = None  # token index whose prediction is the answer
    note: str | None = None
    body: str | None = None  # the text without a question at its end (what Ask appends a question to)

    def ask_body(self) -> str:
        """The document without the question it may end with (Ask appends its own)."""
        from rmt_core.explain.answers import split_question

        return self.body if self.body is not None else split_question(self.text)[0]


@st.cache_resource(show_spinner="Preparing the tour (tracing and attributing the sample)…", max_entries=8)
def guided_tour(checkpoint: str, seed: int):
    """(tour, its steps) of the guided tour on `checkpoint`'s fact-recall sample `seed`
    (rmt_core.viz.tour), made once per checkpoint and seed (the Tour and Paper pages share it)."""
    from rmt_core.viz.tour import make_tour, tour_steps

    from app import threads

    model = load_model(checkpoint)
    with threads.heavy():
        tour = make_tour(model, seed=seed)
    return tour, tour_steps(tour)


def shipped_checkpoints() -> list[dict[str, str]]:
    return rmt_core.list_checkpoints()


def _shipped_rmt_config(name: str) -> dict[str, Any]:
    """The "rmt" entry of a shipped checkpoint's config.json (read as JSON: no model loaded)."""
    import json

    path = rmt_core.io.checkpoint.SHIPPED_DIR / name / "config.json"
    try:
        return json.loads(path.read_text()).get("rmt", {})
    except (OSError, ValueError):
        return {}


def tour_checkpoints() -> list[str]:
    """The shipped checkpoints the guided tour can show: fact-recall models (config task "detect",
    what the tour's sample asks), of either memory type; the default first."""
    names = [c["name"] for c in shipped_checkpoints() if _shipped_rmt_config(c["name"]).get("task") == "detect"]
    return sorted(names, key=lambda name: name != rmt_core.DEFAULT_CHECKPOINT)


def associative_checkpoints() -> list[str]:
    """The shipped checkpoints with an associative memory (ARMT): the Papers page's ARMT figures."""
    return [c["name"] for c in shipped_checkpoints() if _shipped_rmt_config(c["name"]).get("memory") == "associative"]


@st.cache_resource(show_spinner="Measuring the memory capacity (writing synthetic pairs)…", max_entries=16)
def memory_capacity(checkpoint: str, layer: int, keys: str):
    """rmt_core.explain.capacity.memory_capacity of a checkpoint's layer, once per server (default pairs
    and trials: a few seconds on one CPU core at the shipped ARMT's size)."""
    from rmt_core.explain.capacity import memory_capacity as measure

    from app import threads

    model = load_model(checkpoint)
    with threads.heavy():
        return measure(model, layer, keys=keys)


@st.cache_resource(show_spinner="Running the excerpt with full, no and previous-segment memory…", max_entries=4)
def memory_reach_excerpt(checkpoint: str):
    """(trace, rmt_core.explain.memory_reach.loss_per_segment) of the held-out novel's demo excerpt
    (demos.book_excerpt) with `checkpoint`, once per server."""
    from rmt_core.explain.memory_reach import loss_per_segment

    from app import threads

    model = load_model(checkpoint)
    with threads.heavy():
        trace = rmt_core.trace(model, rmt_core.demos.book_excerpt())
        trace.meta["document"] = "Persuasion excerpt (held out)"
        return trace, loss_per_segment(trace)


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def load_model(name_or_path: str, trust_pickle: bool = False, segment_size: int | None = None,
               backbone: str | None = None, memory_options: tuple[tuple[str, Any], ...] = ()):
    """One shared copy of each model per server (tracing never mutates it).

    trust_pickle / segment_size / backbone / memory_options ((name, value) pairs): what a checkpoint
    written by other code may need (see rmt_core.load); never a download (Hub names resolve from the
    local cache)."""
    if name_or_path == FALLBACK_NAME:
        return _fallback_model()
    rmt_config: dict[str, Any] = {"segment_size": int(segment_size)} if segment_size else {}
    if memory_options:
        rmt_config["memory_options"] = dict(memory_options)
    return rmt_core.load(name_or_path, trust_pickle=trust_pickle, rmt_config=rmt_config or None,
                         backbone=backbone or None)


def inspect_checkpoint(name_or_path: str):
    """What a local folder, file or cached Hub name holds and still needs (reads no pickle).
    The caller passes what allowed_checkpoint returned."""
    return rmt_core.inspect_checkpoint(name_or_path)


def outside_message() -> str:
    """The one message for every path outside the allowed folders (says nothing about the path)."""
    from app import settings

    folders = ", ".join(str(f) for f in settings.checkpoint_dirs()) or "none"
    return (f"This server reads checkpoints only from the folders the person who started it allowed ({folders}), "
            f"by a path inside them, a shipped checkpoint's name or a Hugging Face name in its cache. To look at a "
            f"checkpoint elsewhere, ask them to add its folder ({settings.CHECKPOINT_DIRS}, or "
            f"`make app CHECKPOINT_DIRS=...`), or run RMT Lens on your own machine.")


def allowed_checkpoint(text: str) -> str:
    """The absolute path to load for what was typed in the browser, inside settings.checkpoint_dirs().

    `text`: a path (absolute, or relative to the server's folder), a shipped checkpoint's name,
    or a Hugging Face name resolved in the local cache. Symbolic links are followed before the
    check. Raises rmt_core.CheckpointError with outside_message() for everything else, whether
    it exists or not (the message is the same)."""
    from pathlib import Path

    from rmt_core import CheckpointError
    from rmt_core.io import hub
    from rmt_core.io.checkpoint import SHIPPED_DIR

    from app import settings

    text = text.strip()
    roots = settings.checkpoint_dirs()

    def inside(path: Path) -> bool:
        resolved = path.resolve()
        return any(resolved == root or resolved.is_relative_to(root) for root in roots)

    if not text or "\x00" in text:
        raise CheckpointError(outside_message())
    path = Path(text) if Path(text).is_absolute() else Path.cwd() / text
    if inside(path):
        return str(path.resolve())
    if "/" not in text and inside(SHIPPED_DIR / text) and (SHIPPED_DIR / text).is_dir():
        return str((SHIPPED_DIR / text).resolve())
    if not Path(text).is_absolute() and hub.looks_like_repo_id(text) and inside(hub.cache_dir()):
        folder = hub.resolve_repo(text)  # the local cache only; its own message when not there
        if inside(folder):
            return str(folder.resolve())
    raise CheckpointError(outside_message())


def _fallback_model():
    """A small untrained RMT with the project tokenizer, for when no checkpoint ships."""
    from rmt_core import demos

    model = demos.fallback_model()
    model.name = FALLBACK_NAME
    return model


def default_checkpoint_name() -> str:
    names = [c["name"] for c in shipped_checkpoints()]
    default = rmt_core.DEFAULT_CHECKPOINT
    if default in names:
        return default
    return names[0] if names else FALLBACK_NAME


def model_facts(model) -> dict[str, Any]:
    """The sidebar's table of the model: checkpoint, backbone sizes, memory, segment size, weights hash."""
    cfg = model.config
    facts = {
        "checkpoint": model.name,
        "backbone": model.backbone.config.model_type,
        "layers": model.num_layers,
        "heads": model.num_heads,
        "hidden size": model.hidden_size,
        "memory slots": cfg.num_mem_tokens,
        "segment size": cfg.segment_size,
        "mask mode": cfg.mask_mode,
        "trained on": cfg.task or cfg.description or "—",
        "weights": model.weights_hash(),
    }
    if cfg.memory != "tokens":  # another memory type: its own settings instead of the RMT's slots and masks
        facts["memory tokens"] = facts.pop("memory slots")
        del facts["mask mode"]
        facts["memory"] = cfg.memory + "".join(
            f", {k}={'on' if v is True else 'off' if v is False else v}" for k, v in sorted(cfg.memory_options.items()))
    return facts


# ---------------------------------------------------------------------- documents
DEMO_SEGMENTS = 8  # the fact-recall demo: long enough that memory carries the fact over several segments


def demo_document(kind: str, model, seed: int = 7) -> Document:
    """A demo document for the model: a fact-recall sample (fact written early, asked at the end),
    an Austen chapter, or a copy-task sample. Made once per model and kind (the sidebar asks on
    every rerun; a copy each time)."""
    return _demo_document(kind, f"{model.name}:{model.weights_hash()}", seed, model)


@st.cache_data(show_spinner=False, max_entries=16)
def _demo_document(kind: str, model_key: str, seed: int, _model) -> Document:
    """demo_document, cached by model_key (_model is not hashed)."""
    from rmt_core import demos

    model = _model
    seg = model.config.segment_size
    if kind == DEMOS[0]:
        sample = demos.fact_recall_sample(model.tokenizer, seg, DEMO_SEGMENTS, seed)
        from rmt_core.explain.answers import split_question

        text = sample.text + sample.answer
        return Document("Fact recall (demo)", text, fact_spans=list(sample.facts), answer=sample.answer.strip(),
                        answer_position=None, body=split_question(sample.text)[0],
                        note=f"A fact is hidden in the text; the question at the end asks for it "
                             f"(answer: “{sample.answer.strip()}”).")
    if kind == DEMOS[1]:
        return Document("Persuasion, an excerpt (held out from training)", demos.book_excerpt(20_000, 6_000))
    if kind == DEMOS[2]:
        return Document("Copy task (demo)", demos.copy_task_text(seed, 24),
                        note="The copy task: 24 symbols, a separator, then the same symbols again.")
    raise ValueError(f"unknown demo {kind!r}")


def upload_limits():
    """rmt_core's DocumentLimits, with max_bytes from $RMT_LENS_MAX_UPLOAD_BYTES when it is set."""
    from rmt_core import DocumentError
    from rmt_core.io.documents import DocumentLimits

    raw = os.environ.get(MAX_UPLOAD_ENV, "").strip()
    if not raw:
        return DocumentLimits()
    try:
        max_bytes = int(raw.replace("_", ""))
    except ValueError:
        max_bytes = 0
    if max_bytes < 1:
        raise DocumentError(f"{MAX_UPLOAD_ENV}={raw!r} is not a positive whole number of bytes; "
                            "fix or unset it to accept uploads.")
    return DocumentLimits(max_bytes=max_bytes)


def read_upload(name: str, data: bytes, truncate: bool = False) -> Document:
    """An uploaded file as a Document (rmt_core.io.documents checks and converts it, in a child
    process that stops when this browser session ends). truncate: keep the start of a document
    over the character or page limit. Raises DocumentError worded for the app (upload_error)."""
    from rmt_core.io.documents import DocumentError, read_document

    try:
        doc = read_document(name, data=data, limits=upload_limits(), truncate=truncate, cancel=_session_ended())
    except DocumentError as exc:
        raise upload_error(exc) from None
    return Document(name, doc.text, note=doc.note)


# What a browser user can do about each reading limit (rmt_core's DocumentError.limit).
_UPLOAD_ADVICE = {
    "max_bytes": "Upload a smaller file (or the part you need, saved as .txt). Whoever runs this server can "
                 f"raise the limit by starting it with {MAX_UPLOAD_ENV}=<bytes>.",
    "max_chars": "Choose “{action}” below to trace its start, or upload the part you need.",
    "max_pdf_pages": "Choose “{action}” below to trace its start, or upload the pages you need as a smaller PDF.",
    "max_unzipped_bytes": "Save the document as .txt or PDF and upload that.",
    "max_seconds": "Save it as .txt (or print it to a new PDF) and upload that.",
    "max_memory_bytes": "Save it as .txt (or print it to a new PDF) and upload that.",
    "cancelled": "Upload it again to read it.",
}


def truncate_action(exc) -> str | None:
    """The button label that reads the start of a document over a limit, or None where none applies."""
    if not getattr(exc, "truncatable", False) or exc.allowed is None:
        return None
    unit = "pages" if exc.limit == "max_pdf_pages" else "characters"
    return f"Read the first {int(exc.allowed):,} {unit}"


def upload_error(exc):
    """rmt_core's DocumentError said in the app's terms: the same facts, advice a browser user can
    follow (a button, a smaller file, the server's setting) instead of Python arguments."""
    advice = _UPLOAD_ADVICE.get(exc.limit)
    if advice is None:
        return exc
    return exc.with_advice(advice.format(action=truncate_action(exc) or ""))


def _session_ended():
    """A callable that is True once this script run's browser session has ended (None outside Streamlit)."""
    from streamlit import runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None or not runtime.exists():
        return None
    instance, session_id = runtime.get_instance(), ctx.session_id
    return lambda: not instance.is_active_session(session_id)


# ---------------------------------------------------------------------- saved traces
TRACE_SUFFIX = ".rmtrace"


def open_trace(source: "str | os.PathLike | bytes", model, name: str | None = None):
    """A saved trace (the Export page's .rmtrace, or `rmt-lens trace --out`) opened for `model`.

    source: the file's path, or its bytes (an upload; name is then its file name, for messages).
    The file is checked and read by rmt_core.Trace.load(path, model=model): a trace made with
    other weights is refused with a message naming the checkpoint it needs, and a damaged or
    crafted file with the TraceError saying what is wrong. Returns the Trace, `model` attached.
    Reusable wherever a page opens a trace (e.g. a second trace to compare with).

    Raises rmt_core.TraceError (messages worded for the app: app_message)."""
    import tempfile
    from pathlib import Path

    from rmt_core import Trace, TraceError

    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            label = name or "the uploaded file"
            if not bytes(source[:8]).strip():
                raise TraceError(f"{label} is empty: choose a trace file saved by RMT Lens (.rmtrace).")
            with tempfile.TemporaryDirectory(prefix="rmt-lens-trace-") as folder:
                path = Path(folder) / f"upload{TRACE_SUFFIX}"
                path.write_bytes(bytes(source))
                try:
                    return Trace.load(path, model=model)
                except TraceError as exc:  # the message names the temporary file: name the upload instead
                    raise TraceError(str(exc).replace(str(path), label)) from exc
        return Trace.load(Path(source), model=model)
    except TraceError as exc:
        raise TraceError(app_message(exc)) from exc


def prepare_in_background(trace) -> threading.Thread | None:
    """For a trace read from a file whose states are rebuilt from its stored writes (the associative
    memory's): rebuild, in a background thread, what the pages replay from (the states every
    `every`-th segment: Trace.rebuilder().prepare()) and, for an associative memory, the last
    layer's walk of the writes (explain.associative.layer_writes: the Memory page opens at that
    layer's retrieved-from). One job place (app/threads.py) per chunk of `every` segments, so other
    sessions' work runs between chunks; a page that needs a state first rebuilds it itself (the
    same numbers). Returns the thread (None when there is nothing to rebuild)."""
    if trace.model is None or not trace.stores_writes or not trace.carries_memory:
        return None

    def run() -> None:
        from app import threads
        from rmt_core.explain import associative

        try:
            steps = trace.rebuilder().prepare()
            while True:
                with threads.heavy():
                    if next(steps, None) is None:
                        break
            if trace.memory_type == "associative":
                writes = associative.layer_writes(trace, int(trace.model_info["num_layers"]) - 1)
                every = trace.rebuilder().every()
                for n in range(every, trace.num_segments + every, every):
                    with threads.heavy():
                        writes.upto(min(n, trace.num_segments))
        except Exception:  # noqa: BLE001 - only ahead of time: the pages compute it themselves when asked
            logging.getLogger("rmt_lens.app").exception("rebuilding a trace's states ahead failed")

    thread = threading.Thread(target=run, name="rmt-lens-prepare-trace", daemon=True)
    thread.start()
    return thread


def traced_document(trace) -> Document:
    """The Document a trace was made from (its text and what the run recorded about it)."""
    meta = trace.meta or {}
    return Document(str(meta.get("document") or "Saved trace"), trace.text,
                    fact_spans=[tuple(s) for s in meta.get("fact_spans") or []], answer=meta.get("answer"))


# ---------------------------------------------------------------------- running
def start_run(model, document: Document, question: str | None = None, window: int | None = None):
    """Start tracing `document` in the background (app.runs.RunJob); returns the job. window: earlier
    segments the answer's through-memory attribution unrolls (None: to the start, up to the cost bound)."""
    from app.runs import RunJob

    return RunJob(model, document, document.text, question=question, window=window).start()


def opening_segment(trace, answer) -> tuple[int, str]:
    """(segment, why) the pages open at after a run: where the answer's evidence is (AskResult.evidence:
    the document's last statement about the asked person, else the clear memory carrier, else the start);
    the start for a document that asks nothing."""
    if answer is not None and answer.trace is trace:
        segment, why = answer.evidence
        return min(int(segment), trace.num_segments - 1), why
    return 0, "Opened at the start: the document asks no question, so there is no answer's evidence to open at."


def card_loss(model) -> float | None:
    """The held-out language-modelling loss (nats/token) the model card reports, if any."""
    from rmt_core.explain.answers import read_card

    lm = (read_card(getattr(model, "name", None)).get("evaluation_results") or {}).get("lm") or {}
    perplexity = lm.get("perplexity_memory")
    return float(np.log(perplexity)) if perplexity else None


UNREADABLE_SHARE = 0.2  # tokens that are pieces of one character (byte fallback)
LOSS_FACTOR = 1.6  # mean loss this many times the card's held-out loss


def reading_warning(trace, model) -> str | None:
    """A warning when the text is outside what the model can read: many tokens are byte
    pieces of a single character (byte fallback: the vocabulary lacks its letters), or the
    mean loss is far above the model card's held-out number."""
    spans = np.concatenate([s.char_spans for s in trace.segments]) if trace.segments else np.zeros((0, 2))
    if len(spans) == 0:
        return None
    starts, ends = spans[:, 0], spans[:, 1]
    known = starts >= 0
    pieces = np.zeros(len(spans), dtype=bool)  # a token sharing a character with its neighbour, or empty
    overlap = known[1:] & known[:-1] & (starts[1:] < ends[:-1])
    pieces[1:] |= overlap
    pieces[:-1] |= overlap
    pieces |= known & (ends <= starts)
    share = float(pieces[known].mean()) if known.any() else 0.0
    loss = trace.mean_loss()  # token-weighted, as the card's held-out number
    reference = card_loss(model) if model is not None else None
    reasons = []
    if share >= UNREADABLE_SHARE:
        reasons.append(f"{100 * share:.0f}% of its tokens are byte pieces of single characters (the model's "
                       "vocabulary has no tokens for these letters)")
    if reference is not None and np.isfinite(loss) and loss > LOSS_FACTOR * reference:
        reasons.append(f"the mean loss is {loss:.2f} nats/token against {reference:.2f} on the model's held-out "
                       "text (its model card; both token-weighted)")
    if not reasons:
        return None
    return ("This text is outside what the model knows: " + "; ".join(reasons)
            + ". Its predictions and memory here say little about how it works on text it can read.")


def attention_for(trace, segment: int) -> np.ndarray:
    """Recomputed attention of a segment, cached per trace in session state."""
    from . import state

    cache = st.session_state.setdefault(state.ATTENTION_CACHE, {})
    key = (id(trace), segment)
    if key not in cache:
        if len(cache) > 32:
            cache.clear()
        from app import threads

        with threads.heavy():
            cache[key] = trace.attention(segment)
    return cache[key]


def per_trace(trace, key, build: Callable[[], Any]) -> Any:
    """build() once per trace and key (a figure that does not depend on the selected segment),
    kept with the trace (rmt_core.explain.series.cached) and shared: callers must not modify it."""
    from rmt_core.explain import series

    return series.cached(trace, ("app", key), build)
