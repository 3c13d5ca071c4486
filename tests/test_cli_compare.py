"""The compare / patch commands and report --compare, end to end on a tiny checkpoint (in process)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from rmt_core.cli import main

from test_cli_trace import COMMON, TEXT, ckpt, other_ckpt, run  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def two_traces(ckpt, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("two")
    paths = []
    for name, text in (("garden", TEXT + "Mary went to the garden.\n" + TEXT),
                       ("kitchen", TEXT + "Mary went to the kitchen.\n" + TEXT)):
        doc = folder / f"{name}.txt"
        doc.write_text(text, encoding="utf-8")
        out = folder / f"{name}.rmtrace"
        assert main(["trace", str(doc), "--checkpoint", str(ckpt), "--out", str(out), *COMMON]) == 0
        paths.append(out)
    return paths[0], paths[1]


def test_compare_writes_csv_json_and_figures(two_traces, ckpt, tmp_path, capsys):
    a, b = two_traces
    code, out, err = run(capsys, "compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--checkpoint", str(ckpt),
                         "--format", "html", "--device", "cpu")
    assert code == 0, err
    assert "Segments paired by index" in out and "diverge" in out
    rows = list(csv.DictReader(io.StringIO((tmp_path / "cmp" / "comparison.csv").read_text())))
    assert rows and rows[0]["segment_a"] == "0" and abs(float(rows[0]["cosine_mean"])) < 1e-9  # same first segment
    record = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert record["provenance"]["b"]["weights_hash"] and record["comparison"]["lens_reason"] is None
    listing = json.loads((tmp_path / "cmp" / "figures.json").read_text())
    assert set(listing["figures"]) == {"memory_distance", "memory_distance_l2", "loss_and_answer", "block_mass"}
    assert all((tmp_path / "cmp" / f).is_file() for f in listing["figures"].values())


def test_compare_without_checkpoint_says_the_answer_curve_is_left_out(two_traces, tmp_path, capsys):
    a, b = two_traces
    code, _, err = run(capsys, "compare", str(a), str(b), "--out", str(tmp_path / "c2"), "--format", "html")
    assert code == 0 and "answer-probability curve left out" in err


def test_compare_refuses_the_wrong_checkpoint_by_name(two_traces, other_ckpt, tmp_path, capsys):
    a, b = two_traces
    code, _, err = run(capsys, "compare", str(a), str(b), "--out", str(tmp_path / "c3"), "--format", "html",
                       "--checkpoint", str(other_ckpt))
    assert code == 1 and err.startswith("error: This trace was made with") and "Traceback" not in err


def test_patch_prints_the_sweep_and_refuses_out_of_range(two_traces, ckpt, tmp_path, capsys):
    a, b = two_traces
    code, out, err = run(capsys, "patch", str(b), str(a), "--checkpoint", str(ckpt), "--segments", "0-1",
                         "--slots", "0,1", "--csv", str(tmp_path / "p.csv"), "--device", "cpu")
    assert code == 0, err
    assert "source answer" in out and out.count("\n") >= 5
    assert (tmp_path / "p.csv").read_text().startswith("segment,patched")
    code, _, err = run(capsys, "patch", str(b), str(a), "--checkpoint", str(ckpt), "--segments", "99")
    assert code == 1 and "--segments values must be in" in err
    code, _, err = run(capsys, "patch", str(b), str(a), "--checkpoint", str(ckpt), "--slots", "x")
    assert code == 2 and "expected indices" in err


def test_report_gains_a_comparison_section(two_traces, ckpt, tmp_path, capsys):
    a, b = two_traces
    code, _, err = run(capsys, "report", str(a), "--out", str(tmp_path / "r.html"), "--checkpoint", str(ckpt),
                       "--compare", str(b), *COMMON)
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Comparison</h2>" in page and 'id="comparison-memory_distance"' in page
    assert "<script src" not in page


def test_compare_with_memory_reset_and_a_reset_trace_file(two_traces, ckpt, tmp_path, capsys):
    a, _ = two_traces
    code, out, err = run(capsys, "compare", str(a), "--memory-reset", "--checkpoint", str(ckpt), "--out",
                         str(tmp_path / "reset"), "--format", "html", "--device", "cpu")
    assert code == 0, err
    record = json.loads((tmp_path / "reset" / "comparison.json").read_text())
    at = record["comparison"]["diverge_at"]  # segment 0 reads the initial memory in both runs: never there
    assert at >= 1 and f"first diverge LEAVING segment {at} (pair {at})" in out
    assert "resets its memory before every segment" in out and record["comparison"]["carry_memory"] == [True, False]
    assert record["comparison"]["names"][1].endswith("(memory reset)")
    # `trace --memory-reset` writes a trace file that says so and compares the same way
    doc = tmp_path / "doc.txt"
    doc.write_text(TEXT * 2, encoding="utf-8")
    code, out, err = run(capsys, "trace", str(doc), "--checkpoint", str(ckpt), "--out", str(tmp_path / "r.rmtrace"),
                         "--memory-reset", *COMMON)
    assert code == 0 and "memory reset before every segment" in out, err
    from rmt_core import Trace
    assert not Trace.load(tmp_path / "r.rmtrace").carries_memory
    for args, words in (([str(a), str(a), "--memory-reset", "--checkpoint", str(ckpt)], "not both"),
                        ([str(a), "--memory-reset"], "give --checkpoint"), ([str(a)], "or --memory-reset")):
        code, _, err = run(capsys, "compare", *args, "--out", str(tmp_path / "x"), "--format", "html")
        assert code == 1 and err.startswith("error: ") and words in err and "Traceback" not in err, err
