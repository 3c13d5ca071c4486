"""A study's rows summarised: the length x depth grid, accuracy vs length, retention, the operating range.

Pure functions of rows (dicts with the columns of :data:`rmt_core.studies.measures.COLUMNS`);
rows with an ``error`` count as measured-but-unscored and are left out of every mean (their
number is reported beside it). Accuracy is ``correct`` (top-1 over the whole vocabulary after
``Answer:``), the one definition the evaluation tables use too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass
class Grid:
    """A value per (length, depth) cell: values[i, j] for segments[i] and depths[j]; counts: scored rows."""

    segments: list[int]
    depths: list[float]
    values: np.ndarray  # (len(segments), len(depths)) float, NaN where a cell has no scored row
    counts: np.ndarray  # (len(segments), len(depths)) int
    measure: str

    def to_rows(self) -> list[dict[str, Any]]:
        return [{"segments": s, "depth": d, self.measure: _finite(self.values[i, j]), "samples": int(self.counts[i, j])}
                for i, s in enumerate(self.segments) for j, d in enumerate(self.depths)]


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def scored(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that were measured (no error)."""
    return [r for r in rows if r.get("error") is None]


def grid(rows: Sequence[dict[str, Any]], measure: str = "correct") -> Grid:
    """Mean of `measure` (correct, p_answer, memory_segment_is_fact, retention_lens, ...) per
    (n_segments, depth) cell, over the scored rows of a grid study (booleans as 0/1; None left out)."""
    good = [r for r in scored(rows) if r.get("n_segments") is not None and r.get("depth") is not None]
    segments = sorted({int(r["n_segments"]) for r in good})
    depths = sorted({float(r["depth"]) for r in good})
    values = np.full((len(segments), len(depths)), np.nan)
    counts = np.zeros((len(segments), len(depths)), dtype=int)
    cells: dict[tuple[int, float], list[float]] = {}
    for r in good:
        if r.get(measure) is not None:
            cells.setdefault((int(r["n_segments"]), float(r["depth"])), []).append(float(r[measure]))
    for (s, d), vals in cells.items():
        i, j = segments.index(s), depths.index(d)
        values[i, j], counts[i, j] = float(np.mean(vals)), len(vals)
    return Grid(segments, depths, values, counts, measure)


def difference(a: Grid, b: Grid) -> Grid:
    """a - b on the cells both grids have (e.g. two checkpoints on the same grid); counts: the smaller."""
    segments = [s for s in a.segments if s in b.segments]
    depths = [d for d in a.depths if d in b.depths]
    values = np.full((len(segments), len(depths)), np.nan)
    counts = np.zeros((len(segments), len(depths)), dtype=int)
    for i, s in enumerate(segments):
        for j, d in enumerate(depths):
            ia, ja, ib, jb = a.segments.index(s), a.depths.index(d), b.segments.index(s), b.depths.index(d)
            values[i, j] = a.values[ia, ja] - b.values[ib, jb]
            counts[i, j] = min(a.counts[ia, ja], b.counts[ib, jb])
    return Grid(segments, depths, values, counts, f"{a.measure} difference")


def cell_rows(rows: Sequence[dict[str, Any]], n_segments: int, depth: float) -> list[dict[str, Any]]:
    """The rows of one grid cell (errors included), in sample order."""
    return sorted((r for r in rows if r.get("n_segments") == n_segments and r.get("depth") is not None
                   and float(r["depth"]) == float(depth)), key=lambda r: r["sample_id"])


def accuracy_by_length(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per length: accuracy with memory and with memory reset before every segment, over all depths.

    Rows: segments, samples, accuracy_memory, accuracy_reset (the columns figures.accuracy_vs_segments reads)."""
    good = [r for r in scored(rows) if r.get("n_segments") is not None]
    out = []
    for s in sorted({int(r["n_segments"]) for r in good}):
        cell = [r for r in good if int(r["n_segments"]) == s]
        out.append({"segments": s, "samples": len(cell),
                    "accuracy_memory": float(np.mean([bool(r["correct"]) for r in cell])),
                    "accuracy_reset": float(np.mean([bool(r["correct_reset"]) for r in cell]))})
    return out


def retention_by_age(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fraction of samples whose answer is in the logit lens of the written memory, per segment since
    the write (age), over the scored rows that reach that age. Rows: age, samples, lens_decodable."""
    ranks = [r["lens_rank_by_age"] for r in scored(rows) if r.get("lens_rank_by_age")]
    if not ranks:
        return []
    out = []
    for age in range(max(len(x) for x in ranks)):
        reach = [x[age] for x in ranks if len(x) > age]
        out.append({"age": age, "samples": len(reach), "lens_decodable": float(np.mean([v >= 0 for v in reach]))})
    return out


def not_applicable(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """{column: why it does not apply} for the columns the rows' memory type has no value for by
    definition (measures.NOT_APPLICABLE, as each row names them in `not_applicable`): empty for rows
    that name none (rows of studies made before the column existed included)."""
    from .measures import NOT_APPLICABLE

    out: dict[str, str] = {}
    for r in rows:
        reasons = NOT_APPLICABLE.get(r.get("memory_type") or "", {})
        for column in r.get("not_applicable") or ():
            out.setdefault(column, reasons.get(column, "not measured for this memory type"))
    return out


HAYSTACK_NAMES = {"austen": "held-out Austen (Persuasion)", "pydocs": "held-out Python docs"}  # = rmt_core.operating_range.RECALL_TABLES' texts


def operating_range(rows: Sequence[dict[str, Any]], study: dict[str, Any] | None = None,
                    threshold: float = 0.9) -> dict[str, Any]:
    """A study summarised as a model card's ``operating_range`` entry.

    The entry has the card's format (:func:`rmt_core.operating_range.operating_range_entry`:
    task, facts, question, names, answers, ``accuracy`` = {text: {segments: accuracy}},
    accuracy_column), with the accuracy measured by this study (all depths, the question ending the
    last segment) for the study's haystack, plus ``measured_by`` = "rmt-lens study" and ``study``:
    {threshold, max_segments (the longest length, from the shortest up, whose every depth reaches
    `threshold`; None if the shortest fails), max_tokens, segment_size, cells [{segments, depth,
    accuracy, samples}], samples, errors, checkpoint, weights_hash, source}. Lengths are segments of
    the model's segment size; depth is % of the tokens before the asking segment.
    Returns {} for rows of no fact task (user documents).
    """
    from ..operating_range import operating_range_entry

    study = study or {}
    tasks = sorted({r.get("task") for r in rows if r.get("task")})
    entry = operating_range_entry(tasks[0], {}) if len(tasks) == 1 else None
    if entry is None:
        return {}
    g = grid(rows, "correct")
    max_segments = None
    for i, s in enumerate(g.segments):  # contiguous from the shortest length: stop at the first that fails
        if not (np.all(np.isfinite(g.values[i])) and np.all(g.values[i] >= threshold)):
            break
        max_segments = s
    size = (study.get("rmt_config") or {}).get("segment_size")
    where = HAYSTACK_NAMES.get((study.get("source") or {}).get("haystack", "austen"), "study haystack")
    entry["accuracy"] = {where: {str(r["segments"]): r["accuracy_memory"] for r in accuracy_by_length(rows)}}
    entry["accuracy_column"] = "study: accuracy over every fact depth, question ending the last segment"
    entry["measured_by"] = "rmt-lens study"
    entry["study"] = {
        "metric": "accuracy (top-1 over the whole vocabulary after 'Answer:')", "threshold": threshold,
        "max_segments": max_segments, "max_tokens": max_segments * size if (max_segments and size) else None,
        "segment_size": size, "cells": [dict(segments=c["segments"], depth=c["depth"], accuracy=c["correct"],
                                             samples=c["samples"]) for c in g.to_rows()],
        "samples": len(rows), "errors": sum(r.get("error") is not None for r in rows),
        "checkpoint": study.get("checkpoint_name"), "weights_hash": study.get("weights_hash"),
        "source": study.get("source"),
    }
    return entry


__all__ = ["Grid", "grid", "scored", "difference", "cell_rows", "not_applicable", "accuracy_by_length", "retention_by_age", "operating_range"]
