"""The app on input that lies or looks like markup (issue 28 items 4, 5, 7; issue 29 item 5), through AppTest.

User text (a question, an answer, a file or document name, a token, an error message that quotes
them) is shown as typed: app.views.common.literal escapes it for Markdown, KaTeX and HTML. A saved
.rmtrace opens in the app, checked against the selected model. Library advice that names Python
arguments is worded for the app (app.services.app_message).
"""
from __future__ import annotations

import html
import re

import pytest

import rmt_core

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import services, state  # noqa: E402
from app.views.common import WORD_JOINER, literal  # noqa: E402

TIMEOUT = 240
IMAGE = "![q](http://host.example/q.png)"
MARKUP = [
    "export PATH=$HOME/bin:$PATH", "2*3*4 notes.txt", f"Question: {IMAGE} Where is Mary?", "$$x^2$$ and \\$5",
    "<b>bold</b> <img src=x onerror=alert(1)>", "a :smile: b :red[red] :material/home: c", "**b** _i_ ~~s~~ `c`",
    "# heading", "1. item", "- item", "| a | b |", "&amp; &lt;", "back\\slash", "www.example.com http://host.example/x",
    "[link](http://host.example/) <https://host.example/a> mail@host.example", "line one\nline two\n    indented",
    "x_y_z", "[^1] [x]: http://host.example/", "",
]


def _rendered_text(source: str) -> tuple[str, str]:
    """(HTML, its text) of Markdown source, by a CommonMark parser with GFM tables and strikethrough."""
    from markdown_it import MarkdownIt

    out = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(source)
    text = html.unescape(re.sub(r"<[^>]+>", "", out.replace("<br />\n", "\n")))
    return out, text.replace(WORD_JOINER, "").replace("\u00a0", " ").strip("\n")


@pytest.mark.parametrize("text", MARKUP)
def test_literal_text_renders_as_typed(text):
    pytest.importorskip("markdown_it")
    out, shown = _rendered_text(literal(text))
    assert shown == text, (literal(text), out)
    assert not re.search(r"<(img|a|em|strong|code|h\d|li|table|del|pre|b)\b", out), out


def test_literal_negative_control():
    """The check above can fail: the raw text is drawn as markup."""
    pytest.importorskip("markdown_it")
    out, shown = _rendered_text(f"2*3*4 {IMAGE}")
    assert "<img" in out and shown != f"2*3*4 {IMAGE}"


def _app() -> AppTest:
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    return at


def _shown(at: AppTest) -> list[str]:
    """Every Markdown source the page sent: markdown, captions, alerts."""
    return [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success")
            for e in getattr(at, kind)]


def _no_raw_markup(at: AppTest, *raw: str) -> None:
    assert not at.exception, [e.value for e in at.exception]
    for value in _shown(at):
        for piece in raw:  # the escaped form is fine; the raw form anywhere else is not
            assert piece not in value.replace(literal(piece), ""), f"{piece!r} sent as Markdown: {value!r}"


def _run_button(at: AppTest):
    return next(b for b in at.button if b.label == "Run")


def test_markup_in_a_pasted_document_and_its_question_is_shown_as_typed():
    question = f"{IMAGE} $HOME 2*3*4 Where is Mary?"
    body = "Mary went to the garden. Then she read *Persuasion* for $5 at www.example.com. " * 6
    at = _app()
    at.radio(key=state.SOURCE).set_value("Paste text").run()
    at.text_area(key=state.PASTED).input(f"{body}\nQuestion: {question}\nAnswer:")
    _run_button(at).click().run()
    answer = at.session_state[state.ANSWER]
    assert answer is not None and answer.site.question == question
    line = next(m.value for m in at.markdown if "Question at the end" in m.value)
    assert f"“{literal(question)}”" in line
    _no_raw_markup(at, IMAGE, "$HOME", "2*3*4", "*Persuasion*")
    # a question typed into Ask with markup: refused, and the message quotes it as typed
    at.text_input(key=state.ASK_QUESTION).input("Where is $x$ 2*3*4?")
    next(b for b in at.button if b.label == "Ask").click().run()
    _no_raw_markup(at, "$x$", "2*3*4")
    assert any(literal("$x$") in e.value for e in at.error), [e.value for e in at.error]


def test_markup_in_an_uploaded_files_name_is_shown_as_typed():
    name = "2*3*4 $x$ notes.txt"
    at = _app()
    at.radio(key=state.SOURCE).set_value("Upload a file").run()
    at.file_uploader[0].set_value((name, b"Mary went to the garden. " * 40, "text/plain")).run()
    _run_button(at).click().run()
    assert at.session_state[state.TRACE].meta["document"] == name
    assert any(c.value.startswith(f"{literal(name)} · colour") for c in at.caption)
    _no_raw_markup(at, "2*3*4", "$x$")
    at.file_uploader[0].set_value(("$bad$ 2*3.pdf", b"not a pdf", "application/pdf")).run()
    assert at.error and all("$bad$" not in e.value for e in at.error)
    assert any(literal("$bad$ 2*3.pdf") in e.value for e in at.error), [e.value for e in at.error]


# ---------------------------------------------------------------------- saved traces
def _saved(trace, tmp_path) -> bytes:
    return trace.save(tmp_path / "saved.rmtrace").read_bytes()


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.radio(key=state.SOURCE).set_value("Upload a file").run()
    return at.file_uploader[0].set_value((name, data, "application/octet-stream")).run()


def test_a_saved_trace_opens_in_the_app(tmp_path):
    at = _app()
    first = at.session_state[state.TRACE]
    data = _saved(first, tmp_path)
    at = _app()  # another session opens the file
    _upload(at, "work $1.rmtrace", data)
    assert not at.exception and not at.error, [e.value for e in at.error]
    opened = at.session_state[state.TRACE]
    assert opened is not first and opened.text == first.text and opened.num_segments == first.num_segments
    assert opened.model is not None and opened.meta["document"] == first.meta["document"]
    assert any(c.value.startswith(literal("Opened work $1.rmtrace:")) for c in at.caption)
    answer = at.session_state[state.ANSWER]  # its question answered as after a run
    assert answer is not None and answer.trace is opened and any("Question at the end" in m.value for m in at.markdown)
    at.switch_page("screens/attention.py").run()  # pages that recompute need the model: attached
    assert not at.exception and len(at.get("plotly_chart")) >= 1


def test_a_trace_of_another_model_names_the_checkpoint_it_needs(tmp_path):
    at = _app()
    data = _saved(at.session_state[state.TRACE], tmp_path)
    at.selectbox(key=state.CHECKPOINT).set_value("copy-paper").run()
    before = at.session_state[state.TRACE]
    _upload(at, "saved.rmtrace", data)
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert literal(f"'{rmt_core.DEFAULT_CHECKPOINT}'") in message and "under Model" in message, message
    assert at.session_state[state.TRACE] is before  # nothing replaced


def test_a_damaged_or_crafted_trace_file_gets_a_message(tmp_path):
    at = _app()
    good = _saved(at.session_state[state.TRACE], tmp_path)
    before = at.session_state[state.TRACE]
    damaged = {"empty": b"", "garbage": b"\x00garbage" * 50, "cut": good[: len(good) // 3],
               "header": good[:8] + b'{"__metadata__": {"rmt_lens_trace": "{not json"}}' + good[60:]}
    for damage, data in damaged.items():
        _upload(at, f"broken-{damage}.rmtrace", data)
        assert not at.exception, (damage, [e.value for e in at.exception])
        assert at.error, f"a damaged trace file ({damage}) must get a message"
        assert any(literal(f"broken-{damage}.rmtrace") in e.value for e in at.error), [e.value for e in at.error]
        assert all("Traceback" not in e.value and "trace.save()" not in e.value for e in at.error)
        assert at.session_state[state.TRACE] is before


def test_open_trace_reads_a_path_and_checks_the_model(tmp_path):
    at = _app()
    trace = at.session_state[state.TRACE]
    path = trace.save(tmp_path / "t.rmtrace")
    opened = services.open_trace(path, trace.model)
    assert opened.model is trace.model and opened.num_tokens == trace.num_tokens
    with pytest.raises(rmt_core.TraceError, match="under Model"):
        services.open_trace(path, services.load_model("copy-paper"))


# ---------------------------------------------------------------------- messages in the app's terms
def test_library_advice_is_worded_for_the_app(monkeypatch):
    from rmt_core.io.documents import DocumentLimits, read_document

    messages = []
    with pytest.raises(rmt_core.RMTLensError) as caught:
        read_document("long.txt", data=b"word " * 100, limits=DocumentLimits(max_chars=50))
    messages.append(str(services.upload_error(caught.value)))  # what the sidebar shows (app.services)
    monkeypatch.setenv(services.MAX_UPLOAD_ENV, "100")
    with pytest.raises(rmt_core.RMTLensError) as caught:
        services.read_upload("big.txt", b"word " * 100)
    messages.append(services.app_message(caught.value))
    for message in messages:
        assert not re.search(r"\w+=(True|\.\.\.|\d)|DocumentLimits|truncate", message), message
    assert services.MAX_UPLOAD_ENV in messages[1]
    assert "Target token" in services.app_message("The last token of the document has no next token: "
                                                  "pass target= (a token id).")
    assert "under Model" in services.app_message("This trace was made with 'x'. Load the checkpoint it was made with.")


# ---------------------------------------------------------------------- the document window follows the segment
def test_the_document_window_follows_the_selected_segment():
    from app.views.common import LEAD_TOKENS

    text = "Mary went to the garden. It is a truth universally acknowledged, that a single man " * 180
    at = _app()
    at.radio(key=state.SOURCE).set_value("Paste text").run()
    at.text_area(key=state.PASTED).input(text)
    _run_button(at).click().run()
    trace = at.session_state[state.TRACE]
    assert trace.num_segments > 110
    html = lambda: next(h.proto.body for h in at.get("html") if "rmt-doc" in h.proto.body)  # noqa: E731
    first = lambda: int(re.search(r">§(\d+)<", html()).group(1))  # noqa: E731
    for segment in (104, 0, 57):
        at.slider(key=state.SEGMENT).set_value(segment).run()
        assert not at.exception
        lead = sum(s.num_tokens for s in trace.segments[first():segment])
        assert f">§{segment}<" in html() and first() <= segment and lead <= LEAD_TOKENS, (segment, first())
        assert segment == 0 or lead > LEAD_TOKENS - trace.segments[0].num_tokens  # as much lead as fits
    assert first() > 0 and any("Showing segments" in c.value for c in at.caption)


def test_a_new_document_not_yet_run_is_said_to_be_untraced():
    """The sidebar's 'Traced …' line speaks of the run the pages show; choosing another document
    without pressing Run says so instead of leaving the old line as if it were the new one's."""
    at = _app()
    at.radio(key=state.SOURCE).set_value("Upload a file").run()
    at.file_uploader[0].set_value(("first.txt", b"Mary went to the garden. It rained all day. " * 30,
                                   "text/plain")).run()
    _run_button(at).click().run()
    traced = [c.value.replace("\\", "") for c in at.caption if c.value.startswith("Traced ")]
    assert traced and traced[0].endswith(": first.txt.")
    assert not any(c.value.startswith("Not traced yet") for c in at.caption)
    at.file_uploader[0].set_value(("second.txt", b"John went to the office. It snowed. " * 30, "text/plain")).run()
    waiting = [c.value.replace("\\", "") for c in at.caption if c.value.startswith("Not traced yet")]
    assert waiting and "second.txt" in waiting[0] and "still show first.txt" in waiting[0]
    _run_button(at).click().run()
    assert not any(c.value.startswith("Not traced yet") for c in at.caption)
    assert any(c.value.startswith("Traced ") and c.value.replace("\\", "").endswith(": second.txt.") for c in at.caption)
    # asking a question of it traces "second.txt + question": still this document, not an untraced one
    at.text_input(key=state.ASK_QUESTION).input("Where is John?")
    next(b for b in at.button if b.label == "Ask").click().run()
    assert at.session_state[state.ANSWER] is not None
    assert not any(c.value.startswith("Not traced yet") for c in at.caption), [c.value for c in at.caption]
