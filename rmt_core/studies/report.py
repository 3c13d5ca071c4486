"""A study's report: figures (SVG / PDF / PNG, provenance embedded) and the CSV tables behind them.

Files written into the report folder:

* ``heatmap_accuracy`` (length x depth), ``heatmap_memory_segment_is_fact`` (how often the
  through-memory attribution credits the fact's segment), ``accuracy_by_length`` (with memory,
  with memory reset, the papers' numbers beside), ``retention`` (logit lens and probes),
  ``probe_accuracy`` (per slot and age): one file per figure and format;
* ``grid.csv``, ``accuracy_by_length.csv``, ``retention.csv``, ``probes.csv``, ``rows.csv`` (every
  row without the memory bytes), ``operating_range.json``, ``report.json`` (the provenance and the
  list of files).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from . import aggregate
from .rows import read_rows
from .runner import read_study
from .source import StudyError


def study_provenance(study: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What made a study's numbers (embedded in every figure of its report)."""
    from .._version import __version__

    keys = ("checkpoint", "checkpoint_name", "weights_hash", "code", "source", "measures", "seed", "executor",
            "started_at", "updated_at", "status", "rows", "samples_total")
    return {"tool": "RMT Lens", "rmt_lens_version": __version__, "study": {k: study.get(k) for k in keys}, **extra}


def study_figures(rows: Sequence[dict[str, Any]], study: dict[str, Any], probe=None) -> dict[str, Any]:
    """name -> plotly figure of the report (pure: rows and an optional ProbeResult in)."""
    from ..viz import paper
    from ..viz import study as vs

    name = study.get("checkpoint_name") or study.get("checkpoint")
    task = (study.get("source") or {}).get("task", "documents")
    figs: dict[str, Any] = {}
    g = aggregate.grid(rows, "correct")
    if g.segments:
        figs["heatmap_accuracy"] = vs.grid_heatmap(g.values, g.segments, g.depths, g.counts,
                                                   f"{name}, {task}: accuracy by length and fact depth")
        a = aggregate.grid(rows, "memory_segment_is_fact")
        figs["heatmap_memory_segment_is_fact"] = vs.grid_heatmap(
            a.values, a.segments, a.depths, a.counts,
            f"{name}, {task}: share of samples whose through-memory attribution credits the fact's segment most",
            "share")
    by_len = aggregate.accuracy_by_length(rows)
    if by_len:
        figs["accuracy_by_length"] = vs.accuracy_by_length(
            by_len, f"{name}, {task}: accuracy vs length (all depths), memory vs reset; papers' numbers beside",
            reference=paper.PAPER_RECALL)
    lens = aggregate.retention_by_age(rows)
    probe_lines = None
    if probe is not None:
        probe_lines = {f"probe on all {probe.axis}s (held out)": [None if v != v else float(v) for v in probe.joined],
                       "probe on shuffled labels (control)": [None if v != v else float(v) for v in probe.shuffled]}
        figs["probe_accuracy"] = vs.probe_accuracy(probe.slots, probe.chance, axis=probe.axis)
    if lens or probe_lines:
        figs["retention"] = vs.retention_curves(lens, probe_lines)
    return figs


def write_report(directory: str | Path, out: str | Path, formats: Sequence[str] = ("svg",), probes: bool = True,
                 causal_samples: int = 5) -> dict[str, Any]:
    """Write the report of the study in `directory` into `out`; returns report.json's content.

    With probes, `causal_samples` held-out samples get the probes' causal check (causal.csv: the
    answer's probability before / after a push along the probe direction and after the same push in
    a random direction; it loads the study's checkpoint and refuses other weights).

    Raises StudyError when `directory` is not a study or has no rows; ExportError (from
    rmt_core.viz.export) when figures cannot be rendered (no Chromium): the CSV tables are written first.
    """
    from ..viz import export
    from .probes import fit_probes

    study = read_study(directory)
    rows = read_rows(directory)
    if not rows:
        raise StudyError(f"{directory} has no rows yet: run (or resume) the study first.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    notes: list[str] = []

    def table(name: str, data: list[dict[str, Any]]) -> None:
        (out / name).write_text(export.table_csv(data))
        written.append(name)

    g = aggregate.grid(rows, "correct")
    table("grid.csv", g.to_rows())
    table("accuracy_by_length.csv", aggregate.accuracy_by_length(rows))
    table("retention.csv", aggregate.retention_by_age(rows))
    table("rows.csv", [{k: v for k, v in r.items() if k != "memory_after_write"} for r in rows])
    probe = None
    if probes:
        try:
            probe = fit_probes(rows)
            table("probes.csv", probe.to_rows())
        except StudyError as exc:
            notes.append(f"no probes: {exc}")
    if probe is not None and causal_samples > 0:
        from .executors import Job, load_checked
        from .measures import MeasureConfig
        from .probes import causal_check

        model = load_checked(Job(study["checkpoint"], study["weights_hash"], study["source"], MeasureConfig()))
        checks = causal_check(model, study, rows, probe, samples=causal_samples)
        table("causal.csv", checks)
        if checks:
            moved = [c["p_answer_before"] - c["p_answer_after"] for c in checks]
            control = [c["p_answer_before"] - c["p_answer_control"] for c in checks]
            notes.append(f"causal check on {probe.axis} {checks[0]['slot']} ({len(checks)} held-out samples): p(answer) fell by "
                         f"{sum(moved) / len(moved):.3f} on average along the probe direction, {sum(control) / len(control):.3f} "
                         "along a random direction of the same norm")
    for column, why in aggregate.not_applicable(rows).items():
        notes.append(f"{column}: not applicable to this model's memory ({why})")
    rng = aggregate.operating_range(rows, study)
    (out / "operating_range.json").write_text(json.dumps(export.to_jsonable(rng), indent=2))
    written.append("operating_range.json")
    prov = study_provenance(study)
    figs = study_figures(rows, study, probe)
    for fmt in formats:
        paths = export.export_figures(figs, out, format=fmt, provenance=prov)
        written.extend(p.name for p in paths.values())
    report = {"provenance": export.to_jsonable(prov), "files": written, "notes": notes,
              "rows": len(rows), "errors": sum(r.get("error") is not None for r in rows)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


__all__ = ["study_figures", "write_report", "study_provenance"]
