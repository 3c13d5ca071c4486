"""Curriculum training with backpropagation through memory; resumable in pieces.

:func:`train` is the entry point; :class:`TrainingRun` holds its named steps (resume, step,
gate, log, save, finish).

Layout of a run folder:
    state.json      where the run stands (stage, step, totals, gate results): a copy of latest/'s
    latest/         the newest snapshot: checkpoint (save_pretrained format), optimizer.pt, state.json,
                    written whole or not at all (rmt_core.training.snapshots)
    previous/       the snapshot before it (what a resume uses when latest/ is damaged)
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
from . import snapshots
from .evaluation import eval_mode, evaluate_lm
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


def start_model(recipe: Recipe, tokenizer) -> tuple[RMTModel, dict[str, Any] | None]:
    """The model a new run starts from, and where its backbone came from.

    :func:`build_model`, then, when ``recipe.init_backbone_from`` names a checkpoint, its
    backbone weights copied in (rmt_core.training.warm_start.init_backbone_from; the memory's
    parameters stay fresh). Returns (model, provenance: {"source", "weights_hash", "tensors"}
    or None without a warm start). Raises CheckpointError when the source is missing or does not fit.
    """
    from .warm_start import init_backbone_from

    model = build_model(recipe, tokenizer)
    if recipe.init_backbone_from is None:
        return model, None
    return model, init_backbone_from(model, recipe.init_backbone_from)


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
    rng = np.random.default_rng(seed)
    n_seg = n_segments or max(stage.segments)
    correct, total, per_batch = 0.0, 0, 32
    with eval_mode(model):
        for start in range(0, samples, per_batch):
            batch = make_batch(stage, model, rng, haystack, batch_size=min(per_batch, samples - start), n_segments=n_seg)
            stats = batch_losses(model, batch, 0.0, reset_memory=reset_memory)
            n = int((batch.labels[:, 1:] != -100).sum())
            correct += float(stats["accuracy"]) * n
            total += n
    return correct / max(total, 1)


def held_out_lm_gain(model: RMTModel, text: str | dict[str, str] | None, windows: int = 32,
                     sources: tuple[str, ...] = ("austen",)) -> float:
    """Relative perplexity gain of memory over memory reset on held-out text (8-segment windows).

    With ``{source: text}``, the smallest gain over ``sources`` (every source must gain).
    """
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


class TrainingRun:
    """One recipe's run in a folder (layout: module docstring), resumable in pieces.

    The named steps :func:`train` drives: :meth:`resume` opens the run (the model from
    ``latest/`` or a fresh one, the optimizer, the texts, log.csv); per stage
    :meth:`train_stage` repeats :meth:`step` (one optimisation step on one batch),
    :meth:`gate` (held-out evaluation: may the stage end early?), :meth:`log_step` (log.csv
    and the log) and :meth:`save` (``latest/``, optimizer and state); :meth:`finish` writes
    ``final/``. ``state`` is what state.json holds: stage, step, total_steps, seconds, stages.
    """

    def __init__(self, recipe: Recipe, out_dir: str | Path, log: Callable[[str], None] = print,
                 save_every: int = 100) -> None:
        self.recipe, self.log, self.save_every = recipe, log, save_every
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.state_file = self.out / "state.json"
        self.state: dict[str, Any] = snapshots.peek_state(self.out) or {
            "recipe": recipe.to_dict(), "stage": 0, "step": 0, "total_steps": 0, "seconds": 0.0, "stages": []}
        self.model: RMTModel | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.train_text: dict[str, str] | None = None
        self.heldout_text: dict[str, str] | None = None
        self.started = time.time()
        self.base_seconds = float(self.state["seconds"])
        self._log_file: Any = None
        self._writer: Any = None

    @property
    def finished(self) -> bool:
        """All stages done (``final/`` written by :meth:`finish`)."""
        return self.state["stage"] >= len(self.recipe.stages)

    def seconds(self) -> float:
        """Training time of the whole run so far (earlier pieces included), in seconds."""
        return self.base_seconds + time.time() - self.started

    def resume(self) -> None:
        """Open the run: the model, optimizer state and run state from the newest whole snapshot
        (``latest/``, else ``previous/``: rmt_core.training.snapshots; else a fresh model from the
        recipe), the training and held-out texts, log.csv."""
        from .corpus import load_mix

        snapshot = snapshots.read_snapshot(self.out, log=self.log)
        if snapshot is not None:
            self.state = snapshot.state
            self.model = snapshot.model
            snapshots.write_text_atomic(self.state_file, json.dumps(self.state, indent=2))  # readers' copy in step
            self.log(f"resumed {self.recipe.name} at stage {self.state['stage'] + 1}, step {self.state['step']}"
                     + (f" (from {snapshot.folder.name}/)" if snapshot.folder.name != snapshots.LATEST else ""))
        else:
            self.state = {"recipe": self.recipe.to_dict(), "stage": 0, "step": 0, "total_steps": 0,
                          "seconds": 0.0, "stages": []}
            self.model, backbone_init = start_model(self.recipe, build_tokenizer(self.recipe.tokenizer))
            if backbone_init is not None:
                self.state["backbone_init"] = backbone_init
                self.log(f"backbone initialised from {backbone_init['source']} "
                         f"(weights hash {backbone_init['weights_hash']}); memory parameters fresh")
        state = self.state
        self.model.train()
        if self.finished:
            return
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.recipe.stages[state["stage"]].lr,
                                           weight_decay=0.01)
        if snapshot is not None and snapshot.optimizer_state is not None:
            self.optimizer.load_state_dict(snapshot.optimizer_state)
        self.train_text = load_mix("train") if self.recipe.tokenizer == "austen" else None
        self.heldout_text = load_mix("heldout") if self.recipe.tokenizer == "austen" else None
        self.started = time.time()
        self._log_file = (self.out / "log.csv").open("a", newline="")
        self._writer = csv.writer(self._log_file)
        if self._log_file.tell() == 0:
            self._writer.writerow(["stage", "step", "total_step", "seconds", "loss", "task_loss", "lm_loss",
                                   "train_acc", "eval_acc"])
        self.base_seconds = float(state["seconds"])
        state["threads"] = torch.get_num_threads()

    def train_stage(self, max_minutes: float | None = None) -> bool:
        """Train the current stage until its gate or step cap, then move to the next stage.

        Returns False when ``max_minutes`` (of this piece) ran out first (the run is saved).
        """
        index = self.state["stage"]
        stage = self.recipe.stages[index]
        self.use_stage_segment_size(index)
        if self.state["step"] == 0:
            self.state["stage_started_at"] = self.seconds()
        gate_reached = False
        while self.state["step"] < stage.max_steps:
            stats = self.step(stage)
            eval_acc = None
            if self.state["step"] % stage.eval_every == 0 or self.state["step"] == stage.max_steps:
                eval_acc, gate_reached = self.gate(stage)
            self.log_step(stage, stats, eval_acc)
            if self.state["step"] % self.save_every == 0:
                self.save()
            if gate_reached:
                break
            if max_minutes is not None and time.time() - self.started > max_minutes * 60:
                self.save()
                return False
        self.end_stage(stage, gate_reached)
        return True

    def step(self, stage: Stage) -> dict[str, torch.Tensor]:
        """One optimisation step on one training batch (seeded by recipe seed, stage and step);
        returns the batch's losses and accuracy (see :func:`batch_losses`), detached."""
        step = self.state["step"]
        rng = np.random.default_rng([self.recipe.seed, self.state["stage"], step])
        for group in self.optimizer.param_groups:
            group["lr"] = _lr_at(step, stage, self.recipe.warmup_steps)
        batch = make_batch(stage, self.model, rng, self.train_text)
        stats = batch_losses(self.model, batch, stage.lm_weight)
        self.optimizer.zero_grad(set_to_none=True)
        stats["loss"].backward()
        stats = {k: v.detach() for k, v in stats.items()}
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.optimizer.step()
        self.state["step"] += 1
        self.state["total_steps"] += 1
        return stats

    def gate(self, stage: Stage) -> tuple[float, bool]:
        """(held-out accuracy, gate reached): the stage's task accuracy on held-out samples and
        whether the stage may end early (accuracy >= gate, and, with lm_gate, memory lowering
        held-out perplexity by at least lm_gate)."""
        accuracy = stage_accuracy(self.model, stage, self.heldout_text, stage.eval_samples,
                                  seed=10_000 + self.state["stage"])
        reached = stage.gate is not None and accuracy >= stage.gate
        if stage.lm_gate is not None:
            lm_gain = held_out_lm_gain(self.model, self.heldout_text, sources=stage.sources)
            self.state.setdefault("lm_evals", []).append(
                {"stage": stage.name, "step": self.state["step"], "relative_improvement": round(lm_gain, 4)})
            self.log(f"[{stage.name}] step {self.state['step']}: memory lowers held-out perplexity by {lm_gain:.1%}")
            reached = reached and lm_gain >= stage.lm_gate
        self.model.train()
        return accuracy, reached

    def log_step(self, stage: Stage, stats: dict[str, torch.Tensor], eval_acc: float | None) -> None:
        """A row of log.csv every 10 steps and at each evaluation; a log line at each evaluation."""
        step = self.state["step"]
        if step % 10 == 0 or eval_acc is not None:
            self._writer.writerow([stage.name, step, self.state["total_steps"], round(time.time() - self.started, 1),
                                   f"{float(stats['loss']):.4f}", f"{float(stats['task_loss']):.4f}",
                                   f"{float(stats['lm_loss']):.4f}", f"{float(stats['accuracy']):.3f}",
                                   f"{eval_acc:.3f}" if eval_acc is not None else ""])
        if eval_acc is not None:
            self.log(f"[{stage.name}] step {step}/{stage.max_steps} loss {float(stats['loss']):.3f} "
                     f"held-out acc {eval_acc:.3f}")

    def use_stage_segment_size(self, stage_index: int) -> None:
        """Set the model's configured segment size to the one stage `stage_index` trains at.

        The one place a config changes: the run built this model and nobody else holds it, and a
        stage may move the model to other segments for good (what its checkpoint records). Batches
        of other sizes (algorithmic tasks) pass segment_size to forward instead."""
        self.model.config.segment_size = segment_size_at(self.recipe, stage_index)

    def save(self) -> None:
        """log.csv flushed, then the model, the optimizer state and state.json as one snapshot
        (``latest/``, switched into place whole: rmt_core.training.snapshots)."""
        last = len(self.recipe.stages) - 1
        self.use_stage_segment_size(min(self.state["stage"], last))
        self._log_file.flush()
        self.state["seconds"] = self.seconds()
        snapshots.write_snapshot(self.out, self.model, self.optimizer, self.state, self._card())

    def end_stage(self, stage: Stage, gate_reached: bool) -> None:
        """Record the finished stage (steps, minutes, gate) and move to the next one (saved)."""
        minutes = (self.seconds() - self.state.get("stage_started_at", 0.0)) / 60
        self.state["stages"].append({"name": stage.name, "steps": self.state["step"], "minutes": round(minutes, 1),
                                     "gate": stage.gate, "gate_reached": gate_reached})
        self.log(f"stage '{stage.name}' done after {self.state['step']} steps "
                 f"({'gate reached' if gate_reached else 'step cap'})")
        self.state["stage"] += 1
        self.state["step"] = 0
        self.save()

    def finish(self) -> Path:
        """stages.json and the final checkpoint (at the last stage's segment size); returns its folder."""
        snapshots.write_text_atomic(self.out / "stages.json", json.dumps(self.state["stages"], indent=2))
        self.use_stage_segment_size(len(self.recipe.stages) - 1)
        return snapshots.save_final(self.out, self.model, self._card())

    def close(self) -> None:
        """Close log.csv (safe to call twice)."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _card(self) -> dict[str, Any]:
        card = {"summary": self.recipe.summary, "recipe": self.recipe.name}
        if self.state.get("backbone_init"):
            from .warm_start import backbone_init_line

            card["backbone_init"] = backbone_init_line(self.state["backbone_init"])
        return card



def train(
    recipe: Recipe,
    out_dir: str | Path,
    max_minutes: float | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    save_every: int = 100,
) -> Path:
    """Train (or resume) a recipe in out_dir; returns the folder of the final checkpoint.

    Stops cleanly after max_minutes (checkpointed; returns ``out_dir/latest``), so long training
    runs in pieces: call again with the same arguments to go on. The steps are
    :class:`TrainingRun`'s.
    """
    if threads:
        torch.set_num_threads(threads)
    run = TrainingRun(recipe, out_dir, log=log, save_every=save_every)
    if run.finished and (run.out / "final" / "config.json").is_file():
        log(f"{recipe.name}: all stages done; final checkpoint in {run.out / 'final'}")
        return run.out / "final"
    run.resume()
    try:
        while not run.finished:
            if not run.train_stage(max_minutes):
                log(f"stopped after {max_minutes} min; resume with the same command")
                return run.out / "latest"
        return run.finish()
    finally:
        run.close()
