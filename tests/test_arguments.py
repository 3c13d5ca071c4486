"""Argument checks (issue 17): every public function names the bad argument, its range and the fix;
the CLI answers bad arguments with one `error:` line and never a traceback."""
from __future__ import annotations

import rmt_core
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rmt_core.explain import analysis, attribution, interventions
from rmt_core.viz import figures, paper
from rmt_core.cli import COMMANDS, main
from rmt_core.errors import ArgumentError, ConfigError, RMTLensError, TraceError

from conftest import make_model
from test_evaluation import make_fact_model

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trace():
    return rmt_core.trace(make_model(num_mem_tokens=3, segment_size=6), np.arange(1, 40) % 90)


# ---------------------------------------------------------------------- attribution
def test_read_slots_n_steps_zero(trace):
    with pytest.raises(ArgumentError, match=r"n_steps must be >= 1 \(an integer\), got 0\. It is the number"):
        attribution.read_slots(trace, 1, 2, n_steps=0)


def test_baseline_typo_is_refused_with_a_suggestion(trace):
    with pytest.raises(ArgumentError, match=r"baseline must be one of 'initial', 'zeros', got 'initail'\. "
                                            r"Did you mean 'initial'\?"):
        attribution.read_slots(trace, 1, 2, baseline="initail")


@pytest.mark.parametrize("target", [99999, -1, 97, 2.5, True])
def test_target_outside_the_vocabulary(trace, target):
    with pytest.raises(ArgumentError, match=r"target must be .*0\.\.96.*vocabulary of 97 entries"):
        attribution.read_slots(trace, 1, 2, target=target)
    with pytest.raises(ArgumentError, match="target must be"):
        attribution.through_memory(trace, 1, 2, target=target)


def test_other_attribution_arguments(trace):
    with pytest.raises(ArgumentError, match="method must be one of .* Did you mean 'saliency'"):
        attribution.read_slots(trace, 1, 2, method="salency")
    with pytest.raises(TraceError, match=r"segment must be in 0\.\.6"):
        attribution.write_slots(trace, -1)
    with pytest.raises(ArgumentError, match="segment must be"):
        attribution.write_slots(trace, 7)
    with pytest.raises(ArgumentError, match="max_segments must be >= 0"):
        attribution.through_memory(trace, 1, 2, max_segments=-1)
    with pytest.raises(TraceError, match=r"position must be in 0\.\.5 \(an integer\), got 6\. It is a token's"):
        attribution.read_slots(trace, 1, 6)


# ---------------------------------------------------------------------- interventions, analysis, figures
def test_interventions_check_their_arguments(trace):
    with pytest.raises(ArgumentError, match="segment must be"):
        interventions.zero_memory(trace, 99)
    with pytest.raises(ArgumentError, match=r"slot must be in 0\.\.2 \(an integer\), got 3\. The model has 3"):
        interventions.replace_slot(trace, 1, 3, trace)
    with pytest.raises(ArgumentError, match="edit must return memory of shape"):
        interventions.intervene(trace, 1, lambda mem: mem[:1], "bad edit")


def test_analysis_and_figures_check_their_arguments(trace):
    with pytest.raises(ArgumentError, match=r"pair must be one of .*Did you mean 'write->tokens'"):
        analysis.block_mass(trace, "write->token")
    with pytest.raises(ArgumentError, match=r"layer must be in -2\.\.1"):
        analysis.block_mass(trace, "write->tokens", layer=2)
    with pytest.raises(ArgumentError, match="k must be >= 1"):
        analysis.tokens_write_slots_attend_to(trace, 0, k=0)
    with pytest.raises(ArgumentError, match="segment must be"):
        analysis.logit_lens(trace, 50)
    with pytest.raises(ArgumentError, match=r"head must be in 0\.\.3"):
        figures.standard_figures(trace, 0, head=4)
    with pytest.raises(ArgumentError, match="segment must be"):
        trace.attention(7)
    for pattern in (paper.write_pattern, paper.read_pattern):
        with pytest.raises(ArgumentError, match="segment must be"):
            pattern(trace, -1)
    assert trace.check_view() == (6, 1, 0) and trace.check_view(2, -2, 3) == (2, 0, 3)
    for view, message in (((7, -1, 0), r"--segment must be in 0\.\.6"), ((0, 2, 0), r"--layer must be in -2\.\.1"),
                          ((0, 0, -1), r"--head must be in 0\.\.3"), ((1.5, 0, 0), "--segment must be an integer")):
        with pytest.raises(TraceError, match=message):
            trace.check_view(*view, prefix="--")
    with pytest.raises(ArgumentError, match="n_components must be >= 1"):
        analysis.pca_trajectory(trace.memory_states(), 0)


# ---------------------------------------------------------------------- the model
def test_forward_and_generate_check_ids_and_settings():
    model = make_model()
    with pytest.raises(ArgumentError, match=r"input_ids must be token ids in 0\.\.96"):
        model(torch.tensor([[1, 2, 97]]))
    with pytest.raises(ArgumentError, match=r"labels must have the shape of input_ids"):
        model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2]]))
    with pytest.raises(ArgumentError, match="max_new_tokens must be >= 0"):
        model.generate(torch.tensor([[1, 2]]), max_new_tokens=-1)
    with pytest.raises(ArgumentError, match="temperature must be a finite number > 0"):
        model.generate(torch.tensor([[1, 2]]), do_sample=True, temperature=0)
    with pytest.raises(ArgumentError, match="input_ids must be token ids"):
        model.generate(torch.tensor([[-1, 2]]))
    with pytest.raises(ArgumentError, match="top_k must be"):
        rmt_core.trace(model, np.arange(10), top_k=0)


def test_positions_that_do_not_restart_limit_the_input_length():
    """reset_positions=False: positions grow by m + L + m per segment until GPT-2's table ends.
    n_positions 64, rows of 3 + 6 + 3 = 12: five full segments and no room for a sixth row."""
    model = make_model(reset_positions=False)
    assert model.max_input_tokens == 30
    ok = torch.arange(30).unsqueeze(0) % 90
    model(ok)  # the longest input runs
    assert rmt_core.trace(model, ok[0]).num_tokens == 30
    long = torch.arange(31).unsqueeze(0) % 90
    for call in (lambda: model(long), lambda: rmt_core.trace(model, long[0]), lambda: rmt_core.trace_iter(model, long[0])):
        with pytest.raises(ArgumentError, match=r"31 tokens but this model takes at most 30.*reset_positions=False"):
            call()
    with pytest.raises(ConfigError, match=r"starting at position 48 \(reset_positions=False\).*holds 64"):
        model.generate(long[:, :25], max_new_tokens=13)  # final row 3 + 1 + 13 positions from 48
    assert model.generate(long[:, :25], max_new_tokens=12).shape == (1, 37)
    assert make_model().max_input_tokens is None  # positions restart: any length


# ---------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    ckpt = folder / "tiny"
    rmt_core.save(make_fact_model(), str(ckpt))
    doc = folder / "doc.txt"
    doc.write_text("Mary went to the garden. John moved to the office. " * 4, encoding="utf-8")
    asked = folder / "asked.txt"  # a document that already ends with its question
    asked.write_text("Mary went to the garden. John moved to the office. Question: Where is Mary? Answer:",
                     encoding="utf-8")
    trace = folder / "doc.trace"
    assert main(["trace", str(doc), "--checkpoint", str(ckpt), "--out", str(trace), "--device", "cpu"]) == 0
    long_ckpt = folder / "no-reset"
    model = make_fact_model()
    model.config.reset_positions = False
    rmt_core.save(model, str(long_ckpt))
    return {"ckpt": str(ckpt), "doc": str(doc), "asked": str(asked), "trace": str(trace), "long": str(long_ckpt), "dir": folder}


def bad_argument_sets(f) -> dict[str, list[list[str]]]:
    """For every command, argument sets that must fail with one line (usage or runtime)."""
    t, c = f["trace"], f["ckpt"]
    return {
        "train": [["--recipe", "nope", "--out", "x"], ["--recipe", "copy"], ["--recipe", "copy", "--out", "x",
                                                                             "--minutes", "-5"]],
        "eval": [[], ["nope-checkpoint"], [c, "--segments", "0"], [c, "--task", "qa9"], [c, "--samples", "-1"],
                 [c, "--haystack", str(f["dir"] / "missing.txt"), "--samples", "1", "--segments", "1"]],
        "list": [["--bogus"]],
        "convert": [[c], [str(f["dir"] / "nowhere"), "--out", str(f["dir"] / "conv1")],
                    [c, "--out", str(f["dir"] / "conv2"), "--segment-size", "0"],
                    [c, "--out", str(f["dir"])]],  # not an empty folder
        "ship": [[], [str(f["dir"] / "no-run"), "--name", "x"]],
        "trace": [[f["doc"]], [str(f["dir"] / "missing.pdf"), "--checkpoint", c, "--out", "x"],
                  [f["doc"], "--checkpoint", "no-such", "--out", "x"], [f["doc"], "--checkpoint", c, "--out", "x",
                                                                        "--max-tokens", "0"],
                  [f["doc"], "--checkpoint", f["long"], "--out", str(f["dir"] / "long.trace")]],
        "figures": [[t], [t, "--out", str(f["dir"] / "figs"), "--format", "gif"], [t, "--out", "x", "--segment", "99"],
                    [t, "--out", "x", "--layer", "7"], [t, "--out", "x", "--scale", "-1"],
                    [f["doc"], "--out", "x"]],
        "report": [[t], [t, "--out", str(f["dir"] / "r.html"), "--head", "9"],
                   [str(f["dir"] / "nothing.trace"), "--out", "x"]],
        "attribute": [[t, "--checkpoint", c], [t, "--checkpoint", c, "--segment", "0", "--position", "1", "--target",
                                                "99999"],
                      [t, "--checkpoint", c, "--segment", "0", "--position", "1", "--target", "-1"],
                      [t, "--checkpoint", c, "--segment", "0", "--position", "99"],
                      [t, "--checkpoint", c, "--segment", "-3", "--kind", "write"],
                      [t, "--checkpoint", c, "--segment", "0", "--position", "1", "--steps", "0"],
                      [t, "--checkpoint", c, "--segment", "0", "--position", "1", "--baseline", "initail"],
                      [t, "--checkpoint", c, "--segment", "1", "--position", "1", "--kind", "through",
                       "--max-segments", "-1"],
                      [t, "--checkpoint", c, "--segment", "0", "--position", "1", "--target", "zzzzqqqq"],
                      [t, "--segment", "0", "--position", "1"]],  # its model is not shipped: --checkpoint needed
        "ask": [[], [f["doc"], "--checkpoint", c, "--max-segments", "-1", "-q", "Where is Mary?"],
                [f["doc"], "--checkpoint", c, "--max-segments", "two", "-q", "Where is Mary?"],
                [str(f["dir"] / "missing.txt"), "--checkpoint", c, "-q", "Where is Mary?"],
                [f["doc"], "--checkpoint", "no-such", "-q", "Where is Mary?"],
                [f["doc"], "--checkpoint", c],  # no question, and the document asks none
                [f["doc"], "--checkpoint", c, "-q", "   "],
                [f["asked"], "--checkpoint", c, "-q", "Where is John?"],  # a second question
                [f["doc"], "--checkpoint", c, "-q", "Mary " * 100],  # longer than one segment
                [f["doc"], "--checkpoint", c, "-q", "What is the capital of France?"],  # not a trained question
                [f["doc"], "--checkpoint", c, "-q", "Where is Mary?", "--device", "tpu"],  # not a device
                [f["doc"], "--checkpoint", c, "-q", "Where is Mary?", "--device", "meta"]],  # not one to run on
        "compare": [[t], [t, t], [t, str(f["dir"] / "missing.trace"), "--out", "x", "--format", "html"],
                    [t, t, "--out", "x", "--align", "middle"], [t, t, "--out", "x", "--threshold", "abc"],
                    [t, t, "--out", "x", "--format", "gif"], [f["doc"], t, "--out", "x", "--format", "html"],
                    [t, t, "--out", "x", "--format", "html", "--checkpoint", "no-such"],
                    [t, "--out", "x", "--format", "html"], [t, "--memory-reset", "--out", "x", "--format", "html"],
                    [t, t, "--memory-reset", "--checkpoint", c, "--out", "x", "--format", "html"]],
        "patch": [[], [t, t], [t, t, "--checkpoint", c, "--segments", "a"], [t, t, "--checkpoint", c, "--slots", "-1"],
                  [t, t, "--checkpoint", c, "--slots", "99"], [t, t, "--checkpoint", c, "--segments", "99"],
                  [t, str(f["dir"] / "missing.trace"), "--checkpoint", c], [t, t, "--checkpoint", "no-such"],
                  [f["doc"], t, "--checkpoint", c]],
        "study": [[], ["run"], ["run", "--task", "nope", "--out", "x"], ["run", "--segments", "0", "--out", "x"],
                  ["run", "--depths", "101", "--out", "x"], ["run", "--samples", "-1", "--out", "x"],
                  ["run", "--source", str(f["dir"] / "missing"), "--out", "x"],
                  ["run", "--segments", "2", "--depths", "50", "--samples", "1", "--ray", "nowhere", "--out", "x"],
                  ["report", str(f["dir"]), "--out", "x"], ["report", str(f["dir"]), "--out", "x", "--format", "gif"],
                  ["run", "--checkpoint", c, "--memory-option", "correction=false", "--out", "x"]],
        "inspect": [[], [str(f["dir"] / "nowhere")], [c, "--memory-option", "correction=false"],  # tokens: no options
                    [c, "--memory-option", "correction"], [c, "--memory-option", "a=1", "--memory-option", "a=2"],
                    [c, "--backbone", str(f["dir"] / "nowhere")]],
    }


def test_every_command_has_bad_argument_cases(files):
    assert set(bad_argument_sets(files)) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_arguments_give_one_error_line(command, files, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RMT_LENS_LOG", str(tmp_path / "errors.log"))
    monkeypatch.chdir(tmp_path)
    for args in bad_argument_sets(files)[command]:
        code = main([command, *args])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
        assert code in (1, 2), (args, code, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert "Traceback" not in err and "unexpected error" not in err, (args, err)


def test_ask_usage_errors_exit_2_before_any_work(files, capsys, monkeypatch):
    """A missing FILE, a negative or non-integer --max-segments, an unknown option: exit 2 at parse
    time, before the document is read or the model traced (--max-segments -1 used to trace the whole
    document, print an estimate for 0 segments, then fail with exit 1)."""
    monkeypatch.setattr(COMMANDS["ask"], "run", lambda args: pytest.fail(f"ask ran with {args}"))
    for args, named in (([], "FILE"), ([f := files["doc"], "--max-segments", "-1"], "--max-segments"),
                        ([f, "--max-segments", "two"], "--max-segments"), ([f, "--bogus"], "--bogus")):
        assert main(["ask", *args]) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and named in err, (args, err)
        assert "Traceback" not in err


def test_reset_positions_false_checkpoint_is_explained(files, capsys, tmp_path):
    code = main(["trace", files["doc"], "--checkpoint", files["long"], "--out", str(tmp_path / "t.trace")])
    err = capsys.readouterr().err
    assert code == 1 and "reset_positions=False" in err and "--max-tokens" in err


def test_an_unexpected_exception_is_one_line_and_a_logged_traceback(monkeypatch, capsys, tmp_path):
    log = tmp_path / "logs" / "errors.log"
    monkeypatch.setenv("RMT_LENS_LOG", str(log))

    def broken(args):
        return {}["no such key"]

    monkeypatch.setattr(COMMANDS["list"], "run", broken)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: unexpected error (KeyError: 'no such key')") and str(log) in err
    assert "report it" in err
    logged = log.read_text()
    assert "Traceback (most recent call last)" in logged and "KeyError" in logged and "command: list" in logged


def test_target_out_of_vocabulary_in_a_real_process(files, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RMT_LENS_LOG": str(tmp_path / "e.log")}
    for target in ("99999", "-1"):
        proc = subprocess.run([sys.executable, "-m", "rmt_core", "attribute", files["trace"], "--checkpoint",
                               files["ckpt"], "--segment", "0", "--position", "1", "--target", target,
                               "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: --target {target} is not a token id")
        assert "Traceback" not in proc.stderr


def test_error_classes():
    assert issubclass(ArgumentError, RMTLensError) and issubclass(ArgumentError, ValueError)
