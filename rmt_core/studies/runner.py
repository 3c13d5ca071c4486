"""Run a study: measure every sample of a source, stream the rows, record the provenance; resume.

``DIR/study.json`` holds what made the rows (checkpoint name, weight hash, code version, the
source's spec and seed, the measure settings, the executor, when it started and its status);
``DIR/rows.parquet`` the rows (see :mod:`rmt_core.studies.rows`). Running the same study into
the same folder again resumes it: the samples that have a row are skipped, so a study stopped
at any point (Ctrl-C, a killed process, a cancelled app run) ends with exactly one row per
sample. A folder holding a study of another checkpoint, source or settings is refused.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .executors import InProcess, Job
from .measures import MeasureConfig
from .rows import RowWriter, done_ids, read_rows
from .source import StudyError

STUDY_NAME = "study.json"
STUDY_FORMAT = 1
Progress = Callable[[int, int], Any]


@dataclass
class StudyResult:
    """How a run ended: rows written now, rows in the folder, samples in the study, stopped early or not."""

    directory: Path
    written: int
    rows: int
    total: int
    stopped: bool
    errors: int
    skipped: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.rows >= self.total


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def code_version() -> dict[str, Any]:
    """RMT Lens's version and, when run from a git checkout, its commit (read from .git, no subprocess)."""
    from .._version import __version__

    out: dict[str, Any] = {"rmt_lens_version": __version__, "python": platform.python_version()}
    root = Path(__file__).resolve().parents[2] / ".git"
    try:
        if root.is_file():  # a worktree: "gitdir: <path>"
            root = Path(root.read_text().split(":", 1)[1].strip())
        head = (root / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            path = root / ref
            if not path.exists() and (root / "commondir").exists():
                path = (root / (root / "commondir").read_text().strip() / ref).resolve()
            head = path.read_text().strip() if path.exists() else None
        out["git_commit"] = head
    except (OSError, IndexError):
        out["git_commit"] = None
    return out


def read_study(directory: str | os.PathLike) -> dict[str, Any]:
    """study.json of a study folder; StudyError when it is missing or not a study."""
    path = Path(directory) / STUDY_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{directory} is not a study folder: it has no {STUDY_NAME} (make one with rmt-lens study run).") from None
    except (OSError, ValueError) as exc:
        raise StudyError(f"{path} cannot be read as JSON ({exc}).") from None
    if not isinstance(data, dict) or data.get("format") != STUDY_FORMAT:
        raise StudyError(f"{path} is not a study file of format {STUDY_FORMAT}.")
    return data


def _write_study(directory: Path, data: dict[str, Any]) -> None:
    tmp = directory / f".{STUDY_NAME}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, directory / STUDY_NAME)


def run_study(directory: str | os.PathLike, source, checkpoint: str, model=None, executor=None,
              config: MeasureConfig = MeasureConfig(), progress: Progress | None = None,
              flush_rows: int = 16, flush_seconds: float = 10.0) -> StudyResult:
    """Measure every sample of `source` not yet in `directory`, streaming rows to rows.parquet.

    checkpoint: the name or path the model was loaded from (workers load it again); model: the
    loaded model (loaded here when None); executor: InProcess (default), ProcessPool or RayData.
    progress(done, total) may return False to stop: the rows finished are kept and a later call
    resumes. Raises StudyError when `directory` holds another study, or the executor cannot start
    (then nothing is written).
    """
    from ..io.checkpoint import load

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise StudyError(f"{directory} exists and is not a folder; give --out a folder for the study.")
    model = load(checkpoint, device="cpu") if model is None else model
    executor = executor if executor is not None else InProcess(model)
    job = Job(str(checkpoint), model.weights_hash(), source.spec(), config)
    identity = {"checkpoint": str(checkpoint), "checkpoint_name": model.name, "weights_hash": job.weights_hash,
                "source": job.source, "measures": config.to_dict()}
    previous = read_study(directory) if (directory / STUDY_NAME).exists() else None
    if previous is not None:
        clash = [k for k in ("weights_hash", "source", "measures") if previous.get(k) != identity[k]]
        if clash:
            raise StudyError(f"{directory} holds another study (its {', '.join(clash)} differ): resume it with the "
                             "same checkpoint and grid, or give --out a new folder.")
    if hasattr(executor, "connect"):
        executor.connect()  # an unreachable cluster fails here, before anything is written
    directory.mkdir(parents=True, exist_ok=True)
    specs = source.specs()
    done = done_ids(directory)
    todo = [s for s in specs if s.sample_id not in done]
    data = dict(previous or {}) | identity | {
        "format": STUDY_FORMAT, "tool": "RMT Lens", "code": code_version(), "rmt_config": model.config.to_dict(),
        "seed": job.source.get("seed"), "samples_total": len(specs), "status": "running", "updated_at": _now()}
    data.setdefault("started_at", _now())
    data["runs"] = list((previous or {}).get("runs", [])) + [{"executor": executor.describe(), "started_at": _now(),
                                                              "resumed_from_rows": len(done)}]
    data["executor"] = data["runs"][-1]["executor"]
    _write_study(directory, data)
    writer = RowWriter(directory, flush_rows=flush_rows, flush_seconds=flush_seconds)
    stopped, errors, count = False, 0, len(done)
    if progress is not None and progress(count, len(specs)) is False:
        todo, stopped = [], True
    rows = executor.run(job, todo)
    try:
        for row in rows:
            writer.add(row)
            errors += row.get("error") is not None
            count += 1
            if progress is not None and progress(count, len(specs)) is False:
                stopped = True
                break
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # stops workers that are still measuring
        writer.close()
        total_rows = len(done_ids(directory))
        data.update(status="complete" if total_rows >= len(specs) else "stopped", updated_at=_now(),
                    rows=total_rows, errors=sum(r["error"] is not None for r in read_rows(directory, ["error"])))
        data["runs"][-1].update(finished_at=_now(), rows_written=writer.written)
        _write_study(directory, data)
    return StudyResult(directory, writer.written, total_rows, len(specs), stopped or total_rows < len(specs),
                       data["errors"], list(job.source.get("skipped", [])))


__all__ = ["STUDY_NAME", "StudyResult", "run_study", "read_study", "code_version"]
