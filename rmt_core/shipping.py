"""Turning a finished training run into a shipped checkpoint with an honest model card."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import checkpoint, evaluation
from .recipes import RECIPES

DATA_AUSTEN = (
    "Jane Austen's six novels (public domain; vendored in rmt_core/data/austen with their provenance). "
    "Training uses five; *Persuasion* is held out and every evaluation below uses it as the haystack. "
    "Facts are generated bAbI-style sentences (rmt_core.tasks.babi) inserted at sentence boundaries."
)
DATA_SYMBOLS = "Random sequences of 24 symbols from an 8-symbol vocabulary, generated on the fly (rmt_core.tasks.algorithmic)."


def evaluate_for_card(model, recipe_name: str, samples: int, lm_windows: int,
                      progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The evaluation tables a model card shows, measured now."""
    recipe = RECIPES[recipe_name]
    task = recipe.rmt.get("task", "")
    result: dict[str, Any] = {"samples": samples, "seed": 0}
    if task in evaluation.FACT_TASKS:
        progress(f"evaluating {task} recall, {samples} samples per cell…")
        result["fact_recall"] = evaluation.evaluate_fact_recall(model, task, (1, 2, 4, 8, 16, 32), samples=samples)
        progress("evaluating held-out perplexity…")
        result["lm"] = evaluation.evaluate_lm(model, windows=lm_windows)
    else:
        progress(f"evaluating {task}, {samples} samples per cell…")
        result["algorithmic"] = evaluation.evaluate_algorithmic(model, task, (3, 6), samples=samples)
    return result


def _card_tables(results: dict[str, Any]) -> str:
    parts = []
    if "fact_recall" in results:
        parts.append("Fact recall on the held-out novel (facts kept out of the last segment; accuracy = argmax "
                     "over the whole vocabulary at the answer position):\n")
        parts.append(evaluation.markdown_table(results["fact_recall"]))
    if "lm" in results:
        lm = results["lm"]
        parts.append(f"\nHeld-out perplexity ({lm['windows']} windows of {lm['segments_per_window']} segments): "
                     f"with memory {lm['perplexity_memory']:.2f}, memory reset every segment "
                     f"{lm['perplexity_reset']:.2f} ({100 * lm['relative_improvement']:.1f}% lower with memory).")
    if "algorithmic" in results:
        parts.append("Per-character accuracy on the target (paper numbers for comparison):\n")
        parts.append(evaluation.markdown_table(results["algorithmic"]))
    return "\n".join(parts)


def _stage_line(stage: dict[str, Any]) -> str:
    """One curriculum line of a model card, from a finished stage in state.json."""
    if stage["gate"] is None:
        outcome = "no gate (fixed budget)"
    else:
        outcome = f"gate {stage['gate']} " + ("reached" if stage["gate_reached"] else "NOT reached (step cap)")
    return f"- {stage['name']}: {stage['steps']} steps, {stage['minutes']} min, {outcome}"


def ship(run_dir: str | Path, name: str, samples: int = 500, lm_windows: int = 64, dest: Path | None = None,
         progress: Callable[[str], None] = print) -> Path:
    """Evaluate run_dir/final (or latest) and write it to checkpoints/<name> with its model card."""
    run = Path(run_dir)
    source = run / "final" if (run / "final").is_dir() else run / "latest"
    state = json.loads((run / "state.json").read_text())
    recipe_name = state["recipe"]["name"]
    model = checkpoint.load(source, device="cpu", dtype=torch.float32)
    results = evaluate_for_card(model, recipe_name, samples, lm_windows, progress)
    stages = "\n".join(_stage_line(s) for s in state.get("stages", []))
    recipe = RECIPES[recipe_name]
    card = {
        "title": name,
        "summary": recipe.summary,
        "description": recipe.rmt.get("description", ""),
        "data": DATA_AUSTEN if recipe.tokenizer == "austen" else DATA_SYMBOLS,
        "recipe": (f"`python -m rmt_core train --recipe {recipe_name} --out runs/{recipe_name}` "
                   f"(resumable; AdamW, warm-up then cosine decay, gradient clipping 1.0, full BPTT). "
                   f"Curriculum as run:\n{stages}"),
        "training_time": (f"{state['seconds'] / 60:.0f} minutes on {state.get('threads', 2)}-thread CPU "
                          f"({platform.machine()}), {state['total_steps']} steps."),
        "evaluation": _card_tables(results),
        "evaluation_results": results,
        "shipped": time.strftime("%Y-%m-%d"),
    }
    out = (dest or checkpoint.SHIPPED_DIR) / name
    model.save_pretrained(str(out), card=card)
    progress(f"shipped {out}")
    return out
