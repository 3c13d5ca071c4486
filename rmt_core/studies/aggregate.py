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


def operating_range(rows: Sequence[dict[str, Any]], study: dict[str, Any] | None = None,
                    threshold: float = 0.9) -> dict[str, Any]:
    """A study summarised for a model card's ``operating_range``.

    Returns ``{"measured_by": "rmt-lens study", "task", "metric": "accuracy (top-1 after Answer:)",
    "threshold", "max_segments": the longest length whose every depth reaches `threshold` (None if
    none), "max_tokens": max_segments x segment size, "cells": [{segments, depth, accuracy, samples}],
    "accuracy_by_length": [{segments, accuracy_memory, accuracy_reset, samples}], "samples", "errors",
    "checkpoint", "weights_hash", "source"}`` (the last three from study.json when given).
    Lengths are segments of the model's segment size; depth is % of the tokens before the asking segment.
    """
    g = grid(rows, "correct")
    ok = [s for i, s in enumerate(g.segments) if np.all(np.isfinite(g.values[i])) and np.all(g.values[i] >= threshold)]
    # the range is contiguous from the shortest length: stop at the first length that fails
    max_segments = None
    for s in g.segments:
        if s not in ok:
            break
        max_segments = s
    study = study or {}
    size = (study.get("rmt_config") or {}).get("segment_size")
    tasks = sorted({r.get("task") for r in rows if r.get("task")})
    return {
        "measured_by": "rmt-lens study", "task": tasks[0] if len(tasks) == 1 else tasks,
        "metric": "accuracy (top-1 over the whole vocabulary after 'Answer:')", "threshold": threshold,
        "max_segments": max_segments, "max_tokens": max_segments * size if (max_segments and size) else None,
        "segment_size": size, "cells": [dict(segments=c["segments"], depth=c["depth"], accuracy=c["correct"],
                                             samples=c["samples"]) for c in g.to_rows()],
        "accuracy_by_length": accuracy_by_length(rows), "samples": len(rows),
        "errors": sum(r.get("error") is not None for r in rows),
        "checkpoint": study.get("checkpoint_name"), "weights_hash": study.get("weights_hash"),
        "source": study.get("source"),
    }


__all__ = ["Grid", "grid", "scored", "difference", "cell_rows", "accuracy_by_length", "retention_by_age", "operating_range"]
