"""Studies run from the app: a background thread per study, owned by the session (a page switch
never stops it; the Study page shows its progress whenever it is open). rmt_core.studies does
the work; nothing here draws."""
from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from rmt_core import RMTLensError

log = logging.getLogger("rmt_lens.app")
STUDY_ROOT = Path.home() / ".cache" / "rmt-lens" / "studies"


class StudyJob:
    """run_study(directory, source, checkpoint, model) in a thread; cancel() stops after the current
    sample (rows done are kept; running the same study into the folder again resumes it).

    Read by the page: done, total, error, finished, directory, started."""

    def __init__(self, directory: Path, source, checkpoint: str, model, attribution_steps: int = 8) -> None:
        self.directory, self.source, self.checkpoint, self.model = Path(directory), source, checkpoint, model
        self.attribution_steps = attribution_steps
        self.done = self.total = 0
        self.error: str | None = None
        self.finished = False
        self.started = time.monotonic()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._work, name="rmt-lens-study", daemon=True)

    def start(self) -> "StudyJob":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def running(self) -> bool:
        return not self.finished

    def _progress(self, done: int, total: int) -> bool:
        self.done, self.total = done, total
        return not self._cancel.is_set()

    def _work(self) -> None:
        from rmt_core.studies.measures import MeasureConfig
        from rmt_core.studies.runner import run_study

        try:
            run_study(self.directory, self.source, self.checkpoint, self.model,
                      config=MeasureConfig(attribution_steps=self.attribution_steps), progress=self._progress,
                      flush_rows=4, flush_seconds=3.0)
        except RMTLensError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one line on the page; the traceback in the server log
            log.error("study failed:\n%s", traceback.format_exc())
            self.error = f"The study failed ({type(exc).__name__}: {exc}). The server log has the details."
        finally:
            self.finished = True


def new_study_folder(task: str) -> Path:
    """A fresh folder under ~/.cache/rmt-lens/studies for a study started in the app."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return STUDY_ROOT / f"{task}-{stamp}"


def load_study(directory: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(study.json, rows) of a folder; StudyError when it is not a study."""
    from rmt_core.studies.rows import read_rows
    from rmt_core.studies.runner import read_study

    study = read_study(directory)
    columns = [c for c in _ROW_COLUMNS]
    return study, read_rows(directory, columns)


_ROW_COLUMNS = ("sample_id", "task", "n_segments", "depth", "answer", "predicted", "correct", "p_answer", "rank",
                "fact_segment", "memory_segment", "memory_segment_is_fact", "question_segment", "retention_lens",
                "correct_reset", "error", "document", "memory_type", "not_applicable", "fact_read_top",
                "fact_write_strength")
