"""RMT forward over n segments vs the bare backbone run on the SAME segment rows.

For each n (segments of the shipped model: 64 tokens, 8 memory slots, batch 8):

* "RMT": model(input_ids) under no_grad: per segment it embeds the tokens, builds the row
  [read | tokens | write], the 4-D mask and positions, runs the backbone, applies the LM
  head to the token positions, carries the memory, and finally concatenates the logits.
* "backbone": the same rows (taken from that RMT run, memory included), the same masks and
  positions, precomputed: per segment only
  model.backbone.base_model(inputs_embeds=row, attention_mask=mask, position_ids=pos)
  plus the LM head on the token positions.

So the ratio RMT / backbone is the cost of the RMT bookkeeping. Target <= 1.10 on the CPU.
Info rows: "backbone + cat" (the backbone plus the final logits concatenation, to show how
much of the gap that is) and forward+backward (loss.backward()) at n=4.
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)

import torch  # noqa: E402

from rmt_core.engine.masks import additive_mask, segment_layout  # noqa: E402
from rmt_core.engine.model import shifted_cross_entropy  # noqa: E402

BATCH = 8
TARGET = 1.10


def make_ids(model, ids_source, n_segments: int, batch: int, device) -> torch.Tensor:
    total = n_segments * model.config.segment_size
    flat = torch.as_tensor(ids_source[: total * batch], dtype=torch.long)
    return flat.view(batch, total).to(device)


@torch.no_grad()
def segment_rows(model, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(row, 4-D mask, positions) of every segment, built by the memory type exactly as
    RMTModel.run_segment builds them (MemoryType.build_row)."""
    batch = input_ids.shape[0]
    rows = []
    embed = model.backbone.get_input_embeddings()
    for index, (start, end), memory, _ in model.iter_segments(input_ids):
        seg = model.memory.build_row(memory, embed(input_ids[:, start:end]), None, True, index)
        mask = additive_mask(seg.allowed, seg.embeds.dtype).expand(batch, -1, -1, -1)
        rows.append((seg.embeds.contiguous(), mask, seg.positions))
    return rows


def backbone_pass(model, rows, n_tokens: int, cat: bool = False):
    base, head = model.backbone.base_model, model.backbone.get_output_embeddings()
    _, tokens, _ = segment_layout(model.config.num_mem_tokens, n_tokens, True)
    logits = []
    for row, mask, positions in rows:
        hidden = base(inputs_embeds=row, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
        logits.append(head(hidden[:, tokens]))
    return torch.cat(logits, dim=1) if cat else logits


def measure_forward(model, ids_source, n_segments: int, device, rounds: int, min_seconds: float):
    L = model.config.segment_size
    input_ids = make_ids(model, ids_source, n_segments, BATCH, device)
    rows = segment_rows(model, input_ids)
    with torch.no_grad():  # the two really compute the same thing
        rmt_logits = model(input_ids).logits
        bb_logits = backbone_pass(model, rows, L, cat=True)
        max_diff = float((rmt_logits.float() - bb_logits.float()).abs().max())
    del rmt_logits, bb_logits

    def rmt():
        with torch.no_grad():
            return model(input_ids).logits

    def backbone():
        with torch.no_grad():
            return backbone_pass(model, rows, L)

    def backbone_cat():
        with torch.no_grad():
            return backbone_pass(model, rows, L, cat=True)

    times = C.interleaved({"RMT": rmt, "backbone": backbone, "backbone+cat": backbone_cat},
                          rounds=rounds, warmup=2, device=device, min_seconds=min_seconds, max_rounds=60)
    return times, max_diff


def measure_backward(model, ids_source, n_segments: int, device, rounds: int):
    L = model.config.segment_size
    input_ids = make_ids(model, ids_source, n_segments, BATCH, device)
    rows = segment_rows(model, input_ids)
    leaf_rows = [(row.detach().clone().requires_grad_(True), mask, pos) for row, mask, pos in rows]

    def rmt():
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            model(input_ids, labels=input_ids).loss.backward()

    def backbone():
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            logits = backbone_pass(model, leaf_rows, L, cat=True)
            shifted_cross_entropy(logits, input_ids).backward()

    times = C.interleaved({"RMT": rmt, "backbone": backbone}, rounds=rounds, warmup=1, device=device)
    model.zero_grad(set_to_none=True)
    return times


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    C.segments_option(p, (1, 4, 16))
    args = p.parse_args()
    C.setup(args)
    report = C.Report("bench_engine", "RMT forward vs bare backbone on the same segment rows", quick=args.quick)
    report.header(args)
    counts = C.segment_counts(args)
    rounds = 2 if args.quick else 15
    min_seconds = 0.0 if args.quick else 8.0

    columns = ["device", "case", "tokens/row", "RMT ms", "backbone ms", "backbone+cat ms",
               "RMT/backbone (paired)", "ratio of medians", "RMT/(backbone+cat) (paired)", "rounds", "max |dlogits|"]
    rows_out, bwd_rows, checks = [], [], []
    for device in C.devices(args):
        model = C.load_model(device)
        _, ids_source, _ = C.corpus_ids(model, max_chars=200_000)
        for n in counts:
            times, diff = measure_forward(model, ids_source, n, device, rounds if n < 16 else max(2, rounds * 2 // 3),
                                          min_seconds)
            paired = C.paired_ratio(times, "RMT", "backbone")
            of_medians = C.median(times["RMT"]) / C.median(times["backbone"])
            rows_out.append([device, f"forward n={n}, batch {BATCH}", n * model.config.segment_size,
                             C.ms(C.median(times["RMT"])), C.ms(C.median(times["backbone"])),
                             C.ms(C.median(times["backbone+cat"])), paired, of_medians,
                             C.paired_ratio(times, "RMT", "backbone+cat"), len(times["RMT"]), diff])
            if device == "cpu":
                checks.append((f"RMT/backbone forward n={n} (cpu)", paired))
        n_bwd = 1 if args.quick else 4
        times = measure_backward(model, ids_source, n_bwd, device, 2 if args.quick else 7)
        bwd_rows.append([device, f"forward+backward n={n_bwd}, batch {BATCH} (info)", n_bwd * model.config.segment_size,
                         C.ms(C.median(times["RMT"])), C.ms(C.median(times["backbone"])), float("nan"),
                         C.paired_ratio(times, "RMT", "backbone"),
                         C.median(times["RMT"]) / C.median(times["backbone"]), float("nan"), len(times["RMT"]),
                         float("nan")])
        del model
    report.table(columns, rows_out + bwd_rows, title="Medians per call (ms); ratio = median over rounds of RMT/backbone")
    print("backbone+cat: the backbone rows plus torch.cat of the per-segment logits (what model() returns); "
          "forward+backward: backbone rows are leaf tensors, so no gradient flows into earlier segments.")
    for label, value in checks:
        report.check(label, value, TARGET)
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
