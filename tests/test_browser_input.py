"""User text in a real browser (issue 28 item 4, issue 29 item 5): shown as typed, never as markup.

A pasted document ending in `Question: ![q](http://host.example/q.png) $HOME 2*3*4 Where is Mary?`
must not make the page request that URL (every request leaving 127.0.0.1 is recorded by the
offline guard, tests/browser_support.py) and the answer panel shows the question character
for character: no image, no KaTeX, no emphasis, no link. Chromium via playwright; skipped LOUDLY
without it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("streamlit")

from browser_support import (  # noqa: E402,F401 - fixtures are used by name
    MAIN, RUN_MS, SIDEBAR, assert_offline, browser, fresh, open_session, paste_text, run_button, screenshot,
    streamlit_server, wait_idle,
)

pytestmark = pytest.mark.browser

URL = "http://host.example/q.png"
QUESTION = f"![q]({URL}) $HOME 2*3*4 <b>x</b> :smile: Where is Mary?"


def expect(locator):
    from playwright.sync_api import expect as _expect

    return _expect(locator)


def test_a_documents_question_is_shown_as_typed_and_nothing_is_fetched(fresh):
    page = fresh.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    body = "Mary went to the garden. She paid $5 for *Persuasion* at www.example.com. " * 6
    paste_text(page, f"{body}\nQuestion: {QUESTION}\nAnswer:")
    run_button(page).click()
    panel = page.locator(MAIN).locator('[data-testid="stMarkdownContainer"]', has_text="Question at the end").first
    expect(panel).to_be_visible(timeout=RUN_MS)
    wait_idle(page)
    shown = panel.inner_text().replace("\u2060", "")  # the invisible word joiner that keeps a URL text
    assert f"“{QUESTION}”" in shown, shown
    main = page.locator(MAIN)
    assert main.locator(f'img[src="{URL}"]').count() == 0
    assert main.locator(f'a[href="{URL}"]').count() == 0
    assert panel.locator(".katex, em, img, a").count() == 0
    caption = page.locator(MAIN).get_by_text("Pasted text · question")  # the caption names the traced question
    expect(caption).to_be_visible()
    assert f"“{QUESTION}”" in caption.inner_text().replace("\u2060", ""), caption.inner_text()  # as typed there too
    screenshot(page, "markup-as-typed")
    assert not [u for u in requested if "host.example" in u], requested
    assert_offline(fresh)  # no request left the machine at all (the guard records and aborts them)
