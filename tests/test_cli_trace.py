"""The trace / figures / report / attribute commands, end to end on a tiny checkpoint (in process)."""
from __future__ import annotations

import rmt_core
import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from rmt_core.viz import export
from rmt_core.cli import COMMANDS, main
from rmt_core.tracing.trace import Trace

from test_evaluation import make_fact_model

torch.set_num_threads(1)

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife.\n\nHowever little known the feelings or views of such a man may be "
        "on his first entering a neighbourhood, this truth is so well fixed in the minds of the families.\n")
HTML = ("<!DOCTYPE html><html><head><title>Pride</title><script>alert('nope')</script>"
        "<style>p { color: red }</style></head><body><h1>Chapter 1</h1>"
        "<p>It is a truth universally acknowledged, that a single man &amp; a fortune must want a wife.</p>"
        "<p>However little known the feelings of such a man may be.</p></body></html>")
COMMON = ["--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-fact"
    rmt_core.save(make_fact_model(), str(path))
    return path


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "other-fact"
    rmt_core.save(make_fact_model(seed=1), str(path))
    return path


@pytest.fixture(scope="module")
def traced(ckpt, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trace")
    doc = folder / "pride.txt"
    doc.write_text(TEXT, encoding="utf-8")
    out = folder / "pride.trace"
    assert main(["trace", str(doc), "--checkpoint", str(ckpt), "--out", str(out), *COMMON]) == 0
    return out


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------- help
@pytest.mark.parametrize("name", ["trace", "figures", "report", "attribute"])
def test_help(name, capsys):
    assert name in COMMANDS
    code, out, _ = run(capsys, name, "--help")
    assert code == 0 and out.startswith(f"usage: rmt-lens {name}")


# ---------------------------------------------------------------------- trace
def test_trace_txt(traced, ckpt):
    trace = Trace.load(traced)
    assert trace.text == TEXT and trace.complete and trace.num_segments >= 3
    assert trace.meta["document"] == "pride.txt" and trace.meta["document_kind"] == "text"
    assert trace.model_info["name"] == "tiny-fact"


def test_trace_html_with_max_tokens(ckpt, tmp_path, capsys):
    doc = tmp_path / "pride.html"
    doc.write_text(HTML, encoding="utf-8")
    out = tmp_path / "html.trace"
    code, stdout, stderr = run(capsys, "trace", str(doc), "--checkpoint", str(ckpt), "--out", str(out),
                               "--max-tokens", "40", *COMMON)
    assert code == 0, stderr
    assert f"{out}: " in stdout and "segments" in stdout and "nats/token" in stdout
    assert "note: tracing the first 40 of" in stderr
    trace = Trace.load(out)
    assert trace.num_tokens <= 40 and trace.num_tokens >= 35
    assert "alert" not in trace.text and "color: red" not in trace.text  # scripts and styles are not text
    assert trace.text.startswith("Pride") or "Chapter 1" in trace.text
    assert trace.meta["document_kind"] == "html" and trace.meta["max_tokens"] == 40


def test_trace_document_over_a_limit_speaks_in_flags(ckpt, tmp_path, capsys):
    long = tmp_path / "long.txt"
    long.write_text("word " * 420_000, encoding="utf-8")  # 2.1M characters: over the 2M limit
    code, _, err = run(capsys, "trace", str(long), "--checkpoint", str(ckpt), "--out", str(tmp_path / "t.trace"),
                       *COMMON)
    assert code == 1 and "over the limit of 2,000,000" in err and "--max-tokens N" in err
    assert "truncate=True" not in err and "DocumentLimits" not in err and "Traceback" not in err


def test_trace_missing_file_exits_1(ckpt, tmp_path, capsys):
    code, _, err = run(capsys, "trace", str(tmp_path / "nope.txt"), "--checkpoint", str(ckpt),
                       "--out", str(tmp_path / "t.trace"), *COMMON)
    assert code == 1 and err.startswith("error: No such file") and "Traceback" not in err
    assert not (tmp_path / "t.trace").exists()


def test_trace_usage_error_exits_2(capsys):
    code, _, err = run(capsys, "trace", "doc.txt")  # no --out (--checkpoint defaults to the shipped default model)
    assert code == 2 and "--out" in err


# ---------------------------------------------------------------------- figures
def test_figures_missing_trace_exits_1(tmp_path, capsys):
    code, _, err = run(capsys, "figures", str(tmp_path / "missing.trace"), "--out", str(tmp_path / "f"))
    assert code == 1 and err.startswith("error: No trace file at") and len(err.strip().splitlines()) == 1


def test_figures_without_checkpoint_skips_attention(traced, tmp_path, capsys, monkeypatch):
    """The listing logic, with the renderer replaced (no browser needed)."""
    seen = {}

    def fake_export(figures, directory, format="svg", provenance=None, **kwargs):
        seen.update(figures=figures, provenance=provenance)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = {}
        for name in figures:
            out[name] = directory / f"{name}.{format}"
            out[name].write_bytes(b"%PDF-fake")
        return out

    monkeypatch.setattr(export, "require_browser", lambda: "/usr/bin/true")
    monkeypatch.setattr(export, "export_figures", fake_export)
    out = tmp_path / "figs"
    code, stdout, err = run(capsys, "figures", str(traced), "--out", str(out), "--format", "pdf", "--segment", "1")
    assert code == 0, err
    assert "note: attention heatmap skipped" in err and "--checkpoint tiny-fact" in err
    listing = json.loads((out / "figures.json").read_text())
    names = [f["name"] for f in listing["figures"]]
    assert "attention" not in names and "timeline" in names and len(names) == 9
    assert listing["skipped"][0]["name"] == "attention"
    assert listing["provenance"]["weights_hash"] == Trace.load(traced).model_info["weights_hash"]
    assert listing["provenance"]["segment"] == 1
    assert all(fig.layout.title.text is None for fig in seen["figures"].values())  # print-styled
    rows = list(csv.DictReader(io.StringIO((out / "segments.csv").read_text())))
    assert [r["segment"] for r in rows] == [str(i) for i in range(len(rows))] and len(rows) >= 3
    assert list(listing["tables"][0]["columns"]) == list(rows[0])  # every CSV column described in figures.json


def test_figures_without_browser_exits_1(traced, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(export, "browser_available", lambda: None)
    code, _, err = run(capsys, "figures", str(traced), "--out", str(tmp_path / "f"))
    assert code == 1 and err.startswith("error: No Chromium-family browser") and "BROWSER_PATH" in err


def test_figures_bad_segment_exits_1(traced, tmp_path, capsys):
    code, _, err = run(capsys, "figures", str(traced), "--out", str(tmp_path / "f"), "--segment", "50")
    assert code == 1 and "--segment must be in 0.." in err


@pytest.mark.slow
def test_figures_svg_end_to_end(traced, ckpt, tmp_path, capsys):
    if export.browser_available() is None:
        pytest.skip("no Chromium for kaleido: install Debian's chromium or set BROWSER_PATH")
    out = tmp_path / "figs"
    code, stdout, err = run(capsys, "figures", str(traced), "--out", str(out), "--format", "svg",
                            "--checkpoint", str(ckpt), "--segment", "1", "--layer", "0", "--head", "2", *COMMON)
    assert code == 0, err
    listing = json.loads((out / "figures.json").read_text())
    weights = Trace.load(traced).model_info["weights_hash"]
    assert listing["provenance"]["weights_hash"] == weights and listing["skipped"] == []
    names = [f["name"] for f in listing["figures"]]
    assert "attention" in names and len(names) == 10
    for entry in listing["figures"]:
        root = ET.parse(out / entry["file"]).getroot()  # valid XML
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert export.read_provenance(out / entry["file"])["weights_hash"] == weights
    assert listing["figures"][names.index("attention")]["title"] == "Attention, segment 1, layer 0, head 2"
    assert "wrote 10 figures" in stdout


# ---------------------------------------------------------------------- report
def test_report_command(traced, ckpt, tmp_path, capsys):
    from test_export import _check_offline

    out = tmp_path / "report.html"
    code, stdout, err = run(capsys, "report", str(traced), "--out", str(out), "--checkpoint", str(ckpt),
                            "--segment", "1", *COMMON)
    assert code == 0, err
    assert f"report: {out}" in stdout
    page = out.read_text(encoding="utf-8")
    links = _check_offline(page)
    assert "http://" not in "".join(v for _, _, v in links.urls) and "https://" not in "".join(v for _, _, v in links.urls)
    assert Trace.load(traced).model_info["weights_hash"] in page
    assert len(links.srcdocs) == 1  # the head view


def test_report_wrong_checkpoint_exits_1(traced, other_ckpt, tmp_path, capsys):
    code, _, err = run(capsys, "report", str(traced), "--out", str(tmp_path / "r.html"),
                       "--checkpoint", str(other_ckpt), *COMMON)
    assert code == 1 and err.startswith("error: This trace was made with 'tiny-fact'")
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------------- attribute
@pytest.mark.parametrize("kind", ["read", "write", "through"])
def test_attribute_kinds(kind, traced, ckpt, tmp_path, capsys):
    trace = Trace.load(traced)
    out = tmp_path / f"{kind}.csv"
    code, stdout, err = run(capsys, "attribute", str(traced), "--checkpoint", str(ckpt), "--segment", "2",
                            "--position", "4", "--kind", kind, "--steps", "4", "--csv", str(out), *COMMON)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    m, seg = trace.num_mem_tokens, trace.segments[2]
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if set(line.split()) & {"slot", "rank"} and "score" in line)
    shown = [line for line in lines[header + 2:] if line.strip() and not line.startswith("scores written")]
    if kind == "read":
        assert [r["slot"] for r in rows] == [f"R{k}" for k in range(m)] and len(shown) == m
    elif kind == "write":
        assert len(rows) == m * seg.num_tokens and len(shown) == m * 5
        assert rows[0]["token"] == seg.tokens[0]
    else:
        assert len(rows) == seg.end  # segments 0..2, every token
        assert len(shown) == 20 and "document_position" in lines[header]
    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["provenance"]["weights_hash"] == trace.model_info["weights_hash"]
    assert side["attribution"]["kind"] == kind and side["attribution"]["n_steps"] == 4


def test_attribute_saliency_write_without_position(traced, ckpt, capsys):
    code, stdout, err = run(capsys, "attribute", str(traced), "--checkpoint", str(ckpt), "--segment", "0",
                            "--kind", "write", "--method", "saliency", "--top", "2", *COMMON)
    assert code == 0, err
    assert "(saliency" in stdout and "W0" in stdout


def test_attribute_usage_errors(traced, ckpt, capsys):
    code, _, err = run(capsys, "attribute", str(traced), "--checkpoint", str(ckpt), "--segment", "0", *COMMON)
    assert code == 2 and "needs --position" in err
    code, _, err = run(capsys, "attribute", str(traced), "--checkpoint", str(ckpt), "--segment", "0",
                       "--position", "1", "--method", "saliency", "--baseline", "zeros", *COMMON)
    assert code == 2 and "method 'saliency' uses no baseline" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "attribute", str(traced), "--checkpoint", str(ckpt), "--segment", "0",
                       "--kind", "write", "--baseline", "initial", *COMMON)
    assert code == 2 and "baseline must be one of 'zeros', 'mean', got 'initial'" in err


@pytest.mark.parametrize("method, baseline", [("saliency", None), ("ablation", "mean"), ("input_x_gradient", None)])
def test_attribute_through_takes_every_method_and_baseline(method, baseline, traced, ckpt, tmp_path, capsys):
    out = tmp_path / "through.csv"
    extra = ["--baseline", baseline] if baseline else []
    code, stdout, err = run(capsys, "attribute", str(traced), "--checkpoint", str(ckpt), "--segment", "2",
                            "--position", "4", "--kind", "through", "--method", method, *extra, "--csv", str(out),
                            *COMMON)
    assert code == 0, err
    assert f"({method}, " in stdout and (f"baseline: {baseline}" in stdout if baseline else True)
    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["attribution"]["method"] == method and side["attribution"]["n_steps"] is None
    assert len(side["rows"]) == len(list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))))


def test_attribute_wrong_checkpoint_exits_1(traced, other_ckpt, capsys):
    code, _, err = run(capsys, "attribute", str(traced), "--checkpoint", str(other_ckpt), "--segment", "0",
                       "--position", "1", *COMMON)
    assert code == 1
    assert err.startswith("error: This trace was made with 'tiny-fact'") and "Load the checkpoint it was made with" in err
    assert len(err.strip().splitlines()) == 1


def test_attribute_missing_trace_exits_1(ckpt, tmp_path, capsys):
    code, _, err = run(capsys, "attribute", str(tmp_path / "none.trace"), "--checkpoint", str(ckpt),
                       "--segment", "0", "--position", "1", *COMMON)
    assert code == 1 and err.startswith("error: No trace file at")


def test_attribute_position_out_of_range_exits_1(traced, ckpt, capsys):
    code, _, err = run(capsys, "attribute", str(traced), "--checkpoint", str(ckpt), "--segment", "0",
                       "--position", "999", *COMMON)
    assert code == 1 and "position must be in 0.." in err
