"""What a fact-recall model can be asked: the question format and the vocabulary of the shipped
bAbI-style tasks (Weston et al. 2015), in one low place that the trainer's tasks
(training/tasks/babi.py), shipping (a model card's ``questions``) and answers
(explain/answers.py) all read, so that explaining a model never imports the trainer.

A card's ``questions`` entry (card_questions) looks like ``{"template": "Where is {}?",
"entities": ["Mary", ...], "answers": ["bathroom", ...], "question_prefix": "\\nQuestion: ",
"answer_prefix": "\\nAnswer:"}``; a model trained on no questions gets ``{"entities": []}``.

The fact sentences of the trained form (``"Mary travelled to the office."``, ``"John got the
football there."``, ``"John dropped the football."``) are parsed here too (:func:`parse_facts`):
the trainer writes them, the answer warnings read them back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ACTORS: tuple[str, ...] = ("Mary", "John", "Daniel", "Sandra")
PLACES: tuple[str, ...] = ("bathroom", "hallway", "garden", "office", "kitchen", "bedroom")
OBJECTS: tuple[str, ...] = ("football", "apple", "milk")
QUESTION_PREFIX = "\nQuestion: "
ANSWER_PREFIX = "\nAnswer:"
TEMPLATE = "Where is {}?"
MOVE_VERBS: tuple[str, ...] = ("moved", "went", "journeyed", "travelled")
GET_VERBS: tuple[str, ...] = ("got", "grabbed", "picked up", "took")
DROP_VERBS: tuple[str, ...] = ("dropped", "discarded", "put down", "left")

# Tasks whose models answer "Where is X?" and what X may be.
QUESTION_TASKS: dict[str, tuple[str, ...]] = {
    "memorize": ACTORS, "detect": ACTORS, "qa1": ACTORS, "qa2": ACTORS + tuple(f"the {o}" for o in OBJECTS),
}


def card_questions(task: str) -> dict[str, Any]:
    """The ``questions`` entry a model card carries for a model trained on `task` (see the module)."""
    if task not in QUESTION_TASKS:
        return {"entities": []}
    return {"template": TEMPLATE, "entities": list(QUESTION_TASKS[task]), "answers": list(PLACES),
            "question_prefix": QUESTION_PREFIX, "answer_prefix": ANSWER_PREFIX}


# --------------------------------------------------------------------------- fact sentences
_A = "|".join(ACTORS)
_P = "|".join(PLACES)
_O = "|".join(OBJECTS)
MOVE_RE = re.compile(rf"\b({_A}) ({'|'.join(MOVE_VERBS)}) to the ({_P})\.")
GET_RE = re.compile(rf"\b({_A}) ({'|'.join(GET_VERBS)}) the ({_O}) there\.")
DROP_RE = re.compile(rf"\b({_A}) ({'|'.join(DROP_VERBS)}) the ({_O})\.")
QUESTION_RE = re.compile(rf"\nQuestion: Where is ((?:the )?(?:{_A}|{_O}))\?\nAnswer:")
FACT_RE = re.compile(f"{MOVE_RE.pattern}|{GET_RE.pattern}|{DROP_RE.pattern}")


@dataclass(frozen=True)
class Fact:
    """One fact sentence: ``kind`` is "move", "get" or "drop"."""

    kind: str
    actor: str
    verb: str
    target: str  # the place for "move", the object otherwise

    @property
    def sentence(self) -> str:
        if self.kind == "move":
            return f"{self.actor} {self.verb} to the {self.target}."
        if self.kind == "get":
            return f"{self.actor} {self.verb} the {self.target} there."
        return f"{self.actor} {self.verb} the {self.target}."


@dataclass(frozen=True)
class ParsedFact:
    """A fact found in a text, with its character span."""

    start: int
    end: int
    fact: Fact


def parse_facts(text: str) -> list[ParsedFact]:
    """All fact sentences of the trained form in ``text``, in order, with character spans
    (``start``/``end``: character offsets into ``text``). Never raises for a str."""
    out = []
    for m in FACT_RE.finditer(text):
        g = m.groups()
        if g[0] is not None:
            f = Fact("move", g[0], g[1], g[2])
        elif g[3] is not None:
            f = Fact("get", g[3], g[4], g[5])
        else:
            f = Fact("drop", g[6], g[7], g[8])
        out.append(ParsedFact(m.start(), m.end(), f))
    return out
