"""One traced sample -> one row of a study.

Every measure is read through the public explain API (``rmt_core.trace``,
:func:`rmt_core.explain.answers.answer_from_trace` for the answer and the through-memory
attribution, ``answers.site_logprobs``, ``Trace.lens_ids`` for the logit lens) and the one home
of the memory-reset baseline (:func:`rmt_core.training.evaluation.logits_with_and_without_memory`).
Nothing of the trace is kept: the row holds numbers and, for the probes, the memory written
from the fact's segment on (float16).

The row's columns and their one definition are :data:`COLUMNS` (the report, the app and the
model card read them from there).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RMTLensError
from .source import StudySample

# name -> meaning (units). The order is the order of rows.parquet's columns.
COLUMNS: dict[str, str] = {
    "sample_id": "the sample's id, unique in the study",
    "task": "the grid's task (detect, qa1, qa2) or 'document'",
    "n_segments": "the grid's length in segments (None for a user document)",
    "depth": "the grid's fact depth, % of the tokens before the asking segment (None for a document)",
    "index": "the sample's number in its cell",
    "seed": "the study seed the sample was drawn from",
    "document": "for a user document: its name in the source (file, or file:line)",
    "segments": "segments the model read (document + question)",
    "tokens": "tokens the model read",
    "question_segment": "the segment that ends with 'Answer:' (where the answer is predicted)",
    "answer": "the expected answer word",
    "answer_tokens": "tokens of ' answer' (p_answer and rank are of its first token)",
    "predicted": "the model's top next token after 'Answer:' over the whole vocabulary (stripped)",
    "correct": "predicted == answer",
    "p_answer": "probability of the answer's (first) token after 'Answer:', with memory",
    "rank": "rank of the answer's token among the whole vocabulary (0 = top)",
    "p_predicted": "probability of the predicted token",
    "fact_segment": "the segment holding the supporting fact's first token (None when unknown)",
    "fact_token": "the supporting fact's first token, index in the document",
    "depth_measured": "fact_token as % of the tokens before the asking segment",
    "memory_segment": "the earlier segment whose tokens most moved log p(attributed answer) through memory "
                      "(integrated gradients, |sum per segment|; None when the question is in segment 0)",
    "memory_segment_is_fact": "memory_segment == fact_segment",
    "attribution_first_segment": "the first segment the through-memory attribution reached (it unrolls at most 8)",
    "write_mass_fact": "attention mass the write slots put on the fact's tokens in fact_segment "
                       "(sum over the fact's tokens; mean over layers, heads and write slots)",
    "write_mass_uniform": "what write_mass_fact would be if the write slots spread their token attention evenly",
    "loss_memory": "mean NLL of the document's tokens (nats/token), memory carried",
    "loss_reset": "the same with the memory reset before every segment (no-memory baseline)",
    "answer_loss_memory": "-log p(answer token) after 'Answer:', memory carried",
    "answer_loss_reset": "the same with the memory reset before every segment",
    "correct_reset": "the top prediction with memory reset is the answer",
    "lens_rank_by_age": "per segment since the write (age 0 = fact_segment's memory_out, up to the memory the "
                        "question's segment reads): best rank of the answer token in the logit lens of the "
                        "last layer's write slots (any slot; 0..4, -1 = not in any slot's top 5)",
    "retention_lens": "ages from 0 in a row with the answer in the logit lens (0 = never decodable)",
    "memory_after_write": "float16 bytes of the memory written at each age, shape state_shape (ages, slots, hidden); "
                          "an associative memory: its state summary per layer, (ages, layers, hidden) "
                          "(explain.associative.state_summary: 1^T A_l, the values written weighted by their keys)",
    "state_shape": "shape of memory_after_write",
    "memory_type": "the model's memory type (tokens: slots; associative: ARMT's per-layer state)",
    "not_applicable": "the columns that do not apply to this memory type (None by definition, not by failure; "
                      "NOT_APPLICABLE says why)",
    "fact_read_share": "associative memory: per layer, the fact segment's share of what the 'Answer:' token reads "
                       "from the state (explain.associative.retrieved_from: the read split exactly into every earlier "
                       "segment's writes; shares sum to 1)",
    "fact_read_top": "associative memory: the fact segment has the largest share of the 'Answer:' token's read at "
                     "the last layer",
    "fact_write_strength": "associative memory: mean write strength beta of the fact segment's memory tokens "
                           "(over layers and memory tokens)",
    "write_strength_mean": "associative memory: the same over every segment before the question's (the baseline "
                           "fact_write_strength is read against)",
    "error": "why the sample has no measures (e.g. a question the model cannot be asked), else None",
    "seconds": "wall time of this row (the only column that depends on the machine)",
}
# Columns compared when two executors must give the same rows (everything but the timing).
COMPARED = tuple(c for c in COLUMNS if c != "seconds")

_ASSOCIATIVE_ONLY = "an associative memory's measure (ARMT's per-layer state): this memory has none"
# memory type -> {column: why it does not apply}: the measures that need what that memory does not have
NOT_APPLICABLE: dict[str, dict[str, str]] = {
    "tokens": {c: _ASSOCIATIVE_ONLY for c in ("fact_read_share", "fact_read_top", "fact_write_strength",
                                              "write_strength_mean")},
    "associative": {
        "write_mass_fact": "it is the write slots' attention to the fact; an associative memory has no write "
                           "slots (its memory tokens write the state: see fact_write_strength)",
        "write_mass_uniform": "the baseline of write_mass_fact (write slots' attention)",
        "lens_rank_by_age": "the logit lens decodes write slots; an associative memory has none (its memory "
                            "tokens are the same learned vectors every segment)",
        "retention_lens": "read from lens_rank_by_age (the write slots' logit lens)",
    },
}


@dataclass(frozen=True)
class MeasureConfig:
    """How rows are measured. attribution_steps: integrated-gradient steps of the through-memory
    attribution (0 = no attribution: memory_segment None); keep_states: store memory_after_write
    (the probes need it)."""

    attribution_steps: int = 32
    keep_states: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"attribution_steps": self.attribution_steps, "keep_states": self.keep_states}


def empty_row(sample_id: str) -> dict[str, Any]:
    return {c: None for c in COLUMNS} | {"sample_id": sample_id}


def _spec_fields(row: dict[str, Any], spec) -> None:
    row.update(task=spec.task, n_segments=spec.n_segments, depth=spec.depth, index=spec.index, seed=spec.seed)


def measure_spec(model, source, spec, config: MeasureConfig = MeasureConfig()) -> dict[str, Any]:
    """Build `spec`'s sample from `source` and measure it; any RMTLensError (a question the model
    cannot be asked, a story that does not fit) becomes the row's `error`, never an exception."""
    start = time.perf_counter()
    row = empty_row(spec.sample_id)
    _spec_fields(row, spec)
    try:
        sample = source.build(spec, model)
        row = measure(model, sample, config)
    except RMTLensError as exc:
        row["error"] = str(exc)
    if spec.document is not None and hasattr(source, "samples"):
        row["document"] = source.samples[int(spec.document)][0]
    row["seconds"] = time.perf_counter() - start
    return row


def measure(model, sample: StudySample, config: MeasureConfig = MeasureConfig()) -> dict[str, Any]:
    """Trace `sample` with `model` and return its row (see COLUMNS).

    Raises QuestionError / TraceError (RMTLensError) when the sample cannot be asked or traced.
    """
    import torch

    from ..explain import answers
    from ..token_text import encode_ids
    from ..tracing.recorder import trace_document
    from ..training.evaluation import eval_mode, logits_with_and_without_memory

    start = time.perf_counter()
    row = empty_row(sample.spec.sample_id)
    _spec_fields(row, sample.spec)
    trace = trace_document(model, sample.text)
    skipped = NOT_APPLICABLE.get(trace.memory_type, {})
    row.update(memory_type=trace.memory_type, not_applicable=sorted(skipped))
    site = answers.answer_site(trace)
    if site is None:
        raise RMTLensError(f"sample {sample.spec.sample_id} does not end with 'Answer:'; nothing to score.")
    result = answers.answer_from_trace(trace, attribute=config.attribution_steps > 0,
                                       n_steps=max(1, config.attribution_steps))
    answer_ids = encode_ids(model.tokenizer, " " + sample.answer)
    answer_id = int(answer_ids[0])
    logprobs = answers.site_logprobs(trace, site).cpu().numpy().astype(np.float64)
    seg_size = model.config.segment_size
    row.update(segments=trace.num_segments, tokens=trace.num_tokens, question_segment=site.segment,
               answer=sample.answer, answer_tokens=len(answer_ids), predicted=result.answer,
               correct=result.answer == sample.answer, p_answer=float(np.exp(logprobs[answer_id])),
               rank=int((logprobs > logprobs[answer_id]).sum()), p_predicted=float(result.predictions[0].probability))
    # where the supporting fact lies
    fact = _fact_token(trace, sample)
    fact_segment = None
    if fact is not None:
        fact_segment = next(s.index for s in trace.segments if s.start <= fact < s.end)
        before = trace.segments[site.segment].start
        row.update(fact_token=int(fact), fact_segment=int(fact_segment),
                   depth_measured=100.0 * fact / before if before else None)
    # through-memory attribution
    if result.segment_scores is not None and config.attribution_steps > 0:
        finite = np.nonzero(np.isfinite(result.segment_scores))[0]
        row["attribution_first_segment"] = int(finite[0]) if finite.size else None
    row["memory_segment"] = result.memory_segment
    if result.memory_segment is not None and fact_segment is not None:
        row["memory_segment_is_fact"] = result.memory_segment == fact_segment
    # with vs without memory (the no-memory baseline resets memory before every segment)
    ids = torch.as_tensor(np.asarray(trace.token_ids, dtype=np.int64), device=model.device).unsqueeze(0)
    pos = trace.segments[site.segment].start + site.position
    with torch.no_grad(), eval_mode(model):
        for reset, logits in logits_with_and_without_memory(model, ids):
            lp = torch.log_softmax(logits[0].float(), dim=-1)
            doc_loss = float(-lp[:-1].gather(1, ids[0, 1:, None]).mean()) if ids.shape[1] > 1 else float("nan")
            ans_loss = float(-lp[pos, answer_id])
            if reset:
                row.update(loss_reset=doc_loss, answer_loss_reset=ans_loss,
                           correct_reset=int(lp[pos].argmax()) == answer_id and len(answer_ids) == 1)
            else:
                row.update(loss_memory=doc_loss, answer_loss_memory=ans_loss)
    if fact_segment is not None and fact_segment < site.segment:
        if trace.memory_type == "associative":
            _associative_measures(row, trace, fact_segment, site, config)
        else:
            _write_measures(row, trace, sample, fact, fact_segment, site.segment, answer_id, config)
    row["seconds"] = time.perf_counter() - start
    return row


def _fact_token(trace, sample: StudySample) -> int | None:
    """Index in the document of the supporting fact's first token (None without a known fact)."""
    if sample.supporting is None or not sample.fact_chars:
        return None
    start = sample.fact_chars[sample.supporting][0]
    spans = np.concatenate([s.char_spans for s in trace.segments])
    hit = np.nonzero(spans[:, 1] > start)[0]
    return int(hit[0]) if hit.size else None


def _write_measures(row: dict[str, Any], trace, sample: StudySample, fact: int, fact_segment: int,
                    question_segment: int, answer_id: int, config: MeasureConfig) -> None:
    """Write mass on the fact, logit-lens retention and the memory written from the fact on."""
    seg = trace.segments[fact_segment]
    end_char = sample.fact_chars[sample.supporting][1]
    in_fact = (seg.char_spans[:, 0] < end_char) & (np.arange(seg.num_tokens) >= fact - seg.start)
    weights = seg.write_to_tokens.astype(np.float64)  # (Y, H, m, L)
    row["write_mass_fact"] = float(weights[..., in_fact].sum(-1).mean())
    row["write_mass_uniform"] = float(weights.sum(-1).mean() * in_fact.sum() / seg.num_tokens)
    ages = list(range(fact_segment, question_segment))  # memory_out of these segments: age 0, 1, ...
    trace.compute_lens([s for s in ages if trace.segments[s].lens_ids is None])
    ranks = []
    for s in ages:
        last = trace.lens_ids(s)[-1]  # (m, LENS_K): the last layer, i.e. the memory carried on
        where = np.nonzero(last == answer_id)
        ranks.append(int(where[1].min()) if where[1].size else -1)
    row["lens_rank_by_age"] = ranks
    row["retention_lens"] = int(next((i for i, r in enumerate(ranks) if r < 0), len(ranks)))
    if config.keep_states:
        states = trace.memory_states()[fact_segment + 1:question_segment + 1].astype(np.float16)  # (ages, m, d)
        row["memory_after_write"] = states.tobytes()
        row["state_shape"] = list(states.shape)


def _associative_measures(row: dict[str, Any], trace, fact_segment: int, site, config: MeasureConfig) -> None:
    """An associative memory's own measures (fact_read_share, fact_read_top, fact_write_strength,
    write_strength_mean) and its state summary from the fact's segment on (memory_after_write)."""
    from ..explain import associative

    layers = int(trace.model_info["num_layers"])
    reads = [associative.retrieved_from(trace, site.segment, site.position, layer) for layer in range(layers)]
    row["fact_read_share"] = [float(r.segment_shares[fact_segment]) for r in reads]
    row["fact_read_top"] = reads[-1].top_segment == fact_segment
    beta = associative.write_strength(trace)  # (S, Y, M)
    row["fact_write_strength"] = float(beta[fact_segment].mean())
    row["write_strength_mean"] = float(beta[:site.segment].mean())
    if config.keep_states:
        states = associative.state_summaries(trace, fact_segment, site.segment - 1).astype(np.float16)  # (ages, Y, d)
        row["memory_after_write"] = states.tobytes()
        row["state_shape"] = list(states.shape)


def states_of(row: dict[str, Any]) -> np.ndarray | None:
    """(ages, m, d) float32 memory written from the fact's segment on, from a row (None when absent);
    an associative memory's row: (ages, layers, d), its state summary per layer."""
    data, shape = row.get("memory_after_write"), row.get("state_shape")
    if data is None or shape is None:
        return None
    return np.frombuffer(data, dtype=np.float16).reshape([int(v) for v in shape]).astype(np.float32)


__all__ = ["COLUMNS", "COMPARED", "NOT_APPLICABLE", "MeasureConfig", "measure", "measure_spec", "states_of", "empty_row"]
