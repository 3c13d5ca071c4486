"""The authors' ARMT checkpoints on the command line: `rmt-lens inspect`, the load flags on every
command that loads a checkpoint (--memory-option among them), what a checkpoint needs asked for by
its flag with exit status 2, and a converted folder's round trip.

Checkpoints: the fixtures their own code wrote (tests/fixtures/armt, no tokenizer), and a tiny ARMT
with a tokenizer written here in their AssociativeRecurrentWrapper layout (accelerate's
model.safetensors: no memory_cell.layers.* duplicates, no tied lm_head), so documents can be traced.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import rmt_core
from rmt_core import ArgumentError, CheckpointArgumentError, CheckpointError
from rmt_core.cli import COMMANDS, build_parser, main

from conftest import make_model
from test_formats import write_backbone_folder, write_layout

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "armt"
S = 6  # segment size of the ARMT written here
ARMT_OPTIONS = {"d_mem": 8}


def armt_authors_state(model: rmt_core.RMTModel) -> dict[str, torch.Tensor]:
    """An associative RMTModel's tensors as their AssociativeRecurrentWrapper names them, as accelerate
    saves it (the tied lm_head dropped, no memory_cell.layers.* duplicates)."""
    blocks = "backbone.transformer.h."
    state = {"memory_cell.memory": model.memory_tokens}
    for key, tensor in model.state_dict().items():
        if key.startswith("associative_layers."):
            _, index, part = key.split(".", 2)
            state[f"memory_cell.model.transformer.h.{index}.{part}"] = tensor
        elif key.startswith(blocks):
            index, rest = key[len(blocks):].split(".", 1)
            state[f"memory_cell.model.transformer.h.{index}.layer.{rest}"] = tensor
        elif key.startswith("backbone.") and key != "backbone.lm_head.weight":
            state["memory_cell.model." + key[len("backbone."):]] = tensor
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


@pytest.fixture(scope="module")
def armt(tmp_path_factory) -> dict:
    """A tiny random GPT-2 ARMT in their layout (no config.json), its backbone folder (config and
    tokenizer), a document, and the model itself."""
    root = tmp_path_factory.mktemp("armt_cli")
    model = make_model("gpt2", memory="associative", num_mem_tokens=3, segment_size=S, memory_options=ARMT_OPTIONS)
    with torch.no_grad():  # W_mv starts at zero (every read 0): give the memory something to carry
        for layer in model.associative_layers:
            layer.W_mv.weight.normal_(0, 0.5)
    source = root / "their_armt"
    source.mkdir()
    save_file(armt_authors_state(model), str(source / "model.safetensors"))
    backbone = write_backbone_folder(root / "backbone", model)
    document = root / "doc.txt"
    document.write_text(" ".join(f"w{(7 * i) % 90}" for i in range(40)))
    return {"root": root, "model": model, "source": str(source), "backbone": str(backbone), "doc": str(document)}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------- inspect
def test_inspect_says_what_the_files_store_the_weights_show_and_what_is_missing(capsys):
    code, out, err = run_cli(capsys, "inspect", str(FIXTURES / "gpt2_fa"))
    assert code == 0, err
    assert "the authors' ARMT" in out and "AssociativeRecurrentWrapper" in out
    assert "safetensors weights (model.safetensors)" in out
    assert "segment size no, backbone config no, tokenizer no" in out
    for shown in ("memory tokens (M): 4", "d_mem: 4", "heads: 1 (W_mb has 1 row)", "gating: false",
                  "wrap_pos: unknown until the backbone's config is given"):
        assert shown in out, (shown, out)
    assert "normalize_features=false (default)" in out and "correction=true (default)" in out
    assert "the defaults: framework_accel maths, that of the published GPT-2 BABILong checkpoints" in out
    assert "the segment size it was trained with: give --segment-size N" in out
    assert "the backbone's config: give --backbone NAME_OR_DIR" in out
    assert "rmt_config" not in out  # flags, not Python arguments

    code, out, err = run_cli(capsys, "inspect", str(FIXTURES / "gpt2_fa_wrap_pos"), "--segment-size", "8",
                             "--backbone", str(FIXTURES / "gpt2_fa_wrap_pos" / "backbone"), "--memory-option",
                             "correction=false")
    assert code == 0, err
    assert "wrap_pos: true" in out and "correction=false (--memory-option)" in out
    assert "missing: nothing: it loads with the flags given" in out


def test_inspect_json_of_gating_names_the_heads_flag_and_the_open_options(capsys):
    code, out, err = run_cli(capsys, "inspect", str(FIXTURES / "gpt2_exp_heads_gating"), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["format"] == "armt" and record["wrapper"] == "AssociativeRecurrentWrapper"
    assert record["shown"]["gating"] is True and record["shown"]["n_heads"] is None and record["shown"]["d_mem"] == 4
    flags = {need["key"]: need["flag"] for need in record["needs"]}
    assert flags == {"segment_size": "--segment-size N", "backbone": "--backbone NAME_OR_DIR",
                     "memory_options.n_heads": "--memory-option n_heads=H"}
    assert not record["loads"]
    open_options = {o["name"]: o["default"] for o in record["open_options"]}
    assert open_options == {"n_heads": None, "normalize_features": True, "correction": True, "use_denom": True}
    code, out, _ = run_cli(capsys, "inspect", str(FIXTURES / "gpt2_exp_heads_gating"), "--json", "--segment-size", "8",
                           "--backbone", str(FIXTURES / "gpt2_exp_heads_gating" / "backbone"),
                           "--memory-option", "n_heads=2")
    assert code == 0 and json.loads(out)["needs"] == [] and json.loads(out)["loads"]


def test_inspect_reads_no_pickle_unless_trusted(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "pickled"
    folder.mkdir()
    from safetensors.torch import load_file

    torch.save(load_file(str(FIXTURES / "gpt2_fa" / "full_state_dict.safetensors")), folder / "pytorch_model.bin")
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled without --trust-pickle"))
    code, out, err = run_cli(capsys, "inspect", str(folder))
    assert code == 0, err
    assert "unknown until the pickled weights are read (--trust-pickle)" in out
    assert "the opt-in to read a pickled file: give --trust-pickle" in out
    monkeypatch.setattr(torch, "load", real_load)
    code, out, err = run_cli(capsys, "inspect", str(folder), "--trust-pickle", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["format"] == "armt" and record["shown"]["d_mem"] == 4 and record["files"]["pickled"]
    assert [n["key"] for n in record["needs"]] == ["segment_size", "backbone"]


# ---------------------------------------------------------------------- what is missing, asked by its flag
def test_a_missing_setting_is_asked_for_by_its_flag_with_exit_2(armt, capsys, tmp_path):
    out = str(tmp_path / "t.rmtrace")
    code, _, err = run_cli(capsys, "trace", armt["doc"], "--checkpoint", armt["source"], "--out", out)
    line = one_error_line(err)
    assert code == 2 and "Loading it needs the segment size it was trained with: give --segment-size N" in line
    assert "the backbone's config: give --backbone NAME_OR_DIR" in line and "rmt_config" not in line
    code, _, err = run_cli(capsys, "trace", armt["doc"], "--checkpoint", armt["source"], "--out", out,
                           "--segment-size", str(S))
    line = one_error_line(err)
    assert code == 2 and "--backbone NAME_OR_DIR" in line and "--segment-size" not in line.split("Loading it needs")[1]
    code, _, err = run_cli(capsys, "convert", str(FIXTURES / "gpt2_exp_heads_gating"), "--out", str(tmp_path / "c"),
                           "--segment-size", "8", "--backbone", str(FIXTURES / "gpt2_exp_heads_gating" / "backbone"))
    line = one_error_line(err)
    assert code == 2 and "the number of heads, which gating hides (W_mb is d x d): give --memory-option n_heads=H" in line
    assert not (tmp_path / "c").exists()
    gating = ["--segment-size", "8", "--backbone", str(FIXTURES / "gpt2_exp_heads_gating" / "backbone")]
    code, _, err = run_cli(capsys, "convert", str(FIXTURES / "gpt2_exp_heads_gating"), "--out", str(tmp_path / "c"),
                           *gating, "--memory-option", "n_heads=3")  # the heads the box asks for must fit d_mem
    line = one_error_line(err)
    assert code == 2 and "--memory-option n_heads=3: memory_options n_heads=3 must divide d_mem=4" in line
    code, printed, err = run_cli(capsys, "convert", str(FIXTURES / "gpt2_exp_heads_gating"), "--out", str(tmp_path / "c"),
                                 *gating, "--memory-option", "n_heads=2")
    assert code == 0 and "max |logit difference| vs the source: 0 " in printed, err


@pytest.mark.parametrize("option, words", [
    ("foo=1", "--memory-option foo=1: unknown option 'foo' for the associative memory; known options are correction, "
              "d_mem, gating, n_heads, normalize_features, nu, use_denom, wrap_pos"),
    ("correction=maybe", "--memory-option correction=maybe: correction must be true or false, got 'maybe'"),
    ("n_heads=0", "n_heads must be an integer >= 1, got 0"),
    ("d_mem=4", "--memory-option d_mem=4: the weights show d_mem=8: leave d_mem out, it is read from the weights"),
    ("act_on=true", "act_on=True asks for adaptive computation time"),
    ("n_heads=2", "--memory-option n_heads=2: the weights show n_heads=1: leave n_heads out"),
])
def test_a_memory_option_that_does_not_fit_is_a_usage_error_naming_the_flag(armt, capsys, tmp_path, option, words):
    code, _, err = run_cli(capsys, "trace", armt["doc"], "--checkpoint", armt["source"], "--segment-size", str(S),
                           "--backbone", armt["backbone"], "--out", str(tmp_path / "t.rmtrace"),
                           "--memory-option", option)
    line = one_error_line(err)
    assert code == 2 and words in line, line
    assert not (tmp_path / "t.rmtrace").exists()


def test_memory_options_are_checked_by_the_checkpoints_memory_type(capsys, tmp_path):
    model = make_model("gpt2", mask_mode="causal")  # the authors' RMT: the tokens memory has no options
    source = write_layout(tmp_path / "rmt", model, "safetensors")
    backbone = write_backbone_folder(tmp_path / "bb", model)
    code, _, err = run_cli(capsys, "convert", str(source), "--out", str(tmp_path / "out"), "--segment-size", "6",
                           "--backbone", str(backbone), "--memory-option", "correction=false")
    line = one_error_line(err)
    assert code == 2 and "unknown option 'correction' for the tokens memory; it takes no memory_options" in line
    code, _, err = run_cli(capsys, "inspect", "austen-pydocs-recall", "--memory-option", "d_mem=8")
    assert code == 2 and "for the tokens memory" in one_error_line(err)
    code, _, err = run_cli(capsys, "inspect", "austen-pydocs-recall", "--memory-option", "a=1", "--memory-option", "a=2")
    assert code == 2 and "--memory-option a given twice (1 and 2)" in one_error_line(err)
    code, _, err = run_cli(capsys, "inspect", "austen-pydocs-recall", "--memory-option", "novalue")
    assert code == 2 and "expected KEY=VALUE" in one_error_line(err)


def test_the_python_error_is_a_checkpoint_argument_error_with_its_needs_and_a_corrupt_file_is_not(armt, tmp_path):
    with pytest.raises(CheckpointArgumentError) as err:
        rmt_core.load(armt["source"], device="cpu")
    assert isinstance(err.value, CheckpointError) and isinstance(err.value, ArgumentError)
    assert [n.key for n in err.value.needs] == ["segment_size", "backbone"]
    assert "rmt_config={'segment_size': N} (command line: --segment-size N; in the app: the segment size box)" in str(err.value)
    with pytest.raises(CheckpointArgumentError) as err:
        rmt_core.load(armt["source"], device="cpu", rmt_config={"segment_size": S, "memory_options": {"dmem": 8}},
                      backbone=armt["backbone"])
    assert (err.value.argument, err.value.option, err.value.value) == ("memory_options", "dmem", 8)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    with pytest.raises(CheckpointError) as err:
        rmt_core.load(str(broken), device="cpu")
    assert not isinstance(err.value, CheckpointArgumentError)
    assert main(["inspect", str(broken)]) == 1  # a corrupt file is a failure, not a usage error


# ---------------------------------------------------------------------- every loading command
def test_every_command_that_loads_a_checkpoint_takes_the_load_flags():
    """Found from the commands themselves: each either declares the four load flags or is one of the
    three that load nothing given by the user (train builds a model, list reads names, ship loads its
    own training run)."""
    flags = ["--trust-pickle", "--segment-size", "8", "--backbone", "org/name", "--memory-option", "correction=false",
             "--memory-option", "n_heads=2"]
    required = {"eval": ["C"], "trace": ["F", "--out", "T"], "figures": ["T", "--out", "D"], "report": ["T", "--out", "R"],
                "attribute": ["T", "--segment", "0"], "ask": ["F"], "convert": ["S", "--out", "D"],
                "compare": ["A", "B", "--out", "D"], "patch": ["A", "B", "--checkpoint", "C"],
                "study": ["run", "--out", "D"], "inspect": ["C"]}
    assert set(required) | {"train", "list", "ship"} == set(COMMANDS)
    for command, argv in required.items():
        args = build_parser(only=command).parse_args([command, *argv, *flags])
        assert (args.trust_pickle, args.segment_size, args.backbone) == (True, 8, "org/name"), command
        assert args.memory_option == {"correction": False, "n_heads": 2}, command
    for command in ("train", "list", "ship"):
        assert "--memory-option" not in build_parser(only=command)._subparsers._group_actions[0].choices[command] \
            .format_help()


def test_study_in_worker_processes_refuses_load_flags_they_would_not_see(armt, capsys, tmp_path):
    code, _, err = run_cli(capsys, "study", "run", "--checkpoint", armt["source"], "--segment-size", str(S),
                           "--backbone", armt["backbone"], "--workers", "2", "--segments", "2", "--depths", "50",
                           "--samples", "1", "--out", str(tmp_path / "study"))
    line = one_error_line(err)
    assert code == 2 and "--segment-size, --backbone reach only this process" in line and "rmt-lens convert" in line
    assert not (tmp_path / "study").exists()


def test_trace_defaults_to_the_shipped_default_model_like_ask(capsys, tmp_path):
    from rmt_core.io.checkpoint import DEFAULT_CHECKPOINT

    assert build_parser(only="trace").parse_args(["trace", "F", "--out", "T"]).checkpoint == DEFAULT_CHECKPOINT
    assert build_parser(only="ask").parse_args(["ask", "F"]).checkpoint == DEFAULT_CHECKPOINT
    document = tmp_path / "doc.txt"
    document.write_text("Anne walked to the garden. " * 6)
    out = tmp_path / "d.rmtrace"
    code, printed, err = run_cli(capsys, "trace", str(document), "--out", str(out), "--device", "cpu")
    assert code == 0, err
    assert f"with {DEFAULT_CHECKPOINT}" in printed
    assert rmt_core.Trace.load(str(out)).model_info["name"] == DEFAULT_CHECKPOINT


# ---------------------------------------------------------------------- a converted folder's round trip
def test_trace_convert_and_trace_the_converted_folder(armt, capsys, tmp_path):
    flags = ["--segment-size", str(S), "--backbone", armt["backbone"], "--device", "cpu"]
    theirs = tmp_path / "theirs.rmtrace"
    code, printed, err = run_cli(capsys, "trace", armt["doc"], "--checkpoint", armt["source"], "--out", str(theirs),
                                 *flags)
    assert code == 0, err
    traced = rmt_core.Trace.load(str(theirs))
    ids = torch.from_numpy(np.concatenate([s.token_ids for s in traced.segments]).astype(np.int64))[None]
    with torch.no_grad():  # what their layout loads is the model that was written
        expected = armt["model"](ids).logits
    loaded = rmt_core.load(armt["source"], device="cpu", rmt_config={"segment_size": S}, backbone=armt["backbone"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected, rtol=0, atol=1e-5)
    assert traced.num_segments >= 3

    converted = tmp_path / "converted"
    code, printed, err = run_cli(capsys, "convert", armt["source"], "--out", str(converted),
                                 "--segment-size", str(S), "--backbone", armt["backbone"],
                                 "--memory-option", "correction=false")
    assert code == 0, err
    assert "max |logit difference| vs the source: 0 " in printed
    card = (converted / "README.md").read_text()
    assert "correction=False" in card and "use_denom=True (framework_accel maths" in card
    code, out, err = run_cli(capsys, "inspect", str(converted), "--json")
    record = json.loads(out)
    assert code == 0 and record["format"] == "rmt-lens" and record["needs"] == [] and record["loads"]
    assert record["stores"]["rmt"]["memory"] == "associative"
    assert record["stores"]["rmt"]["memory_options"]["correction"] is False
    assert record["stores"]["rmt"]["memory_options"]["normalize_features"] is False

    ours = tmp_path / "ours.rmtrace"
    code, _, err = run_cli(capsys, "trace", armt["doc"], "--checkpoint", str(converted), "--out", str(ours),
                           "--device", "cpu")
    assert code == 0, err
    again = rmt_core.Trace.load(str(ours))
    assert again.num_tokens == traced.num_tokens
    # correction=false is a different model: the first segment (no read yet) agrees, later ones not
    assert again.segments[0].loss == pytest.approx(traced.segments[0].loss, abs=1e-6)
    assert max(abs(a.loss - b.loss) for a, b in zip(again.segments[2:], traced.segments[2:])) > 1e-4
    # a weight-decided option cannot be changed on the converted folder either
    code, _, err = run_cli(capsys, "trace", armt["doc"], "--checkpoint", str(converted), "--out", str(ours),
                           "--memory-option", "d_mem=4")
    assert code == 2 and "--memory-option d_mem=4: the weights were trained with d_mem=8" in one_error_line(err)
    # and a maths switch can: back to the source's maths
    back = rmt_core.load(str(converted), device="cpu", rmt_config={"memory_options": {"correction": True}})
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, expected, rtol=0, atol=1e-5)
    assert back.config.memory_options["d_mem"] == 8  # the stored options are kept: given ones are merged in
