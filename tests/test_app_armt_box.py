"""The sidebar's local-checkpoint box for the authors' ARMT (AppTest): it offers the memory options
neither the files nor the weights decide, prefilled with the loader's default and saying so, asks
for the heads gating hides, and names the box whose value does not fit."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import settings, state  # noqa: E402
from app.views.common import literal  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "armt"
TIMEOUT = 240


def boxes(at: AppTest, kind: str) -> dict[str, object]:
    """The memory-option boxes on screen (checkboxes or number inputs), by label."""
    widgets = at.checkbox if kind == "checkbox" else at.number_input
    return {w.label: w for w in widgets if w.key and w.key.startswith(state.LOCAL_MEMORY_OPTION)}


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.slow
def test_the_box_offers_what_neither_files_nor_weights_decide_and_names_the_box_at_fault(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.CHECKPOINT_DIRS, str(tmp_path))
    case = tmp_path / "gating"
    shutil.copytree(FIXTURES / "gpt2_exp_heads_gating", case)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key=state.CHECKPOINT).set_value("Local folder…").run()
    at.text_input(key=state.LOCAL_FOLDER).input(str(case)).run()
    _no_exception(at)
    ticks = boxes(at, "checkbox")
    assert {name: box.value for name, box in ticks.items()} == {
        "normalize_features": True, "correction": True, "use_denom": True}  # the loader's defaults for this file
    (heads,) = boxes(at, "number").values()
    assert heads.label == "n_heads" and heads.value is None  # gating hides it: no default
    captions = " ".join(c.value for c in at.caption)
    assert literal("prefilled with the loader's defaults (normalize_features=on, correction=on, use_denom=on: "
                   "experimental-branch maths: only that code has heads or gating)") in captions
    assert literal("the number of heads, which gating hides (W_mb is d x d) (the n_heads box)") in captions
    assert not at.error

    at.number_input(key=state.LOCAL_SEGMENT_SIZE).set_value(8).run()
    at.text_input(key=state.LOCAL_BACKBONE).input(str(case / "backbone")).run()
    heads.set_value(3).run()  # does not divide d_mem = 4
    _no_exception(at)
    errors = [e.value for e in at.error]
    assert any(literal("the n_heads box: memory_options n_heads=3 must divide d_mem=4") in e for e in errors), errors

    boxes(at, "number")["n_heads"].set_value(2).run()
    boxes(at, "checkbox")["correction"].uncheck().run()
    _no_exception(at)
    errors = [e.value for e in at.error]
    assert not any("Could not load" in e or "unexpected" in e for e in errors), errors
    # their files have no tokenizer, nor has this backbone folder: said, instead of a demo that cannot be read
    assert any("This model has no tokenizer" in e for e in errors), errors
    facts = at.table[-1].value  # the sidebar's model facts: the options the model was built with
    assert facts["segment size"].iloc[0] == "8" and facts["memory tokens"].iloc[0] == "4"
    memory = facts["memory"].iloc[0]
    for part in ("associative", "correction=off", "n_heads=2", "normalize_features=on", "gating=on", "d_mem=4"):
        assert literal(part) in memory, memory

    other = tmp_path / "fa"  # another ARMT gets boxes of its own, with its own defaults
    shutil.copytree(FIXTURES / "gpt2_fa", other)
    at.text_input(key=state.LOCAL_FOLDER).input(str(other)).run()
    _no_exception(at)
    assert {name: box.value for name, box in boxes(at, "checkbox").items()} == {
        "normalize_features": False, "correction": True, "use_denom": True}
    assert not boxes(at, "number")  # its weights show the heads
    assert literal("framework_accel maths, that of the published GPT-2 BABILong checkpoints") in " ".join(
        c.value for c in at.caption)
