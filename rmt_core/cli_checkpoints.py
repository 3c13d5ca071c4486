"""Checkpoints on the ``rmt-lens`` command line: the flags every command that loads one takes, how
what a checkpoint needs reads in flags, and ``rmt-lens inspect`` (registered in cli.COMMANDS).

    --trust-pickle  --segment-size N  --backbone NAME_OR_DIR  --memory-option KEY=VALUE (repeatable)

add_load_options declares them on a command's parser; load_options turns them into rmt_core.load's
keyword arguments (one home: every loading command goes through it). A checkpoint that needs one of
them, or was given one that does not fit it, raises rmt_core.CheckpointArgumentError; cli.main prints
usage_message(exc) (flags, never Python arguments) and exits with status 2.

Like cli.py, nothing heavy is imported at module level.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

LOAD_FLAGS = {"trust_pickle": "--trust-pickle", "segment_size": "--segment-size", "backbone": "--backbone",
              "memory_option": "--memory-option"}
# CheckpointArgumentError.argument -> the flag that gives it
FLAG_OF_ARGUMENT = {"memory_options": "--memory-option", "backbone": "--backbone", "segment_size": "--segment-size",
                    "trust_pickle": "--trust-pickle"}
MEMORY_OPTION_HELP = ("a memory option the checkpoint's files and weights do not decide, e.g. correction=false, "
                      "normalize_features=true or n_heads=4 (an ARMT; see `rmt-lens inspect C`); VALUE is read as "
                      "JSON (true, false, 4), else as text; repeat for several")


def _say(line: str = "") -> None:
    print(line, flush=True)


def memory_option(text: str) -> tuple[str, Any]:
    """argparse type: "KEY=VALUE" -> (KEY, VALUE read as JSON: true / false / 4 / 0.5, else the text)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. correction=false, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


class _MemoryOptions(argparse.Action):
    """--memory-option KEY=VALUE, repeatable, each KEY once: a dict in args.memory_option."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102 (argparse API)
        key, value = values
        given = dict(getattr(namespace, self.dest, None) or {})
        if key in given:
            parser.error(f"--memory-option {key} given twice ({json.dumps(given[key])} and {json.dumps(value)}): "
                         "give each option once")
        given[key] = value
        setattr(namespace, self.dest, given)


def add_load_options(p: argparse.ArgumentParser) -> None:
    """What a checkpoint written by other code may need (see rmt_core.load), on any loading command."""
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow pickled weights (pytorch_model.bin, .pth); read with torch.load(weights_only=True). "
                        "Only for files you trust")
    p.add_argument("--segment-size", type=positive_int, default=None, metavar="N",
                   help="segment size for checkpoints that do not store it (the authors' RMT and ARMT); "
                        "overrides the stored one otherwise")
    p.add_argument("--backbone", default=None, metavar="NAME_OR_DIR",
                   help="the backbone's config (and tokenizer) for checkpoints without one: a folder or a "
                        "Hugging Face model name from the local cache")
    p.add_argument("--memory-option", type=memory_option, action=_MemoryOptions, default=None, metavar="KEY=VALUE",
                   help=MEMORY_OPTION_HELP)


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (cli.py's commands use it too)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """rmt_core.load keyword arguments from the load flags (trust_pickle, rmt_config, backbone)."""
    rmt_config: dict[str, Any] = {}
    if getattr(args, "segment_size", None) is not None:
        rmt_config["segment_size"] = args.segment_size
    if getattr(args, "memory_option", None):
        rmt_config["memory_options"] = dict(args.memory_option)
    return {"trust_pickle": bool(getattr(args, "trust_pickle", False)), "rmt_config": rmt_config or None,
            "backbone": getattr(args, "backbone", None)}


def given_load_flags(args: argparse.Namespace) -> list[str]:
    """The load flags given on this command line (their names, e.g. ["--segment-size"])."""
    return [flag for dest, flag in LOAD_FLAGS.items() if getattr(args, dest, None)]


def load_checkpoint(name: str, args: argparse.Namespace, device: str | None = None):
    """rmt_core.load(name) with the command's load flags."""
    from .io.checkpoint import load

    return load(name, device=device, **load_options(args))


def study_loader(args: argparse.Namespace):
    """`study run`'s loader: load(checkpoint, elsewhere) -> the model, with the load flags. elsewhere:
    the study runs in worker processes (--workers, --ray), which load the checkpoint again by name and
    see no flags: then any load flag is refused (CheckpointArgumentError, exit 2) with the way round it."""
    def load(checkpoint: str, elsewhere: bool):
        flags = given_load_flags(args)
        if elsewhere and flags:
            from .errors import CheckpointArgumentError

            raise CheckpointArgumentError(
                f"{', '.join(flags)} reach only this process, but --workers / --ray load the checkpoint again by "
                f"name in every worker. Convert it first (rmt-lens convert {checkpoint} --out DIR with the same "
                "flags) and run the study with --checkpoint DIR, or run it in this process (no --workers / --ray).")
        return load_checkpoint(checkpoint, args, device="cpu")
    return load


def _value(value: Any) -> str:
    """A value as it is typed on the command line (true, 4, text)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def _in_flags(text: str) -> str:
    return " ".join(text.replace("given in memory_options", "given with --memory-option").split())


def usage_message(exc) -> str:
    """A CheckpointArgumentError in command-line terms: what each need's flag is ("Loading it needs the
    segment size it was trained with: give --segment-size N"), or the flag at fault ("--memory-option
    foo=1: unknown option 'foo' for the associative memory; known options are ...")."""
    if exc.needs:
        asks = "; and ".join(f"{need.what}{need.detail}: give {need.flag}" for need in exc.needs)
        return _in_flags(f"{exc.problem} Loading it needs {asks}.")
    flag = FLAG_OF_ARGUMENT.get(exc.argument or "")
    if flag == "--memory-option" and exc.option is not None:
        flag = f"--memory-option {exc.option}={_value(exc.value)}"
    elif flag == "--backbone" and exc.value is not None:
        flag = f"--backbone {exc.value}"
    if flag is None:
        return _in_flags(str(exc))
    return _in_flags(f"{flag}: {exc.problem}")


# ---------------------------------------------------------------------- inspect
def add_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="PATH",
                   help="a checkpoint folder, a weights file (.safetensors, .bin, .pth, an .index.json), a shipped "
                        "checkpoint's name or a Hugging Face model name in the local cache")
    p.add_argument("--json", action="store_true", help="print what was found as JSON")
    add_load_options(p)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _shown_lines(shown: dict[str, Any], info) -> list[str]:
    """What the weights show, one phrase each."""
    if not shown:
        return []
    if info.armt is None:
        return [f"{shown['num_mem_tokens']} memory slots (memory_cell.memory)"]
    heads = ("hidden by gating (W_mb is d x d): give --memory-option n_heads=H" if shown["n_heads"] is None
             else f"{shown['n_heads']} (W_mb has {shown['n_heads']} row{'s' if shown['n_heads'] != 1 else ''})")
    if shown["wrap_pos"] is None:
        wrap = (f"unknown until the backbone's config is given (wpe has {info.armt.wpe_rows} rows: n_positions, "
                f"or n_positions + {shown['num_mem_tokens']} with wrap_pos)")
    else:
        wrap = _value(shown["wrap_pos"]) + ("" if info.armt.wpe_rows is not None else " (no position table)")
    return [f"memory tokens (M): {shown['num_mem_tokens']}, hidden size {shown['hidden_size']}",
            f"layers with associative memory: {shown['layers']} ({shown['layers_attr']})",
            f"d_mem: {shown['d_mem']}", f"heads: {heads}", f"gating: {_value(shown['gating'])}",
            f"wrap_pos: {wrap}"]


def _section(label: str, lines: list[str]) -> None:
    """`  label: first line`, the others aligned under it."""
    for i, line in enumerate(lines):
        _say(f"  {label}: {line}" if i == 0 else " " * (len(label) + 4) + line)


def run_inspect(args: argparse.Namespace) -> int:
    from .io.checkpoint import given_backbone_config, inspect_checkpoint

    options = load_options(args)
    info = inspect_checkpoint(args.checkpoint, trust_pickle=options["trust_pickle"])
    backbone_config = given_backbone_config(options["backbone"])[1] if options["backbone"] else None
    info.check_options(options["rmt_config"], backbone_config)
    record = info.to_dict(options["trust_pickle"], options["rmt_config"], options["backbone"], backbone_config)
    record["loads"] = info.format in ("rmt-lens", "authors", "armt", "pickled") and not record["needs"]
    if args.json:
        _say(json.dumps(record, indent=2, default=str))
        return 0
    _say(f"{info.path}")
    _section("format", [_format_line(info)])
    if record["files"] is not None:
        files = record["files"]
        extra = f"; missing shards: {', '.join(files['missing_shards'])}" if files["missing_shards"] else ""
        _section("files", [files["description"] + extra])
    stores = record["stores"]
    stored = [f"segment size {_yes(stores['segment_size'])}, backbone config {_yes(stores['backbone_config'])}, "
              f"tokenizer {_yes(stores['tokenizer'])}"]
    if stores["memory_options"]:
        stored.append("memory options " + ", ".join(f"{k}={_value(v)}" for k, v in sorted(stores["memory_options"].items())))
    if info.rmt is not None:
        stored.append(_native_line(info.rmt))
    _section("the files store", stored)
    if info.format == "pickled":
        _section("the weights", ["not read (a pickled file can run code when loaded): --trust-pickle reads them with "
                                 "torch.load(weights_only=True)"])
    _section("the weights show", _shown_lines(record["shown"], info))
    given = (options["rmt_config"] or {}).get("memory_options", {})
    defaulted = [option for option in record["open_options"] if option["default"] is not None]
    if defaulted:
        lines = [f"{o['name']}={_value(given.get(o['name'], o['default']))}"
                 + (" (--memory-option)" if o["name"] in given else " (default)") for o in defaulted]
        whys = sorted({o["why"] for o in defaulted if o["name"] not in given})
        lines += [f"the defaults: {why}" for why in whys] + ["set one with --memory-option KEY=VALUE"]
        _section("no file or weight decides", lines)
    if record["needs"]:
        _section("missing", [f"{n['what']}{n['detail']}: give {n['flag']}" for n in record["needs"]])
    elif info.format in ("rmt-lens", "authors", "armt"):
        _section("missing", ["nothing: it loads with the flags given"])
    return 0


def _format_line(info) -> str:
    if info.format == "rmt-lens":
        return "an RMT Lens checkpoint (config.json, model.safetensors)"
    if info.format == "pickled":
        return "unknown until the pickled weights are read (--trust-pickle)"
    from .io.formats import FORMAT_NAMES

    name = FORMAT_NAMES.get(info.format, info.describe())
    if info.format not in ("authors", "armt", "rmt-lens"):
        name += ": RMT Lens does not load it"
    return name + (f", {info.wrapper}" if info.wrapper else "")


def _native_line(rmt: dict[str, Any]) -> str:
    memory = rmt.get("memory", "tokens")
    words = [f"memory {memory}", f"{rmt.get('num_mem_tokens')} memory {'slots' if memory == 'tokens' else 'tokens'}",
             f"segments of {rmt.get('segment_size')} tokens"]
    if rmt.get("memory_options"):
        words.append("memory options " + ", ".join(f"{k}={_value(v)}" for k, v in sorted(rmt["memory_options"].items())))
    return ", ".join(words)


COMMANDS = {
    "inspect": ("what a checkpoint is, what its files store and its weights show, what loading it still needs",
                add_inspect, run_inspect,
                "Say what a checkpoint is without loading it (and without reading a pickled file unless "
                "--trust-pickle): the format found, what the files store, what the weights show (an ARMT's memory "
                "tokens, d_mem, heads, gating, wrap_pos), what is missing and the flag that gives it, and which "
                "memory options no file or weight decides, with the default a load takes. The load flags given "
                "(--segment-size, --backbone, --memory-option) count as given."),
}

__all__ = ["COMMANDS", "add_load_options", "given_load_flags", "load_checkpoint", "load_options", "memory_option",
           "positive_int", "study_loader", "usage_message"]
