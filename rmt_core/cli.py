"""The ``rmt-lens`` command line (also ``python -m rmt_core``).

Exit codes: 0 done; 1 runtime failure (one ``error: ...`` line on stderr, no
traceback); 2 usage error (also one ``error:`` line).  An exception RMT Lens did not
raise on purpose is a bug: it becomes one ``error: unexpected error ...`` line and its
traceback is appended to the log file named there (rmt_core.errors.error_log_path()).  Each command is one ``run_<name>(args) -> int`` function
plus an ``add_<name>(parser)`` that declares its arguments, registered in
:data:`COMMANDS`; add a command by adding a pair there.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .cli_checkpoints import add_load_options, load_checkpoint, load_options, positive_int as _positive_int
from .errors import CheckpointArgumentError, DocumentError, RMTLensError, unexpected_error_message

# Nothing heavy (torch, transformers, plotly, captum) is imported at module level or while the
# parser is built for `rmt-lens --help`: each command imports what it needs when it runs, and
# only the chosen command's arguments are declared (see build_parser).
FACT_SEGMENTS = (1, 2, 4, 8, 16, 32)
DEFAULT_SEGMENTS: dict[str, tuple[int, ...]] = {
    "copy": (3, 6),
    "reverse": (2, 4, 6),
    "retrieval": (2, 3, 4, 5),
    "lm": (8,),
}


def eval_tasks() -> tuple[str, ...]:
    """Every --task of `eval`: the fact tasks, the algorithmic tasks and "lm"."""
    from .training.tasks.algorithmic import TASKS as ALGORITHMIC_TASKS
    from .training.tasks.babi import TASKS as FACT_TASKS

    return (*FACT_TASKS, *ALGORITHMIC_TASKS, "lm")


@dataclass
class Command:
    """One subcommand: a one-line help, its arguments, and what it does."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


def _say(line: str = "") -> None:
    print(line, flush=True)


def _segment_list(value: str) -> tuple[int, ...]:
    """argparse type: '1,2,4' -> (1, 2, 4)."""
    try:
        counts = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated segment counts like 1,2,4, got {value!r}")
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"segment counts must be integers >= 1, got {value!r}")
    return counts


def _non_negative_int(value: str) -> int:
    """argparse type: an integer >= 0 (a count that may be zero, e.g. --max-segments)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return n


def _offset_list(value: str) -> tuple[str, ...]:
    """argparse type: comma-separated question offsets (see tasks.babi.OFFSETS)."""
    from .training.tasks.babi import OFFSETS

    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in OFFSETS]
    if not items or bad:
        raise argparse.ArgumentTypeError(f"offsets must be some of {','.join(OFFSETS)}; got {value!r}")
    return items


def _positive_float(value: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    if not (x > 0 and x != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return x


BINARY_SUFFIXES = (".pdf", ".docx", ".html", ".htm")  # read whole: --max-tokens cannot read just their start
MAX_CHARS_PER_TOKEN = 64  # no tokenizer here has longer tokens; the cut is checked by tokenising (_cut_to_tokens)
PYTHON_ADVICE = re.compile(r"\s*(Pass truncate=True|Use a smaller file, or raise the limit with|or raise the limit with"
                           r"|Raise the limit with)\b.*$", re.S)


def read_document_file(path: str | Path, truncate: bool = True, max_tokens: int | None = None):
    """A file read safely with rmt_core.io.documents.read_document (returns its Document).

    .txt/.md/.pdf/.docx/.html are read as such; any other file is decoded as plain text.
    truncate: cut text beyond the document limits (a note goes to stderr) instead of failing.
    max_tokens: only the first N tokens will be traced, so the character limit becomes at least
        N x MAX_CHARS_PER_TOKEN, and of a plain-text file over the size limit only the start
        is read (enough bytes for N tokens). Raises DocumentError with advice in flags.
    """
    from .io.documents import DocumentLimits, read_document

    path = Path(path)
    limits = DocumentLimits()
    data = None
    if max_tokens is not None:
        chars = max_tokens * MAX_CHARS_PER_TOKEN
        needed = 4 * chars  # bytes: UTF-8 takes at most 4 per character
        limits = DocumentLimits(max_bytes=max(limits.max_bytes, needed), max_chars=max(limits.max_chars, chars))
        data = _start_of_large_text(path, limits.max_bytes, needed)
    try:
        if data is not None:
            document = read_document(path.name, data=data, limits=limits, truncate=True, unknown_as_text=True)
        else:
            document = read_document(path, limits=limits, truncate=truncate, unknown_as_text=True)
    except DocumentError as exc:
        raise _document_error_for_cli(exc, path) from None
    if data is not None:
        print(f"note: {path.name} is {path.stat().st_size / 1e6:,.1f} MB: read its first {len(data) / 1e6:,.1f} MB, "
              f"enough for {max_tokens:,} tokens (--max-tokens).", file=sys.stderr)
    if document.note:
        print(f"note: {_without_python_advice(document.note)}", file=sys.stderr)
    return document


# What a command-line user can do about each document reading limit (DocumentError.limit).
_DOCUMENT_LIMIT_ADVICE = {
    "max_chars": "Pass --max-tokens N to trace only the start.",
    "max_pdf_pages": "Pass --max-tokens N to trace only the start.",
    "max_bytes": "Use a smaller file (or the part you need, saved as .txt: --max-tokens N reads just the start "
                 "of a plain-text file).",
    "max_unzipped_bytes": "Save the document as .txt or PDF and trace that.",
    "max_seconds": "Save it as .txt (or print it to a new PDF) and trace that.",
    "max_memory_bytes": "Save it as .txt (or print it to a new PDF) and trace that.",
}


def _document_error_for_cli(exc: DocumentError, path: Path | None = None) -> DocumentError:
    """A document limit's error with advice in flags instead of Python arguments (others as they are).
    A plain-text file over the size limit: --max-tokens reads its start (read_document_file)."""
    advice = _DOCUMENT_LIMIT_ADVICE.get(exc.limit)
    if exc.limit == "max_bytes" and path is not None and path.suffix.lower() not in BINARY_SUFFIXES:
        advice = "Pass --max-tokens N to read and trace only the start of the file."
    if advice is None:
        return exc
    return exc.with_advice(advice)


def read_text_file(path: str | Path) -> str:
    """Text of a haystack file (see read_document_file); text beyond the document limits is cut."""
    return read_document_file(path, truncate=True).text


def _start_of_large_text(path: Path, max_bytes: int, needed: int) -> bytes | None:
    """The first `needed` bytes of a plain-text file larger than max_bytes, cut after a line end
    (or before a UTF-8 character that may be cut); None for smaller files and other kinds."""
    if path.suffix.lower() in BINARY_SUFFIXES:
        return None
    try:
        if not path.is_file() or path.stat().st_size <= max_bytes:
            return None
        with path.open("rb") as fh:
            data = fh.read(min(needed, max_bytes))
    except OSError:
        return None  # read_document says what is wrong with the path
    cut = data.rfind(b"\n") + 1
    if cut == 0:  # no line end: step back over a UTF-8 character that may be cut
        cut = len(data)
        while cut > 0 and 0x80 <= data[cut - 1] < 0xC0:
            cut -= 1
        if cut > 0 and data[cut - 1] >= 0xC0:
            cut -= 1
    return data[:cut]


# Python argument names in library messages -> the flags a command-line user types.
FLAG_OF_ARGUMENT = {"target": "--target", "baseline": "--baseline", "n_steps": "--steps", "position": "--position",
                    "segment": "--segment", "method": "--method", "kind": "--kind", "layer": "--layer",
                    "head": "--head", "top_k": "--top", "rmt_config": "--segment-size", "trust_pickle": "--trust-pickle",
                    "backbone": "--backbone", "device": "--device"}
ARGUMENT_RE = re.compile(r"(?<![\w.(\[-])(" + "|".join(FLAG_OF_ARGUMENT) + r")=(\s*)")


def in_flags(message: str) -> str:
    """A library message in command-line terms: "pass target= (a token id)" -> "pass --target (a
    token id)", "got baseline='x'" -> "got --baseline 'x'"."""
    def flag(match: re.Match) -> str:
        return FLAG_OF_ARGUMENT[match.group(1)] + " "
    return re.sub(r" {2,}", " ", ARGUMENT_RE.sub(flag, message))


def _without_python_advice(message: str) -> str:
    """A documents message without its advice for Python callers (truncate=True, DocumentLimits(...))."""
    return PYTHON_ADVICE.sub("", message).rstrip() or message


def _progress_printer(label: str) -> Callable[[int, int], None] | None:
    """A progress callback drawing one updating line on stderr, or None when stderr is not a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


# ---------------------------------------------------------------------- train
def add_train(p: argparse.ArgumentParser) -> None:
    from .training.recipes import RECIPES

    p.add_argument("--recipe", required=True, choices=sorted(RECIPES), help="training recipe (see rmt_core/training/recipes.py)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder; running the same command again resumes it")
    p.add_argument("--minutes", type=_positive_float, default=None, metavar="M",
                   help="stop cleanly (checkpointed) after M minutes; default: run to the end")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="T", help="CPU threads for torch")


def run_train(args: argparse.Namespace) -> int:
    from .training.recipes import RECIPES
    from .training.loop import train

    recipe = RECIPES[args.recipe]
    _say(f"training {recipe.name} in {args.out}")
    final = train(recipe, args.out, max_minutes=args.minutes, threads=args.threads, log=_say)
    _say(f"checkpoint: {final}")
    return 0


# ---------------------------------------------------------------------- eval
def add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder, or the name of a shipped checkpoint (see `list`)")
    p.add_argument("--task", choices=eval_tasks(), default="detect", help="what to evaluate (default: detect)")
    p.add_argument("--segments", type=_segment_list, default=None, metavar="N,N,...",
                   help="segment counts, e.g. 1,2,4,8,16,32 (fact tasks), 3,6 (copy); "
                        "for lm: segments per window")
    p.add_argument("--haystack", metavar="FILE", default=None,
                   help="text file used as book noise (fact tasks) and for perplexity; default: the held-out novel")
    p.add_argument("--samples", type=_positive_int, default=500, metavar="N", help="samples per segment count (default 500)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=_positive_int, default=16, metavar="B", help="samples per forward pass")
    p.add_argument("--n-symbols", type=_positive_int, default=None, metavar="N",
                   help="algorithmic tasks: symbols (copy/reverse) or pairs (retrieval); default: the paper's")
    p.add_argument("--offsets", type=_offset_list, default=("aligned", "random", "straddle"), metavar="O,O,...",
                   help="fact tasks: where the question falls in the last segment: aligned (ends with the "
                        "segment), random (uniform offset), straddle (split by a segment boundary); default: all three")
    p.add_argument("--no-lm", action="store_true", help="fact tasks: skip the perplexity evaluation")
    p.add_argument("--lm-windows", type=_positive_int, default=64, metavar="N", help="random text windows for perplexity")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="T", help="CPU threads for torch")
    p.add_argument("--json", metavar="OUT", default=None, help="also write the results to this JSON file")
    add_load_options(p)


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from .training import evaluation
    from .training.evaluation import ALGORITHMIC_TASKS, FACT_TASKS

    if args.threads:
        torch.set_num_threads(args.threads)
    haystack = read_text_file(args.haystack) if args.haystack else None
    model = load_checkpoint(args.checkpoint, args, device=args.device)
    segments = args.segments or DEFAULT_SEGMENTS.get(args.task, FACT_SEGMENTS)
    result: dict[str, Any] = {"checkpoint": str(args.checkpoint), "task": args.task, "seed": args.seed}
    _say(f"{model.name}: {args.task}, {model.config.num_mem_tokens} memory slots, "
         f"segments of {model.config.segment_size} tokens, on {model.device}")
    if args.task in FACT_TASKS:
        rows = evaluation.evaluate_fact_recall(
            model, args.task, segments, samples=args.samples, haystack=haystack, seed=args.seed,
            batch_size=args.batch_size, progress=_progress_printer("samples"), offsets=args.offsets)
        result["rows"] = rows
        _say(evaluation.format_table(rows, [c for c in evaluation.FACT_TABLE_COLUMNS if c in rows[0]]))
        if not args.no_lm:
            from .training.corpus import SOURCES, load_source

            texts = {f"{source} (held out)": load_source(source, "heldout") for source in SOURCES}
            if haystack is not None:
                texts[Path(args.haystack).name] = haystack
            lm = evaluation.evaluate_lm_texts(model, texts, windows=args.lm_windows, seed=args.seed,
                                              progress=_progress_printer("texts"))
            result["lm"] = lm
            _say()
            _say("language modelling (perplexity with memory vs memory reset every segment):")
            _say(evaluation.format_table(lm, ["text", "windows", "perplexity_memory", "perplexity_reset",
                                              "relative_improvement"]))
    elif args.task in ALGORITHMIC_TASKS:
        rows = evaluation.evaluate_algorithmic(
            model, args.task, segments, samples=args.samples, n_symbols=args.n_symbols, seed=args.seed,
            batch_size=args.batch_size, progress=_progress_printer("samples"))
        result["rows"] = rows
        _say(evaluation.format_table(rows))
    else:  # lm: one row per window length
        rows = [
            evaluation.evaluate_lm(model, text=haystack, segments_per_window=n, windows=args.lm_windows,
                                   seed=args.seed, batch_size=args.batch_size, progress=_progress_printer("windows"))
            for n in segments
        ]
        result["rows"] = rows
        _say(evaluation.format_table(rows))
    if args.json:
        out = Path(args.json)
        if out.parent != Path(""):
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        _say(f"results written to {out}")
    return 0


# ---------------------------------------------------------------------- list
def add_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list as JSON")


def run_list(args: argparse.Namespace) -> int:
    from .io.checkpoint import SHIPPED_DIR, list_checkpoints

    found = list_checkpoints()
    if args.json:
        _say(json.dumps(found, indent=2))
        return 0
    if not found:
        _say(f"no shipped checkpoints in {SHIPPED_DIR}")
        return 0
    from .training.evaluation import format_table

    _say(format_table(found, columns=("name", "description", "path")))
    return 0


# ---------------------------------------------------------------------- ship
def add_ship(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a training run folder (with state.json and final/ or latest/)")
    p.add_argument("--name", required=True, help="folder name under checkpoints/")
    p.add_argument("--samples", type=_positive_int, default=500, metavar="N", help="evaluation samples per cell")
    p.add_argument("--lm-windows", type=_positive_int, default=64, metavar="N")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="T")


def run_ship(args: argparse.Namespace) -> int:
    import torch

    from .training.shipping import ship

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (Path(args.run) / "state.json").is_file():
        raise RMTLensError(f"{args.run} is not a training run folder (no state.json).")
    ship(args.run, args.name, samples=args.samples, lm_windows=args.lm_windows, progress=_say)
    return 0


# ---------------------------------------------------------------------- shared: traces and models
def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="T", help="CPU threads for torch")
    add_load_options(p)


def _load_model(args: argparse.Namespace):
    """The checkpoint named by args.checkpoint (None when not given), with args.threads applied."""
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if not getattr(args, "checkpoint", None):
        return None
    return load_checkpoint(args.checkpoint, args, device=args.device)


def _load_trace(path: str, model=None):
    """A trace file, re-attached to `model` when given (refused if it was made with another model)."""
    from .tracing.trace import Trace

    return Trace.load(path, model=model)


def _attach_model(trace, args: argparse.Namespace, required: bool = False) -> None:
    """Attach the trace's model: --checkpoint when given; else the shipped checkpoint the trace
    names, when its weights are the ones the trace was made with (checked by weight hash). A
    trace whose model is neither is left without it (a note), or refused when `required`."""
    if args.checkpoint:
        trace.attach(_load_model(args))
        return
    from .io.checkpoint import SHIPPED_DIR

    name = str(trace.model_info["name"])
    shipped = "/" not in name and name not in ("", ".", "..") and (SHIPPED_DIR / name / "config.json").is_file()
    why = f"its model '{name}' is not a shipped checkpoint"
    if shipped:
        args.checkpoint = name
        model = _load_model(args)
        args.checkpoint = None
        if model.weights_hash() == trace.model_info["weights_hash"]:
            trace.attach(model)
            print(f"note: using the shipped checkpoint {name} (weights {model.weights_hash()}, as the trace "
                  "records).", file=sys.stderr)
            return
        why = (f"the shipped '{name}' has other weights ({model.weights_hash()}) than the trace was made with "
               f"({trace.model_info['weights_hash']})")
    if required:
        raise RMTLensError(f"This trace needs its model, and {why}: pass --checkpoint C with the checkpoint it was "
                           "made with.")


def _check_view(trace, segment: int | None, layer: int, head: int) -> tuple[int, int, int]:
    """Trace.check_view with the errors naming the options (--segment, --layer, --head)."""
    return trace.check_view(segment, layer, head, prefix="--")


def _add_view_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--segment", type=int, default=None, metavar="S", help="segment shown in detail (default: the last)")
    p.add_argument("--layer", type=int, default=-1, metavar="Y", help="layer of the attention figures (default: -1, the last)")
    p.add_argument("--head", type=int, default=0, metavar="H", help="head of the attention heatmap (default 0)")


def _show_token(token: str) -> str:
    """A token for a text table: quoted, with newlines and tabs visible; a continuation piece
    (its character is shown on the token before) as the continuation mark."""
    from .token_text import CONTINUATION

    return json.dumps(token, ensure_ascii=False) if token else CONTINUATION


def _write_text(path: str | Path, text: str) -> Path:
    out = Path(path)
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


# ---------------------------------------------------------------------- trace
def add_trace(p: argparse.ArgumentParser) -> None:
    from .io.checkpoint import DEFAULT_CHECKPOINT

    p.add_argument("file", metavar="FILE",
                   help="document to trace: .txt, .md, .pdf, .docx, .html (any other file is read as plain text)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, metavar="C",
                   help=f"checkpoint folder, or the name of a shipped checkpoint (see `list`; default: "
                        f"{DEFAULT_CHECKPOINT})")
    p.add_argument("--out", required=True, metavar="T", help="trace file to write (safetensors), e.g. book.trace")
    p.add_argument("--max-tokens", type=_positive_int, default=None, metavar="N",
                   help="trace only the first N tokens (default: the whole document; a document over the "
                        "size limits is refused unless this is given)")
    p.add_argument("--memory-reset", action="store_true",
                   help="reset the memory to its initial state before every segment (the no-memory baseline; "
                        "recorded in the trace file)")
    _add_model_options(p)


def _cut_to_tokens(model, text: str, limit: int) -> tuple[str, int]:
    """The longest prefix of `text` (cut at a token boundary) that has at most `limit` tokens; and the total."""
    from .token_text import encode_ids, encode_with_offsets

    tokenizer = model.tokenizer
    if tokenizer is None:
        raise RMTLensError(f"{model.name} has no tokenizer, so it cannot read text.")
    _, spans = encode_with_offsets(tokenizer, text)
    total = len(spans)
    keep = min(limit, total)
    while keep < total and keep > 0:  # re-tokenising a prefix can merge differently at the cut: check
        prefix = text[:spans[keep - 1][1]]
        if len(encode_ids(tokenizer, prefix)) <= limit:
            return prefix, total
        keep -= 1
    return text, total


def run_trace(args: argparse.Namespace) -> int:
    import numpy as np

    document = read_document_file(args.file, truncate=args.max_tokens is not None, max_tokens=args.max_tokens)
    model = _load_model(args)
    text = document.text
    if args.max_tokens is not None:
        text, total = _cut_to_tokens(model, text, args.max_tokens)
        if text != document.text:
            print(f"note: tracing the first {args.max_tokens:,} of {total:,} tokens (--max-tokens).", file=sys.stderr)
    _say(f"tracing {document.name} ({document.kind}, {len(text):,} characters) with {model.name} "
         f"({model.config.num_mem_tokens} memory slots, segments of {model.config.segment_size} tokens, on {model.device})")
    from .tracing.recorder import trace_document

    trace = trace_document(model, text, progress=_progress_printer("segments"), carry_memory=not args.memory_reset)
    trace.meta.update({"document": document.name, "document_kind": document.kind})
    if args.max_tokens is not None:
        trace.meta["max_tokens"] = args.max_tokens
    out = trace.save(args.out)
    loss = trace.mean_loss()  # token-weighted (tracing.losses)
    segments = f"{trace.num_segments} segment{'s' if trace.num_segments != 1 else ''}"
    reset = ", memory reset before every segment" if args.memory_reset else ""
    _say(f"{out}: {trace.num_tokens:,} tokens in {segments}{reset}, mean loss {loss:.3f} nats/token, "
         f"{trace.seconds:.1f} s; model {model.name} (weights {model.weights_hash()})")
    return 0


# ---------------------------------------------------------------------- figures
def add_figures(p: argparse.ArgumentParser) -> None:
    from .viz.export import FORMATS

    p.add_argument("trace", metavar="T", help="trace file written by `trace` (or Trace.save)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the figure files and figures.json")
    p.add_argument("--format", choices=FORMATS, default="svg", help="file format (default: svg)")
    p.add_argument("--checkpoint", default=None, metavar="C",
                   help="the checkpoint the trace was made with; needed for the attention heatmap (recomputed). "
                        "Default: the shipped checkpoint the trace names, when its weights are the trace's")
    _add_view_options(p)
    p.add_argument("--width", type=_positive_int, default=None, metavar="PX", help="figure width in layout pixels")
    p.add_argument("--height", type=_positive_int, default=None, metavar="PX", help="figure height in layout pixels")
    p.add_argument("--scale", type=_positive_float, default=2.0, metavar="X", help="PNG resolution multiplier (default 2)")
    _add_model_options(p)


def run_figures(args: argparse.Namespace) -> int:
    from .viz import export
    from .viz.figures import standard_figures

    trace = _load_trace(args.trace)  # fails fast on a missing or broken file, before loading a model
    segment, layer, head = _check_view(trace, args.segment, args.layer, args.head)
    export.require_browser()  # fail before any work
    _attach_model(trace, args)
    figures = standard_figures(trace, segment, layer, head)
    skipped = []
    if trace.model is None:
        reason = (f"needs the model: pass --checkpoint {trace.model_info['name']} "
                  "(the checkpoint the trace was made with)")
        skipped.append({"name": "attention", "reason": reason})
        print(f"note: attention heatmap skipped: it {reason}.", file=sys.stderr)
        if trace.memory_type == "associative":  # the paper's analyses re-run the model
            skipped += [{"name": name, "reason": reason} for name in ("loss_per_segment", "memory_capacity")]
            print(f"note: loss_per_segment and memory_capacity skipped: they {reason}.", file=sys.stderr)
    printable = {name: export.print_style(fig) for name, fig in figures.items()}
    prov = export.provenance(trace, segment=segment, layer=layer, head=head, format=args.format)
    _say(f"exporting {len(printable)} figures as {args.format} to {args.out} (segment {segment}, layer {layer}, head {head})")
    written = export.export_figures(printable, args.out, args.format, prov, width=args.width, height=args.height,
                                    scale=args.scale, progress=_progress_printer("figures"))
    out = Path(args.out)
    table = _write_text(out / "segments.csv", export.table_csv(export.segment_table(trace)))
    listing = {
        "format": args.format,
        "provenance": prov,
        "figures": [{"name": name, "file": path.name, "title": printable[name].layout.meta.get("title", ""),
                     "bytes": path.stat().st_size} for name, path in written.items()],
        "tables": [{"name": "segments", "file": table.name, "title": "Per-segment numbers",
                    "columns": export.segment_columns(trace)}],
        "skipped": skipped,
    }
    (out / "figures.json").write_text(json.dumps(listing, indent=2))
    for path in written.values():
        _say(f"  {path}")
    _say(f"  {table}")
    _say(f"wrote {len(written)} figures, segments.csv and figures.json to {out}")
    return 0


# ---------------------------------------------------------------------- report
def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", metavar="T", help="trace file written by `trace` (or Trace.save)")
    p.add_argument("--out", required=True, metavar="HTML", help="report file to write, e.g. report.html")
    p.add_argument("--checkpoint", default=None, metavar="C",
                   help="the checkpoint the trace was made with; needed for the attention heatmap and head view. "
                        "Default: the shipped checkpoint the trace names, when its weights are the trace's")
    _add_view_options(p)
    _add_model_options(p)
    p.add_argument("--compare", default=None, metavar="B", help="a second trace file: adds a comparison section")


def run_report(args: argparse.Namespace) -> int:
    from .viz.report import build_report

    trace = _load_trace(args.trace)
    segment, layer, head = _check_view(trace, args.segment, args.layer, args.head)
    _attach_model(trace, args)
    if trace.model is None:
        print(f"note: the attention heatmap and head view are left out: pass --checkpoint "
              f"{trace.model_info['name']} (the checkpoint the trace was made with) to include them.", file=sys.stderr)
    out = build_report(trace, args.out, segment=segment, layer=layer, head=head,
                       compare_with=cli_compare.second_trace(args.compare, trace))
    _say(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB, self-contained; segment {segment})")
    return 0


# ---------------------------------------------------------------------- attribute
DEFAULT_TOP = {"write": 5, "through": 20}  # rows printed per slot (write) or overall (through); read: every slot


def add_attribute(p: argparse.ArgumentParser) -> None:
    from .explain.attribution import BASELINES, KINDS, METHODS

    p.add_argument("trace", metavar="T", help="trace file written by `trace` (or Trace.save)")
    p.add_argument("--checkpoint", default=None, metavar="C",
                   help="the checkpoint the trace was made with (default: the shipped checkpoint the trace names, "
                        "when its weights are the trace's)")
    p.add_argument("--segment", type=int, required=True, metavar="S", help="segment of the prediction (read, through) "
                                                                          "or of the writing (write)")
    p.add_argument("--position", type=int, default=None, metavar="P",
                   help="token position in the segment whose next-token prediction is explained (read, through)")
    p.add_argument("--kind", choices=tuple(KINDS), default="read",
                   help="read: which read memory slots the prediction used; write: which tokens each write slot "
                        "took in; through: which earlier tokens the prediction used through memory (default: read)")
    p.add_argument("--method", choices=tuple(METHODS), default="ig",
                   help="ig (integrated gradients, default), saliency, input_x_gradient or ablation (each slot or "
                        "token replaced by the baseline in turn); every kind takes every method")
    p.add_argument("--steps", type=_positive_int, default=32, metavar="N", help="integration steps (ig; default 32)")
    p.add_argument("--target", default=None, metavar="TOKEN",
                   help="the token whose log-probability is explained (read, through): its id, or its text when "
                        "that is one token of the model's vocabulary, e.g. garden (default: the token that "
                        "actually follows)")
    p.add_argument("--baseline", choices=BASELINES, default=None,
                   help="what the inputs are compared with (ig, ablation): read: initial (the learned initial "
                        "memory, default) or zeros; write, through: zeros (zero token embeddings, default) or mean "
                        "(the vocabulary's mean embedding); input_x_gradient: zeros only; saliency: none")
    p.add_argument("--top", type=_positive_int, default=None, metavar="K",
                   help="rows shown: top tokens per slot (write, default 5) or overall (through, default 20), or "
                        "top slots (read, default every slot)")
    p.add_argument("--csv", metavar="OUT", default=None,
                   help="also write every score to this CSV file (how they were made and provenance go to OUT.json)")
    p.add_argument("--max-segments", type=_non_negative_int, default=None, metavar="N",
                   help="through: earlier segments unrolled (default: back to the document's start, up to 64; a "
                        "larger N than the document is clamped to its start)")
    _add_model_options(p)


def run_attribute(args: argparse.Namespace) -> int:
    from .errors import ArgumentError
    from .explain import attribution
    from .viz import export
    from .training.evaluation import format_table

    needs_position = attribution.KINDS[args.kind].needs_position
    if needs_position and args.position is None:
        print(f"error: --kind {args.kind} needs --position P (the token whose next-token prediction is explained).",
              file=sys.stderr)
        return 2
    try:  # before loading anything
        attribution.check_request(args.kind, args.method, args.baseline)
    except ArgumentError as exc:
        print(f"error: {in_flags(str(exc))}", file=sys.stderr)
        return 2
    if not needs_position and args.position is not None:
        print(f"note: --position is not used by --kind {args.kind} (it explains every write slot over the whole "
              "segment).", file=sys.stderr)
    if not needs_position and args.target is not None:
        print(f"error: --kind {args.kind} takes no --target: it explains every write slot over the whole segment "
              "(each slot's target is its own update).", file=sys.stderr)
        return 2
    trace = _load_trace(args.trace)
    _check_view(trace, args.segment, -1, 0)
    if args.max_segments is not None and args.kind != "through":
        print("error: --max-segments is for --kind through only (how many earlier segments are unrolled).",
              file=sys.stderr)
        return 2
    _attach_model(trace, args, required=True)
    target = _target_id(args.target, trace.model)
    extra = {"max_segments": args.max_segments} if args.kind == "through" else {}
    if args.kind == "through":
        n, seconds = attribution.estimate_through_seconds(trace, args.segment, args.max_segments, args.steps)
        print(f"note: unrolling {n} earlier segments, estimated {seconds:.0f} s", file=sys.stderr)
    result = attribution.attribute(trace, args.kind, args.segment, args.position if needs_position else None,
                                   target=target, method=args.method, baseline=args.baseline,
                                   n_steps=args.steps, progress=_progress_printer("forward passes"), **extra)
    if result.scored_segments is not None and args.kind == "through":
        _say(f"scored segments: {result.scored_segments[0]}..{result.scored_segments[1]}"
             + ("" if result.reaches_start else " (the window stops short of the document's start)"))
    _say(f"{result.title} ({result.how})")
    if result.delta is not None:
        import numpy as np

        delta = np.atleast_1d(np.asarray(result.delta, dtype=np.float64))
        _say(f"integrated gradients: {result.n_steps} steps, max |convergence delta| {np.nanmax(np.abs(delta)):.4g}")
    if result.note:
        print(f"note: {result.note}", file=sys.stderr)
    rows = result.to_rows(top=args.top or DEFAULT_TOP.get(args.kind))
    _say(format_table([{**row, "token": _show_token(row["token"])} if "token" in row else row for row in rows]))
    if args.csv:
        out = _write_text(args.csv, result.to_csv())
        sidecar = result.save(out.with_name(out.name + ".json"), provenance=export.provenance(trace))
        _say(f"scores written to {out} (how they were made and provenance in {sidecar})")
    return 0


# ---------------------------------------------------------------------- ask
def add_ask(p: argparse.ArgumentParser) -> None:
    from .io.checkpoint import DEFAULT_CHECKPOINT

    p.add_argument("file", metavar="FILE", help="document to ask about: .txt, .md, .pdf, .docx, .html")
    p.add_argument("--question", "-q", default=None, metavar="Q",
                   help="e.g. \"Where is Mary?\" (or just Mary); leave out when the document ends with \"Answer:\"")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, metavar="C",
                   help=f"a fact-recall checkpoint (default: {DEFAULT_CHECKPOINT})")
    p.add_argument("--max-segments", type=_non_negative_int, default=None, metavar="N",
                   help="earlier segments the through-memory attribution unrolls (default: back to the document's "
                        "start, up to 64; a larger N than the document is clamped to its start)")
    p.add_argument("--no-attribution", action="store_true", help="only the answer and its warnings (fast)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the answer and its warnings as JSON")
    _add_model_options(p)


def run_ask(args: argparse.Namespace) -> int:
    from .explain import answers
    from .explain.attribution import estimate_through_seconds

    document = read_document_file(args.file, truncate=False)
    model = _load_model(args)
    text = answers.prompt_text(model, document.text, args.question)
    from .tracing.recorder import trace_document

    trace = trace_document(model, text, progress=_progress_printer("segments"))
    site = answers.answer_site(trace)
    attribute = not args.no_attribution and site is not None and site.segment > 0
    if attribute:
        n, seconds = estimate_through_seconds(trace, site.segment, args.max_segments)
        print(f"note: through-memory attribution over {n} earlier segments, estimated {seconds:.0f} s "
              "(--max-segments N to change, --no-attribution to skip)", file=sys.stderr)
    result = answers.answer_from_trace(trace, attribute=attribute, max_segments=args.max_segments,
                                       progress=_progress_printer("forward passes") if attribute else None)
    _say(f"{document.name}: {trace.num_segments} segments, question {result.site.question!r}")
    for line in answers.answer_lines(result):
        _say(line)
    if args.json:
        record = {"answer": result.answer, "predictions": [p.__dict__ for p in result.predictions],
                  "warnings": [w.to_dict() for w in result.warnings], "memory_segment": result.memory_segment,
                  "scored_segments": result.scored, "fact_segment": result.fact_segment, "note": result.note,
                  "segments": trace.num_segments, "mean_loss": trace.mean_loss(),
                  # what the printed lines claim: memory_segment is only the largest positive credit, the
                  # carrier is the segment named (None when the lines say no segment carries a clear credit)
                  "correct": result.correct, "verdict": result.verdict}
        claim = result.carrier
        record["carrier"] = None if claim is None else {
            "segment": claim.segment, "largest": claim.largest, "credit": claim.credit, "share": claim.share,
            "total": claim.total, "statement": claim.statement}
        _write_text(args.json, json.dumps(record, indent=2))
    return 0


def _target_id(value: str | None, model) -> int | None:
    """--target as a token id: a number is an id (checked against the vocabulary); text is the
    one token it encodes to, as typed or, failing that, after a space (BPE words mid-sentence).
    Says which id a text is; text of several tokens is refused listing them."""
    from .errors import ArgumentError
    from .token_text import decode_token, encode_ids

    if value is None:
        return None
    if re.fullmatch(r"\s*-?\d+\s*", value):
        token = int(value)
        if not 0 <= token < model.vocab_size:
            raise ArgumentError(f"--target {token} is not a token id of {model.name}: ids run 0..{model.vocab_size - 1}.")
        return token
    if model.tokenizer is None:
        raise ArgumentError(f"{model.name} has no tokenizer, so --target must be a token id (a number), "
                            f"got {value!r}.")
    if not value:
        raise ArgumentError("--target is empty: give a token id or a token's text.")
    tried = [value] + ([" " + value] if not value[0].isspace() else [])
    encodings = {text: encode_ids(model.tokenizer, text) for text in tried}
    single = [(text, ids[0]) for text, ids in encodings.items() if len(ids) == 1]
    if single:
        text, token = single[0]
        others = [f"{_show_token(t)} is id {i}" for t, i in single[1:]]
        also = f" ({'; '.join(others)}: pass --target {single[1][1]} for it)" if others else ""
        print(f"note: --target {_show_token(value)} is token id {token}, {_show_token(text)}{also}.", file=sys.stderr)
        return int(token)
    pieces = "; ".join(f"{_show_token(text)} is {len(ids)} tokens: "
                       + ", ".join(f"{_show_token(decode_token(model.tokenizer, i))} (id {i})" for i in ids)
                       for text, ids in encodings.items())
    raise ArgumentError(f"--target {_show_token(value)} is not one token of {model.name}'s vocabulary ({pieces}). "
                        "A target is one token: pass one of these ids, or a word that is a single token.")


# ---------------------------------------------------------------------- convert
def add_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SRC",
                   help="checkpoint to convert: a folder, a weights file (.safetensors, .bin, .pth, an .index.json) "
                        "or a Hugging Face model name in the local cache")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder for the RMT Lens checkpoint")
    add_load_options(p)


def run_convert(args: argparse.Namespace) -> int:
    from .io.formats.convert import convert_checkpoint

    result = convert_checkpoint(args.source, args.out, **load_options(args))
    _say(f"source: {result.source_format}")
    _say(f"wrote {result.out} (config.json, model.safetensors, README.md"
         f"{', tokenizer' if result.has_tokenizer else ''})")
    _say(f"max |logit difference| vs the source: {result.max_abs_logit_diff:.3g} "
         f"(random input of {result.n_tokens} tokens, {result.n_segments} segments, CPU float32)")
    if not result.has_tokenizer:
        print("note: no tokenizer was found beside the weights or in --backbone, so the new folder has none; "
              "commands that read text need one (give --backbone with the backbone's tokenizer files).",
              file=sys.stderr)
    return 0


def add_study(p: argparse.ArgumentParser) -> None:
    from .studies.cli import add_study as add

    add(p, add_load_options=add_load_options)


def run_study(args: argparse.Namespace) -> int:
    from .cli_checkpoints import study_loader
    from .studies.cli import run

    return run(args, load=study_loader(args))


COMMANDS: dict[str, Command] = {
    "train": Command("train (or resume) a recipe", add_train, run_train,
                     "Train a recipe into a run folder. Running the same command again resumes where it stopped."),
    "eval": Command("evaluate a checkpoint, with memory and with memory reset", add_eval, run_eval,
                    "Evaluate a checkpoint on fact recall, an algorithmic task or perplexity; every number "
                    "is measured with memory and with the memory reset before every segment."),
    "list": Command("list the shipped checkpoints", add_list, run_list),
    "convert": Command("convert another RMT checkpoint (the authors' RMT or ARMT) to an RMT Lens folder", add_convert,
                       run_convert,
                       "Load a checkpoint RMT Lens can read (its own, or the authors' RMT or ARMT in any layout: "
                       "model.safetensors, sharded weights, pytorch_model.bin, a .pth training dict), write it as an "
                       "RMT Lens folder (safetensors + config + tokenizer + a card naming the source) and print the "
                       "largest logit difference between the source and the written folder on a random input."),
    "ship": Command("evaluate a training run and write it to checkpoints/ with its model card", add_ship, run_ship),
    "trace": Command("trace a document with a checkpoint and save the trace file", add_trace, run_trace,
                     "Read a document (.txt, .md, .pdf, .docx, .html), run the checkpoint over it segment by "
                     "segment, and save what it did (memory, attention summaries, predictions) to a trace file."),
    "figures": Command("export every standard figure of a trace as SVG, PDF or PNG", add_figures, run_figures,
                       "Export the standard figures of a trace, styled for print, with provenance (checkpoint, "
                       "weights hash, code version, settings, document) embedded in every file, plus "
                       "segments.csv and a figures.json listing. Needs Chromium for kaleido (set BROWSER_PATH)."),
    "report": Command("write a self-contained HTML report of a trace", add_report, run_report,
                      "Write one HTML file that opens with no network: provenance, per-segment numbers, every "
                      "standard figure, the document with segment boundaries and an attention head view."),
    "ask": Command("ask a fact-recall model about a document: its answer, its warnings, where memory carried it",
                   add_ask, run_ask,
                   "Append the question in the training format, trace the document, print the top answers, the "
                   "answer's warnings (document longer than the model card measured, name absent, several facts, "
                   "...) and the earlier segment whose tokens most raised the answer through memory."),
    "attribute": Command("attribute a prediction to memory slots or earlier tokens", add_attribute, run_attribute,
                         "Attribution with captum: read (which read memory slots a prediction used), write (which "
                         "tokens each write slot took in) or through (which earlier tokens a prediction used "
                         "through memory). Prints a table; --csv writes every score."),
    "study": Command("many documents at once: the BABILong grid (length x fact depth), probes, a report", add_study,
                     run_study, "Run a study (rmt-lens study run ...) into a folder of rows.parquet + study.json, "
                                "or write its figures and tables (rmt-lens study report DIR --out FIGDIR)."),
}

from . import cli_checkpoints, cli_compare  # noqa: E402  (inspect, compare and patch live in their own modules)

COMMANDS.update({name: Command(*spec) for name, spec in cli_compare.COMMANDS.items()})
COMMANDS.update({name: Command(*spec) for name, spec in cli_checkpoints.COMMANDS.items()})


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as ONE line: ``error: PROG: what is wrong (see PROG --help)``."""

    def error(self, message: str):  # noqa: D102 (argparse API)
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per entry of COMMANDS.

    only: declare the arguments of this command alone ("" for none); the others keep their
    names and help lines. main passes the command it was given, so `rmt-lens --help` imports
    nothing a command needs (0.1 s instead of 8 s here)."""
    from ._version import __version__

    parser = _Parser(
        prog="rmt-lens", description="RMT Lens: train, evaluate and look inside Recurrent Memory Transformers.")
    parser.add_argument("--version", action="version", version=f"rmt-lens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description or command.help)
        if only is None or name == only:
            command.add_arguments(p)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The command named in argv (its first word that is not an option), or None."""
    first = next((word for word in argv if not word.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 runtime failure, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_chosen_command(argv) or "")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        print(f"error: {parser.prog}: no command given; choose one of {', '.join(COMMANDS)} "
              f"(see {parser.prog} --help)", file=sys.stderr)
        return 2
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except CheckpointArgumentError as exc:  # the checkpoint needs a flag, or a flag does not fit it: usage
        print(f"error: {cli_checkpoints.usage_message(exc)}", file=sys.stderr)
        return 2
    except (RMTLensError, OSError) as exc:
        message = in_flags(" ".join(str(exc).split())) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line here, the traceback in the log file
        print(f"error: {unexpected_error_message(exc, f'command: {args.command}')}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
