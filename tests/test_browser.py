"""RMT Lens in a real browser: `streamlit run app/server.py` (app/main.py behind its browser cookie) driven by the system Chromium through playwright.

What AppTest (tests/test_app.py) cannot see: the charts are drawn, the bertviz view renders offline inside
its iframe, uploads go through the real uploader, several users share one server, bad input shows a message
on the page, and document text cannot run script. Every request that leaves 127.0.0.1 is aborted and
recorded, and each test checks none was made. Screenshots go to artifacts/screenshots/.

Run: `.venv/bin/python -m pytest -m browser tests/test_browser.py` (skipped LOUDLY when Chromium is missing).
"""
from __future__ import annotations

import rmt_core
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("streamlit")

from browser_support import (  # noqa: E402,F401 - fixtures are used by name
    ALERT, CHART, EXCEPTION, MAIN, RUN_MS, SIDEBAR, UI_MS, UPLOAD_LIMIT_BYTES,
    app_pages, assert_offline, browser, choose_source, first_chart, fresh, goto_page, local_model, metric_value,
    new_session, open_app, open_session, page_heading, paste_text, run_button, screenshot, streamlit_server, upload,
    wait_first_screen, wait_idle,
)

pytestmark = pytest.mark.browser

sys.path.insert(0, str(Path(__file__).parent))
import document_builders as B  # noqa: E402

# The st.header of the core pages; every page app/main.py declares is opened (app_pages()).
HEADINGS = {"Overview": "What the memory did on this document", "Timeline": "Timeline", "Attention": "Attention",
            "Memory": "Memory", "Attribution": "Attribution and interventions"}
PAGES = [title for title, _ in app_pages()]

XSS = "<script>alert(1)</script> <img src=x onerror=alert(1)>"


def expect(locator):
    from playwright.sync_api import expect as _expect

    return _expect(locator)


def heldout_text(start: int, n_words: int) -> str:
    """n_words of held-out Austen from about character `start`, starting at a word."""
    from rmt_core.training.corpus import load_corpus

    text = load_corpus("heldout")
    begin = text.index(" ", start) + 1
    return " ".join(text[begin:].split()[:n_words])


def no_exception(page) -> None:
    errors = page.locator(EXCEPTION)
    assert errors.count() == 0, f"Streamlit exception on the page: {errors.first.inner_text()[:2000]}"


def open_bertviz(page, view: str = "head"):
    """Open the 'bertviz head view' (or model view) tab; return the iframe's frame once its SVG is drawn."""
    page.get_by_role("tab", name=f"bertviz {view} view").click()
    iframe = page.locator(f'{MAIN} [data-testid="stIFrame"]:visible').first
    expect(iframe).to_be_visible(timeout=UI_MS)
    frame = iframe.content_frame
    expect(frame.locator("#vis svg").first).to_be_attached(timeout=UI_MS)
    expect(frame.locator("#vis svg text").first).to_be_visible(timeout=UI_MS)
    return frame


def run_and_wait(page, document: str) -> str:
    """Click Run; wait until the Overview shows the trace of `document` and the run has ended.

    Returns the sidebar's 'Traced N tokens in S segments' caption."""
    run_button(page).click()
    expect(page.locator(MAIN).get_by_text(f"{document} · colour")).to_be_visible(timeout=RUN_MS)
    wait_idle(page)
    caption = page.locator(SIDEBAR).locator('[data-testid="stCaptionContainer"]', has_text="Traced ")
    expect(caption).to_be_visible()
    return caption.inner_text()


def assert_recovers(page) -> None:
    """After bad input: pick another demo, Run, and it is traced and charted."""
    choose_source(page, "Copy task (demo)")
    expect(run_button(page)).to_be_enabled(timeout=UI_MS)
    run_and_wait(page, "Copy task (demo)")
    expect(first_chart(page)).to_be_visible(timeout=RUN_MS)
    no_exception(page)


# ---------------------------------------------------------------------- first screen and pages
def test_app_declares_the_core_pages():
    assert set(HEADINGS) <= set(PAGES), f"app/main.py lost a core page: {PAGES}"


@pytest.fixture(scope="module")
def shared(browser, streamlit_server):
    """One session kept across the page tests (navigation happens in the browser, like a user)."""
    session = new_session(browser, streamlit_server.url)
    yield session
    session.context.close()


def test_offline_guard_blocks_requests_that_leave_the_machine(open_session, streamlit_server):
    """The guard the other tests rely on: a request to another host is aborted and recorded."""
    session = open_session()
    session.page.goto(f"{streamlit_server.url}/_stcore/health")
    outcome = session.page.evaluate(
        "() => fetch('https://example.com/x.js').then(() => 'loaded', () => 'blocked')")
    assert outcome == "blocked"
    assert session.guard.blocked == ["https://example.com/x.js"]
    session.guard.blocked.clear()
    assert_offline(session)


def test_first_screen_draws_charts_offline(shared, streamlit_server):
    page = shared.page
    open_app(shared, streamlit_server.url)  # waits for "Question at the end" and a drawn plotly chart
    expect(page.locator(f"{MAIN} .js-plotly-plot svg.main-svg").first).to_be_visible()
    no_exception(page)
    assert page.locator(MAIN).get_by_text("Question at the end").count() >= 1
    screenshot(page, "first-screen")
    assert_offline(shared)
    assert not shared.dialogs


@pytest.mark.parametrize("title", PAGES)
def test_each_page_opens_and_draws(shared, streamlit_server, title):
    page = shared.page
    if page.url == "about:blank":  # run alone: start the session here
        open_app(shared, streamlit_server.url)
    heading = goto_page(page, title)
    if title in HEADINGS:
        assert heading == HEADINGS[title]
    no_exception(page)
    if title in HEADINGS:  # the core pages draw charts (the others may start with text, e.g. the tour)
        expect(first_chart(page)).to_be_visible(timeout=RUN_MS)
        assert page.locator(f"{MAIN} {CHART}").count() >= 1
    if title == "Export":  # each download once in the page (a help tooltip made Streamlit draw a hidden copy)
        assert page.locator(MAIN).get_by_text("Trace file (.rmtrace)", exact=True).count() == 1
    screenshot(page, "page-" + re.sub(r"\W+", "-", title.lower()))
    no_exception(page)
    assert_offline(shared)


def test_bertviz_head_view_draws_offline(shared, streamlit_server):
    page = shared.page
    if page.url == "about:blank":
        open_app(shared, streamlit_server.url)
    goto_page(page, "Attention")
    frame = open_bertviz(page)
    assert frame.locator("#vis svg text").count() > 10  # token labels on both sides
    labels = [t or "" for t in frame.locator("#vis svg text").all_text_contents()]
    assert any(label.strip() == "R0" for label in labels) and any(label.strip() == "W0" for label in labels), labels[:20]
    screenshot(page, "attention-bertviz-head-view")
    no_exception(page)
    assert_offline(shared)


# ---------------------------------------------------------------------- upload
def test_upload_runs_to_completion_with_progress(fresh, local_model):
    from rmt_core.io.documents import read_document

    page = fresh.page
    # ~45k tokens, ~1,400 segments: a run of some seconds even on a fast machine. With ~1,200 tokens
    # CI traced in 0.3 s, before the first poll, and the bar was (rightly) never drawn.
    data = heldout_text(40_000, 32_000).encode("utf-8")
    upload(page, "story.txt", data)
    no_exception(page)
    # Record every state of the progress bar the browser draws during the run.
    page.evaluate("""() => {
        window.__progress = [];
        const seen = () => document.querySelectorAll('[data-testid="stProgress"]').forEach(
            e => window.__progress.push(e.innerText));
        window.__observer = new MutationObserver(seen);
        window.__observer.observe(document.body, {childList: true, subtree: true, characterData: true});
    }""")
    caption = run_and_wait(page, "story.txt")
    progress = page.evaluate("() => { window.__observer.disconnect(); return window.__progress; }")
    expected = rmt_core.trace(local_model, read_document("story.txt", data=data).text)
    print(f"caption: {caption!r}; progress states seen: {sorted(set(progress))[:6]}")
    assert f"Traced {expected.num_tokens:,} tokens in {expected.num_segments} segments" in caption
    assert any(f"of {expected.num_segments}" in p or "Starting" in p for p in progress), (
        f"the progress bar was never drawn during the run: {progress[:10]}")
    expect(page.locator(SIDEBAR).locator('[data-testid="stProgress"]')).to_have_count(0)  # removed when done
    expect(first_chart(page)).to_be_visible()
    no_exception(page)
    screenshot(page, "upload-done")
    assert_offline(fresh)


# ---------------------------------------------------------------------- several users
def test_four_users_at_once_get_their_own_results(open_session, streamlit_server, local_model):
    texts = [heldout_text(60_000 + 25_000 * i, 700) for i in range(4)]
    expected = []
    for text in texts:
        trace = rmt_core.trace(local_model, text)
        expected.append({"Tokens": f"{trace.num_tokens:,}", "Mean loss (nats/token)": f"{trace.mean_loss():.3f}"})
    assert len({e["Mean loss (nats/token)"] for e in expected}) > 1, "the texts should give different results"

    sessions = [open_session() for _ in texts]
    open_app(sessions[0], streamlit_server.url)
    rss_one = streamlit_server.rss_bytes()
    for session in sessions[1:]:
        open_app(session, streamlit_server.url, wait=False)
    for session in sessions[1:]:
        wait_first_screen(session.page)
    for session, text in zip(sessions, texts):
        paste_text(session.page, text)

    # Start all four runs (each click returns at once), then wait for all.
    for session in sessions:
        run_button(session.page).click(no_wait_after=True)
    for session in sessions:
        expect(session.page.locator(MAIN).get_by_text("Pasted text · colour")).to_be_visible(timeout=RUN_MS)
    for session in sessions:
        wait_idle(session.page)
    rss_four = streamlit_server.rss_bytes()

    for i, (session, want) in enumerate(zip(sessions, expected)):
        page = session.page
        no_exception(page)
        got = {label: page.locator(MAIN).locator('[data-testid="stMetric"]', has_text=label)
               .locator('[data-testid="stMetricValue"]').inner_text().strip() for label in want}
        assert got == want, f"session {i}: the page shows {got}, one session alone gives {want}"
        expect(first_chart(page)).to_be_visible()
    screenshot(sessions[-1].page, "four-users-last")
    growth = rss_four - rss_one
    print(f"server RSS: {rss_one / 2**20:.0f} MiB with one session, {rss_four / 2**20:.0f} MiB with four "
          f"(+{growth / 2**20:.0f} MiB)")
    assert growth < 300 * 2**20, f"the server grew by {growth / 2**20:.0f} MiB for 3 more sessions"
    assert_offline(*sessions)


# ---------------------------------------------------------------------- bad input
BAD_UPLOADS = {
    "empty": ("empty.txt", b"", "is empty (0 bytes)"),
    "binary": ("binary.txt", bytes(range(256)) * 8, "looks like a binary file"),
    "too-large": ("large.txt", b"All work and no play. " * (UPLOAD_LIMIT_BYTES // 22 + 200), "over the size limit"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_shows_a_message_and_the_app_keeps_working(fresh, case):
    name, data, message = BAD_UPLOADS[case]
    page = fresh.page
    upload(page, name, data)
    alert = page.locator(SIDEBAR).locator(ALERT, has_text=message)
    expect(alert).to_be_visible(timeout=UI_MS)
    expect(run_button(page)).to_be_disabled()
    no_exception(page)
    alert.scroll_into_view_if_needed()
    screenshot(page, f"bad-upload-{case}")
    assert_recovers(page)
    expect(page.locator(SIDEBAR).locator(ALERT, has_text=message)).to_have_count(0)
    assert_offline(fresh)


def test_document_over_the_character_limit_offers_to_read_its_start(fresh):
    """A document over 2,000,000 characters: the message speaks in the app's terms and its button
    reads the first 2,000,000 (a 40 kB PDF: one page of 2.4M characters, inside the upload size)."""
    line = b"(Mary went to the kitchen and then John went to the garden) '\n"
    data = B.pdf([0], [b"BT /F1 10 Tf 72 760 Td 12 TL\n" + line * 45_000 + b"ET"])
    assert len(data) < UPLOAD_LIMIT_BYTES
    page = fresh.page
    upload(page, "long.pdf", data, mime="application/pdf")
    alert = page.locator(SIDEBAR).locator(ALERT, has_text="over the limit of 2,000,000")
    expect(alert).to_be_visible(timeout=RUN_MS)
    assert "truncate" not in alert.inner_text() and "DocumentLimits" not in alert.inner_text()
    expect(run_button(page)).to_be_disabled()
    page.locator(SIDEBAR).get_by_role("button", name="Read the first 2,000,000 characters").click()
    expect(page.locator(SIDEBAR).get_by_text("Truncated to the first 2,000,000 characters")).to_be_visible(
        timeout=RUN_MS)
    expect(run_button(page)).to_be_enabled()
    no_exception(page)
    screenshot(page, "upload-read-the-start")
    assert_offline(fresh)


def test_closing_the_tab_stops_a_slow_read(open_session, streamlit_server):
    """A PDF that takes long to read: the reading process ends soon after its browser tab closes
    (it no longer runs on to the 60 s limit, burning the CPU other sessions need)."""
    import psutil

    line = b"(Mary went to the kitchen and then John went to the garden) '\n"
    data = B.pdf([0], [b"BT /F1 10 Tf 72 760 Td 12 TL\n" + line * 400_000 + b"ET"])  # 24 MB of text operators
    assert len(data) < UPLOAD_LIMIT_BYTES
    session = open_session()
    open_app(session, streamlit_server.url)
    choose_source(session.page, "Upload a file")
    session.page.locator(SIDEBAR).locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": "slow.pdf", "mimeType": "application/pdf", "buffer": data})
    expect(session.page.locator(SIDEBAR).locator('[data-testid="stFileUploader"]').get_by_text(
        "slow.pdf", exact=True)).to_be_visible()

    def readers() -> list:
        server = psutil.Process(streamlit_server.process.pid)
        return [p for p in server.children(recursive=True)
                if p.is_running() and any("_child.py" in part for part in p.cmdline())]
    deadline = time.monotonic() + 60
    while not readers() and time.monotonic() < deadline:
        session.page.wait_for_timeout(200)  # (not time.sleep: the page's routed requests need Playwright's loop)
    assert readers(), "no reading process started"
    session.page.wait_for_timeout(3000)
    assert readers(), "the read finished too soon to show anything"
    session.context.close()
    closed = time.monotonic()
    while readers() and time.monotonic() - closed < 30:
        time.sleep(0.2)
    stopped_after = time.monotonic() - closed
    print(f"reading process gone {stopped_after:.1f} s after the tab closed")
    assert not readers() and stopped_after < 10


def test_markdown_file_is_accepted_like_md(fresh):
    page = fresh.page
    upload(page, "notes.markdown", b"# Notes\n\nMary went to the kitchen.\n", mime="text/markdown")
    expect(run_button(page)).to_be_enabled(timeout=UI_MS)
    expect(page.locator(SIDEBAR).locator(ALERT)).to_have_count(0)
    no_exception(page)


def test_folder_that_is_not_a_checkpoint_shows_a_message(fresh, streamlit_server):
    page = fresh.page
    tmp_path = streamlit_server.allowed_dir / "not-a-model"
    tmp_path.mkdir(exist_ok=True)
    sidebar = page.locator(SIDEBAR)
    model_box = sidebar.get_by_role("combobox", name="Model")
    shipped = model_box.input_value().strip()  # the default checkpoint
    assert shipped and "Local" not in shipped
    model_box.click()
    page.get_by_role("option", name="Local folder…", exact=True).click()
    wait_idle(page)
    (tmp_path / "notes.txt").write_text("not a model")
    folder = sidebar.locator('[data-testid="stTextInput"] input')
    folder.fill(str(tmp_path))
    folder.press("Enter")
    alert = sidebar.locator(ALERT, has_text="not a checkpoint")
    expect(alert).to_be_visible(timeout=RUN_MS)
    no_exception(page)
    alert.scroll_into_view_if_needed()
    screenshot(page, "bad-local-folder")
    for outside in ("/root/.ssh", "/etc/nothing-here", "/etc"):  # outside the allowed folders: one message
        folder.fill(outside)
        folder.press("Enter")
        expect(sidebar.locator(ALERT, has_text="folders the person who started it allowed")).to_be_visible(
            timeout=RUN_MS)
        expect(sidebar.locator(ALERT, has_text="not a checkpoint")).to_have_count(0)
        expect(sidebar.locator(ALERT, has_text="No checkpoint folder")).to_have_count(0)
    no_exception(page)
    # back to the shipped model: everything works again
    model_box.click()
    page.get_by_role("option", name=shipped, exact=True).click()
    wait_idle(page)
    expect(sidebar.locator(ALERT, has_text="not a checkpoint")).to_have_count(0)
    assert_recovers(page)
    assert_offline(fresh)


# ---------------------------------------------------------------------- security
def test_document_text_cannot_run_script(fresh):
    page = fresh.page
    text = f"{XSS} The memory keeps what the reader saw. " * 2 + XSS
    paste_text(page, text)
    run_and_wait(page, "Pasted text")

    def check(where: str) -> None:
        no_exception(page)
        assert page.locator('img[src="x"]').count() == 0, f"{where}: the document's <img> became an element"
        for frame in page.frames:
            assert frame.locator('img[src="x"]').count() == 0, f"{where}: an <img src=x> inside a frame"
        assert not fresh.dialogs, f"{where}: a dialog opened: {fresh.dialogs}"

    # the payload is on the page as text (so the check above is meaningful)
    expect(page.locator(MAIN).get_by_text("onerror", exact=False).first).to_be_visible()
    check("Overview")
    goto_page(page, "Timeline")
    expect(page.locator(MAIN).get_by_text("onerror", exact=False).first).to_be_attached()
    check("Timeline")
    goto_page(page, "Attention")
    frame = open_bertviz(page)
    assert frame.locator('img[src="x"]').count() == 0
    shown = {(t or "").strip() for t in frame.locator("#vis svg text").all_text_contents()}
    assert {"<", ">", "error", "cri"} <= shown, f"the payload's tokens should be drawn as text: {sorted(shown)[:40]}"
    check("Attention (bertviz head view)")
    frame = open_bertviz(page, "model")
    assert frame.locator('img[src="x"]').count() == 0
    check("Attention (bertviz model view)")
    goto_page(page, "Attribution")
    page.get_by_role("tab", name="Through memory").click()
    page.get_by_role("button", name="Attribute through memory").click()
    expect(page.locator(MAIN).get_by_text("Document coloured by attribution")).to_be_visible(timeout=RUN_MS)
    wait_idle(page)
    check("Attribution (through memory)")
    screenshot(page, "xss-attribution")
    assert not fresh.dialogs
    assert_offline(fresh)


# ---------------------------------------------------------------------- your own document: Ask, runs, reloads
def _held_out_question(model):
    """A held-out fact-recall document (no question) whose question the shipped model answers right.

    Built as the model was trained (the question ends at a segment boundary); the answer is
    checked on the model here first, so the test never relies on an offset being right or wrong."""
    import numpy as np

    import rmt_core
    from rmt_core.explain import answers
    from rmt_core.training.corpus import load_corpus
    from rmt_core.training.tasks import babi

    size = model.config.segment_size
    for seed in range(20):
        sample = babi.build_sample(load_corpus("heldout"), 6 * size, "detect", np.random.default_rng(seed),
                                   model.tokenizer, keep_out_tail=size)
        document, question = answers.split_question(sample.text)
        result = rmt_core.ask(model, document, question, attribute=False)
        if result.answer == sample.answer.strip():
            return document, question, result
    raise AssertionError("the shipped model got none of 20 held-out samples right")


def _ask_box_input(page):
    return page.locator(MAIN).locator('[data-testid="stTextInput"] input[aria-label="Question"]')


def test_paste_and_ask_journey(fresh, local_model):
    """Paste a document, Run once, ask its question: the model's answer is shown, and it is right."""
    page = fresh.page
    document, question, expected = _held_out_question(local_model)
    paste_text(page, document)  # typed, never blurred or committed: the Run click must send it
    caption = run_and_wait(page, "Pasted text")
    traced = rmt_core.trace(local_model, document)
    assert f"Traced {traced.num_tokens:,} tokens in {traced.num_segments} segments" in caption
    _ask_box_input(page).fill(question.removeprefix("Where is ").rstrip("?"))  # just the name
    page.locator(MAIN).get_by_role("button", name="Ask", exact=True).click()
    line = page.locator(MAIN).locator('[data-testid="stMarkdownContainer"]', has_text="Question at the end")
    expect(line).to_be_visible(timeout=RUN_MS)
    wait_idle(page)
    text = line.inner_text()
    assert f"“{question}”" in text and f"the model answers “{expected.answer}”" in text, text
    assert f"p = {expected.predictions[0].probability:.2f}" in text
    expect(page.locator(MAIN).get_by_text(f"Pasted text + question “{question}” · colour")).to_be_visible()
    carrier = page.locator(MAIN).get_by_text(re.compile("Memory carried it from segment|No earlier segment carries a clear credit"))
    expect(carrier.first).to_be_visible()
    no_exception(page)
    screenshot(page, "ask-answer")
    if "Memory carried it from segment" in carrier.first.inner_text():  # a positive carrier: its segment opens
        page.locator(MAIN).get_by_role("button", name="Open it on Timeline").click()
        expect(page_heading(page)).to_have_text("Timeline", timeout=RUN_MS)
        wait_idle(page)
        no_exception(page)
    assert_offline(fresh)


def test_warnings_are_visible_next_to_the_answer(fresh):
    """Paste two people's moves, ask about a third: the warnings sit in the answer's box, under its line."""
    page = fresh.page
    paste_text(page, "Mary went to the kitchen. John travelled to the hallway. It rained all day. "
                     "Mary journeyed to the bedroom.")
    run_and_wait(page, "Pasted text")
    _ask_box_input(page).fill("Daniel")
    page.locator(MAIN).get_by_role("button", name="Ask", exact=True).click()
    line = page.locator(MAIN).locator('[data-testid="stMarkdownContainer"]', has_text="Question at the end")
    expect(line).to_be_visible(timeout=RUN_MS)
    wait_idle(page)
    absent = page.locator(MAIN).locator('[data-testid="stAlert"]', has_text="“Daniel” does not occur in the document")
    several = page.locator(MAIN).locator('[data-testid="stAlert"]', has_text="one fact about one person")
    expect(absent).to_be_visible()
    expect(several).to_be_visible()
    ask_box = page.locator(MAIN).get_by_text("Ask the model about this document")
    top, below = line.bounding_box(), ask_box.bounding_box()
    for alert in (absent, several):  # right under the answer line, above the Ask box
        assert top["y"] < alert.bounding_box()["y"] < below["y"]
    no_exception(page)
    screenshot(page, "ask-warnings")


def test_run_and_its_reason_are_visible_in_a_1000px_window(open_session, streamlit_server):
    session = open_session()
    page = session.page
    page.set_viewport_size({"width": 1000, "height": 1000})
    open_app(session, streamlit_server.url)
    expect(run_button(page)).to_be_in_viewport()
    choose_source(page, "Paste text")
    expect(run_button(page)).to_be_in_viewport()
    reason = page.locator(SIDEBAR).get_by_text("Nothing to run: the text box is empty")
    expect(reason).to_be_visible()
    run_button(page).click()  # an empty box: a message, nothing runs
    expect(page.locator(SIDEBAR).locator(ALERT, has_text="The text box is empty")).to_be_visible()
    screenshot(page, "run-in-1000px")
    assert_offline(session)


def test_a_page_switch_during_a_run_does_not_cancel_it(fresh, local_model):
    page = fresh.page
    text = heldout_text(120_000, 12_000)  # long enough to switch pages while it runs
    paste_text(page, text)
    run_button(page).click()
    sidebar = page.locator(SIDEBAR)
    expect(sidebar.locator('[data-testid="stProgress"]')).to_be_visible(timeout=RUN_MS)
    expect(sidebar.get_by_role("button", name="Cancel")).to_be_visible()
    expect(run_button(page)).to_be_disabled()  # no second run while one is in flight
    page.locator('[data-testid="stSidebarNavLink"]').filter(has=page.locator('span[label="Timeline"]')).click()
    expect(page_heading(page)).to_have_text("Timeline", timeout=RUN_MS)
    expect(sidebar.locator('[data-testid="stProgress"]')).to_be_visible()  # progress on the new page
    caption = sidebar.locator('[data-testid="stCaptionContainer"]', has_text="Traced ")
    expect(caption).to_be_visible(timeout=4 * RUN_MS)
    wait_idle(page)
    expected = rmt_core.trace(local_model, text)
    assert f"Traced {expected.num_tokens:,} tokens in {expected.num_segments} segments" in caption.inner_text()
    assert sidebar.get_by_text("Cancelled").count() == 0
    expect(sidebar.get_by_role("button", name="Cancel")).to_have_count(0)  # only while a run is in progress
    expect(page_heading(page)).to_have_text("Timeline")
    no_exception(page)
    assert_offline(fresh)


def test_a_reload_keeps_the_document_and_the_trace(fresh):
    page = fresh.page
    text = heldout_text(90_000, 400)
    paste_text(page, text)
    run_and_wait(page, "Pasted text")
    tokens = metric_value(page, "Tokens")
    assert "doc=" in page.url
    page.reload(wait_until="domcontentloaded")
    expect(page.locator(MAIN).get_by_text("Pasted text · colour")).to_be_visible(timeout=RUN_MS)
    wait_idle(page)
    area = page.locator(SIDEBAR).locator('[data-testid="stTextArea"] textarea')
    # the sidebar may redraw once more after the main area (seen on a loaded machine): wait for the value
    expect(area).to_have_value(text, timeout=RUN_MS)
    expect(page.locator(SIDEBAR).get_by_text("Restored after a reload: Pasted text.")).to_be_visible()
    assert metric_value(page, "Tokens") == tokens
    no_exception(page)
    assert_offline(fresh)


def test_the_tours_buttons_follow_the_step(fresh):
    page = fresh.page
    goto_page(page, "Guided tour")
    back = page.locator(MAIN).get_by_role("button", name="← Back")
    forward = page.locator(MAIN).get_by_role("button", name="Next →")
    expect(page.locator(MAIN).get_by_text("Step 1 of 6")).to_be_visible(timeout=RUN_MS)
    expect(back).to_be_disabled()
    expect(forward).to_be_enabled()
    for step in range(2, 7):
        forward.click()
        expect(page.locator(MAIN).get_by_text(f"Step {step} of 6")).to_be_visible(timeout=RUN_MS)
        wait_idle(page)
        expect(back).to_be_enabled()  # on the same click, not one later
        if step < 6:
            expect(forward).to_be_enabled()
    expect(forward).to_be_disabled()
    back.click()
    expect(page.locator(MAIN).get_by_text("Step 5 of 6")).to_be_visible(timeout=RUN_MS)
    expect(forward).to_be_enabled()
    no_exception(page)
    assert_offline(fresh)


def test_a_shared_url_opens_a_fresh_session_in_another_browser(open_session, streamlit_server):
    """?doc= restores only in the browser that made the work: another browser holding the URL (a shared
    link, a projected screen) gets the first screen and a token of its own, and its runs never touch
    the owner's work."""
    owner = open_session()
    open_app(owner, streamlit_server.url)
    text = heldout_text(150_000, 300)
    paste_text(owner.page, text)
    run_and_wait(owner.page, "Pasted text")
    tokens = metric_value(owner.page, "Tokens")
    shared_url = owner.page.url
    token = re.search(r"doc=([\w-]+)", shared_url).group(1)
    secret = [c for c in owner.context.cookies() if c["name"] == "rmt_lens_browser"]
    assert secret and secret[0]["httpOnly"] and secret[0]["sameSite"] == "Strict"
    assert "rmt_lens_browser" not in owner.page.evaluate("() => document.cookie")  # no script can read it

    other = open_session()  # another browser context: another browser, its own cookies
    other.page.goto(shared_url, wait_until="domcontentloaded")
    wait_first_screen(other.page)
    expect(other.page.locator(SIDEBAR).get_by_text("Restored after a reload")).to_have_count(0)
    expect(other.page).not_to_have_url(re.compile(f"doc={re.escape(token)}"), timeout=UI_MS)
    choose_source(other.page, "Paste text")
    area = other.page.locator(SIDEBAR).locator('[data-testid="stTextArea"] textarea')
    assert area.input_value() == ""  # the owner's document is not shown
    paste_text(other.page, "Someone else's text about the harbour and the rain. " * 30)
    run_and_wait(other.page, "Pasted text")

    owner.page.reload(wait_until="domcontentloaded")  # the owner's work is still the owner's
    expect(owner.page.locator(MAIN).get_by_text("Pasted text · colour")).to_be_visible(timeout=RUN_MS)
    wait_idle(owner.page)
    expect(owner.page.locator(SIDEBAR).locator('[data-testid="stTextArea"] textarea')).to_have_value(text,
                                                                                                     timeout=RUN_MS)
    assert metric_value(owner.page, "Tokens") == tokens
    no_exception(owner.page)
    no_exception(other.page)
    assert_offline(owner, other)
