"""The rmt-lens command line: eval on tiny checkpoints, exit codes, help of every command."""
from __future__ import annotations

import rmt_core
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rmt_core.cli import COMMANDS, main

from test_evaluation import make_fact_model, make_symbol_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fact_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-fact"
    rmt_core.save(make_fact_model(), str(path), card={"summary": "tiny test model"})
    return path


@pytest.fixture(scope="module")
def copy_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-copy"
    rmt_core.save(make_symbol_model(), str(path))
    return path


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "rmt_core", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


# ---------------------------------------------------------------------- as a process
def test_python_m_eval_prints_table(fact_ckpt, tmp_path):
    out = tmp_path / "res" / "eval.json"
    proc = run_module("eval", str(fact_ckpt), "--task", "detect", "--segments", "1,2", "--samples", "8",
                      "--lm-windows", "2", "--threads", "1", "--device", "cpu", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["task", "segments"])
    for column in ("accuracy_aligned", "accuracy_random", "accuracy_straddle", "accuracy_reset", "shortcut"):
        assert column in lines[header]
    assert lines[header + 2].split()[:3] == ["detect", "1", "8"]
    assert lines[header + 2].split()[5] == "-"  # one segment: nothing to straddle
    assert lines[header + 3].split()[:3] == ["detect", "2", "8"]
    assert "perplexity_memory" in proc.stdout
    assert "austen (held out)" in proc.stdout and "pydocs (held out)" in proc.stdout
    result = json.loads(out.read_text())
    assert [r["segments"] for r in result["rows"]] == [1, 2]
    assert [r["text"] for r in result["lm"]] == ["austen (held out)", "pydocs (held out)"]
    assert all(r["windows"] == 2 for r in result["lm"])


def test_python_m_eval_missing_folder_exits_1(tmp_path):
    proc = run_module("eval", str(tmp_path / "nowhere"), "--task", "detect")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: No checkpoint folder")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_top_level_help_imports_nothing_heavy():
    """`rmt-lens --help` declares no command's arguments, so torch, transformers, plotly and
    captum stay unimported (it took 5-9 s when it imported them; about 0.05 s now)."""
    code = ("import sys; from rmt_core.cli import main; code = main(['--help']); "
            "heavy = [m for m in ('torch', 'transformers', 'plotly', 'captum', 'numpy') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "train" in proc.stdout and "attribute" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout[-200:]


# ---------------------------------------------------------------------- in process
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_of_every_command(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    assert main(argv) == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["eval"],
    ["eval", "x", "--segments", "a,b"],
    ["eval", "x", "--segments", "0,1"],
    ["eval", "x", "--task", "qa7"],
    ["eval", "x", "--samples", "0"],
    ["train", "--recipe", "no-such-recipe", "--out", "somewhere"],
    ["train", "--out", "somewhere"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: rmt-lens") and len(err.strip().splitlines()) == 1 and "--help" in err


def test_eval_fact_with_haystack_file(fact_ckpt, tmp_path, capsys):
    hay = tmp_path / "hay.log"  # any text file, whatever its extension
    hay.write_text("The rain had stopped. Everyone went out into the lane. " * 300, encoding="utf-8")
    assert main(["eval", str(fact_ckpt), "--task", "memorize", "--segments", "2", "--samples", "2",
                 "--haystack", str(hay), "--device", "cpu", "--lm-windows", "1"]) == 0
    out = capsys.readouterr().out
    assert "memorize" in out and "perplexity_reset" in out


def test_eval_runtime_errors_exit_1(fact_ckpt, tmp_path, capsys):
    # A haystack that does not exist.
    assert main(["eval", str(fact_ckpt), "--haystack", str(tmp_path / "missing.txt"), "--samples", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.txt" in err
    # A binary file given as haystack.
    blob = tmp_path / "blob.dat"
    blob.write_bytes(b"\x00\x01\x02 not text")
    assert main(["eval", str(fact_ckpt), "--haystack", str(blob), "--samples", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "blob.dat" in err and "binary" in err
    # An algorithmic task on a model without the symbol vocabulary.
    assert main(["eval", str(fact_ckpt), "--task", "copy", "--segments", "3", "--samples", "1", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "symbols" in err and len(err.strip().splitlines()) == 1


def test_eval_copy_and_lm(copy_ckpt, fact_ckpt, tmp_path, capsys):
    assert main(["eval", str(copy_ckpt), "--task", "copy", "--segments", "3,6", "--samples", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "paper_rmt" in out and "copy" in out
    out_json = tmp_path / "lm.json"
    assert main(["eval", str(fact_ckpt), "--task", "lm", "--segments", "1,2", "--lm-windows", "2", "--device", "cpu",
                 "--json", str(out_json)]) == 0
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["segments_per_window"] for r in rows] == [1, 2]


def test_list(capsys):
    assert main(["list"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["list", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
