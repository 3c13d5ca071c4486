"""A fact-recall model's operating range, as its model card measured it.

The card of a shipped fact-recall model holds an ``operating_range`` entry (written by
:func:`operating_range_entry` when the model is shipped, from the same evaluation tables the
card prints): the task it was trained on, how many facts a document held in training, the
names it may be asked about, the answers it was trained to give, and the accuracy measured at
each document length (segments) in each held-out text. :func:`read_operating_range` reads it
back (or derives it from the card's ``evaluation_results`` tables for a card shipped without
the entry) so that the app, the CLI and ``rmt_core.ask`` word the range and warn outside it
from the card's own numbers, never from a constant.

It sits at the base of the package map (with rmt_core.questions): shipping (training/) writes the
entry, explain/ and studies/ read it, and explaining a model never imports the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .questions import ACTORS, OBJECTS, PLACES

# What each fact task's training documents held (as rmt_core.training.tasks.babi writes them).
TASK_TRAINING: dict[str, dict[str, Any]] = {
    "memorize": {"facts": "one", "question": "where one named person went (the fact at the start)"},
    "detect": {"facts": "one", "question": "where one named person last went"},
    "qa1": {"facts": "several", "question": "where one named person last went, among moves of several people"},
    "qa2": {"facts": "several", "question": "where a person or an object is"},
}
# The evaluation tables a card holds (key in evaluation_results -> the text they measured).
RECALL_TABLES: dict[str, str] = {"fact_recall": "held-out Austen (Persuasion)",
                                 "fact_recall_pydocs": "held-out Python docs"}
ACCURACY_COLUMN = "accuracy_random"  # question at a random offset of the last segment (as users ask)


@dataclass(frozen=True)
class OperatingRange:
    """What a model was trained and measured on.

    task: the training task ("detect"). facts: "one" or "several" facts per training document.
    question: what it answers, in words. names / answers: who may be asked about, what it
    answers with. accuracy: {text: {segments: accuracy}} as measured (question at a random
    offset of the last segment); empty when the card measured none.
    """

    task: str
    facts: str
    question: str
    names: tuple[str, ...]
    answers: tuple[str, ...]
    accuracy: dict[str, dict[int, float]]
    mentions: tuple[dict[str, Any], ...] = ()  # evaluation.evaluate_answer_mentions rows; () = not measured

    def mention_effect(self, segments: int) -> dict[str, dict[str, float]] | None:
        """What one trained answer word named outside the facts did at the measured length nearest
        `segments`: {where ("after" / "before" the facts): {"segments", "samples", "accuracy_without",
        "accuracy_with", "answered_mention"}}; None when the card measured none."""
        if not self.mentions:
            return None
        nearest = min({int(r["segments"]) for r in self.mentions}, key=lambda s: (abs(s - segments), -s))
        return {str(r["where"]): {k: float(r[k]) for k in ("segments", "samples", "accuracy_without", "accuracy_with",
                                                            "answered_mention")}
                for r in self.mentions if int(r["segments"]) == nearest}

    @property
    def measured_segments(self) -> list[int]:
        """Every document length (segments) some table measured, ascending."""
        return sorted({s for table in self.accuracy.values() for s in table})

    @property
    def max_segments(self) -> int | None:
        return max(self.measured_segments) if self.measured_segments else None

    def accuracy_near(self, segments: int) -> tuple[int, dict[str, float]] | None:
        """(the measured length nearest `segments`, {text: accuracy there}), None when nothing was measured."""
        measured = self.measured_segments
        if not measured:
            return None
        nearest = min(measured, key=lambda s: (abs(s - segments), -s))
        return nearest, {text: table[nearest] for text, table in self.accuracy.items() if nearest in table}

    def sentence(self) -> str:
        """The range in one sentence ("answers where one named person last went, in documents up to 32
        segments; measured ...")."""
        text = f"Answers {self.question}"
        if self.max_segments is None:
            return text + "; its model card measured no accuracy, so no range can be given."
        per = "one fact" if self.facts == "one" else f"{self.facts} facts"
        text += f", in documents up to {self.max_segments} segments (as measured) holding {per} (as in training)"
        parts = []
        for where, table in self.accuracy.items():
            low = min(table.values())
            parts.append(f"{where} {min(table)}-{max(table)} segments, accuracy ≥ {low:.3f}")
        return text + f" (measured: {'; '.join(parts)}). Beyond that nothing was measured."


def _accuracy_tables(results: dict[str, Any]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for key, where in RECALL_TABLES.items():
        rows = results.get(key) or []
        table = {int(r["segments"]): float(r[ACCURACY_COLUMN] if r.get(ACCURACY_COLUMN) is not None
                                            else r["accuracy_memory"])
                 for r in rows if isinstance(r, dict) and r.get("segments") is not None
                 and (r.get(ACCURACY_COLUMN) is not None or r.get("accuracy_memory") is not None)}
        if table:
            out[where] = dict(sorted(table.items()))
    return out


def operating_range_entry(task: str, results: dict[str, Any]) -> dict[str, Any] | None:
    """The card's ``operating_range`` entry (plain JSON) for a model trained on `task` whose
    evaluation tables are `results` (evaluation_results); None for a task that asks nothing."""
    if task not in TASK_TRAINING:
        return None
    names = ACTORS + tuple(f"the {o}" for o in OBJECTS) if task == "qa2" else ACTORS
    return {"task": task, **TASK_TRAINING[task], "names": list(names), "answers": list(PLACES),
            "accuracy": {where: {str(s): a for s, a in table.items()}
                         for where, table in _accuracy_tables(results).items()},
            "accuracy_column": ACCURACY_COLUMN,
            "mentions": [dict(r) for r in results.get("answer_mentions") or []]}


def read_operating_range(card: dict[str, Any], task: str) -> OperatingRange | None:
    """The operating range of a model card (its ``operating_range`` entry, else derived from its
    ``evaluation_results`` for the config's `task`); None for a model that answers no questions."""
    entry = card.get("operating_range")
    if not isinstance(entry, dict):
        entry = operating_range_entry(task, card.get("evaluation_results") or {})
    if not entry:
        return None
    try:
        accuracy = {str(where): {int(s): float(a) for s, a in table.items()}
                    for where, table in (entry.get("accuracy") or {}).items()}
        return OperatingRange(str(entry.get("task", task)), str(entry.get("facts", "one")),
                              str(entry.get("question", "where a named person is")),
                              tuple(str(n) for n in entry.get("names", ACTORS)),
                              tuple(str(a) for a in entry.get("answers", PLACES)), accuracy,
                              _mention_rows(entry.get("mentions")))
    except (TypeError, ValueError, AttributeError, KeyError):
        return None  # a malformed entry: treated as no measurement (the warnings say so)


def _mention_rows(rows: Any) -> tuple[dict[str, Any], ...]:
    """The card's answer-mention rows, each checked (a malformed one: TypeError / ValueError)."""
    out = []
    for row in rows or []:
        out.append({"segments": int(row["segments"]), "where": str(row["where"]), "samples": int(row["samples"]),
                    **{k: float(row[k]) for k in ("accuracy_without", "accuracy_with", "answered_mention")}})
    return tuple(out)


__all__ = ["OperatingRange", "operating_range_entry", "read_operating_range", "TASK_TRAINING", "RECALL_TABLES"]
