"""The ``compare`` and ``patch`` commands of ``rmt-lens`` (registered in cli.COMMANDS from COMMANDS here).

    rmt-lens compare A.rmtrace B.rmtrace --out DIR [--checkpoint C] [--checkpoint-b C2] [--align end]
    rmt-lens compare A.rmtrace --memory-reset --checkpoint C --out DIR   (memory on vs memory reset)
    rmt-lens patch TARGET.rmtrace SOURCE.rmtrace --checkpoint C [--segments 0-7] [--slots 0,3 | --layers 0,2] [--csv F]

Like cli.py, nothing heavy is imported at module level: each command imports what it needs when it
runs. Errors are RMTLensError / OSError, turned into one ``error:`` line by cli.main.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_checkpoints import add_load_options, load_checkpoint
from .errors import RMTLensError

FIGURE_FORMATS = ("svg", "pdf", "png", "html")


def index_list(value: str) -> tuple[int, ...]:
    """argparse type: '0,2,5-7' -> (0, 2, 5, 6, 7) (ranges inclusive, integers >= 0)."""
    out: list[int] = []
    try:
        for part in value.replace(" ", "").split(","):
            if not part:
                continue
            low, _, high = part.partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first:
                raise ValueError
            out.extend(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected indices like 0,2,5-7 (integers >= 0), got {value!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one index, got {value!r}")
    return tuple(out)


def _load(path: str, checkpoint: str | None, args: argparse.Namespace):
    """A trace file, with the checkpoint attached when given (loaded with the command's load flags;
    refused by name when it is another model)."""
    from .tracing.trace import Trace

    trace = Trace.load(path)  # a missing or broken file fails before a model is loaded
    if checkpoint:
        trace.attach(load_checkpoint(checkpoint, args, device=args.device))
    return trace


def second_trace(path: str | None, first):
    """The report's --compare trace (None without one), with `first`'s model attached when it is the
    one this trace was made with too (else the comparison leaves the answer curve out, saying why)."""
    if not path:
        return None
    from .tracing.trace import Trace

    other = Trace.load(path)
    if first.model is not None and first.model.weights_hash() == other.model_info.get("weights_hash"):
        other.attach(first.model)
    return other


def _say(line: str = "") -> None:
    print(line, flush=True)


# ---------------------------------------------------------------------- compare
def add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace_a", metavar="A", help="first trace file (written by `trace` or Trace.save)")
    p.add_argument("trace_b", metavar="B", nargs="?", default=None,
                   help="second trace file (or --memory-reset instead)")
    p.add_argument("--memory-reset", action="store_true",
                   help="instead of B: A's document traced again by its model with memory reset to the initial "
                        "state before every segment (the no-memory baseline); needs --checkpoint")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for comparison.csv, comparison.json (with both traces' provenance) and the figures")
    p.add_argument("--checkpoint", default=None, metavar="C",
                   help="the checkpoint A was made with: needed for the answer's probability curve (logit lens)")
    p.add_argument("--checkpoint-b", default=None, metavar="C",
                   help="the checkpoint B was made with (default: --checkpoint)")
    p.add_argument("--align", choices=("start", "end"), default="start",
                   help="pair segments from the first (start, default) or from the last (end: documents of "
                        "different lengths that end with the same question)")
    p.add_argument("--threshold", type=float, default=None, metavar="D",
                   help="memory distance above which memories diverge (default 0.05): cosine distance per slot, "
                        "or for an associative memory (ARMT) relative Frobenius distance per layer")
    p.add_argument("--format", choices=FIGURE_FORMATS, default="svg",
                   help="figure files: svg, pdf, png (need Chromium, as `figures`) or html (plotly.js beside them)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    add_load_options(p)  # for --checkpoint and --checkpoint-b alike


def run_compare(args: argparse.Namespace) -> int:
    from .explain.compare import DEFAULT_THRESHOLD, compare
    from .viz import export
    from .viz.comparison import comparison_figures

    if (args.trace_b is None) == (not args.memory_reset):
        raise RMTLensError("give a second trace file B, or --memory-reset (A's document again, memory reset before "
                           "every segment), not both." if args.memory_reset else
                           "give a second trace file B, or --memory-reset to compare A with its memory reset.")
    if args.memory_reset and not args.checkpoint:
        raise RMTLensError("--memory-reset traces A's document again: give --checkpoint, the checkpoint A was made with.")
    if args.format != "html":
        export.require_browser()  # fail before any work
    a = _load(args.trace_a, args.checkpoint, args)
    if args.memory_reset:
        from .explain.compare import reset_run

        b, name_b = reset_run(a), f"{Path(args.trace_a).stem} (memory reset)"
    else:
        b, name_b = _load(args.trace_b, args.checkpoint_b or args.checkpoint, args), Path(args.trace_b).stem
    c = compare(a, b, align=args.align, threshold=DEFAULT_THRESHOLD if args.threshold is None else args.threshold,
                names=(Path(args.trace_a).stem, name_b))
    out = Path(args.out)
    csv_path, json_path = c.save(out / "comparison.csv"), c.save(out / "comparison.json")
    figures = comparison_figures(c)
    if args.format == "html":
        written = {}
        for name, fig in figures.items():
            path = out / f"{name}.html"
            fig.write_html(str(path), include_plotlyjs="directory", full_html=True)  # plotly.min.js beside: offline
            written[name] = path
    else:
        prov = {"tool": "RMT Lens", "comparison": c.summary(), "a": c.provenance["a"], "b": c.provenance["b"]}
        written = export.export_figures({n: export.print_style(f) for n, f in figures.items()}, out, args.format, prov)
    (out / "figures.json").write_text(json.dumps({"format": args.format, "figures": {n: p.name for n, p in written.items()},
                                                  "tables": [csv_path.name, json_path.name]}, indent=2))
    _say(c.alignment_text)
    unattached = [flag for trace, flag in ((a, "--checkpoint"), (b, "--checkpoint-b (or --checkpoint)"))
                  if trace.stores_writes and trace.model is None]
    if c.distance is None and unattached:  # say it in the command's flags
        _say(f"Memory not compared: an associative memory's states are rebuilt from the trace's stored writes by its "
             f"model; give {' and '.join(unattached)}.")
    else:
        _say(c.divergence_text)
    for name, answer in zip(c.names, c.answers):
        if answer is not None:
            asked = f"asked {answer.question!r}" if answer.question else "no question: the next token"
            _say(f"{name} answers {answer.answer!r} (p = {answer.probability:.3f}; {asked}, segment {answer.segment})")
    for note in c.notes:
        _say(f"note: {note}")
    if c.lens_reason:
        print(f"note: answer-probability curve left out: {c.lens_reason}", file=sys.stderr)
    worst = int(abs(c.loss_diff).argmax())
    _say(f"largest loss difference: {c.loss_diff[worst]:+.3f} nats/token at A segment {int(c.segments_a[worst])} "
         f"(B - A)")
    _say(f"wrote {csv_path.name}, {json_path.name} and {len(written)} figures ({args.format}) to {out}")
    return 0


# ---------------------------------------------------------------------- patch
def add_patch(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="TARGET", help="trace file of the run to patch")
    p.add_argument("source", metavar="SOURCE", help="trace file of the run whose memory is patched in")
    p.add_argument("--checkpoint", required=True, metavar="C", help="the checkpoint both traces were made with")
    p.add_argument("--segments", type=index_list, default=None, metavar="LIST",
                   help="target segments to patch before, e.g. 0-7 or 2,5 (default: every one the source also has)")
    p.add_argument("--slots", type=index_list, default=None, metavar="LIST",
                   help="memory slots patched one at a time, e.g. 0,3 (default: every slot); 'all' is added")
    p.add_argument("--layers", type=index_list, default=None, metavar="LIST",
                   help="an associative memory (ARMT): layers whose (A, z) are patched one at a time, e.g. 0,2 "
                        "(default: every layer); 'all' is added")
    p.add_argument("--csv", default=None, metavar="FILE", help="write every cell (.csv; .json adds provenance)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    add_load_options(p)


def run_patch(args: argparse.Namespace) -> int:
    from .explain.interventions import patch_sweep
    from .errors import ArgumentError
    from .tracing.trace import Trace

    target, source = Trace.load(args.target), Trace.load(args.source)
    model = load_checkpoint(args.checkpoint, args, device=args.device)
    target.attach(model)
    source.attach(model)
    by_layer = target.memory_type == "associative"
    if (args.slots if by_layer else args.layers) is not None:
        given, wanted = ("--slots", "--layers") if by_layer else ("--layers", "--slots")
        raise RMTLensError(f"{given} does not apply to this model: its memory ({target.memory_type!r}) is patched "
                           f"by {'layer' if by_layer else 'slot'}; use {wanted}.")
    try:
        sweep = patch_sweep(target, source, None if args.segments is None else list(args.segments),
                            None if args.slots is None else list(args.slots),
                            layers=None if args.layers is None else list(args.layers))
    except ArgumentError as exc:  # say it in the command's flags
        message = (str(exc).replace("segment must", "--segments values must").replace("slot must", "--slots values must")
                   .replace("layer must", "--layers values must"))
        raise RMTLensError(message) from None
    _say(f"target answer: {sweep.target_answer!r}; source answer: {sweep.source_answer!r} "
         f"(p in the target before patching: {sweep.p_source_answer_before:.4f})")
    _say("p(source's answer) in the target after patching the memory entering each segment "
         "(* = the target's answer became the source's):")
    width = max(8, *(len(c) + 2 for c in sweep.columns))
    _say("segment".ljust(9) + "".join(c.rjust(width) for c in sweep.columns))
    for i, seg in enumerate(sweep.segments):
        cells = "".join((f"{sweep.p_source_answer[i, j]:.3f}" + ("*" if sweep.flipped[i, j] else " ")).rjust(width)
                        for j in range(len(sweep.columns)))
        _say(str(seg).ljust(9) + cells)
    if args.csv:
        from .viz.export import provenance

        path = Path(args.csv)
        sweep.save(path, provenance={"target": provenance(target), "source": provenance(source)}
                   if path.suffix.lower() == ".json" else None)
        _say(f"wrote {path}")
    return 0


# name -> (help, add_arguments, run, description): cli.py wraps each in its Command
COMMANDS = {
    "compare": ("compare two traces segment by segment: memory distance, loss, answer probability, attention mass",
                add_compare, run_compare,
                "Pair the segments of two traces (two documents, two checkpoints, memory on and off: "
                "--memory-reset), write the per-segment comparison (comparison.csv, comparison.json with both "
                "traces' provenance) and its figures, and say where the memories first diverge: the first segment "
                "whose memory LEAVING it (the memory it wrote) differs."),
    "patch": ("patch memory from one run into another, segment x slot (ARMT: x layer): where does the fact live?",
              add_patch, run_patch,
              "Run TARGET from each chosen segment on with the memory SOURCE had there (one slot at a time, and all "
              "slots; an associative memory: one layer's (A, z) at a time, and all layers), and print the "
              "probability of SOURCE's answer in TARGET after each patch."),
}
