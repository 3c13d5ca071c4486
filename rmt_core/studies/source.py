"""Where a study's samples come from: a BABILong-style grid over the shipped corpora, or the user's documents.

A source is a list of :class:`SampleSpec` (what to build, cheap to send to a worker) and a
``build(spec, model)`` that turns one into a :class:`StudySample` (the text the model reads, its
question and answer, where the fact is). Every sample is built from its own seed (the study seed,
task, length, depth and index through ``numpy.random.SeedSequence``), so the same spec gives the
same sample in any process, in any order: the executors give the same rows.

* :class:`BabilongSource` — task x length in segments x fact depth in % x samples. The facts (one
  for ``detect``, the whole story for ``qa1`` / ``qa2``, in order) go at the sentence start nearest
  to ``depth`` % of the tokens before the asking segment (placed by token position, as BABILong
  and needle-in-a-haystack do), never in the asking segment; the question ends the last segment
  (its answer would be the segment's last token, the ``aligned`` layout of
  :mod:`rmt_core.training.evaluation`). The haystack is the held-out novel (*Persuasion*) or the
  held-out Python docs.
* :class:`DocumentSource` — a folder of documents (.txt .md .pdf .docx .html ending with
  ``Question: ...`` / ``Answer: word``, or .jsonl / .csv files), or one .jsonl / .csv file of
  ``text, question, answer`` rows. Files or rows that cannot be read are named in
  :attr:`DocumentSource.skipped` and left out; the study goes on.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ArgumentError, DocumentError, RMTLensError
from ..training.tasks import babi

HAYSTACKS: tuple[str, ...] = ("austen", "pydocs")
STUDY_TASKS: tuple[str, ...] = tuple(t for t in babi.TASKS if t != "memorize")  # memorize has no fact depth
MAX_SEGMENTS = 4096
TABLE_SUFFIXES: tuple[str, ...] = (".jsonl", ".csv")


class StudyError(RMTLensError):
    """A study cannot run as asked (bad grid, unreadable source, an executor that cannot start)."""


class GridError(StudyError, ArgumentError):
    """A grid spec names an unknown task, a length or depth out of range (a usage error)."""


@dataclass(frozen=True)
class SampleSpec:
    """One sample of a study, before it is built: small, picklable, sent to workers.

    sample_id: unique in the study (e.g. ``detect-s08-d050-i003``); index: the sample's number in
    its cell; n_segments / depth: the grid cell (depth in %, None for user documents); seed: the
    study seed; document: the user document's number in its source (None on a grid).
    """

    sample_id: str
    task: str
    n_segments: int | None
    depth: float | None
    index: int
    seed: int
    document: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StudySample:
    """A built sample: the text the model reads (ending with ``"Answer:"``), its answer and fact.

    answer: the expected answer word (no leading space); fact_chars: character spans of the
    facts in ``text`` (empty when unknown); supporting: index in fact_chars of the fact that
    gives the answer (None when unknown).
    """

    spec: SampleSpec
    text: str
    question: str
    answer: str
    fact_chars: list[tuple[int, int]] = field(default_factory=list)
    supporting: int | None = None


def parse_int_list(text: str, name: str, low: int, high: int) -> list[int]:
    """``"2,4,8"`` -> [2, 4, 8]; GridError naming `name` for anything else or a value outside [low, high]."""
    values = _split(text, name)
    out = []
    for item in values:
        try:
            value = int(item)
        except ValueError:
            raise GridError(f"{name}: {item!r} is not a whole number; give a comma-separated list such as 2,4,8.") from None
        if not low <= value <= high:
            why = " (the fact is never in the asking segment, so a sample needs 2 or more)" if name == "segments" else ""
            raise GridError(f"{name}: {value} is out of range; each value must lie in {low}..{high}{why}.")
        out.append(value)
    return _unique(out, name)


def parse_depth_list(text: str, name: str = "depths") -> list[float]:
    """``"10,50,90"`` -> [10.0, 50.0, 90.0] (percent); GridError for a value outside 0..100."""
    out = []
    for item in _split(text, name):
        try:
            value = float(item)
        except ValueError:
            raise GridError(f"{name}: {item!r} is not a number; give percentages such as 10,50,90.") from None
        if not np.isfinite(value) or not 0.0 <= value <= 100.0:
            raise GridError(f"{name}: {item} is out of range; a fact depth is a percentage in 0..100.")
        out.append(value)
    return _unique(out, name)


def _split(text: Any, name: str) -> list[str]:
    if isinstance(text, (list, tuple)):
        items = [str(v) for v in text]
    else:
        items = [p.strip() for p in str(text).split(",")]
    items = [p for p in items if p]
    if not items:
        raise GridError(f"{name} is empty; give a comma-separated list such as 2,4,8.")
    return items


def _unique(values: list, name: str) -> list:
    if len(set(values)) != len(values):
        raise GridError(f"{name} lists a value twice ({', '.join(map(str, values))}); list each once.")
    return values


def sample_seed(seed: int, *parts: Any) -> np.random.Generator:
    """The generator of one sample: the study seed and the sample's coordinates, hashed (stable across runs)."""
    digest = hashlib.sha256(json.dumps([int(seed)] + [str(p) for p in parts]).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest[:8], "little")))


# ---------------------------------------------------------------------- the BABILong-style grid
@dataclass
class BabilongSource:
    """task x length (segments) x fact depth (%) x samples over a held-out haystack.

    Raises GridError (a usage error) for an unknown task or haystack, a length below 2 segments
    (the fact never lies in the asking segment) or above MAX_SEGMENTS, a depth outside 0..100,
    or fewer than 1 sample.
    """

    task: str
    segments: Sequence[int]
    depths: Sequence[float]
    samples: int
    seed: int = 0
    haystack: str = "austen"

    def __post_init__(self) -> None:
        if self.task not in STUDY_TASKS:
            raise GridError(f"unknown task {self.task!r}; choose one of {', '.join(STUDY_TASKS)}.")
        if self.haystack not in HAYSTACKS:
            raise GridError(f"unknown haystack {self.haystack!r}; choose one of {', '.join(HAYSTACKS)}.")
        self.segments = parse_int_list(self.segments, "segments", 2, MAX_SEGMENTS)
        self.depths = parse_depth_list(self.depths)
        if isinstance(self.samples, bool) or not isinstance(self.samples, (int, np.integer)) or self.samples < 1:
            raise GridError(f"samples must be a whole number >= 1, got {self.samples!r}.")
        self.samples = int(self.samples)
        self.seed = int(self.seed)

    def spec(self) -> dict[str, Any]:
        """What study.json records of this source."""
        return {"kind": "babilong", "task": self.task, "segments": list(self.segments), "depths": list(self.depths),
                "samples": self.samples, "seed": self.seed, "haystack": self.haystack, "split": "heldout",
                "layout": "facts by token depth, never in the asking segment; question ends the last segment"}

    def specs(self) -> list[SampleSpec]:
        """Every sample of the grid, in a fixed order (length, depth, index)."""
        return [SampleSpec(f"{self.task}-s{n:02d}-d{_depth_tag(d)}-i{i:03d}", self.task, n, d, i, self.seed)
                for n in self.segments for d in self.depths for i in range(self.samples)]

    def build(self, spec: SampleSpec, model) -> StudySample:
        """The sample of `spec` for `model`'s tokenizer and segment size.

        Raises StudyError when the model has no tokenizer or the story cannot fit the length."""
        from ..training.corpus import load_source

        if model.tokenizer is None:
            raise StudyError("This model has no tokenizer: a study of text samples needs one.")
        size = model.config.segment_size
        rng = sample_seed(spec.seed, spec.task, spec.n_segments, spec.depth, spec.index)
        n_tokens = spec.n_segments * size  # text + answer: the answer would be the last segment's last token
        try:
            sample = babi.build_sample(load_source(self.haystack, "heldout"), n_tokens, spec.task, rng, model.tokenizer,
                                       keep_out_tail=size, fact_depth=float(spec.depth) / 100.0)
        except (ValueError, RuntimeError) as exc:
            raise StudyError(f"sample {spec.sample_id}: {exc}") from None
        question = babi.QUESTION_RE.search(sample.text).group(1)
        supporting = _supporting_fact(sample)
        return StudySample(spec, sample.text, f"Where is {question}?", sample.answer.strip(), list(sample.facts),
                           supporting)


def _depth_tag(depth: float) -> str:
    return f"{int(depth):03d}" if float(depth).is_integer() else f"{depth:07.3f}".replace(".", "p")


def _supporting_fact(sample: babi.FactSample) -> int | None:
    """Index of the last fact that names the answer's place (the one the answer comes from)."""
    parsed = babi.parse_facts(sample.text)
    answer = sample.answer.strip()
    hits = [i for i, pf in enumerate(parsed) if pf.fact.kind == "move" and pf.fact.target == answer]
    return hits[-1] if hits else (len(parsed) - 1 if parsed else None)


# ---------------------------------------------------------------------- the user's documents
_ANSWERED = re.compile(r"\nAnswer:[ \t]*(?P<a>\S+)\s*\Z")


@dataclass
class DocumentSource:
    """The user's documents: a folder, or one .jsonl / .csv file of text, question, answer.

    In a folder every .jsonl / .csv file adds its rows and every other document RMT Lens reads
    (.txt .md .pdf .docx .html) adds one sample when it ends with ``Answer: <word>`` (the question
    before it). `skipped` lists ``"name: why"`` for each file or row left out (unreadable, no
    question, a missing field). Raises StudyError when the path does not exist or nothing is usable.
    """

    path: str
    samples: list[tuple[str, str, str, str]] = field(default_factory=list, init=False)  # (name, text, question, answer)
    skipped: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        root = Path(self.path)
        if not root.exists():
            raise StudyError(f"source {self.path!r} does not exist; give a folder of documents or a .jsonl / .csv file.")
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) if root.is_dir() else [root]
        for file in files:
            self._read(file, file.relative_to(root).as_posix() if root.is_dir() else file.name)
        if not self.samples:
            why = "; ".join(self.skipped[:5]) or "it holds no files"
            raise StudyError(f"source {self.path!r} has no usable sample ({why}).")

    def _read(self, file: Path, name: str) -> None:
        if file.suffix.lower() in TABLE_SUFFIXES:
            try:
                data = file.read_bytes().decode("utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                self.skipped.append(f"{name}: cannot be read as UTF-8 text ({type(exc).__name__})")
                return
            rows = _jsonl_rows(data, name, self.skipped) if file.suffix.lower() == ".jsonl" else _csv_rows(data, name, self.skipped)
            self.samples.extend(rows)
            return
        from ..io.documents import read_document

        try:
            doc = read_document(file)
        except DocumentError as exc:
            self.skipped.append(f"{name}: {exc}")
            return
        except OSError as exc:
            self.skipped.append(f"{name}: cannot be read ({exc.strerror or type(exc).__name__})")
            return
        match = _ANSWERED.search(doc.text.rstrip())
        qmatch = re.search(r"(?:^|\n)Question:[ \t]*(?P<q>[^\n]+?)[ \t]*\nAnswer:[^\n]*\s*\Z", doc.text.rstrip())
        if match is None or qmatch is None:
            self.skipped.append(f"{name}: does not end with 'Question: ...' and 'Answer: <word>'; nothing to score")
            return
        self.samples.append((name, doc.text.rstrip()[: qmatch.start()].rstrip(), qmatch.group("q"), match.group("a")))

    def spec(self) -> dict[str, Any]:
        return {"kind": "documents", "path": str(Path(self.path).resolve()), "documents": len(self.samples),
                "names": [s[0] for s in self.samples], "skipped": list(self.skipped)}

    def specs(self) -> list[SampleSpec]:
        return [SampleSpec(f"doc-{i:05d}", "document", None, None, i, 0, document=i) for i in range(len(self.samples))]

    def build(self, spec: SampleSpec, model) -> StudySample:
        """The document with its question appended in the training format (QuestionError is the
        caller's to record: a question the model cannot be asked is a row, not a crash)."""
        from ..explain import answers

        name, text, question, answer = self.samples[int(spec.document)]
        prompt = answers.prompt_text(model, text, question)
        facts = [(pf.start, pf.end) for pf in babi.parse_facts(text)]
        return StudySample(spec, prompt, question, answer.strip(), facts, len(facts) - 1 if facts else None)


def _row(item: Any, where: str, skipped: list[str]) -> tuple[str, str, str, str] | None:
    if not isinstance(item, dict):
        skipped.append(f"{where}: not an object with text, question, answer")
        return None
    missing = [k for k in ("text", "question", "answer") if not isinstance(item.get(k), str) or not item.get(k).strip()]
    if missing:
        skipped.append(f"{where}: missing or empty {', '.join(missing)}")
        return None
    return where, item["text"], item["question"], item["answer"]


def _jsonl_rows(data: str, name: str, skipped: list[str]) -> list[tuple[str, str, str, str]]:
    out = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            skipped.append(f"{name}:{n}: not JSON ({exc.msg})")
            continue
        row = _row(item, f"{name}:{n}", skipped)
        if row:
            out.append(row)
    return out


def _csv_rows(data: str, name: str, skipped: list[str]) -> list[tuple[str, str, str, str]]:
    try:
        reader = csv.DictReader(io.StringIO(data))
        fields = reader.fieldnames or []
        if not {"text", "question", "answer"} <= set(fields):
            skipped.append(f"{name}: needs the columns text, question, answer (has {', '.join(fields) or 'none'})")
            return []
        return [r for n, item in enumerate(reader, 2) if (r := _row(item, f"{name}:{n}", skipped))]
    except csv.Error as exc:
        skipped.append(f"{name}: not a readable CSV ({exc})")
        return []


def source_from_spec(spec: dict[str, Any]):
    """Rebuild a source from what study.json recorded (to resume it, or to rebuild a sample)."""
    if spec.get("kind") == "babilong":
        return BabilongSource(spec["task"], spec["segments"], spec["depths"], spec["samples"], spec["seed"],
                              spec.get("haystack", "austen"))
    if spec.get("kind") == "documents":
        return DocumentSource(spec["path"])
    raise StudyError(f"study.json names an unknown source kind {spec.get('kind')!r}.")


__all__ = ["StudyError", "GridError", "SampleSpec", "StudySample", "BabilongSource", "DocumentSource",
           "parse_int_list", "parse_depth_list", "sample_seed", "source_from_spec", "HAYSTACKS", "STUDY_TASKS"]
