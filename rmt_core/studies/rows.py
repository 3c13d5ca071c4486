"""A study's rows on disk: ``DIR/rows.parquet``, a parquet dataset streamed as the rows finish.

``rows.parquet`` is a folder of part files (``part-<n>.parquet``), each written whole to a hidden
temporary name and renamed into place, so a study killed at any moment leaves only complete
parts: pyarrow, pandas and polars read the folder as one table (``pyarrow.parquet.read_table``).
A resumed study reads the sample ids already there and measures only the others; if a sample
appears twice (it cannot with one writer, but a hand-copied part could do it) :func:`read_rows`
keeps its first row.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

from .measures import COLUMNS

ROWS_NAME = "rows.parquet"

# arrow type of every column of measures.COLUMNS
_TYPES: dict[str, str] = {
    "sample_id": "string", "task": "string", "n_segments": "int32", "depth": "float64", "index": "int32",
    "seed": "int64", "document": "string", "segments": "int32", "tokens": "int32", "question_segment": "int32",
    "answer": "string", "answer_tokens": "int32", "predicted": "string", "correct": "bool", "p_answer": "float64",
    "rank": "int32", "p_predicted": "float64", "fact_segment": "int32", "fact_token": "int32",
    "depth_measured": "float64", "memory_segment": "int32", "memory_segment_is_fact": "bool",
    "attribution_first_segment": "int32", "write_mass_fact": "float64", "write_mass_uniform": "float64",
    "loss_memory": "float64", "loss_reset": "float64", "answer_loss_memory": "float64",
    "answer_loss_reset": "float64", "correct_reset": "bool", "lens_rank_by_age": "list<int32>",
    "retention_lens": "int32", "memory_after_write": "binary", "state_shape": "list<int32>", "memory_type": "string",
    "not_applicable": "list<string>", "fact_read_share": "list<float64>", "fact_read_top": "bool",
    "fact_write_strength": "float64", "write_strength_mean": "float64", "error": "string",
    "seconds": "float64",
}
assert set(_TYPES) == set(COLUMNS), "every row column needs an arrow type"


def schema():
    """The pyarrow schema of rows.parquet (columns in measures.COLUMNS order)."""
    import pyarrow as pa

    def arrow(name: str):
        kind = _TYPES[name]
        if kind.startswith("list<"):
            return pa.list_(getattr(pa, kind[5:-1])())
        return {"string": pa.string(), "binary": pa.binary(), "bool": pa.bool_()}.get(kind) or getattr(pa, kind)()

    return pa.schema([(name, arrow(name)) for name in COLUMNS])


class RowWriter:
    """Streams rows into ``DIR/rows.parquet/``: buffered, flushed every `flush_rows` rows or
    `flush_seconds` seconds, each flush one complete part file (atomic rename)."""

    def __init__(self, directory: str | os.PathLike, flush_rows: int = 16, flush_seconds: float = 10.0) -> None:
        self.folder = Path(directory) / ROWS_NAME
        self.folder.mkdir(parents=True, exist_ok=True)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._buffer: list[dict[str, Any]] = []
        self._last = time.monotonic()
        existing = [int(p.stem.split("-")[1]) for p in self.folder.glob("part-*.parquet")]
        self._next = max(existing, default=-1) + 1
        self.written = 0

    def add(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.flush_rows or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._last = time.monotonic()
        if not self._buffer:
            return
        table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in self._buffer], schema=schema())
        final = self.folder / f"part-{self._next:05d}.parquet"
        tmp = self.folder / f".part-{self._next:05d}.parquet.tmp"
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self._next += 1
        self.written += len(self._buffer)
        self._buffer = []

    def close(self) -> None:
        self.flush()


def rows_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / ROWS_NAME


def read_table(directory: str | os.PathLike, columns: Iterable[str] | None = None):
    """The study's rows as one pyarrow Table (first row of each sample id kept; no rows -> empty table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = rows_path(directory)
    parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    wanted = list(columns) if columns is not None else None
    if wanted is not None and "sample_id" not in wanted:
        wanted = ["sample_id"] + wanted
    if not parts:
        table = schema().empty_table()
        return table.select(wanted) if wanted else table
    table = pa.concat_tables([_part(p, wanted) for p in parts])
    if table.num_rows:
        ids = table.column("sample_id").to_pylist()
        first: dict[str, int] = {}
        for i, sid in enumerate(ids):
            first.setdefault(sid, i)
        if len(first) != len(ids):
            table = table.take(pa.array(sorted(first.values())))
    return table


def _part(path: Path, wanted: list[str] | None):
    """One part file as a table of the current schema's columns (`wanted`, or all): a column the part
    predates (a study begun before it existed, resumed now) is null there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    full = schema()
    names = wanted if wanted is not None else full.names
    present = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[n for n in names if n in present])
    for name in names:
        if name not in present:
            table = table.append_column(full.field(name), pa.nulls(table.num_rows, full.field(name).type))
    return table.select(names)


def read_rows(directory: str | os.PathLike, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The study's rows as dicts (see read_table)."""
    return read_table(directory, columns).to_pylist()


def done_ids(directory: str | os.PathLike) -> set[str]:
    """Sample ids that already have a row."""
    return set(read_table(directory, ["sample_id"]).column("sample_id").to_pylist())


__all__ = ["ROWS_NAME", "schema", "RowWriter", "rows_path", "read_table", "read_rows", "done_ids"]
