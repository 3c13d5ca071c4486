"""What a fact-recall model can be asked: the question format and the vocabulary of the shipped
bAbI-style tasks (Weston et al. 2015), in one low place that the trainer's tasks
(training/tasks/babi.py), shipping (a model card's ``questions``) and answers
(explain/answers.py) all read, so that explaining a model never imports the trainer.

A card's ``questions`` entry (card_questions) looks like ``{"template": "Where is {}?",
"entities": ["Mary", ...], "answers": ["bathroom", ...], "question_prefix": "\\nQuestion: ",
"answer_prefix": "\\nAnswer:"}``; a model trained on no questions gets ``{"entities": []}``.
"""
from __future__ import annotations

from typing import Any

ACTORS: tuple[str, ...] = ("Mary", "John", "Daniel", "Sandra")
PLACES: tuple[str, ...] = ("bathroom", "hallway", "garden", "office", "kitchen", "bedroom")
OBJECTS: tuple[str, ...] = ("football", "apple", "milk")
QUESTION_PREFIX = "\nQuestion: "
ANSWER_PREFIX = "\nAnswer:"
TEMPLATE = "Where is {}?"

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
