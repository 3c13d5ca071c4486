"""Small helpers shared by the pages."""
from __future__ import annotations

import functools
import re

import streamlit as st

from rmt_core.errors import RMTLensError, unexpected_error_message
from rmt_core.viz.figures import FIGURE_CONFIG
from rmt_core.viz.render import document_html
from rmt_core.token_text import token_label

from app import state
from app.services import app_message

WINDOW_TOKENS = 6000  # tokens of a long document shown at once, from a little before the selected segment
LEAD_TOKENS = 256  # tokens shown before the selected segment: the box opens with that segment in sight
VISIBLE_WHITESPACE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character: CommonMark escapes each
# GFM turns "http://…", "www.…" and "a@b.c" into links after the escapes are read; an invisible
# word joiner (U+2060) in the middle keeps them text
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def literal(text: object) -> str:
    """`text` as Markdown source that st.markdown / st.caption / st.info / st.warning / st.error
    show exactly as typed: no Markdown, no KaTeX (`$…$`), no HTML, no images or links (a
    document's `![q](http://host/q.png)` must never make a browser fetch it), no `:emoji:` or
    `:red[…]` directives. Every ASCII punctuation character is backslash-escaped (CommonMark),
    line breaks stay line breaks, leading spaces stay spaces (not a code block), and GFM's bare
    links get an invisible word joiner (U+2060). For any user-derived text: questions, answers,
    tokens, file and document names, paths, error messages. Source of the problem: streamlit#8099."""
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    text = _PUNCTUATION.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, text))
    lines = [re.sub(r"^[ \t]+", lambda m: "\u00a0" * len(m.group()), line) for line in text.split("\n")]
    return "\\\n".join(lines)  # a backslash at a line's end: a hard line break


def visible_token(token: str) -> str:
    """A displayed token as a table / menu label: whitespace drawn (␣ space, ↵ newline, ⇥ tab) so
    no cell looks empty, then rmt_core.token_text.token_label (a continuation piece of a split
    character as ◌, other control characters escaped)."""
    return token_label(token.translate(VISIBLE_WHITESPACE))


def require_trace():
    """The current trace, or None after telling the user what to do."""
    trace = st.session_state.get(state.TRACE)
    if trace is None or trace.num_segments == 0:
        st.info("Run a document first (sidebar → Run).")
        return None
    current = st.session_state.get("current_model_name")
    made_with = trace.model_info.get("name")
    if current and made_with and current != made_with:
        st.warning(f"These pages show the trace made with **{literal(made_with)}**, not the selected model "
                   f"**{literal(current)}**: press Run to trace the document with {literal(current)}.",
                   icon=":material/history:")
    return trace


def require_trace_with_model(purpose: str):
    """The current trace if its model is attached (needed to recompute), else None with a message."""
    trace = require_trace()
    if trace is not None and trace.model is None:
        st.warning(f"{purpose} needs the model the trace was made with; load the trace with its checkpoint.")
        return None
    return trace


def show_error(exc: BaseException, context: str = "") -> None:
    """One message for an exception: an RMTLensError's own text; anything else (a bug) as one line
    saying where its traceback was logged, with a request to report it. Never a traceback on screen."""
    if isinstance(exc, RMTLensError):
        st.error(literal(app_message(exc)))
    else:
        st.error(literal(unexpected_error_message(exc, context)), icon="🐞")


def guarded(fn):
    """Run a page part (a fragment) with show_error instead of a traceback (st.rerun/st.stop pass through:
    they are BaseExceptions)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            show_error(exc, f"app: {fn.__module__}.{fn.__name__}")
            return None

    return run


def show_figure(fig, key: str | None = None, **kwargs):
    return st.plotly_chart(fig, config=FIGURE_CONFIG, key=key, **kwargs)


def model_for(trace):
    """The model a trace was made with (attached at run time)."""
    return trace.model


def _jump(key: str) -> None:
    st.session_state[state.SEGMENT] = int(st.session_state[key])


def window_first(trace, segment: int, lead_tokens: int = LEAD_TOKENS) -> int:
    """The first segment shown: the earliest whose text up to `segment` is at most `lead_tokens`
    tokens (always `segment` itself or earlier). A box that opens at the top then shows the
    selected segment without scrolling, and the window follows the selection."""
    first, before = int(segment), 0
    while first > 0 and before + trace.segments[first - 1].num_tokens <= lead_tokens:
        first -= 1
        before += trace.segments[first].num_tokens
    return first


def document_view(trace, segment: int, key: str, height: int = 380, **html_kwargs) -> None:
    """The document from just before `segment` on (a window of a long one: the box opens with the
    selected segment in sight), with a box to jump to any segment."""
    first = window_first(trace, segment)
    html, note = document_html(trace, selected_segment=segment, first_segment=first, max_tokens=WINDOW_TOKENS,
                               **html_kwargs)
    if note:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        c1.caption(literal(note))
        jump_key = f"{key}_jump"
        st.session_state[jump_key] = int(segment)
        c2.number_input(f"Jump to segment (0–{trace.num_segments - 1})", 0, trace.num_segments - 1, step=1,
                        key=jump_key, on_change=_jump, args=(jump_key,))
    with st.container(height=height):
        st.html(html)
