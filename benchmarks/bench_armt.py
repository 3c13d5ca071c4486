"""ARMT forward over n segments vs the bare backbone run on the SAME segment rows.

For each n (segments of the shipped ARMT, armt-austen-pydocs-recall: 32 tokens, 8 memory tokens,
3 layers, state A 3 x 384 x 128 per sample; batch 8, so 4.7 MB of state per segment), on the
held-out Austen corpus (rmt_core.training.corpus, the same rows for every variant):

* "ARMT": model(input_ids) under no_grad: per segment it embeds the tokens, builds the row
  [tokens | memory tokens P], mask and positions, runs the backbone with the associative read
  hooked into every block's input and the write taken from every block's memory-token outputs,
  keeps the state it wrote (RMTOutput.memory_out holds every segment's), and finally applies
  the LM head to all token positions.
* "backbone" (the bare backbone): the same rows [tokens | P] (the segment's token embeddings
  and the M memory-token embeddings), the same causal mask and positions, precomputed; per
  segment only model.backbone.base_model(inputs_embeds=row, attention_mask=mask,
  position_ids=pos) plus the LM head on the token positions: no reads, no writes, no state.
* "RMT": the default RMT (austen-pydocs-recall, 8 read + 8 write slots) forward over the same
  token ids, for reference (its own rows: 48 per segment against ARMT's 40).

So ARMT / backbone is the cost of the associative memory (the reads and writes themselves and
their bookkeeping). Target <= 1.30 on the CPU at 16 segments. Times on the CPU are this process's CPU
time (user + system: page faults count, waiting for a core on a busy machine does not). "seg 0 |dlogits|": the first segment
reads nothing, so ARMT's logits there must equal the backbone's on the same row (float rounding).
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)

import torch  # noqa: E402

from rmt_core.engine.masks import additive_mask  # noqa: E402

ARMT_CHECKPOINT = "armt-austen-pydocs-recall"
BATCH = 8
TARGET = 1.30
TARGET_SEGMENTS = 16


def load(name: str, device: str):
    import rmt_core

    return rmt_core.load(name, device=device).eval()


@torch.no_grad()
def bare_rows(model, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(row (batch, L + M, d), 4-D additive mask, positions) of every segment as the ARMT builds it
    (MemoryType.build_row: the segment's token embeddings then the M memory-token embeddings)."""
    batch, embed = input_ids.shape[0], model.backbone.get_input_embeddings()
    state = model.memory.initial_state(batch)  # the row does not depend on the state
    rows = []
    for index, (start, end) in enumerate(model.segment_bounds(input_ids.shape[1])):
        seg = model.memory.build_row(state, embed(input_ids[:, start:end]), None, True, index)
        mask = additive_mask(seg.allowed, seg.embeds.dtype).expand(batch, -1, -1, -1)
        rows.append((seg.embeds.contiguous(), mask, seg.positions))
    return rows


def backbone_pass(model, rows) -> list[torch.Tensor]:
    base, head = model.backbone.base_model, model.backbone.get_output_embeddings()
    size = model.config.segment_size
    out = []
    for row, mask, positions in rows:
        hidden = base(inputs_embeds=row, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
        out.append(head(hidden[:, :size]))  # (batch, L, vocab): the token positions
    return out


def measure(armt, rmt, ids_source, n_segments: int, device: str, rounds: int, min_seconds: float):
    size = armt.config.segment_size
    total = n_segments * size
    if len(ids_source) < total * BATCH:
        raise SystemExit(f"the held-out corpus has {len(ids_source)} tokens; {n_segments} segments x batch {BATCH} "
                         f"need {total * BATCH}")
    input_ids = torch.as_tensor(ids_source[: total * BATCH], dtype=torch.long).view(BATCH, total).to(device)
    rows = bare_rows(armt, input_ids)
    with torch.no_grad():
        first = armt(input_ids[:, :size]).logits
        seg0 = float((first.float() - backbone_pass(armt, rows[:1])[0].float()).abs().max())
    del first

    def run_armt():
        with torch.no_grad():
            return armt(input_ids).logits

    def run_backbone():
        with torch.no_grad():
            return backbone_pass(armt, rows)

    def run_rmt():
        with torch.no_grad():
            return rmt(input_ids).logits

    times = C.interleaved({"ARMT": run_armt, "backbone": run_backbone, "RMT": run_rmt}, rounds=rounds, warmup=2,
                          device=device, min_seconds=min_seconds, max_rounds=40, clock=C.cpu_clock(device))
    return times, seg0


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    C.segments_option(p, (4, 16, 64))
    args = p.parse_args()
    C.setup(args)
    report = C.Report("bench_armt", "ARMT forward vs the bare backbone on the same segment rows", quick=args.quick)
    report.header(args)
    counts = C.segment_counts(args)
    rounds = 2 if args.quick else 9
    min_seconds = 0.0 if args.quick else 20.0

    columns = ["device", "case", "tokens/row", "ARMT ms", "backbone ms", "RMT ms", "ARMT/backbone (paired)",
               "ratio of medians", "ratio of minimums", "ARMT/RMT (paired)", "rounds", "seg 0 |dlogits|"]
    table, checks = [], []
    for device in C.devices(args):
        armt, rmt = load(ARMT_CHECKPOINT, device), load(C.CHECKPOINT, device)
        _, ids_source, _ = C.corpus_ids(armt, max_chars=400_000)
        for n in counts:
            times, seg0 = measure(armt, rmt, ids_source, n, device, rounds if n <= 16 else max(2, rounds // 2),
                                  min_seconds if n <= 16 else min_seconds / 2)
            paired = C.paired_ratio(times, "ARMT", "backbone")
            table.append([device, f"forward n={n}, batch {BATCH}", n * armt.config.segment_size,
                          C.ms(C.median(times["ARMT"])), C.ms(C.median(times["backbone"])), C.ms(C.median(times["RMT"])),
                          paired, C.median(times["ARMT"]) / C.median(times["backbone"]),
                          min(times["ARMT"]) / min(times["backbone"]), C.paired_ratio(times, "ARMT", "RMT"),
                          len(times["ARMT"]), f"{seg0:.1e}"])
            if device == "cpu" and n == TARGET_SEGMENTS:
                checks.append((f"ARMT/backbone forward n={n} (cpu)", paired))
        del armt, rmt
    report.table(columns, table, title="Medians per call (ms of this process's CPU time on the CPU, wall time on CUDA: "
                                       "C.cpu_clock); paired = median over rounds of the ratio within one round; "
                                       "minimums: each variant's fastest call (the least disturbed by other work)")
    print("backbone: the bare backbone on the ARMT's own rows [tokens | memory tokens] (causal, same positions), "
          "one segment at a time, LM head on the tokens; no reads, no writes, no state. RMT: the default RMT "
          "forward on the same token ids (its own [read | tokens | write] rows).")
    for label, value in checks:
        report.check(label, value, TARGET)
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
