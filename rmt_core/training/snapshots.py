"""A training run's checkpoint, written whole or not at all, and validated on resume.

A snapshot is one folder holding everything a resume needs, written together:
    config.json, model.safetensors, tokenizer files, README.md   (save_checkpoint's layout)
    optimizer.pt    the optimizer state (plain tensors; read back with weights_only=True)
    state.json      where the run stands; "optimizer_steps" records the Adam step count saved with it

:func:`write_snapshot` writes a new snapshot into ``.latest.partial/``, then moves the
current ``latest/`` to ``previous/`` and renames the new one to ``latest/`` (two directory
renames; the previous good snapshot is kept until a new one is complete, and after it as a
fallback). A kill at any point leaves ``latest/`` or ``previous/`` whole. :func:`read_snapshot`
validates ``latest/`` (JSON parses, the optimizer state loads, its Adam step equals the one
state.json records, the model loads) and falls back to ``previous/``. The run folder's
``state.json`` is a copy for readers (``rmt-lens ship``), replaced atomically after each switch.

Runs written before snapshots (``latest/`` without state.json, ``optimizer.pt`` and
``state.json`` beside it) still resume, without the step check.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..engine.model import RMTModel
from ..io.checkpoint import save_checkpoint

LATEST, PREVIOUS, PARTIAL = "latest", "previous", ".latest.partial"
STATE_FILE, OPTIMIZER_FILE = "state.json", "optimizer.pt"


# The writes of a save, one function each (a test kills the process at each of them).
def _save_model(model: RMTModel, folder: Path, card: dict[str, Any]) -> None:
    save_checkpoint(model, str(folder), card=card)


def _save_optimizer(state_dict: dict[str, Any], path: Path) -> None:
    torch.save(state_dict, path)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `path` through a temporary name and an atomic rename (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.partial")
    _write_text(tmp, text)
    _rename(tmp, path)


def adam_steps(optimizer_state: dict[str, Any]) -> int:
    """The step count an Adam/AdamW state dict holds (0 before the first step)."""
    steps = [int(s["step"]) for s in optimizer_state.get("state", {}).values() if "step" in s]
    return max(steps, default=0)


def write_snapshot(out: Path, model: RMTModel, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                   card: dict[str, Any]) -> Path:
    """Write model, optimizer and `state` as one snapshot and switch it into ``out/latest``.

    `state` gains ``optimizer_steps``. Returns ``out/latest``. A kill inside leaves the last
    whole snapshot readable by :func:`read_snapshot` (module docstring)."""
    out = Path(out)
    partial, latest, previous = out / PARTIAL, out / LATEST, out / PREVIOUS
    if partial.exists():
        _remove_tree(partial)  # what a killed save left
    optimizer_state = optimizer.state_dict()
    state["optimizer_steps"] = adam_steps(optimizer_state)
    _save_model(model, partial, card)
    _save_optimizer(optimizer_state, partial / OPTIMIZER_FILE)
    _write_text(partial / STATE_FILE, json.dumps(state, indent=2))
    if latest.exists():
        if previous.exists():
            _remove_tree(previous)
        _rename(latest, previous)
    _rename(partial, latest)
    write_text_atomic(out / STATE_FILE, json.dumps(state, indent=2))
    model.name = LATEST
    return latest


@dataclass
class Snapshot:
    """A validated snapshot: its folder, run state, model and optimizer state (None: none saved)."""

    folder: Path
    state: dict[str, Any]
    model: RMTModel
    optimizer_state: dict[str, Any] | None


def peek_state(out: Path) -> dict[str, Any] | None:
    """The run state of the newest snapshot whose state.json parses (no model loaded), else None."""
    out = Path(out)
    for path in (out / LATEST / STATE_FILE, out / PREVIOUS / STATE_FILE, out / STATE_FILE):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def read_snapshot(out: Path, log: Callable[[str], None] = print) -> Snapshot | None:
    """The newest whole and consistent snapshot of the run in `out` (``latest/``, else
    ``previous/``, else the layout of runs written before snapshots); None when there is none.

    Each one that fails validation is named in `log` with the reason and skipped."""
    from ..io import checkpoint

    out = Path(out)
    candidates = [(out / LATEST, out / LATEST / STATE_FILE, out / LATEST / OPTIMIZER_FILE, True),
                  (out / PREVIOUS, out / PREVIOUS / STATE_FILE, out / PREVIOUS / OPTIMIZER_FILE, True)]
    if (out / LATEST / "config.json").is_file() and not (out / LATEST / STATE_FILE).exists():
        candidates.append((out / LATEST, out / STATE_FILE, out / OPTIMIZER_FILE, False))  # before snapshots
    for folder, state_path, optimizer_path, checked in candidates:
        if not state_path.exists() and not folder.exists():
            continue
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            optimizer_state = None
            if optimizer_path.is_file() and state.get("step", 0) > 0:
                optimizer_state = torch.load(optimizer_path, weights_only=True)
            if checked and state.get("step", 0) > 0:
                found = adam_steps(optimizer_state or {})
                if found != state.get("optimizer_steps"):
                    raise ValueError(f"the optimizer has taken {found} steps, state.json records "
                                     f"{state.get('optimizer_steps')}")
            model = checkpoint.load(folder, device="cpu", dtype=torch.float32)
        except Exception as exc:  # noqa: BLE001 - any damage means: not this snapshot
            log(f"skipped the checkpoint in {folder} ({type(exc).__name__}: {exc})")
            continue
        return Snapshot(folder, state, model, optimizer_state)
    return None


def save_final(out: Path, model: RMTModel, card: dict[str, Any], name: str = "final") -> Path:
    """Write ``out/<name>`` whole: into a temporary folder, then renamed into place."""
    out = Path(out)
    partial, final = out / f".{name}.partial", out / name
    if partial.exists():
        _remove_tree(partial)
    _save_model(model, partial, card)
    if final.exists():
        _remove_tree(final)
    _rename(partial, final)
    model.name = name
    return final
