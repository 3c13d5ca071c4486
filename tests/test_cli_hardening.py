"""The command line for a new user (issue 28 items 5, 6, 7): --target as text, flags (not Python
arguments) in messages, --max-tokens over the document limits, the shipped model found from the
trace (checked by weight hash), trace files with normal permissions."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

import rmt_core
from rmt_core.cli import in_flags, main
from rmt_core.io.checkpoint import DEFAULT_CHECKPOINT
from rmt_core.viz import export

torch.set_num_threads(1)

COMMON = ["--device", "cpu", "--threads", "1"]
STORY = "Mary went to the garden. John moved to the kitchen. Where is Mary? Answer: garden\n"


@pytest.fixture(scope="module")
def shipped_trace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shipped")
    doc = folder / "story.txt"
    doc.write_text(STORY * 3, encoding="utf-8")
    out = folder / "story.rmtrace"
    old = os.umask(0o022)
    try:
        assert main(["trace", str(doc), "--checkpoint", DEFAULT_CHECKPOINT, "--out", str(out), *COMMON]) == 0
    finally:
        os.umask(old)
    return out


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_trace_command_writes_a_file_others_can_read(shipped_trace):
    assert stat.S_IMODE(shipped_trace.stat().st_mode) == 0o644


@pytest.mark.parametrize("target, note", [
    ("garden", 'note: --target "garden" is token id 713, " garden"'),  # one token only after a space
    ("713", None),
    ("Mary", 'note: --target "Mary" is token id 1244, "Mary" (" Mary" is id 620: pass --target 620 for it)'),
])
def test_attribute_target_takes_a_token_text_and_says_its_id(shipped_trace, capsys, target, note):
    code, stdout, err = run(capsys, "attribute", str(shipped_trace), "--segment", "1", "--position", "3",
                            "--kind", "read", "--method", "saliency", "--target", target, *COMMON)
    assert code == 0, err
    assert "note: using the shipped checkpoint austen-pydocs-recall" in err  # no --checkpoint needed
    if note:
        assert note in err
    assert "R0" in stdout


def test_attribute_target_of_several_tokens_is_refused_listing_them(shipped_trace, capsys):
    code, _, err = run(capsys, "attribute", str(shipped_trace), "--segment", "1", "--position", "3",
                       "--target", "zzqx", *COMMON)
    assert code == 1 and len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert "Traceback" not in err and '--target "zzqx" is not one token' in err and '"zzqx" is 4 tokens: "z" (id 90), "z" (id 90)' in err
    assert "(id 88)" in err and "bug" not in err
    code, _, err = run(capsys, "attribute", str(shipped_trace), "--segment", "1", "--position", "3",
                       "--target", "99999", *COMMON)
    assert code == 1 and "--target 99999 is not a token id of austen-pydocs-recall: ids run 0..4095" in err


def test_messages_name_flags_not_python_arguments(shipped_trace, capsys):
    last = rmt_core.Trace.load(shipped_trace)
    segment, position = last.num_segments - 1, last.segments[-1].num_tokens - 1
    code, _, err = run(capsys, "attribute", str(shipped_trace), "--segment", str(segment), "--position", str(position),
                       "--method", "saliency", *COMMON)
    assert code == 1 and "pass --target (a token id)" in err and "target=" not in err
    assert in_flags("got baseline='zeros'; n_steps=3") == "got --baseline 'zeros'; --steps 3"
    assert in_flags("DocumentLimits(max_chars=5) and x.target=3") == "DocumentLimits(max_chars=5) and x.target=3"


def test_figures_find_the_shipped_model_the_trace_names(shipped_trace, tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_export(figures, directory, format="svg", provenance=None, **kwargs):
        seen.update(figures=figures)
        Path(directory).mkdir(parents=True, exist_ok=True)
        return {}

    monkeypatch.setattr(export, "require_browser", lambda: "/usr/bin/true")
    monkeypatch.setattr(export, "export_figures", fake_export)
    code, _, err = run(capsys, "figures", str(shipped_trace), "--out", str(tmp_path / "figs"), *COMMON)
    assert code == 0, err
    assert "using the shipped checkpoint austen-pydocs-recall" in err and "skipped" not in err
    assert "attention" in seen["figures"]


def test_a_trace_whose_shipped_model_has_other_weights_is_not_attached(shipped_trace, tmp_path, capsys, monkeypatch):
    """Negative control: the name alone is not enough; the weights hash decides."""
    from safetensors import safe_open
    from safetensors.numpy import save_file
    import json

    with safe_open(str(shipped_trace), framework="numpy") as handle:
        header = json.loads(handle.metadata()["rmt_lens_trace"])
        blobs = {k: handle.get_tensor(k) for k in handle.keys()}
    header["model"]["weights_hash"] = "0123456789abcdef"
    other = tmp_path / "other.rmtrace"
    save_file(blobs, str(other), metadata={"rmt_lens_trace": json.dumps(header)})
    code, _, err = run(capsys, "attribute", str(other), "--segment", "1", "--position", "3", *COMMON)
    assert code == 1 and "the shipped 'austen-pydocs-recall' has other weights" in err and "--checkpoint C" in err
    code, _, err = run(capsys, "report", str(other), "--out", str(tmp_path / "r.html"), *COMMON)
    assert code == 0 and "pass --checkpoint austen-pydocs-recall" in err


def test_max_tokens_reads_the_start_of_a_text_over_the_size_limit(tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.txt"
    big.write_text(STORY * 300_000, encoding="utf-8")  # 26 MB: over the 20 MB limit
    assert big.stat().st_size > 20_000_000
    code, _, err = run(capsys, "trace", str(big), "--checkpoint", DEFAULT_CHECKPOINT, "--out",
                       str(tmp_path / "t.rmtrace"), *COMMON)
    assert code == 1 and "Pass --max-tokens N to read and trace only the start of the file" in err
    assert "DocumentLimits" not in err and "truncate=True" not in err
    code, stdout, err = run(capsys, "trace", str(big), "--checkpoint", DEFAULT_CHECKPOINT, "--out",
                            str(tmp_path / "t.rmtrace"), "--max-tokens", "200", *COMMON)
    assert code == 0, err
    assert "read its first" in err and "tracing the first 200 of" in err
    assert rmt_core.Trace.load(tmp_path / "t.rmtrace").num_tokens == 200


def test_max_tokens_raises_the_character_limit(tmp_path, capsys):
    from rmt_core.io.documents import DocumentLimits

    long = tmp_path / "long.txt"
    long.write_text("word " * (DocumentLimits().max_chars // 5 + 10), encoding="utf-8")  # over the character limit
    code, _, err = run(capsys, "trace", str(long), "--checkpoint", DEFAULT_CHECKPOINT, "--out",
                       str(tmp_path / "t.rmtrace"), *COMMON)
    assert code == 1 and "Pass --max-tokens N to trace only the start" in err and "truncate=True" not in err
