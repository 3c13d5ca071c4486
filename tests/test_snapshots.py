"""Training checkpoints survive a kill at every write of a save (rmt_core.training.snapshots).

A forked child trains a tiny recipe and is killed (os._exit, no clean-up runs) before, or in the
middle of, the n-th write of its saves, for every n. The run then resumes in this process: the
snapshot it resumes from is consistent (Adam's step == the run's step) and the finished model
equals, bit for bit, the one an uninterrupted run makes (no step applied twice or skipped).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from rmt_core.training import snapshots
from rmt_core.training.loop import train
from rmt_core.training.recipes import Recipe, Stage

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child (POSIX only)")

STEPS = 2
KILLED = 77
WRITES = ("_save_model", "_save_optimizer", "_write_text", "_rename", "_remove_tree")
RECIPE = Recipe(
    name="tiny-kill", summary="test", tokenizer="symbols",
    backbone={"kind": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 16},
    rmt={"num_mem_tokens": 2, "segment_size": 3},
    stages=[Stage("copy", "algorithmic", "copy", (3,), max_steps=STEPS, batch_size=4, n_symbols=4,
                  eval_every=100, eval_samples=4)],
    warmup_steps=1,
)


def _train(out: Path) -> Path:
    return train(RECIPE, out, threads=1, log=lambda _: None, save_every=1)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _tear(name: str, args: tuple) -> None:
    """Leave the write half done: its file cut to half its bytes."""
    if name == "_save_model":
        path = Path(args[1]) / "model.safetensors"
    elif name in ("_save_optimizer", "_write_text"):
        path = Path(args[1] if name == "_save_optimizer" else args[0])
    else:
        return  # a rename or removal is one system call: done or not
    with open(path, "r+b") as f:
        f.truncate(max(1, os.path.getsize(path) // 2))


def _run_killed(out: Path, at: int, torn: bool) -> int:
    """Train in a forked child killed at the `at`-th write (before it, or after tearing it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            count = [0]
            for name in WRITES:
                def write(*args, _orig=getattr(snapshots, name), _name=name):
                    count[0] += 1
                    if count[0] == at:
                        if torn:
                            _orig(*args)
                            _tear(_name, args)
                        os._exit(KILLED)
                    return _orig(*args)
                setattr(snapshots, name, write)
            _train(out)
        except BaseException:  # noqa: BLE001
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _count_writes(out: Path, monkeypatch) -> int:
    count = [0]
    for name in WRITES:
        def write(*args, _orig=getattr(snapshots, name)):
            count[0] += 1
            return _orig(*args)
        monkeypatch.setattr(snapshots, name, write)
    _train(out)
    monkeypatch.undo()
    return count[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    return _weights(_train(out))


def test_a_save_is_one_snapshot_with_a_consistent_step(tmp_path):
    out = tmp_path / "run"
    train(RECIPE, out, threads=1, log=lambda _: None, save_every=1, max_minutes=0)  # stops after one step
    state = json.loads((out / "latest" / "state.json").read_text())
    optimizer = torch.load(out / "latest" / "optimizer.pt", weights_only=True)
    assert state["step"] == state["optimizer_steps"] == snapshots.adam_steps(optimizer) == 1
    assert json.loads((out / "state.json").read_text()) == state  # the readers' copy
    assert not (out / snapshots.PARTIAL).exists()


def test_a_kill_at_every_write_of_a_save_resumes_consistently(tmp_path, monkeypatch, reference):
    writes = _count_writes(tmp_path / "count" / "run", monkeypatch)
    assert writes >= 15, writes  # several snapshots, each a handful of writes
    for at in range(1, writes + 1):
        for torn in (False, True):
            out = tmp_path / f"kill-{at}-{int(torn)}" / "run"
            assert _run_killed(out, at, torn) == KILLED, f"write {at}: the child was not killed there"
            snapshot = snapshots.read_snapshot(out, log=lambda _: None)
            if snapshot is not None and snapshot.optimizer_state is not None:
                assert snapshots.adam_steps(snapshot.optimizer_state) == snapshot.state["step"], (at, torn)
            final = _train(out)  # resumes (or starts again) and finishes
            state = json.loads((out / "state.json").read_text())
            assert state["stages"][0]["steps"] == STEPS and state["total_steps"] >= STEPS, (at, torn, state)
            got = _weights(final)
            assert got.keys() == reference.keys()
            assert all(torch.equal(got[k], reference[k]) for k in got), (
                f"killed at write {at} ({'torn' if torn else 'before it'}): the resumed run's model differs "
                "from an uninterrupted run's (a step applied twice or lost)")
            shutil.rmtree(out.parent)


def test_a_damaged_latest_falls_back_to_previous(tmp_path):
    out = tmp_path / "run"
    for _ in range(2):  # one step and one save each
        train(RECIPE, out, threads=1, log=lambda _: None, save_every=100, max_minutes=0)
    assert json.loads((out / "previous" / "state.json").read_text())["step"] == 1
    assert json.loads((out / "latest" / "state.json").read_text())["step"] == 2
    # latest's optimizer one step ahead of its state.json (the old in-place save's silent failure)
    shutil.copy(out / "previous" / "state.json", out / "latest" / "state.json")
    logs: list[str] = []
    snapshot = snapshots.read_snapshot(out, log=logs.append)
    assert snapshot.folder.name == "previous" and snapshot.state["step"] == 1
    assert any("optimizer has taken 2 steps" in line for line in logs), logs
    (out / "previous" / "config.json").write_text("{")  # both damaged: nothing to resume from
    assert snapshots.read_snapshot(out, log=logs.append) is None


def test_the_comparison_sees_a_step_applied_twice(tmp_path, reference):
    """Negative control: a resume that repeats a step ends with other weights than the reference."""
    out = tmp_path / "run"
    for _ in range(2):  # two steps done
        train(RECIPE, out, threads=1, log=lambda _: None, save_every=100, max_minutes=0)
    for name in ("latest/state.json", "state.json"):
        state = json.loads((out / name).read_text())
        state["step"], state["total_steps"], state["optimizer_steps"] = 1, 1, 1  # forget one step
        (out / name).write_text(json.dumps(state))
    optimizer = torch.load(out / "latest" / "optimizer.pt", weights_only=True)
    for s in optimizer["state"].values():
        s["step"] = torch.tensor(1.0)
    torch.save(optimizer, out / "latest" / "optimizer.pt")
    got = _weights(_train(out))
    assert not all(torch.equal(got[k], reference[k]) for k in got)
