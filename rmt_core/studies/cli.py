"""``rmt-lens study run`` / ``rmt-lens study report``: the study commands (registered by rmt_core.cli).

Only argparse is imported here at module level; torch, pyarrow, Ray and scikit-learn load when a
command runs. A bad grid (unknown task, length below 2 segments, depth outside 0..100, a
malformed list) is a usage error: one ``error:`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

RUN_EXAMPLE = ("rmt-lens study run --task detect --segments 2,4,8,16,32 --depths 10,50,90 --samples 20 --seed 0 "
               "--out studies/detect")


def add_study(p: argparse.ArgumentParser,
              add_load_options: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """The `study` command's two subcommands and their arguments; add_load_options (rmt_core.cli's) adds
    the flags a checkpoint written by other code may need to `study run`."""
    sub = p.add_subparsers(dest="study_command", metavar="SUBCOMMAND")
    run = sub.add_parser("run", help="measure a grid (or your documents) into a study folder; resumes",
                         description="Measure every sample of a BABILong-style grid (task x length x fact depth x "
                                     "samples) or of your documents, one row per sample streamed to "
                                     "OUT/rows.parquet, provenance in OUT/study.json. The same command resumes a "
                                     f"stopped study. Example: {RUN_EXAMPLE}")
    run.add_argument("--checkpoint", default=None, metavar="C", help="checkpoint name or folder (default: the shipped default)")
    run.add_argument("--task", default="detect", metavar="T", help="detect, qa1 or qa2 (the model's own task is the one it was trained for)")
    run.add_argument("--segments", default="2,4,8,16,32", metavar="LIST", help="lengths in segments, e.g. 2,4,8,16,32 (each >= 2)")
    run.add_argument("--depths", default="10,50,90", metavar="LIST", help="fact depths in %% of the tokens before the asking segment")
    run.add_argument("--samples", default="20", metavar="N", help="samples per cell")
    run.add_argument("--seed", default="0", metavar="S", help="study seed (every sample is drawn from it)")
    run.add_argument("--haystack", default="austen", help="held-out haystack: austen (Persuasion) or pydocs")
    run.add_argument("--source", default=None, metavar="PATH",
                     help="your documents instead of a grid: a folder, or a .jsonl / .csv of text, question, answer")
    run.add_argument("--out", required=True, metavar="DIR", help="the study folder")
    how = run.add_mutually_exclusive_group()
    how.add_argument("--workers", default=None, metavar="N", help="N local worker processes (default: this process)")
    how.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                     help="Ray Data: 'auto' (the running cluster, else a local one) or a cluster address")
    run.add_argument("--ray-workers", default=None, metavar="N", help="Ray actors (default: one per CPU, or per GPU)")
    run.add_argument("--attribution-steps", default="32", metavar="K",
                     help="integrated-gradient steps of the through-memory attribution (0: none)")
    if add_load_options is not None:
        add_load_options(run)
    report = sub.add_parser("report", help="figures (SVG/PDF/PNG) and CSV tables of a study",
                            description="Write a study's figures (heatmap length x depth, accuracy vs length with the "
                                        "papers' numbers beside, retention curves, probe accuracy) with provenance "
                                        "embedded, and the CSV tables behind them.")
    report.add_argument("study", metavar="DIR", help="a study folder (made by study run)")
    report.add_argument("--out", required=True, metavar="FIGDIR", help="folder for the figures and tables")
    report.add_argument("--format", default="svg", metavar="svg,pdf,png", help="one or more of svg, pdf, png")
    report.add_argument("--no-probes", action="store_true", help="skip the linear probes")
    report.add_argument("--causal-samples", default="5", metavar="N",
                        help="held-out samples for the probes' causal check (0: none; loads the study's checkpoint)")


def _usage(args: argparse.Namespace, message: str) -> int:
    print(f"error: rmt-lens study {getattr(args, 'study_command', '') or ''}: {' '.join(message.split())} "
          "(see rmt-lens study --help)", file=sys.stderr)
    return 2


def _int(value: Any, name: str, low: int) -> int:
    from .source import GridError

    try:
        n = int(str(value))
    except ValueError:
        raise GridError(f"--{name} must be a whole number, got {value!r}.") from None
    if n < low:
        raise GridError(f"--{name} must be >= {low}, got {n}.")
    return n


def run(args: argparse.Namespace, load: Callable[[str, bool], Any] | None = None) -> int:
    """Dispatch `study run` / `study report`; GridError -> exit 2, other RMTLensErrors reach rmt_core.cli.main.

    load(checkpoint, elsewhere) -> the model for `study run` (rmt_core.cli's, with its load flags;
    elsewhere: the samples run in worker processes); default: rmt_core.load(checkpoint, device="cpu")."""
    from .source import GridError

    if args.study_command is None:
        return _usage(args, "choose a subcommand: run or report")
    try:
        return _run(args, load) if args.study_command == "run" else _report(args)
    except GridError as exc:
        return _usage(args, str(exc))


def _run(args: argparse.Namespace, load_model: Callable[[str, bool], Any] | None = None) -> int:
    import torch

    from ..io.checkpoint import DEFAULT_CHECKPOINT, load
    from .executors import InProcess, ProcessPool, RayData
    from .measures import MeasureConfig
    from .runner import run_study
    from .source import BabilongSource, DocumentSource

    samples, seed = _int(args.samples, "samples", 1), _int(args.seed, "seed", 0)
    steps = _int(args.attribution_steps, "attribution-steps", 0)
    workers = _int(args.workers, "workers", 1) if args.workers is not None else None
    ray_workers = _int(args.ray_workers, "ray-workers", 1) if args.ray_workers is not None else None
    if args.source is not None:
        source = DocumentSource(args.source)
    else:
        source = BabilongSource(args.task, args.segments, args.depths, samples, seed, args.haystack)
    torch.set_num_threads(1)
    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    elsewhere = args.ray is not None or (workers is not None and workers > 1)
    model = load_model(checkpoint, elsewhere) if load_model is not None else load(checkpoint, device="cpu")
    if args.ray is not None:
        executor = RayData(args.ray, ray_workers)
    elif workers is not None and workers > 1:
        executor = ProcessPool(workers)
    else:
        executor = InProcess(model)
    for line in getattr(source, "skipped", []):
        print(f"skipped {line}", file=sys.stderr)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if now - last[0] >= 5 or done == total:
            last[0] = now
            print(f"{done}/{total} samples", flush=True)

    result = run_study(args.out, source, checkpoint, model, executor, MeasureConfig(attribution_steps=steps), progress)
    print(f"{result.rows}/{result.total} rows in {result.directory}/rows.parquet ({result.written} new, "
          f"{result.errors} with an error recorded); provenance in {result.directory}/study.json")
    if result.skipped:
        print(f"{len(result.skipped)} source files or rows skipped (named above and in study.json)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..viz.export import FORMATS
    from .report import write_report
    from .source import GridError

    formats = [f.strip().lower() for f in str(args.format).split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if not formats or bad:
        raise GridError(f"--format must be some of {', '.join(FORMATS)}, got {args.format!r}.")
    report = write_report(args.study, args.out, formats, probes=not args.no_probes,
                          causal_samples=_int(args.causal_samples, "causal-samples", 0))
    print(f"wrote {len(report['files'])} files to {args.out}: {', '.join(report['files'])}")
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0


__all__ = ["add_study", "run"]
