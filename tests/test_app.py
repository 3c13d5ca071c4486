"""The Streamlit app through AppTest: first screen, every page, uploads, widgets, bad input."""
from __future__ import annotations

import pytest

import rmt_core

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import state  # noqa: E402
from app.views.common import literal  # noqa: E402

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


def _run_button(at: AppTest):
    return next(b for b in at.button if b.label == "Run")


def test_pasted_text_runs_to_completion():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.radio(key=state.SOURCE).set_value("Paste text").run()
    at.text_area(key=state.PASTED).input("It is a truth universally acknowledged, that a single man " * 20)
    _run_button(at).click().run()  # one click: the form sends the text with it
    _no_exception(at)
    trace = at.session_state[state.TRACE]
    assert trace.complete and trace.text.startswith("It is a truth")


def test_a_folder_that_is_not_a_checkpoint_gets_a_message(tmp_path, monkeypatch):
    from app import settings

    monkeypatch.setenv(settings.CHECKPOINT_DIRS, str(tmp_path))  # the operator allowed this folder
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key=state.CHECKPOINT).set_value("Local folder…").run()
    at.text_input(key=state.LOCAL_FOLDER).input(str(tmp_path)).run()
    _no_exception(at)
    assert any("not a checkpoint" in e.value for e in at.error)


def test_a_folder_outside_the_allowed_ones_gets_one_message_and_no_pickle_box(tmp_path, monkeypatch):
    import torch

    from app import settings

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "pickled").mkdir(parents=True)
    outside.mkdir()
    torch.save({"w": torch.zeros(2)}, allowed / "pickled" / "pytorch_model.bin")
    (outside / "config.json").write_text("{}")
    monkeypatch.setenv(settings.CHECKPOINT_DIRS, str(allowed))
    monkeypatch.delenv(settings.ALLOW_PICKLE, raising=False)
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key=state.CHECKPOINT).set_value("Local folder…").run()
    seen = []
    for typed in (str(outside), str(outside / "missing"), "/root/.ssh"):
        at.text_input(key=state.LOCAL_FOLDER).input(typed).run()
        _no_exception(at)
        seen.append([e.value for e in at.error])
    assert seen[0] == seen[1] == seen[2] and "folders the person who started it allowed" in seen[0][0]
    at.text_input(key=state.LOCAL_FOLDER).input(str(allowed / "pickled")).run()
    _no_exception(at)
    assert any("does not read pickled files" in e.value for e in at.error)
    assert not [c for c in at.checkbox if "pickled" in c.label]  # no opt-in unless the operator allowed it
    monkeypatch.setenv(settings.ALLOW_PICKLE, "1")
    at.run()
    assert [c for c in at.checkbox if "pickled" in c.label]


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
    _run_button(at).click().run()
    _no_exception(at)
    trace = at.session_state[state.TRACE]
    assert trace.model_info["name"] == "copy-paper" and trace.num_segments == 6
    at.radio(key=state.SOURCE).set_value("Austen chapter (demo)").run()
    assert any("copy task" in w.value for w in at.warning)


# ---------------------------------------------------------------------- Ask, runs, reloads, item-5 fixes
def _ask(at: AppTest, question: str) -> AppTest:
    at.text_input(key=state.ASK_QUESTION).input(question)
    return next(b for b in at.button if b.label == "Ask").click().run()


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_ask_shows_the_answer_on_the_demo_document():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    document = at.session_state[state.DOCUMENT]
    fact = at.session_state[state.ANSWER].site.question  # the demo's own question, e.g. "Where is Mary?"
    _ask(at, fact.removeprefix("Where is ").rstrip("?").lower())  # typed loosely: "mary"
    _no_exception(at)
    trace, answer = at.session_state[state.TRACE], at.session_state[state.ANSWER]
    assert trace.text == document.ask_body() + f"\nQuestion: {fact}\nAnswer:"
    assert answer.trace is trace and answer.site.question == fact and len(answer.predictions) == 3
    assert answer.answer == document.answer  # the shipped model gets its demo right
    line = next(m.value for m in at.markdown if "Question at the end" in m.value)
    assert f"“{literal(fact)}”" in line and f"**“{literal(answer.answer)}”**" in line  # user text escaped
    assert answer.memory_segment is not None
    assert any(f"segment {answer.memory_segment}" in m.value for m in at.markdown)
    # "Open it on Attention": selects that segment and switches page
    next(b for b in at.button if b.label == "Open it on Attention").click().run()
    _no_exception(at)
    assert at.session_state[state.SEGMENT] == answer.memory_segment
    assert at.header[0].value == "Attention"


@pytest.mark.parametrize("question, message", [
    ("", "question is empty"), ("   ", "question is empty"),
    ("Who wrote Persuasion?", "not a question this model was trained on"),
    ("Where is " + "the very long-winded and extraordinarily verbose " * 6 + "Mary?", "longer than one segment"),
])
def test_bad_questions_get_a_message_and_the_trace_is_kept(first_screen, question, message):
    at = first_screen
    at.switch_page("screens/overview.py").run()
    trace = at.session_state[state.TRACE]
    _ask(at, question)
    _no_exception(at)
    assert any(message in e for e in _errors(at)), _errors(at)
    assert at.session_state[state.TRACE] is trace


def test_a_model_without_questions_says_what_it_cannot_answer():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key=state.CHECKPOINT).set_value("copy-paper").run()
    _no_exception(at)
    assert any("not on questions" in c.value for c in at.caption)
    assert not [b for b in at.button if b.label == "Ask"]
    # the pages say that the trace shown was made with another model
    assert any("not the selected model" in w.value and literal(rmt_core.DEFAULT_CHECKPOINT) in w.value
               for w in at.warning)


def test_empty_paste_says_why_nothing_runs():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    trace = at.session_state[state.TRACE]
    at.radio(key=state.SOURCE).set_value("Paste text").run()
    assert any("text box is empty" in c.value for c in at.caption)
    at.text_area(key=state.PASTED).input("   \n ")
    _run_button(at).click().run()
    _no_exception(at)
    assert any("text box is empty" in w.value for w in at.warning)
    assert at.session_state[state.TRACE] is trace


def _as_browser(monkeypatch, secret: str | None) -> None:
    """The next AppTest runs as a browser holding this cookie (app/server.py sets it in a real one)."""
    from app import runs

    monkeypatch.setattr(runs, "browser_secret", lambda: secret)


def test_a_reload_gets_the_document_and_the_trace_back(monkeypatch):
    text = "Mary went to the garden. It is a truth universally acknowledged, that a single man " * 12
    _as_browser(monkeypatch, "owner-browser-secret-0123456789")
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.radio(key=state.SOURCE).set_value("Paste text").run()
    at.text_area(key=state.PASTED).input(text)
    _run_button(at).click().run()
    trace, token = at.session_state[state.TRACE], at.session_state[state.TOKEN]
    assert at.query_params["doc"] == [token] or at.query_params["doc"] == token
    reloaded = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    reloaded.query_params["doc"] = token
    reloaded.run()
    _no_exception(reloaded)
    assert reloaded.session_state[state.PASTED] == text
    assert reloaded.radio(key=state.SOURCE).value == "Paste text"
    assert reloaded.session_state[state.TRACE] is trace  # not re-run: the finished trace itself
    assert any("Restored after a reload" in c.value for c in reloaded.caption)
    stranger = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    stranger.query_params["doc"] = "not-a-token"
    stranger.run()  # an unknown token: the first screen as usual
    assert stranger.session_state[state.TRACE].meta["document"] == "Fact recall (demo)"
    # the owner's URL in another browser: a fresh session with a token of its own, the owner's work untouched
    _as_browser(monkeypatch, "another-browser-secret-98765432")
    other = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    other.query_params["doc"] = token
    other.run()
    _no_exception(other)
    assert other.session_state[state.TOKEN] != token
    assert other.session_state[state.TRACE].meta["document"] == "Fact recall (demo)"
    assert not other.session_state.get(state.PASTED)
    _as_browser(monkeypatch, None)  # no cookie at all (app/main.py run directly): never restored either
    bare = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    bare.query_params["doc"] = token
    bare.run()
    assert bare.session_state[state.TOKEN] != token and not bare.session_state.get(state.PASTED)


def test_forty_demo_visits_keep_an_earlier_users_document(monkeypatch):
    """Demo visits share one trace and never enter the store: a user's pasted work survives them."""
    from app import runs

    text = "Anne walked to the harbour before the rain. " * 30
    _as_browser(monkeypatch, "first-user-secret-0123456789ab")
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    demo_trace = at.session_state[state.TRACE]
    at.radio(key=state.SOURCE).set_value("Paste text").run()
    at.text_area(key=state.PASTED).input(text)
    _run_button(at).click().run()
    token = at.session_state[state.TOKEN]
    stored = len(runs.store())
    for i in range(40):
        _as_browser(monkeypatch, f"visitor-{i:02d}-secret-0123456789")
        visit = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
        visit.run()
        assert visit.session_state[state.TRACE] is demo_trace  # traced once per server, shared
    assert len(runs.store()) == stored  # demos never took a slot
    _as_browser(monkeypatch, "first-user-secret-0123456789ab")
    reloaded = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    reloaded.query_params["doc"] = token
    reloaded.run()
    assert reloaded.session_state[state.PASTED] == text
    assert reloaded.session_state[state.TRACE].text == text


def test_text_the_model_cannot_read_gets_a_warning():
    russian = ("Все счастливые семьи похожи друг на друга, каждая несчастливая семья несчастлива по-своему. "
               "Всё смешалось в доме Облонских. ") * 4
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    assert not any("outside what the model knows" in w.value for w in at.warning)  # Austen: fine
    at.radio(key=state.SOURCE).set_value("Paste text").run()
    at.text_area(key=state.PASTED).input(russian)
    _run_button(at).click().run()
    _no_exception(at)
    warning = next(w.value for w in at.warning if "outside what the model knows" in w.value)
    assert "byte pieces" in warning or "mean loss" in warning


def test_long_documents_show_a_window_around_the_selected_segment():
    from rmt_core.training.corpus import load_corpus

    text = load_corpus("heldout")[30_000:75_000]  # about 11k tokens: more than one window
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.radio(key=state.SOURCE).set_value("Paste text").run()
    at.text_area(key=state.PASTED).input(text)
    _run_button(at).click().run()
    trace = at.session_state[state.TRACE]
    assert trace.num_tokens > 8_000
    html = lambda: next(h.proto.body for h in at.get("html") if "rmt-doc" in h.proto.body)  # noqa: E731
    last = trace.num_segments - 1
    # no question, so no answer's evidence to open at: the run selects the start, and says why
    assert at.session_state[state.SEGMENT] == 0 and ">§0<" in html() and f">§{last}<" not in html()
    assert any(c.value.startswith("Opened at the start") for c in at.caption)
    at.number_input(key="overview_doc_jump").set_value(last).run()  # jump anywhere
    _no_exception(at)
    assert f">§{last}<" in html() and ">§0<" not in html()
    at.number_input(key="overview_doc_jump").set_value(3).run()
    _no_exception(at)
    assert at.session_state[state.SEGMENT] == 3
    assert ">§3<" in html() and f">§{last}<" not in html()
    assert any("Showing segments 0–" in c.value for c in at.caption)


def test_tour_buttons_are_right_on_the_click_that_moves():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.switch_page("screens/tour.py").run()
    button = lambda key: next(b for b in at.button if b.key == key)  # noqa: E731
    assert button("tour_back").disabled and not button("tour_next").disabled
    button("tour_next").click().run()
    assert at.subheader[0].value.startswith("2") and not button("tour_back").disabled
    for _ in range(4):
        button("tour_next").click().run()
    assert at.subheader[0].value.startswith("6") and button("tour_next").disabled
    button("tour_back").click().run()
    assert at.subheader[0].value.startswith("5") and not button("tour_next").disabled


def test_the_default_intervention_changes_something(first_screen):
    at = first_screen
    at.switch_page("screens/attribution.py").run()
    _no_exception(at)
    at.session_state["attr_tab"] = "Interventions"  # only the open tab is built
    at.run()
    _no_exception(at)
    trace, answer = at.session_state[state.TRACE], at.session_state[state.ANSWER]
    chosen = next(s for s in at.selectbox if s.label == "Before segment").value
    assert chosen == answer.memory_segment + 1 != 0
    line = next(m.value for m in at.markdown if "before:" in m.value)
    assert "the answer changed" in line, line


def test_slot_norm_figures_have_one_column_per_segment(first_screen):
    from rmt_core.viz import figures

    trace = first_screen.session_state[state.TRACE]
    fig = figures.standard_figures(trace)["slot_norms"]
    assert list(fig.data[0].x) == list(range(trace.num_segments))


def test_whitespace_tokens_are_drawn_visibly():
    from app.views.common import visible_token

    from rmt_core.token_text import CONTINUATION

    assert visible_token(" the") == "␣the" and visible_token("\n\n") == "↵↵"
    assert visible_token("") == CONTINUATION  # the second piece of a character split over tokens


def test_attribution_tabs_take_any_method_and_baseline(first_screen):
    at = first_screen
    at.switch_page("screens/attribution.py").run()
    # first_screen is ONE AppTest session for the whole module: an earlier test may have left another
    # segment selected (test_changing_segment_layer_head_works selects 0, which has no earlier segment
    # to attribute through memory). Select the last segment here so the test does not depend on order.
    last = at.session_state[state.TRACE].num_segments - 1
    at.slider(key=state.SEGMENT).set_value(last).run()
    assert at.session_state[state.SEGMENT] == last
    at.session_state["attr_tab"] = "Read slots"
    at.selectbox(key="attr_method").set_value("ablation").run()
    at.selectbox(key="attr_read_baseline").set_value("zeros").run()
    _no_exception(at)
    cache = at.session_state[state.ATTRIBUTION_CACHE]
    read = next(v for k, v in cache.items() if k[1:2] == ("read",) and k[-2:] == ("ablation", "zeros"))
    assert read.method == "ablation" and read.baseline == "zeros"
    assert any("Method: ablation, baseline: zeros" in c.value for c in at.caption)
    at.selectbox(key="attr_method").set_value("saliency").run()
    at.session_state["attr_tab"] = "Through memory"
    at.run()
    next(b for b in at.button if b.key == "attr_through_go").click().run()
    _no_exception(at)
    through = next(v for k, v in at.session_state[state.ATTRIBUTION_CACHE].items() if k[1:2] == ("through",))
    assert through.method == "saliency" and through.baseline is None and through.segment == last
    earlier, own = at.dataframe[0].value, at.dataframe[1].value  # through memory, and the segment's own tokens apart
    for table in (earlier, own):
        assert len(table) == 10 and list(table.columns) == ["rank", "document_position", "segment", "position",
                                                            "token", "score"]
    assert (earlier["segment"] < through.segment).all() and (own["segment"] == through.segment).all()


def test_memory_page_draws_every_step_of_a_chosen_range(first_screen, monkeypatch):
    import json

    from rmt_core.viz import figures

    monkeypatch.setattr(figures, "TRAJECTORY_STEPS", 4)  # the demo's 9 steps are then more than are drawn at once
    at = first_screen
    at.switch_page("screens/memory.py").run()
    _no_exception(at)
    last = at.session_state[state.TRACE].num_segments
    trajectory = lambda: next(s for s in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))  # noqa: E731
                              if s["layout"]["title"]["text"].startswith("Memory trajectory"))
    assert f"4 of {last + 1} steps drawn" in trajectory()["layout"]["title"]["text"]
    at.slider(key=f"mem_window_{last}").set_value((2, 5)).run()
    _no_exception(at)
    spec = trajectory()
    assert "steps 2–5" in spec["layout"]["title"]["text"]
    texts = spec["data"][0]["text"]
    assert len(texts) == 4 and texts[0].startswith("slot 0, after segment 1<br>decodes to: ")


def test_attribution_after_asking_explains_the_models_answer():
    """After Ask, the document ends with "Answer:" and nothing follows its last token: the Read slots
    tab explains the model's own answer there instead of failing."""
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    fact = at.session_state[state.ANSWER].site.question
    _ask(at, fact.removeprefix("Where is ").rstrip("?"))
    answer = at.session_state[state.ANSWER]
    trace = at.session_state[state.TRACE]
    last = trace.num_segments - 1
    at.slider(key=state.SEGMENT).set_value(last).run()  # the pages open at the fact's segment: go to the answer's
    at.switch_page("screens/attribution.py").run()
    at.session_state["attr_tab"] = "Read slots"
    at.run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    read = next(v for k, v in at.session_state[state.ATTRIBUTION_CACHE].items() if k[1:2] == ("read",))
    assert (read.segment, read.position) == (last, trace.segments[last].num_tokens - 1)
    assert read.target_id == answer.predictions[0].token_id


def test_warnings_are_shown_under_the_answer():
    """Ask the demo document about a person it never names: the answer is shown with the warning under it."""
    from rmt_core.explain.answer_warnings import name_occurs
    from rmt_core.training.tasks.babi import ACTORS

    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    body = at.session_state[state.DOCUMENT].ask_body()
    absent = next(a for a in ACTORS if not name_occurs(body, a))
    _ask(at, f"Where is {absent}?")
    _no_exception(at)
    answer = at.session_state[state.ANSWER]
    assert "name_absent" in {w.code for w in answer.warnings}
    shown = [w.value for w in at.warning]
    assert any(f"“{absent}” does not occur in the document" in w for w in shown), shown
    assert any("documents up to 32 segments" in c.value for c in at.caption)  # the Ask box words the range
    present = next(a for a in ACTORS if name_occurs(body, a))  # control: the demo's own person, no such warning
    _ask(at, f"Where is {present}?")
    assert not any("does not occur in the document" in w.value for w in at.warning)


def test_upload_limits_are_worded_for_the_app(monkeypatch):
    """A document over a limit: the app's message offers what it can do (a button that reads the
    start, the server's setting), never Python arguments; the button's read keeps the start."""
    from app import services
    from rmt_core import DocumentError
    from rmt_core.io.documents import DocumentLimits

    monkeypatch.setattr(services, "upload_limits", lambda: DocumentLimits(max_chars=100, max_bytes=10_000))
    with pytest.raises(DocumentError) as info:
        services.read_upload("long.txt", b"word " * 100)
    exc = info.value
    assert services.truncate_action(exc) == "Read the first 100 characters"
    assert "Read the first 100 characters" in str(exc) and "500 characters" in str(exc)
    for python_words in ("truncate", "DocumentLimits", "max_chars"):
        assert python_words not in str(exc)
    doc = services.read_upload("long.txt", b"word " * 100, truncate=True)
    assert len(doc.text) == 100 and "Truncated to the first 100 characters" in doc.note
    with pytest.raises(DocumentError) as info:
        services.read_upload("big.txt", b"x" * 10_001)
    assert services.truncate_action(info.value) is None
    assert services.MAX_UPLOAD_ENV in str(info.value) and "DocumentLimits" not in str(info.value)
    assert "markdown" in [e.lstrip(".") for e in services.upload_extensions()]
