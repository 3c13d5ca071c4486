"""The Study page through AppTest: open a study folder, its heatmap, a cell's samples, a sample
opened as the trace every page shows; a folder that is not a study gets a message."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import state  # noqa: E402

TIMEOUT = 240


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    import rmt_core
    from rmt_core.studies.measures import MeasureConfig
    from rmt_core.studies.runner import run_study
    from rmt_core.studies.source import BabilongSource

    directory = tmp_path_factory.mktemp("app_study")
    model = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu")
    run_study(directory, BabilongSource("detect", [2, 3], [10, 90], 1, seed=2), rmt_core.DEFAULT_CHECKPOINT, model,
              config=MeasureConfig(attribution_steps=0, keep_states=False))
    return directory


def _study_page():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.switch_page("screens/study.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_folder_that_is_not_a_study_gets_a_message(tmp_path):
    at = _study_page()
    at.text_input(key="study_folder").set_value(str(tmp_path)).run()
    assert not at.exception
    assert any("not a study folder" in e.value for e in at.error)


def test_open_a_study_list_a_cell_and_open_a_sample_as_the_trace(study_dir):
    at = _study_page()
    at.text_input(key="study_folder").set_value(str(study_dir)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) >= 1
    assert at.selectbox(key="study_sample").options[0].startswith("detect-s02-d010")
    at.selectbox(key="study_sample").set_value(at.selectbox(key="study_sample").options[0]).run()
    next(b for b in at.button if b.label.startswith("Open as a trace")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.run()  # the run's result is collected on the next script run
    trace = at.session_state[state.TRACE]
    assert trace.meta.get("document") == "study sample detect-s02-d010-i000" and trace.num_segments == 2


def test_a_study_started_on_the_page_survives_a_page_switch(monkeypatch, tmp_path):
    import time

    from app import study_jobs

    monkeypatch.setattr(study_jobs, "STUDY_ROOT", tmp_path)
    at = _study_page()
    form_inputs = {t.label: t for t in at.text_input}
    form_inputs["Lengths (segments)"].set_value("2")
    form_inputs["Fact depths (%)"].set_value("50")
    {n.label: n for n in at.number_input}["Attribution steps"].set_value(0)
    {n.label: n for n in at.number_input}["Samples per cell"].set_value(2)
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = at.session_state["study_job"]
    at.switch_page("screens/overview.py").run()  # a page switch does not stop it
    deadline = time.monotonic() + 120
    while job.running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.finished and job.error is None and job.done == job.total == 2
    at.switch_page("screens/study.py").run()
    assert any("Study finished: 2 of 2" in s.value for s in at.success)
    assert str(tmp_path) in at.text_input(key="study_folder").value  # the folder box kept it
    assert len(at.get("plotly_chart")) >= 1
