"""Attribution: one result object for every kind; it knows how it was made and its labels, and
turns itself into rows, CSV and JSON (figures: rmt_core.viz.figures.attribution_figure)."""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...checks import check_int
from ...errors import ArgumentError
from .methods import KINDS, METHODS

@dataclass
class Attribution:
    """One attribution: what was explained, how, and the scores with their labels.

    scores (axes named in `axes`):
        read     (m,)    one score per read slot R_k (summed over the hidden size)
        write    (m, L)  write slot W_k x token j of the segment
        through  (T,)    one score per document token; NaN outside `window` (the segments unrolled)
    Units: those of the explained value (log-probability in nats for read and through; the
    written vector's component along its update for write); positive raises it.
    delta: captum's convergence delta sum(scores) - (f_input - f_baseline), ig only (per slot for
    write); f_input / f_baseline: the explained value at the input and at the baseline.
    slots: R0.. (read) or W0.. (write); tokens: the display strings (rmt_core.token_text) of the
    scored tokens, document positions window[0]..window[1]-1, with token_segment / token_position
    (segment, index inside it) for each.
    """

    kind: str
    method: str
    segment: int
    position: int | None
    target_id: int | None  # the token id explained (read, through); None for write (each slot's update)
    target_token: str | None
    scores: np.ndarray
    baseline: str | None  # a name of KINDS[kind].baselines; None for saliency
    n_steps: int | None  # ig only
    delta: float | np.ndarray | None = None
    f_input: float | np.ndarray | None = None
    f_baseline: float | np.ndarray | None = None
    slots: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    window: tuple[int, int] | None = None
    token_segment: np.ndarray | None = None
    token_position: np.ndarray | None = None
    note: str | None = None

    @property
    def axes(self) -> tuple[str, ...]:
        return KINDS[self.kind].axes

    @property
    def first_segment(self) -> int | None:
        """The first segment whose tokens are scored (through, write), else None."""
        return None if self.token_segment is None or not len(self.token_segment) else int(self.token_segment[0])

    @property
    def scored_segments(self) -> tuple[int, int] | None:
        """(first, last) segment whose tokens are scored (through, write), else None."""
        first = self.first_segment
        return None if first is None else (first, int(self.token_segment[-1]))

    @property
    def reaches_start(self) -> bool:
        """Whether the scored tokens reach back to the document's start (segment 0)."""
        return self.first_segment == 0

    @property
    def title(self) -> str:
        """One line saying what is attributed to what (plain text)."""
        if self.kind == "write":
            return f"Write-slot attribution over segment {self.segment}'s tokens"
        what = f"log p({self.target_token!r}) at position {self.position} of segment {self.segment}"
        if self.kind == "read":
            return f"Read-slot attribution of {what}"
        return f"Attribution of {what} to the tokens of segments {self.first_segment}..{self.segment}, through memory"

    @property
    def how(self) -> str:
        """The method, its steps and the baseline, in words."""
        steps = f", {self.n_steps} steps" if self.n_steps is not None else ""
        base = (f", baseline: {self.baseline} ({KINDS[self.kind].baselines[self.baseline]})"
                if self.baseline is not None else ", no baseline")
        target = "; target: each slot's update direction" if self.kind == "write" else ""
        return f"{self.method}{steps}{base}{target}"

    def to_rows(self, top: int | None = None) -> list[dict[str, Any]]:
        """The scores as table rows (one dict per score), columns in the field's terms:

        read     slot, score, share_of_abs (|score| / sum of |scores|)
        write    slot, position (in the segment), document_position, token, score
        through  document_position, segment, position (in that segment), token, score
        top: only the `top` largest |scores| (per slot for write), most first, with a `rank`
        column (first; after `slot` for write). None: every score in axis order.
        """
        if top is not None:
            top = check_int(top, "top", 1, fix="It is how many of the largest |scores| to keep.")
        scores = np.asarray(self.scores, dtype=np.float64)
        if self.kind == "read":
            total = float(np.abs(scores).sum()) or 1.0
            rows = [{"slot": self.slots[k], "score": float(v), "share_of_abs": float(abs(v) / total)}
                    for k, v in enumerate(scores)]
            return rows if top is None else [{"rank": r, **rows[k]} for r, k in enumerate(_largest(scores, top), 1)]
        if self.kind == "write":
            out = []
            for k, slot in enumerate(scores):
                order = range(len(slot)) if top is None else _largest(slot, top)
                for rank, j in enumerate(order, 1):
                    rank_column = {} if top is None else {"rank": rank}
                    out.append({"slot": self.slots[k], **rank_column, **self._token_columns(int(j)),
                                "score": float(slot[j])})
            return out
        start, end = self.window
        scored = scores[start:end]
        if top is None:
            return [{**self._token_columns(i), "score": float(v)} for i, v in enumerate(scored)]
        return [{"rank": r, **self._token_columns(int(i)), "score": float(scored[i])}
                for r, i in enumerate(_largest(scored, top), 1)]

    def _token_columns(self, i: int) -> dict[str, Any]:
        """Columns of the i-th scored token (document position window[0] + i)."""
        if self.kind == "write":
            return {"position": i, "document_position": self.window[0] + i, "token": self.tokens[i]}
        return {"document_position": self.window[0] + i, "segment": int(self.token_segment[i]),
                "position": int(self.token_position[i]), "token": self.tokens[i]}

    def summary(self) -> dict[str, Any]:
        """How the scores were made, as plain JSON values (non-finite numbers as None)."""
        return _plain({
            "kind": self.kind, "method": self.method, "captum_class": METHODS[self.method].captum_class,
            "segment": self.segment, "position": self.position, "target_id": self.target_id,
            "target_token": self.target_token, "baseline": self.baseline,
            "baseline_meaning": KINDS[self.kind].baselines.get(self.baseline), "n_steps": self.n_steps,
            "delta": self.delta, "f_input": self.f_input, "f_baseline": self.f_baseline, "axes": list(self.axes),
            "window": self.window, "scored_segments": self.scored_segments, "note": self.note,
        })

    def to_csv(self) -> str:
        """to_rows() as CSV text (a header line, then one line per score; floats in full precision)."""
        rows = self.to_rows()
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["score"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(_plain(rows))
        return out.getvalue()

    def to_json(self, provenance: dict[str, Any] | None = None) -> str:
        """{"attribution": summary(), "rows": to_rows(), "provenance": provenance (when given)} as JSON text."""
        record = {"attribution": self.summary(), "rows": _plain(self.to_rows())}
        if provenance is not None:
            record["provenance"] = _plain(provenance)
        return json.dumps(record, indent=2, ensure_ascii=False)

    def save(self, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
        """Write to_csv() (path ending in .csv) or to_json(provenance) (.json); returns the path.

        provenance: what made the trace (rmt_core.viz.export.provenance(trace)), JSON only.
        Raises ArgumentError for another suffix; OSError when the file cannot be written.
        """
        out = Path(path)
        suffix = out.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ArgumentError(f"path must end in .csv or .json, got {str(path)!r}. The suffix chooses the format: "
                                ".csv for the rows, .json for the rows with how they were made.")
        if suffix == ".csv" and provenance is not None:
            raise ArgumentError("provenance is written to .json files only: save the CSV, then the same result "
                                "with provenance to a .json path beside it.")
        if out.parent != Path(""):
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.to_csv() if suffix == ".csv" else self.to_json(provenance), encoding="utf-8")
        return out


def _largest(values: np.ndarray, top: int) -> np.ndarray:
    """Indices of the `top` largest |values|, largest first (ties in index order)."""
    return np.argsort(-np.abs(values), kind="stable")[:top]


def _plain(value: Any) -> Any:
    """Plain JSON/CSV values: numpy scalars and arrays, tuples converted; non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


