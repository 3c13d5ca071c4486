"""Model cards carry `questions`: shipping writes them, answers reads them, explain needs no trainer."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from rmt_core.explain import answers
from rmt_core.questions import ACTORS, PLACES, card_questions
from rmt_core.training.shipping import refresh_card

from conftest import make_model

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def test_every_shipped_card_says_what_its_model_can_be_asked():
    for folder in sorted(p for p in CHECKPOINTS.iterdir() if (p / "config.json").is_file()):
        config = json.loads((folder / "config.json").read_text())
        assert config["card"]["questions"] == card_questions(config["rmt"]["task"]), folder.name
        # Every card names its memory type (written by refresh_card for configs older than the field).
        expected = "associative" if folder.name.startswith("armt-") else "tokens"
        assert config["rmt"]["memory"] == expected, folder.name


def test_question_spec_reads_the_card():
    model = make_model("gpt2", task="")  # a language model by its task, but its card says otherwise
    card = {"questions": card_questions("detect")}
    spec = answers.question_spec(model, card)
    assert spec.answerable and spec.entities == ACTORS and spec.answers == PLACES
    assert not answers.question_spec(model, {"questions": card_questions("copy")}).answerable  # negative control


def test_refresh_card_changes_only_the_config(tmp_path):
    source = CHECKPOINTS / "copy-paper"
    folder = shutil.copytree(source, tmp_path / "copy")
    config = json.loads((folder / "config.json").read_text())
    del config["card"]["questions"], config["rmt"]["memory"]
    (folder / "config.json").write_text(json.dumps(config))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.name != "config.json"}
    refresh_card(folder)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.name != "config.json"}
    assert before == after
    refreshed = json.loads((folder / "config.json").read_text())
    assert refreshed["card"]["questions"] == {"entities": []} and refreshed["rmt"]["memory"] == "tokens"
