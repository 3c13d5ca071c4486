"""The Streamlit app through AppTest: first screen, every page, uploads, widgets, bad input."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import state  # noqa: E402

PAGES = ["screens/timeline.py", "screens/attention.py", "screens/memory.py", "screens/attribution.py", "screens/export.py"]
TIMEOUT = 240


@pytest.fixture(scope="module")
def first_screen():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    return at


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_first_screen_runs_the_demo_with_no_clicks(first_screen):
    at = first_screen
    _no_exception(at)
    trace = at.session_state[state.TRACE]
    assert trace.complete and trace.num_segments >= 2
    assert len(at.get("plotly_chart")) >= 1
    assert any("Question at the end" in m.value for m in at.markdown)


@pytest.mark.parametrize("page", PAGES)
def test_each_page_runs(first_screen, page):
    at = first_screen
    at.switch_page(page).run()
    _no_exception(at)
    assert len(at.get("plotly_chart")) >= 1


def test_changing_segment_layer_head_works(first_screen):
    at = first_screen
    at.switch_page("screens/attention.py").run()
    trace = at.session_state[state.TRACE]
    at.slider(key=state.SEGMENT).set_value(0).run()
    _no_exception(at)
    at.selectbox(key="att_layer").set_value(0).run()
    at.selectbox(key="att_head").set_value(1).run()
    _no_exception(at)
    assert at.session_state[state.SEGMENT] == 0
    # the model is not re-run by view changes: the same trace object stays
    assert at.session_state[state.TRACE] is trace


def test_pasted_text_runs_to_completion():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.radio(key=state.SOURCE).set_value("Paste text").run()
    at.text_area(key=state.PASTED).input("It is a truth universally acknowledged, that a single man " * 20).run()
    at.button[0].click().run()  # Run is the first button in the sidebar
    _no_exception(at)
    trace = at.session_state[state.TRACE]
    assert trace.complete and trace.text.startswith("It is a truth")


def test_a_folder_that_is_not_a_checkpoint_gets_a_message(tmp_path):
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key=state.CHECKPOINT).set_value("Local folder…").run()
    at.text_input(key=state.LOCAL_FOLDER).input(str(tmp_path)).run()
    _no_exception(at)
    assert any("not a checkpoint" in e.value for e in at.error)


def test_every_tour_step_renders():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.switch_page("screens/tour.py").run()
    _no_exception(at)
    titles = []
    for _ in range(6):
        titles.append(at.subheader[0].value)
        assert len(at.get("plotly_chart")) + len(at.get("html")) >= 1
        next_button = [b for b in at.button if b.key == "tour_next"][0]
        if next_button.disabled:
            break
        next_button.click().run()
        _no_exception(at)
    assert len(titles) == 6 and titles[0].startswith("1") and titles[-1].startswith("6")
    [b for b in at.button if b.key == "tour_back"][0].click().run()
    assert at.subheader[0].value.startswith("5")
    at.number_input(key="tour_seed").set_value(11).run()  # another sample works too
    _no_exception(at)


def test_paper_figures_page_renders():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.switch_page("screens/papers.py").run()
    _no_exception(at)
    assert len(at.get("plotly_chart")) >= 5


def test_switching_to_the_copy_model_runs_its_demo():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key=state.CHECKPOINT).set_value("copy-paper").run()
    at.radio(key=state.SOURCE).set_value("Copy task (demo)").run()
    at.button[0].click().run()
    _no_exception(at)
    trace = at.session_state[state.TRACE]
    assert trace.model_info["name"] == "copy-paper" and trace.num_segments == 6
    at.radio(key=state.SOURCE).set_value("Austen chapter (demo)").run()
    assert any("copy task" in w.value for w in at.warning)
