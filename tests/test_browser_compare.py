"""The Compare page in Chromium: the demo beside the same document with its fact changed, offline."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
sys.path.insert(0, str(Path(__file__).parent))

from browser_support import (  # noqa: E402,F401 - fixtures are used by name
    ALERT, CHART, EXCEPTION, MAIN, RUN_MS, assert_offline, browser, fresh, goto_page, open_session, screenshot,
    streamlit_server, wait_idle)

pytestmark = pytest.mark.browser


def test_compare_a_changed_fact_side_by_side(fresh):
    from playwright.sync_api import expect

    page = fresh.page
    assert goto_page(page, "Compare") == "Compare two runs"
    area = page.locator(MAIN).locator('[data-testid="stTextArea"] textarea')
    text = area.input_value()
    assert "Question:" not in text  # the document without its question: the question has a box of its own
    asked = page.locator(MAIN).get_by_text(re.compile(r"This run was asked “Where is \w+\?” \(the document's answer"))
    expect(asked).to_be_visible()
    said = asked.inner_text()
    question, answer = re.search(r"“(Where is \w+\?)”", said).group(1), re.search(r"answer: “(\w+)”", said).group(1)
    assert f"will be asked “{question}”, the same question" in said
    area.fill(text.replace(answer, "kitchen" if answer != "kitchen" else "garden"))
    page.locator(MAIN).get_by_role("button", name="Trace and compare").click()
    expect(page.locator(MAIN).get_by_text("The memories first diverge LEAVING segment")).to_be_visible(timeout=RUN_MS)
    expect(page.locator(MAIN).get_by_text(f"Question answered — this run: “{question}” · another document: "
                                          f"“{question}”")).to_be_visible()
    wait_idle(page)
    assert page.locator(f"{MAIN} {CHART}").count() >= 3
    assert page.locator(EXCEPTION).count() == 0
    page.locator(MAIN).get_by_role("button", name=re.compile(r"Run the sweep")).click()
    expect(page.locator(MAIN).get_by_text("Click a cell to open that patched run")).to_be_visible(timeout=RUN_MS)
    wait_idle(page)
    assert page.locator(EXCEPTION).count() == 0
    screenshot(page, "page-compare-sweep")
    assert_offline(fresh)
