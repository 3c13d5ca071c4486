"""What a fact-recall model can be asked: the question format and the vocabulary of the shipped
bAbI-style tasks (Weston et al. 2015), in one low place that the trainer's tasks
(training/tasks/babi.py), shipping (a model card's ``questions``) and answers
(explain/answers.py) all read, so that explaining a model never imports the trainer.

A card's ``questions`` entry (card_questions) looks like ``{"template": "Where is {}?",
"entities": ["Mary", ...], "answers": ["bathroom", ...], "question_prefix": "\\nQuestion: ",
"answer_prefix": "\\nAnswer:"}``; a model trained on no questions gets ``{"entities": []}``.

The fact sentences of the trained form (``"Mary travelled to the office."``, ``"John got the
football there."``, ``"John dropped the football."``) are parsed here too (:func:`parse_facts`):
the trainer writes them, the answer warnings read them back. :class:`World` replays them (where
each person and object is, bAbI's rules), and :func:`stated_place` says where a document's own
sentences put the person or object a question asks about, and which sentences say so: the
trainer computes its answers with it, the app checks the model's answer against it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

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


# --------------------------------------------------------------------------- what the facts say
class World:
    """bAbI state (Weston et al. 2015, tasks 1-2): where actors are, who holds what, where dropped
    objects lie, updated one fact at a time."""

    def __init__(self) -> None:
        self.loc: dict[str, str] = {}
        self.holder: dict[str, str] = {}
        self.obj_loc: dict[str, str] = {}

    def can_apply(self, f: Fact) -> bool:
        """Whether `f` is possible now: a move always; a get of an object nobody holds by an actor whose
        place is known; a drop by the object's holder."""
        if f.kind == "move":
            return True
        if f.kind == "get":
            return f.actor in self.loc and f.target not in self.holder
        return self.holder.get(f.target) == f.actor

    def apply(self, f: Fact) -> None:
        """Update the state with one fact (invalid get/drop facts are ignored)."""
        if not self.can_apply(f):
            return
        if f.kind == "move":
            self.loc[f.actor] = f.target
        elif f.kind == "get":
            self.holder[f.target] = f.actor
            self.obj_loc.pop(f.target, None)
        else:
            del self.holder[f.target]
            self.obj_loc[f.target] = self.loc[f.actor]

    def where(self, entity: str) -> str | None:
        """Place of an actor or object ("the milk" or "milk"), or None if unknown."""
        entity = entity.removeprefix("the ")
        if entity in ACTORS:
            return self.loc.get(entity)
        if entity in self.holder:
            return self.loc.get(self.holder[entity])
        return self.obj_loc.get(entity)


@dataclass(frozen=True)
class StatedPlace:
    """Where a document's own fact sentences put one person or object (:func:`stated_place`).

    entity: as asked ("Sandra", "the milk"). place: the place the sentences give, None when they
    do not tell (then `reason` says why, in words for users). evidence: the sentences that give
    it, in document order: a person's last move; for an object, its last pick-up or drop and the
    carrier's move that places it. later_mentions: how often the bare name occurs (whole word)
    after the last evidence sentence, in text the parse does not read (a sentence such as "Sandra
    came back" is not of the trained form, so a later move may be missed).
    """

    entity: str
    place: str | None
    evidence: tuple[ParsedFact, ...] = ()
    reason: str = ""
    later_mentions: int = 0


def stated_place(document: str, entity: str) -> StatedPlace:
    """Where the fact sentences of `document` (its text without the question) put `entity`: every
    fact of the trained form (:func:`parse_facts`) replayed in order by :class:`World`, as the
    training data's answers are computed. Only sentences of the trained form are read: anything
    else in the document says nothing here. Never raises for str arguments."""
    name = entity.removeprefix("the ")
    world = World()
    last_move: dict[str, ParsedFact] = {}
    moves_before: dict[str, ParsedFact] = {}  # object -> its carrier's move that placed it when dropped
    last_object: dict[str, ParsedFact] = {}  # object -> its last applied get / drop
    for found in parse_facts(document):
        fact = found.fact
        applies = world.can_apply(fact)
        world.apply(fact)
        if fact.kind == "move":
            last_move[fact.actor] = found
        elif applies:
            last_object[fact.target] = found
            if fact.kind == "drop":
                moves_before[fact.target] = last_move[fact.actor]
    if name not in ACTORS and name not in OBJECTS:
        return StatedPlace(entity, None, (), f"the parse reads sentences about {', '.join(ACTORS)} and the "
                                             f"{', '.join(OBJECTS)} only, and “{name}” is none of them")
    place = world.where(entity)
    if name in ACTORS:
        evidence = (last_move[name],) if name in last_move else ()
        missing = (f"the document has no sentence of the form the model was trained on about {name} "
                   f"(such as “{name} went to the kitchen.”)")
    else:
        handled = last_object.get(name)
        if handled is None:
            evidence = ()
        elif handled.fact.kind == "drop":
            evidence = (moves_before[name], handled)
        else:
            move = last_move.get(handled.fact.actor)
            evidence = tuple(sorted((handled,) + ((move,) if move else ()), key=lambda f: f.start))
        missing = (f"no sentence of the form the model was trained on says who picked up the {name} "
                   f"(such as “John got the {name} there.”) and where they were")
    if place is None:
        return StatedPlace(entity, None, (), missing)
    end = max(f.end for f in evidence)
    return StatedPlace(entity, place, evidence, "", len(name_mentions(document[end:], entity)))


def answer_word_mentions(text: str, words: Sequence[str]) -> list[tuple[str, int]]:
    """(word, character start) of every whole-word occurrence (any case) of a trained answer word in
    `words` ("office") in `text` OUTSIDE its fact sentences (parse_facts), in text order: places the
    text names without stating a fact about them ("serving the office of high sheriff")."""
    if not words:
        return []
    facts = [(f.start, f.end) for f in parse_facts(text)]
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    return [(m.group(1).lower(), m.start()) for m in pattern.finditer(text)
            if not any(start <= m.start() < end for start, end in facts)]


def name_mentions(text: str, entity: str) -> list[int]:
    """Character starts of `entity` ("Mary", "the milk": the bare word) in `text` as a whole word;
    case-sensitive for names ("mary" in lower case is not the person), not for objects."""
    name = entity.removeprefix("the ")
    flags = 0 if name[:1].isupper() else re.IGNORECASE
    return [m.start() for m in re.finditer(rf"\b{re.escape(name)}\b", text, flags)]
