"""Curriculum training with backpropagation through memory; resumable in pieces.

Layout of a run folder:
    state.json      where the run stands (stage, step, totals, gate results)
    latest/         the newest checkpoint (save_pretrained format)
    optimizer.pt    optimizer state (plain tensors; read back with weights_only=True)
    log.csv         one row per logged step: loss, answer loss, LM loss, accuracy
    stages.json     per finished stage: steps, minutes, gate reached or not
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..engine.config import RMTConfig
from ..engine.model import RMTModel, shifted_cross_entropy
from ..io.checkpoint import save_checkpoint
from .recipes import Recipe, Stage


# ---------------------------------------------------------------------- building
def build_tokenizer(kind: str):
    if kind == "austen":
        from .tokenizer import train_default_tokenizer

        return train_default_tokenizer()
    if kind == "symbols":
        from .tasks.algorithmic import symbol_tokenizer

        return symbol_tokenizer()
    raise ValueError(f"unknown tokenizer kind {kind!r}")


def build_model(recipe: Recipe, tokenizer) -> RMTModel:
    """A fresh RMT for a recipe (seeded: the same recipe gives the same initial weights)."""
    from ..engine.backbones import backbone_from_config, gpt2_config, llama_config

    spec = dict(recipe.backbone)
    kind = spec.pop("kind")
    vocab = len(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = {"bos_token_id": pad, "eos_token_id": pad}
    config = gpt2_config(vocab, **spec, **ids) if kind == "gpt2" else llama_config(vocab, **spec, **ids)
    torch.manual_seed(recipe.seed)
    backbone = backbone_from_config(config, attn_implementation="sdpa")
    return RMTModel.from_backbone(backbone, RMTConfig(**recipe.rmt), tokenizer=tokenizer)


# ---------------------------------------------------------------------- batches
@dataclass
class Batch:
    input_ids: torch.Tensor
    labels: torch.Tensor  # task labels (answer / target positions), -100 elsewhere
    attention_mask: torch.Tensor | None
    segment_size: int


def any_layout_batch(stage: Stage, tokenizer: Any, rng: np.random.Generator, haystack: str | dict[str, str],
                     batch_size: int, n_segments: int, segment_size: int,
                     offsets: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Fact samples of ``n_segments`` segments, each in a layout of its own (Stage.layout "any").

    Per sample: a source of ``stage.sources`` (``haystack`` maps source -> text), a line
    layout of :data:`~rmt_core.training.tasks.babi.LINE_LAYOUTS`, where the question falls
    (``offsets`` if given, else 15% straddling a boundary, 10% aligned, the rest uniform),
    10% with a space or newline after "Answer:", 10% with the fact allowed in the
    question's own segment.  Returns input_ids, labels, attention_mask (B, T).
    """
    from .tasks import babi

    texts = haystack if isinstance(haystack, dict) else {"austen": haystack}
    sources = [s for s in stage.sources if s in texts] or list(texts)
    encoded = []
    for _ in range(batch_size):
        text = texts[sources[int(rng.integers(len(sources)))]]
        text = babi.reflow(text, babi.LINE_LAYOUTS[int(rng.integers(len(babi.LINE_LAYOUTS)))])
        if offsets is not None:
            offset = offsets[int(rng.integers(len(offsets)))]
        else:
            u = rng.random()
            offset = "straddle" if u < 0.15 else "aligned" if u < 0.25 else "random"
        trailing = ("", "", "", "", "", "", "", "", " ", "\n")[int(rng.integers(10))]
        sample = babi.build_layout_sample(text, n_segments, segment_size, stage.task, rng, tokenizer, offset,
                                          facts_before_last_segment=bool(rng.random() >= 0.1),
                                          after_answer_prefix=trailing)
        encoded.append(babi.encode_sample(sample, tokenizer))
    b = babi.collate(encoded, babi.pad_id(tokenizer))
    return {"input_ids": b["input_ids"], "labels": b["labels"], "attention_mask": b["attention_mask"]}


def make_batch(stage: Stage, model: RMTModel, rng: np.random.Generator, haystack: str | dict[str, str] | None,
               batch_size: int | None = None, n_segments: int | None = None) -> Batch:
    """One batch for a stage; the number of segments is drawn from stage.segments unless given.

    ``haystack``: the text facts are hidden in, or ``{source: text}`` for stages that mix
    sources (``Stage.sources``).
    """
    n_seg = int(n_segments or rng.choice(stage.segments))
    size = batch_size or stage.batch_size
    seg = model.config.segment_size
    if stage.kind == "fact" and stage.layout == "any":
        return Batch(**any_layout_batch(stage, model.tokenizer, rng, haystack, size, n_seg, seg), segment_size=seg)
    if stage.kind == "fact":
        from .tasks.babi import make_batch as fact_batch

        text = haystack["austen"] if isinstance(haystack, dict) else haystack
        b = fact_batch(text, model.tokenizer, n_seg * seg, stage.task, size, rng,
                       keep_out_tail=seg if n_seg > 1 else 0)
        return Batch(b["input_ids"], b["labels"], b["attention_mask"], seg)
    if stage.kind == "dense":
        from .tasks.babi import make_dense_batch

        b = make_dense_batch(model.tokenizer, stage.task, size, rng, *stage.dense_facts)
        return Batch(b["input_ids"], b["labels"], b["attention_mask"], seg)
    if stage.kind == "algorithmic":
        from .tasks.algorithmic import make_task_batch, segment_size_for

        b = make_task_batch(stage.task, stage.n_symbols, size, rng, model.tokenizer)
        return Batch(b["input_ids"], b["labels"], None, segment_size_for(stage.task, stage.n_symbols, n_seg))
    raise ValueError(f"unknown stage kind {stage.kind!r}")


def batch_losses(model: RMTModel, batch: Batch, lm_weight: float, reset_memory: bool = False) -> dict[str, torch.Tensor]:
    """Task loss (+ weighted LM loss over the text) and task accuracy for one batch."""
    ids = batch.input_ids.to(model.device)
    labels = batch.labels.to(model.device)
    mask = batch.attention_mask.to(model.device) if batch.attention_mask is not None else None
    logits = model(ids, attention_mask=mask, reset_memory=reset_memory, segment_size=batch.segment_size).logits
    task_loss = shifted_cross_entropy(logits, labels, mask)
    total = task_loss
    lm_loss = torch.zeros((), device=logits.device)
    if lm_weight > 0:
        lm_loss = shifted_cross_entropy(logits, ids, mask)
        total = total + lm_weight * lm_loss
    target = labels[:, 1:]
    scored = target != -100
    predictions = logits[:, :-1].argmax(-1)
    accuracy = ((predictions == target) & scored).sum() / scored.sum().clamp(min=1)
    return {"loss": total, "task_loss": task_loss, "lm_loss": lm_loss, "accuracy": accuracy}


@torch.no_grad()
def stage_accuracy(model: RMTModel, stage: Stage, haystack: str, samples: int, seed: int,
                   n_segments: int | None = None, reset_memory: bool = False) -> float:
    """Held-out accuracy of a stage's task at its largest (or the given) segment count."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    n_seg = n_segments or max(stage.segments)
    correct, total, per_batch = 0.0, 0, 32
    for start in range(0, samples, per_batch):
        batch = make_batch(stage, model, rng, haystack, batch_size=min(per_batch, samples - start), n_segments=n_seg)
        stats = batch_losses(model, batch, 0.0, reset_memory=reset_memory)
        n = int((batch.labels[:, 1:] != -100).sum())
        correct += float(stats["accuracy"]) * n
        total += n
    model.train(was_training)
    return correct / max(total, 1)


def held_out_lm_gain(model: RMTModel, text: str | dict[str, str] | None, windows: int = 32,
                     sources: tuple[str, ...] = ("austen",)) -> float:
    """Relative perplexity gain of memory over memory reset on held-out text (8-segment windows).

    With ``{source: text}``, the smallest gain over ``sources`` (every source must gain).
    """
    from .evaluation import evaluate_lm

    texts = text if isinstance(text, dict) else {"austen": text}
    gains = [float(evaluate_lm(model, texts[s], segments_per_window=8, windows=windows, seed=1)["relative_improvement"])
             for s in sources if s in texts]
    return min(gains)


def segment_size_at(recipe: Recipe, stage_index: int) -> int:
    """The model's segment size during a stage: the last size a stage up to it set."""
    size = recipe.rmt["segment_size"]
    for stage in recipe.stages[: stage_index + 1]:
        size = stage.segment_size or size
    return size


# ---------------------------------------------------------------------- the loop
def _lr_at(step: int, stage: Stage, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% over the stage's schedule (default its cap)."""
    if step < warmup:
        return stage.lr * (step + 1) / warmup
    length = stage.schedule_steps or stage.max_steps
    progress = min(1.0, (step - warmup) / max(1, length - warmup))
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    recipe: Recipe,
    out_dir: str | Path,
    max_minutes: float | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    save_every: int = 100,
) -> Path:
    """Train (or resume) a recipe in out_dir; returns the folder of the final checkpoint.

    Stops cleanly after max_minutes (checkpointed), so long training runs in pieces.
    """
    from ..io import checkpoint as ckpt
    from .corpus import load_mix

    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {
        "recipe": recipe.to_dict(), "stage": 0, "step": 0, "total_steps": 0, "seconds": 0.0, "stages": []}
    if state["stage"] >= len(recipe.stages):
        log(f"{recipe.name}: all stages done; final checkpoint in {out / 'final'}")
        return out / "final"
    if (out / "latest" / "config.json").is_file():
        model = ckpt.load(out / "latest", device="cpu", dtype=torch.float32)
        log(f"resumed {recipe.name} at stage {state['stage'] + 1}, step {state['step']}")
    else:
        model = build_model(recipe, build_tokenizer(recipe.tokenizer))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.stages[state["stage"]].lr, weight_decay=0.01)
    if (out / "optimizer.pt").is_file() and state["step"] > 0:
        optimizer.load_state_dict(torch.load(out / "optimizer.pt", weights_only=True))
    train_text = load_mix("train") if recipe.tokenizer == "austen" else None
    heldout_text = load_mix("heldout") if recipe.tokenizer == "austen" else None
    started = time.time()
    log_file = (out / "log.csv").open("a", newline="")
    writer = csv.writer(log_file)
    if log_file.tell() == 0:
        writer.writerow(["stage", "step", "total_step", "seconds", "loss", "task_loss", "lm_loss", "train_acc", "eval_acc"])

    def save() -> None:
        model.config.segment_size = segment_size_at(recipe, min(state["stage"], len(recipe.stages) - 1))
        save_checkpoint(model, str(out / "latest"), card={"summary": recipe.summary, "recipe": recipe.name})
        torch.save(optimizer.state_dict(), out / "optimizer.pt")
        state["seconds"] = base_seconds + time.time() - started
        state_file.write_text(json.dumps(state, indent=2))
        log_file.flush()

    base_seconds = state["seconds"]
    state["threads"] = torch.get_num_threads()
    while state["stage"] < len(recipe.stages):
        stage = recipe.stages[state["stage"]]
        model.config.segment_size = segment_size_at(recipe, state["stage"])
        if state["step"] == 0:
            state["stage_started_at"] = base_seconds + time.time() - started
        gate_reached = False
        while state["step"] < stage.max_steps:
            step = state["step"]
            rng = np.random.default_rng([recipe.seed, state["stage"], step])
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, stage, recipe.warmup_steps)
            batch = make_batch(stage, model, rng, train_text)
            stats = batch_losses(model, batch, stage.lm_weight)
            optimizer.zero_grad(set_to_none=True)
            stats["loss"].backward()
            stats = {k: v.detach() for k, v in stats.items()}
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            state["step"] += 1
            state["total_steps"] += 1
            eval_acc = ""
            if state["step"] % stage.eval_every == 0 or state["step"] == stage.max_steps:
                eval_acc = stage_accuracy(model, stage, heldout_text, stage.eval_samples, seed=10_000 + state["stage"])
                gate_reached = stage.gate is not None and eval_acc >= stage.gate
                if stage.lm_gate is not None:
                    lm_gain = held_out_lm_gain(model, heldout_text, sources=stage.sources)
                    state.setdefault("lm_evals", []).append(
                        {"stage": stage.name, "step": state["step"], "relative_improvement": round(lm_gain, 4)})
                    log(f"[{stage.name}] step {state['step']}: memory lowers held-out perplexity by {lm_gain:.1%}")
                    gate_reached = gate_reached and lm_gain >= stage.lm_gate
                model.train()
            if state["step"] % 10 == 0 or eval_acc != "":
                writer.writerow([stage.name, state["step"], state["total_steps"], round(time.time() - started, 1),
                                 f"{float(stats['loss']):.4f}", f"{float(stats['task_loss']):.4f}",
                                 f"{float(stats['lm_loss']):.4f}", f"{float(stats['accuracy']):.3f}",
                                 f"{eval_acc:.3f}" if eval_acc != "" else ""])
            if eval_acc != "":
                log(f"[{stage.name}] step {state['step']}/{stage.max_steps} loss {float(stats['loss']):.3f} "
                    f"held-out acc {eval_acc:.3f}")
            if state["step"] % save_every == 0:
                save()
            if gate_reached:
                break
            if max_minutes is not None and time.time() - started > max_minutes * 60:
                save()
                log(f"stopped after {max_minutes} min; resume with the same command")
                log_file.close()
                return out / "latest"
        minutes = (base_seconds + time.time() - started - state.get("stage_started_at", 0.0)) / 60
        state["stages"].append({"name": stage.name, "steps": state["step"], "minutes": round(minutes, 1),
                                "gate": stage.gate, "gate_reached": gate_reached})
        log(f"stage '{stage.name}' done after {state['step']} steps ({'gate reached' if gate_reached else 'step cap'})")
        state["stage"] += 1
        state["step"] = 0
        save()
    (out / "stages.json").write_text(json.dumps(state["stages"], indent=2))
    model.config.segment_size = segment_size_at(recipe, len(recipe.stages) - 1)
    save_checkpoint(model, str(out / "final"), card={"summary": recipe.summary, "recipe": recipe.name})
    log_file.close()
    return out / "final"
