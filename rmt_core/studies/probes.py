"""Linear probes of memory: can the fact's answer be read off the memory written after it?

Data: each scored row's ``memory_after_write`` (ages, slots, hidden): the memory written by the
fact's segment (age 0) and by every later segment up to the one the question reads. Label: the
row's answer. One scikit-learn ``LogisticRegression`` per slot (and one on all slots joined) is
fitted on the states of every age of the training samples and scored per age on held-out
samples (``GroupShuffleSplit`` by sample: no sample's states are in both halves). A negative
control fits the joined probe on shuffled labels. An associative memory (ARMT) has no slots: its
rows keep per-layer features of the state instead (explain.associative.state_summary: 1^T A_l, d
numbers per layer), so the probe axis is the layer (ProbeResult.axis), one probe per layer.

:func:`causal_check` then moves one slot (an associative memory: one layer's state summary, by
explain.associative.push_summary) of the memory entering the segment after the write along the
probe's direction from the answer towards another class, through the public
:func:`rmt_core.explain.interventions.intervene`, and measures the answer's probability before and
after, against the same push in a random direction (a control of the same norm).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .measures import states_of
from .source import StudyError


@dataclass
class ProbeResult:
    """Held-out accuracy per slot and age (slots x ages; NaN where an age has no held-out state); an
    associative memory's: per layer (axis "layer"; the array keeps the name `slots`).

    joined: (ages,) accuracy of the probe on all slots joined; shuffled: the same probe fitted on
    shuffled labels (negative control); chance: share of the most frequent class among the held-out
    states; classes: the answers; counts: held-out states per age; train/test: sample ids."""

    slots: np.ndarray
    joined: np.ndarray
    shuffled: np.ndarray
    chance: float
    classes: list[str]
    counts: np.ndarray
    train: list[str]
    test: list[str]
    models: list[Any] = field(default_factory=list, repr=False)  # per-slot fitted probes
    joined_model: Any = field(default=None, repr=False)
    axis: str = "slot"  # what the first axis of `slots` is: "slot", or "layer" (associative memory)

    def to_rows(self) -> list[dict[str, Any]]:
        out = []
        for age in range(self.slots.shape[1]):
            row = {"age": age, "held_out_states": int(self.counts[age]), "joined": _num(self.joined[age]),
                   "shuffled_control": _num(self.shuffled[age]), "chance": self.chance}
            row.update({f"{self.axis}_{k}": _num(self.slots[k, age]) for k in range(self.slots.shape[0])})
            out.append(row)
        return out


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def probe_inputs(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[str], list[np.ndarray]]:
    """(sample ids, answers, states (ages, slots, hidden)) of the scored rows that kept their memory."""
    ids, labels, states = [], [], []
    for r in rows:
        s = states_of(r) if r.get("error") is None else None
        if s is not None and r.get("answer"):
            ids.append(r["sample_id"]), labels.append(r["answer"]), states.append(s)
    return ids, labels, states


def fit_probes(rows: Sequence[dict[str, Any]], test_size: float = 0.3, seed: int = 0, max_ages: int | None = None,
               C: float = 1.0) -> ProbeResult:
    """Fit and score the probes (see the module docstring). Raises StudyError when fewer than 4
    samples have memory states or only one answer occurs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit

    ids, labels, states = probe_inputs(rows)
    if len(ids) < 4 or len(set(labels)) < 2:
        raise StudyError(f"probes need memory states of at least 4 samples with 2 or more answers; this study has "
                         f"{len(ids)} samples with states and {len(set(labels))} answers.")
    ages = max(s.shape[0] for s in states) if max_ages is None else max_ages
    m = states[0].shape[1]
    sample_idx = np.arange(len(ids))
    train_idx, test_idx = next(GroupShuffleSplit(1, test_size=test_size, random_state=seed)
                               .split(sample_idx, groups=sample_idx))
    if len({labels[i] for i in train_idx}) < 2:
        raise StudyError("the training half of the probe split holds a single answer; run more samples.")

    def stack(idx: np.ndarray, age: int | None):
        xs, ys = [], []
        for i in idx:
            for a in range(min(states[i].shape[0], ages)):
                if age is None or a == age:
                    xs.append(states[i][a]), ys.append(labels[i])
        return (np.stack(xs) if xs else np.zeros((0, m, states[0].shape[2]))), np.array(ys)

    x_train, y_train = stack(train_idx, None)  # (N, m, d)
    rng = np.random.default_rng(seed)

    def fit(x: np.ndarray, y: np.ndarray):
        return LogisticRegression(C=C, max_iter=2000).fit(x, y)

    models = [fit(x_train[:, k], y_train) for k in range(m)]
    joined_model = fit(x_train.reshape(len(x_train), -1), y_train)
    shuffled_model = fit(x_train.reshape(len(x_train), -1), rng.permutation(y_train))
    slots = np.full((m, ages), np.nan)
    joined, shuffled, counts = np.full(ages, np.nan), np.full(ages, np.nan), np.zeros(ages, dtype=int)
    all_test = []
    for age in range(ages):
        x, y = stack(test_idx, age)
        counts[age] = len(y)
        if not len(y):
            continue
        all_test.extend(y)
        for k in range(m):
            slots[k, age] = float((models[k].predict(x[:, k]) == y).mean())
        joined[age] = float((joined_model.predict(x.reshape(len(x), -1)) == y).mean())
        shuffled[age] = float((shuffled_model.predict(x.reshape(len(x), -1)) == y).mean())
    values, freq = np.unique(all_test, return_counts=True) if all_test else (np.array([]), np.array([1]))
    chance = float(freq.max() / freq.sum()) if all_test else float("nan")
    axis = "layer" if any(r.get("memory_type") == "associative" for r in rows) else "slot"
    return ProbeResult(slots, joined, shuffled, chance, sorted(set(labels)), counts,
                       [ids[i] for i in train_idx], [ids[i] for i in test_idx], models, joined_model, axis)


def probe_direction(probe, answer: str, towards: str) -> np.ndarray:
    """Unit vector (hidden,) in a slot's state space from class `answer` towards class `towards`
    (difference of the two classes' logistic-regression weight rows; binary probes: +-coef)."""
    classes = list(probe.classes_)
    coef = np.asarray(probe.coef_, dtype=np.float64)
    if coef.shape[0] == 1:  # binary: one row, positive = classes[1]
        w = coef[0] if classes.index(towards) == 1 else -coef[0]
    else:
        w = coef[classes.index(towards)] - coef[classes.index(answer)]
    return w / max(np.linalg.norm(w), 1e-12)


def causal_check(model, study: dict[str, Any], rows: Sequence[dict[str, Any]], result: ProbeResult, slot: int | None = None,
                 strength: float = 1.0, samples: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """Push one slot of the memory after the write along the probe direction and measure the answer.

    For up to `samples` held-out samples: the memory entering the segment after the fact's segment
    (= memory_out of the fact's segment) has slot `slot` (default: the slot whose probe is best at
    age 0; an associative memory: layer `slot`'s state summary, moved by explain.associative.push_summary)
    moved by strength x its norm along :func:`probe_direction` from the answer to the probe's
    runner-up class, then the rest of the document is re-run (interventions.intervene); samples whose
    answer no training sample had are skipped (the probe has no direction for it). The same push
    in a random direction is the control. Rows: sample_id, slot, axis, answer, towards, p_answer_before,
    p_answer_after (probe push), p_answer_control, answer_after, answer_control.
    """
    from ..explain import associative, interventions
    from ..tracing.recorder import trace_document
    from .source import source_from_spec

    if not result.models:
        raise StudyError("the probe result holds no fitted probes.")
    slot = int(np.nanargmax(result.slots[:, 0])) if slot is None else int(slot)
    source = source_from_spec(study["source"])
    specs = {s.sample_id: s for s in source.specs()}
    by_id = {r["sample_id"]: r for r in rows}
    rng = np.random.default_rng(seed)
    out = []
    for sid in result.test:
        r = by_id.get(sid)
        if len(out) >= samples or r is None or r.get("fact_segment") is None:
            continue
        if r["fact_segment"] + 1 > r["question_segment"] or sid not in specs:
            continue
        if r["answer"] not in set(result.models[slot].classes_):
            continue  # an answer no training sample had: the probe has no direction for it
        sample = source.build(specs[sid], model)
        trace = trace_document(model, sample.text + " " + sample.answer)  # "Answer: <word>": p(answer) is read there
        probe = result.models[slot]
        by_layer = trace.memory_type == "associative"
        if by_layer:  # the probed features: the layer's state summary of the memory the fact's segment wrote
            state = associative.state_summary(trace.state_out(r["fact_segment"])["A"])[slot].astype(np.float64)
        else:
            state = trace.segments[r["fact_segment"]].memory_out[slot].astype(np.float64)
        probs = probe.predict_proba(state[None])[0]
        order = [c for c in np.asarray(probe.classes_)[np.argsort(-probs)] if c != sample.answer]
        if not order:
            continue
        towards = str(order[0])
        push = strength * np.linalg.norm(state) * probe_direction(probe, sample.answer, towards)
        rand = rng.standard_normal(push.shape)
        rand *= np.linalg.norm(push) / max(np.linalg.norm(rand), 1e-12)

        def edit_with(delta: np.ndarray):
            if by_layer:
                return lambda arrays: associative.push_summary(arrays, slot, delta)

            def edit(mem: np.ndarray) -> np.ndarray:
                mem[slot] = mem[slot] + delta.astype(mem.dtype)
                return mem
            return edit

        seg = r["fact_segment"] + 1
        where = f"{result.axis} {slot}"
        moved = interventions.intervene(trace, seg, edit_with(push), f"probe push on {where}")
        control = interventions.intervene(trace, seg, edit_with(rand), f"random push on {where}")
        out.append({"sample_id": sid, "slot": slot, "axis": result.axis, "segment": seg, "answer": sample.answer, "towards": towards,
                    "strength": strength, "p_answer_before": moved.p_expected_before,
                    "p_answer_after": moved.p_expected_after, "p_answer_control": control.p_expected_after,
                    "answer_after": moved.answer_after, "answer_control": control.answer_after})
    return out


__all__ = ["ProbeResult", "probe_inputs", "fit_probes", "probe_direction", "causal_check"]
