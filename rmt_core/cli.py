"""The ``rmt-lens`` command line (also ``python -m rmt_core``).

Exit codes: 0 done; 1 runtime failure (one ``error: ...`` line on stderr, no
traceback); 2 usage error.  Each command is one ``run_<name>(args) -> int`` function
plus an ``add_<name>(parser)`` that declares its arguments, registered in
:data:`COMMANDS`; add a command by adding a pair there.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import DocumentError, RMTLensError

FACT_TASKS = ("memorize", "detect", "qa1", "qa2")
ALGORITHMIC_TASKS = ("copy", "reverse", "retrieval")
EVAL_TASKS = (*FACT_TASKS, *ALGORITHMIC_TASKS, "lm")
DEFAULT_SEGMENTS: dict[str, tuple[int, ...]] = {
    **{t: (1, 2, 4, 8, 16, 32) for t in FACT_TASKS},
    "copy": (3, 6),
    "reverse": (2, 4, 6),
    "retrieval": (2, 3, 4, 5),
    "lm": (8,),
}


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


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def read_text_file(path: str | Path) -> str:
    """Text of a haystack file, read safely with rmt_core.documents.read_document.

    .txt/.md/.pdf/.docx/.html are read as such; any other file is decoded as plain text.
    Text beyond the document limits is cut (a note goes to stderr).
    """
    from .documents import read_document, supported_extensions

    p = Path(path)
    if p.suffix.lower() in supported_extensions():
        document = read_document(p, truncate=True)
    else:
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise DocumentError(f"No such file: {p}. Check the path.") from None
        except OSError as exc:
            raise DocumentError(f"Cannot read {p}: {exc.strerror or exc}.") from None
        try:
            document = read_document(f"{p.name}.txt", data=data, truncate=True)
        except DocumentError as exc:  # name the file as the user gave it
            raise DocumentError(str(exc).replace(f"{p.name}.txt", str(p))) from None
    if document.note:
        print(f"note: {document.note}", file=sys.stderr)
    return document.text


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
    from .recipes import RECIPES

    p.add_argument("--recipe", required=True, choices=sorted(RECIPES), help="training recipe (see rmt_core/recipes.py)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder; running the same command again resumes it")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="stop cleanly (checkpointed) after M minutes; default: run to the end")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="T", help="CPU threads for torch")


def run_train(args: argparse.Namespace) -> int:
    from .recipes import RECIPES
    from .training import train

    recipe = RECIPES[args.recipe]
    _say(f"training {recipe.name} in {args.out}")
    final = train(recipe, args.out, max_minutes=args.minutes, threads=args.threads, log=_say)
    _say(f"checkpoint: {final}")
    return 0


# ---------------------------------------------------------------------- eval
def add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder, or the name of a shipped checkpoint (see `list`)")
    p.add_argument("--task", choices=EVAL_TASKS, default="detect", help="what to evaluate (default: detect)")
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
    p.add_argument("--no-lm", action="store_true", help="fact tasks: skip the perplexity evaluation")
    p.add_argument("--lm-windows", type=_positive_int, default=64, metavar="N", help="random text windows for perplexity")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="T", help="CPU threads for torch")
    p.add_argument("--json", metavar="OUT", default=None, help="also write the results to this JSON file")


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from . import checkpoint, evaluation

    if args.threads:
        torch.set_num_threads(args.threads)
    haystack = read_text_file(args.haystack) if args.haystack else None
    model = checkpoint.load(args.checkpoint, device=args.device)
    segments = args.segments or DEFAULT_SEGMENTS[args.task]
    result: dict[str, Any] = {"checkpoint": str(args.checkpoint), "task": args.task, "seed": args.seed}
    _say(f"{model.name}: {args.task}, {model.config.num_mem_tokens} memory slots, "
         f"segments of {model.config.segment_size} tokens, on {model.device}")
    if args.task in FACT_TASKS:
        rows = evaluation.evaluate_fact_recall(
            model, args.task, segments, samples=args.samples, haystack=haystack, seed=args.seed,
            batch_size=args.batch_size, progress=_progress_printer("samples"))
        result["rows"] = rows
        _say(evaluation.format_table(rows))
        if not args.no_lm:
            lm = evaluation.evaluate_lm(model, text=haystack, windows=args.lm_windows, seed=args.seed,
                                        batch_size=args.batch_size, progress=_progress_printer("windows"))
            result["lm"] = lm
            _say()
            _say("language modelling (perplexity):")
            _say(evaluation.format_table([lm]))
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
    from .checkpoint import SHIPPED_DIR, list_checkpoints

    found = list_checkpoints()
    if args.json:
        _say(json.dumps(found, indent=2))
        return 0
    if not found:
        _say(f"no shipped checkpoints in {SHIPPED_DIR}")
        return 0
    from .evaluation import format_table

    _say(format_table(found, columns=("name", "description", "path")))
    return 0


# ---------------------------------------------------------------------- registry
# ---------------------------------------------------------------------- ship
def add_ship(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a training run folder (with state.json and final/ or latest/)")
    p.add_argument("--name", required=True, help="folder name under checkpoints/")
    p.add_argument("--samples", type=_positive_int, default=500, metavar="N", help="evaluation samples per cell")
    p.add_argument("--lm-windows", type=_positive_int, default=64, metavar="N")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="T")


def run_ship(args: argparse.Namespace) -> int:
    import torch

    from .shipping import ship

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (Path(args.run) / "state.json").is_file():
        raise RMTLensError(f"{args.run} is not a training run folder (no state.json).")
    ship(args.run, args.name, samples=args.samples, lm_windows=args.lm_windows, progress=_say)
    return 0


COMMANDS: dict[str, Command] = {
    "train": Command("train (or resume) a recipe", add_train, run_train,
                     "Train a recipe into a run folder. Running the same command again resumes where it stopped."),
    "eval": Command("evaluate a checkpoint, with memory and with memory reset", add_eval, run_eval,
                    "Evaluate a checkpoint on fact recall, an algorithmic task or perplexity; every number "
                    "is measured with memory and with the memory reset before every segment."),
    "list": Command("list the shipped checkpoints", add_list, run_list),
    "ship": Command("evaluate a training run and write it to checkpoints/ with its model card", add_ship, run_ship),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per entry of COMMANDS."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="rmt-lens", description="RMT Lens: train, evaluate and look inside Recurrent Memory Transformers.")
    parser.add_argument("--version", action="version", version=f"rmt-lens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description or command.help)
        command.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 runtime failure, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except (RMTLensError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
