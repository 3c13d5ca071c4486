"""Turning a finished training run into a shipped checkpoint with an honest model card."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..io import checkpoint
from ..questions import card_questions
from . import evaluation
from ..operating_range import operating_range_entry
from .recipes import RECIPES

DATA_AUSTEN = (
    "Jane Austen's six novels (public domain; vendored in rmt_core/data/austen with their provenance). "
    "Training uses five; *Persuasion* is held out and every evaluation below uses it as the haystack. "
    "Facts are generated bAbI-style sentences (rmt_core.training.tasks.babi) inserted at sentence boundaries."
)
DATA_MIX = (
    "Jane Austen's six novels (public domain; rmt_core/data/austen) and the Python 3.11 documentation "
    "(PSF licence; rmt_core/data/pydocs), both with their provenance. Training uses five novels and the "
    "tutorial, reference and 52 library chapters; *Persuasion* and the HOWTOs + FAQ are held out and every "
    "evaluation below uses them. Facts are generated bAbI-style sentences (rmt_core.training.tasks.babi) inserted at "
    "sentence boundaries; the haystack's line breaks are redone per sample (original, one line, paragraphs, wrapped)."
)
DATA_SYMBOLS = "Random sequences of 24 symbols from an 8-symbol vocabulary, generated on the fly (rmt_core.training.tasks.algorithmic)."
REPO_DIR = Path(__file__).resolve().parents[2]


def out_of_domain_texts() -> dict[str, str]:
    """Texts from none of the training sources, for the card's perplexity table.

    RMT Lens's own README (modern technical English about this project) and, where the
    machine has it, the GNU GPL v3 text that every Debian system carries.
    """
    out = {}
    readme = REPO_DIR / "README.md"
    if readme.is_file():
        out["RMT Lens README.md (in no training source)"] = readme.read_text(encoding="utf-8")
    gpl = Path("/usr/share/common-licenses/GPL-3")
    if gpl.is_file():
        out["GNU GPL v3 text (in no training source)"] = gpl.read_text(encoding="utf-8")
    return out


CARD_SEGMENTS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # document lengths a card measures (Recipe.card "segments")


def card_segments(recipe_name: str) -> tuple[int, ...]:
    """The segment counts a recipe's card measures: its ``card["segments"]``, else CARD_SEGMENTS."""
    return tuple(int(n) for n in RECIPES[recipe_name].card.get("segments", CARD_SEGMENTS))


def evaluate_for_card(model, recipe_name: str, samples: int, lm_windows: int,
                      progress: Callable[[str], None] = print,
                      segments: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The evaluation tables a model card shows, measured now.

    The recipe ``recipe_name`` says what is measured (its task, its stages' corpus sources); any
    model with the recipe's tokenizer can be measured by it (that is how a card measures another
    model beside its own: :func:`evaluate_reference`). segments: the document lengths of the
    fact-recall tables (default :func:`card_segments`). Slot similarity is measured for token
    memory only (the memory whose slots are written states).
    """
    from .corpus import SOURCES, load_source

    recipe = RECIPES[recipe_name]
    task = recipe.rmt.get("task", "")
    counts = tuple(segments or card_segments(recipe_name))
    result: dict[str, Any] = {"samples": samples, "seed": 0}
    if task in evaluation.FACT_TASKS:
        sources = sorted({s for stage in recipe.stages for s in stage.sources}, key=SOURCES.index)
        for source in sources:
            progress(f"evaluating {task} recall in held-out {source} text, {samples} samples per cell…")
            rows = evaluation.evaluate_fact_recall(model, task, counts, samples=samples,
                                                   haystack=load_source(source, "heldout"))
            result["fact_recall" if source == "austen" else f"fact_recall_{source}"] = rows
        progress("evaluating perplexity with memory vs memory reset…")
        texts = {f"{source} (held out)": load_source(source, "heldout") for source in sources}
        texts.update(out_of_domain_texts())
        result["lm_texts"] = evaluation.evaluate_lm_texts(model, texts, windows=lm_windows)
        result["lm"] = {k: v for k, v in result["lm_texts"][0].items() if k != "text"}
        result["answer_mentions"] = measure_answer_mentions(model, task, samples, progress)
        if model.config.memory == "tokens":
            progress("measuring slot similarity…")
            result["slot_similarity"] = {
                f"{source} (held out)": evaluation.evaluate_slot_similarity(model, load_source(source, "heldout"))
                for source in sources
            }
    else:
        progress(f"evaluating {task}, {samples} samples per cell…")
        result["algorithmic"] = evaluation.evaluate_algorithmic(model, task, (3, 6), samples=samples)
    return result


def measure_answer_mentions(model, task: str, samples: int, progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The card's answer-word mention table (evaluation.evaluate_answer_mentions on held-out Austen,
    at most 200 samples per cell): how often one trained answer word named in no fact takes the answer."""
    from .corpus import load_source

    progress("measuring whether a trained answer word named outside the facts takes the answer…")
    return evaluation.evaluate_answer_mentions(model, task, samples=min(samples, 200),
                                               haystack=load_source("austen", "heldout"))


def evaluate_reference(reference: str, recipe_name: str, samples: int, lm_windows: int,
                       progress: Callable[[str], None] = print,
                       segments: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Another checkpoint measured exactly as a card measures its own model (same recipe tables,
    segment counts, samples and seeds: the very same samples, the tokenizers being equal).

    reference: a shipped checkpoint's name or a folder. Returns {"name", "weights_hash", "memory",
    **evaluate_for_card's tables}. Raises CheckpointError when it does not load.
    """
    ref = checkpoint.load(reference, device="cpu", dtype=torch.float32)
    progress(f"measuring {reference} the same way (reference row)…")
    tables = evaluate_for_card(ref, recipe_name, samples, lm_windows, progress, segments=segments)
    return {"name": str(reference), "weights_hash": ref.weights_hash(), "memory": ref.config.memory, **tables}


def comparison_tables(results: dict[str, Any], name: str) -> str:
    """Markdown: the card's model (``name``) and ``results["reference"]`` side by side, per held-out
    text (fact recall per segment count and layout, memory reset) and for perplexity."""
    reference = results.get("reference")
    if not reference:
        return ""
    ref_name = reference["name"]
    parts = [f"\n### Beside {ref_name} (measured in the same run: same samples, same seeds)\n"]
    labels = {"accuracy_random": "random", "accuracy_straddle": "straddle", "accuracy_aligned": "aligned",
              "accuracy_reset": "reset"}
    for key, where in (("fact_recall", "held-out Austen (*Persuasion*)"),
                       ("fact_recall_pydocs", "held-out Python docs")):
        if key not in results or key not in reference:
            continue
        theirs = {r["segments"]: r for r in reference[key]}
        rows = []
        for row in results[key]:
            out: dict[str, Any] = {"segments": row["segments"], "samples": row["samples"]}
            other = theirs.get(row["segments"], {})
            for column, label in labels.items():
                out[f"{label} {name}"] = row.get(column)
                out[f"{label} {ref_name}"] = other.get(column)
            rows.append(out)
        parts.append(f"\nFact recall in {where} (accuracy; reset = memory reset before every segment):\n")
        parts.append(evaluation.markdown_table(rows))
    if "lm_texts" in results and "lm_texts" in reference:
        theirs = {r["text"]: r for r in reference["lm_texts"]}
        rows = []
        for row in results["lm_texts"]:
            other = theirs.get(row["text"], {})
            rows.append({"text": row["text"], f"perplexity {name}": row["perplexity_memory"],
                         f"reset {name}": row["perplexity_reset"], f"gain {name}": row["relative_improvement"],
                         f"perplexity {ref_name}": other.get("perplexity_memory"),
                         f"reset {ref_name}": other.get("perplexity_reset"),
                         f"gain {ref_name}": other.get("relative_improvement")})
        parts.append("\nPerplexity with memory vs memory reset every segment (random windows of 8 segments; "
                     "gain = 1 - memory / reset):\n")
        parts.append(evaluation.markdown_table(rows))
    return "\n".join(parts)


def _card_tables(results: dict[str, Any]) -> str:
    parts = []
    columns = [c for c in evaluation.FACT_TABLE_COLUMNS if c != "task"]
    for key, where in (("fact_recall", "the held-out novel (*Persuasion*)"),
                       ("fact_recall_pydocs", "held-out Python documentation (HOWTOs + FAQ)")):
        if key in results:
            parts.append(f"\nFact recall in {where}: facts kept out of the question's segment; accuracy = argmax "
                         "over the whole vocabulary at the answer position; the question's end aligned with a "
                         "segment's end, at a random offset of the last segment, or split by a segment boundary "
                         "(straddle); memory reset = the random-offset samples with memory reset before every "
                         "segment:\n")
            parts.append(evaluation.markdown_table(results[key], [c for c in columns if c in results[key][0]]))
    if results.get("answer_mentions"):
        parts.append(answer_mentions_section(results["answer_mentions"]))
    if "lm_texts" in results:
        parts.append("\nPerplexity with memory vs memory reset every segment (random windows of 8 segments):\n")
        parts.append(evaluation.markdown_table(results["lm_texts"], ["text", "windows", "perplexity_memory",
                                                                     "perplexity_reset", "relative_improvement"]))
    elif "lm" in results:
        lm = results["lm"]
        parts.append(f"\nHeld-out perplexity ({lm['windows']} windows of {lm['segments_per_window']} segments): "
                     f"with memory {lm['perplexity_memory']:.2f}, memory reset every segment "
                     f"{lm['perplexity_reset']:.2f} ({100 * lm['relative_improvement']:.1f}% lower with memory).")
    if "slot_similarity" in results:
        rows = [{"text": k, **v} for k, v in results["slot_similarity"].items()]
        parts.append("\nSlot diversity: cosine similarity of each pair of written memory slots (lower = more diverse):\n")
        parts.append(evaluation.markdown_table(rows))
    if "algorithmic" in results:
        parts.append("Per-character accuracy on the target (paper numbers for comparison):\n")
        parts.append(evaluation.markdown_table(results["algorithmic"]))
    return "\n".join(parts)


MENTIONS_HEADING = "\nOne trained answer word named outside the facts"


def answer_mentions_section(rows: list[dict[str, Any]]) -> str:
    """The card's text for an answer-mentions table (evaluation.evaluate_answer_mentions)."""
    return (f"{MENTIONS_HEADING} (held-out *Persuasion*, the same samples read as they are and with one added "
            "sentence that names another trained answer word but states no fact, e.g. “The office was said to be "
            "very cold.”, after the last fact or before the first; answered_mention = how often the answer is the "
            "mentioned word):\n\n" + evaluation.markdown_table(rows))


def _stage_line(stage: dict[str, Any]) -> str:
    """One curriculum line of a model card, from a finished stage in state.json."""
    if stage.get("note"):  # a stage run elsewhere (a warm start from another run)
        return f"- {stage['name']}: {stage['note']}"
    if stage["gate"] is None:
        outcome = "no gate (fixed budget)"
    else:
        outcome = f"gate {stage['gate']} " + ("reached" if stage["gate_reached"] else "NOT reached (step cap)")
    return f"- {stage['name']}: {stage['steps']} steps, {stage['minutes']} min, {outcome}"


def ship(run_dir: str | Path, name: str, samples: int = 500, lm_windows: int = 64, dest: Path | None = None,
         progress: Callable[[str], None] = print) -> Path:
    """Evaluate run_dir/final (or latest) and write it to checkpoints/<name> with its model card.

    A recipe whose ``card`` names ``compare_with`` (a shipped checkpoint) gets that model measured
    in the same run, the same way (:func:`evaluate_reference`), beside its own in the card; its
    ``card["segments"]`` sets the document lengths measured, ``card["limits"]`` what it was not
    trained for.
    """
    run = Path(run_dir)
    source = run / "final" if (run / "final").is_dir() else run / "latest"
    state = json.loads((run / "state.json").read_text())
    recipe_name = state["recipe"]["name"]
    model = checkpoint.load(source, device="cpu", dtype=torch.float32)
    recipe = RECIPES[recipe_name]
    results = evaluate_for_card(model, recipe_name, samples, lm_windows, progress)
    if recipe.card.get("compare_with"):
        results["reference"] = evaluate_reference(recipe.card["compare_with"], recipe_name, samples, lm_windows,
                                                  progress)
    stages = "\n".join(_stage_line(s) for s in state.get("stages", []))
    if state["stage"] < len(recipe.stages):  # shipped from latest/ before the run ended
        stages += "\n" + "\n".join(
            f"- {st.name}: " + (f"stopped at step {state['step']} of {st.max_steps} (shipped before the run ended)"
                                if i == state["stage"] else "not run")
            for i, st in enumerate(recipe.stages) if i >= state["stage"])
    card = {
        "title": name,
        "summary": recipe.summary,
        "description": recipe.rmt.get("description", ""),
        "data": (DATA_SYMBOLS if recipe.tokenizer != "austen" else
                 DATA_MIX if any(len(st.sources) > 1 for st in recipe.stages) else DATA_AUSTEN),
        "recipe": (f"`python -m rmt_core train --recipe {recipe_name} --out runs/{recipe_name}` "
                   f"(resumable; AdamW, warm-up then cosine decay, gradient clipping 1.0, full BPTT). "
                   f"Curriculum as run:\n{stages}"),
        "training_time": (f"{state['seconds'] / 60:.0f} minutes on {state.get('threads', 2)}-thread CPU "
                          f"({platform.machine()}), {state['total_steps']} steps"
                          + (f", on top of the warm start ({state['warm_start']})." if state.get("warm_start") else ".")),
        "evaluation": _card_tables(results) + comparison_tables(results, name),
        "evaluation_results": results,
        "questions": card_questions(model.config.task),
        "shipped": time.strftime("%Y-%m-%d"),
    }
    if recipe.card.get("limits"):
        card["limits"] = recipe.card["limits"]
    if state.get("backbone_init"):  # a warm-started backbone (Recipe.init_backbone_from)
        from .warm_start import backbone_init_line

        card["backbone_init"] = backbone_init_line(state["backbone_init"])
    operating_range = operating_range_entry(recipe.rmt.get("task", ""), results)
    if operating_range is not None:  # what the model can be asked, as measured (rmt_core.operating_range)
        card["operating_range"] = operating_range
    out = (dest or checkpoint.SHIPPED_DIR) / name
    checkpoint.save_checkpoint(model, str(out), card=card)
    progress(f"shipped {out}")
    return out


def _write_card_files(here: Path, config: dict[str, Any], model, card: dict[str, Any]) -> Path:
    """Rewrite checkpoint folder `here`'s config.json (`config`, whose card is `card`) and README.md
    (the model card), each through a temporary file; the weights stay as they are. Returns `here`."""
    for file, content in (("config.json", json.dumps(config, indent=2, sort_keys=True, default=str)),
                          ("README.md", checkpoint.model_card(model, card))):
        tmp = here / f".{file}.tmp"
        tmp.write_text(content)
        tmp.replace(here / file)
    return here


def _shipped_config(path: Path) -> dict[str, Any]:
    """config.json of RMT Lens checkpoint folder `path`; CheckpointError when it is not one."""
    from ..errors import CheckpointError

    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint folder.")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} has no readable config.json ({exc}).") from exc
    if not isinstance(config, dict) or config.get("format") != checkpoint.FORMAT:
        raise CheckpointError(f"{path} is not an RMT Lens checkpoint.")
    return config


def add_comparison_to_card(folder: str | Path, shipped: str | Path) -> Path:
    """Put into checkpoint ``folder``'s card the comparison that checkpoint ``shipped``'s card measured
    with it (``shipped`` was shipped by a recipe whose card names ``folder``'s model in compare_with):
    the same numbers, seen from ``folder``'s side, so both cards show both models.

    The reference ``shipped`` measured must be this very model (same weights hash). Only config.json
    (card["comparisons"][name] and the "Beside <name>" part of card["evaluation"]) and README.md are
    rewritten, through temporary files; the weights and tokenizer stay as they are. Running it again
    replaces the earlier section. Returns the folder. Raises CheckpointError when either is not an RMT
    Lens checkpoint, when ``shipped`` measured no reference, or measured another model.
    """
    from ..errors import CheckpointError

    here = checkpoint.resolve_checkpoint(folder)
    there = checkpoint.resolve_checkpoint(shipped)
    config, other = _shipped_config(here), _shipped_config(there)
    results = other.get("card", {}).get("evaluation_results", {})
    measured = results.get("reference")
    if not measured:
        raise CheckpointError(f"The card of {there} measured no reference model: nothing to add to {here}.")
    model = checkpoint.load(here, device="cpu", dtype=torch.float32)
    if measured.get("weights_hash") != model.weights_hash():
        raise CheckpointError(f"The card of {there} measured another model (weights hash {measured.get('weights_hash')}) "
                              f"than {here} (weights hash {model.weights_hash()}): its numbers are not this model's.")
    name = other["card"].get("title", there.name)
    own_name = config.get("card", {}).get("title", here.name)
    theirs = {k: v for k, v in results.items() if k != "reference"}
    own = {k: v for k, v in measured.items() if k not in ("name", "weights_hash", "memory")}
    card = config.setdefault("card", {})
    section = comparison_tables({**own, "reference": {"name": name, **theirs}}, own_name)
    base = str(card.get("evaluation", "")).split(f"\n### Beside {name} (")[0]
    card["evaluation"] = base + section
    card.setdefault("comparisons", {})[name] = {
        "weights_hash": checkpoint.load(there, device="cpu", dtype=torch.float32).weights_hash(),
        "memory": other.get("rmt", {}).get("memory", "tokens"), "this_model": own, "other_model": theirs}
    return _write_card_files(here, config, model, card)


def add_answer_mentions_to_card(folder: str | Path, samples: int = 200,
                                progress: Callable[[str], None] = print) -> Path:
    """Measure a shipped fact-recall checkpoint's answer-mentions table now
    (:func:`measure_answer_mentions`) and write it into its card: card["evaluation_results"]
    ["answer_mentions"], the operating range's ``mentions`` (read by the answer warnings) and the
    card text's section (replaced when there is one, else put before the perplexity table). Only
    config.json and README.md are rewritten, through temporary files; the weights stay as they are.
    Returns the folder. Raises CheckpointError for a folder that is not an RMT Lens checkpoint or a
    model that answers no fact questions."""
    from ..errors import CheckpointError

    here = checkpoint.resolve_checkpoint(folder)
    config = _shipped_config(here)
    task = config.get("rmt", {}).get("task", "")
    if task not in evaluation.FACT_TASKS:
        raise CheckpointError(f"{here} is trained on {task!r}, not on fact questions: it has no answers to measure.")
    model = checkpoint.load(here, device="cpu", dtype=torch.float32)
    rows = measure_answer_mentions(model, task, samples, progress)
    card = config.setdefault("card", {})
    card.setdefault("evaluation_results", {})["answer_mentions"] = rows
    if isinstance(card.get("operating_range"), dict):
        card["operating_range"]["mentions"] = [dict(r) for r in rows]
    text = str(card.get("evaluation", ""))
    section = answer_mentions_section(rows)
    perplexity = "\nPerplexity with memory vs memory reset"
    if MENTIONS_HEADING in text:
        before, after = text.split(MENTIONS_HEADING, 1)
        rest = after[after.index(perplexity):] if perplexity in after else ""
        text = before + section + ("\n" + rest if rest else "")
    elif perplexity in text:
        at = text.index(perplexity)
        text = text[:at] + section + "\n" + text[at:]
    else:
        text += section
    card["evaluation"] = text
    return _write_card_files(here, config, model, card)


def refresh_card(folder: str | Path) -> Path:
    """Re-ship a checkpoint's card without touching its weights: config.json gains the card's
    ``questions`` (rmt_core.questions.card_questions of its task) and the RMT config's current
    fields (``memory``: "tokens" for checkpoints written before it). Only config.json is rewritten
    (through a temporary file); model.safetensors, the tokenizer and README.md stay as they are.
    Raises CheckpointError for a folder that is not an RMT Lens checkpoint."""
    from ..engine.config import RMTConfig
    from ..errors import CheckpointError

    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint config ({exc}).") from exc
    if not isinstance(config, dict) or config.get("format") != checkpoint.FORMAT:
        raise CheckpointError(f"{path} is not an RMT Lens checkpoint config.")
    rmt = RMTConfig.from_dict(config["rmt"])
    config["rmt"] = rmt.to_dict()
    config.setdefault("card", {})["questions"] = card_questions(rmt.task)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path
