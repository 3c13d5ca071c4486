"""Tracing long documents on CUDA: throughput (tokens/s) and peak GPU memory of a 1M-token trace,
for the shipped default model and for a GPT-2-small-sized random RMT (12 layers, d=768,
12 heads, vocab 50,257; 16 memory slots, 256-token segments). Needs CUDA: without it this
prints a note and exits 0 (what gpu_check.sh's dry run shows).

For each model, interleaved after a warm-up: rmt_core.trace(model, ids) of --tokens tokens, and the bare
segment loop (run_segment without LM head, the floor any trace pays); reported: seconds,
tokens/s, trace / segment loop, peak GPU memory beyond the loaded model (torch.cuda.max_memory_allocated)
and the host RSS growth that holds the finished trace. No targets: the numbers are the record.

    python benchmarks/bench_gpu.py --cuda [--tokens 1000000] [--rounds 1]
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)
import rmt_core  # noqa: E402

import gc  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

GPT2_SMALL = dict(vocab_size=50257, n_layer=12, n_embd=768, n_head=12, n_positions=1024)
GB = 1024 ** 3


def gpt2_small_rmt(device: str):
    from rmt_core import RMTConfig, RMTModel
    from rmt_core.engine.backbones import backbone_from_config, gpt2_config
    from rmt_core.engine.devices import default_dtype

    torch.manual_seed(0)
    backbone = backbone_from_config(gpt2_config(**GPT2_SMALL, initializer_range=0.02))
    model = RMTModel.from_backbone(backbone, RMTConfig(num_mem_tokens=16, segment_size=256, mask_mode="paper"))
    target = torch.device(device)
    return model.to(device=target, dtype=default_dtype(target)).eval()


def segment_loop(model, ids: np.ndarray) -> None:
    with torch.no_grad():
        memory = model.initial_memory_batch(1)
        x = torch.as_tensor(ids, dtype=torch.long, device=model.device).unsqueeze(0)
        for index, (start, end) in enumerate(model.segment_bounds(len(ids))):
            out = model.run_segment(memory, x[:, start:end], segment_index=index, compute_logits=False)
            memory = out.memory_out if out.memory_out is not None else memory


def measure(name: str, model, ids: np.ndarray, rounds: int) -> list:
    device = str(model.device)
    rmt_core.trace(model, ids[:4096])  # warm-up (kernels, allocator)
    segment_loop(model, ids[:4096])
    C.sync(device)
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    rss_before = C.rss_bytes()
    holder: dict = {}

    def trace():
        holder.pop("trace", None)
        gc.collect()
        holder["trace"] = rmt_core.trace(model, ids)

    times = C.interleaved({"trace": trace, "segment loop": lambda: segment_loop(model, ids)},
                          rounds=rounds, warmup=0, device=device)
    peak = torch.cuda.max_memory_allocated() - base
    held = C.rss_bytes() - rss_before
    seconds = C.median(times["trace"])
    loop = C.median(times["segment loop"])
    return [name, f"{len(ids):,}", str(model.dtype).replace("torch.", ""), seconds, len(ids) / seconds,
            loop, seconds / loop, peak / GB, held / GB]


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    C.setup(args)
    report = C.Report("bench_gpu", "1M-token traces on CUDA: tokens/s and peak GPU memory", quick=args.quick)
    report.header(args)
    if "cuda" not in C.devices(args):
        report.note("no CUDA device (or --cuda not given): nothing measured.")
        return report.finish(args)
    tokens = 20_000 if args.quick else args.tokens
    rows = []
    default = C.load_model("cuda")
    text, ids, _ = C.corpus_ids(default, split="all")
    ids = np.tile(ids, -(-tokens // len(ids)))[:tokens]
    rows.append(measure(f"default ({C.CHECKPOINT})", default, ids, args.rounds))
    del default
    gc.collect()
    torch.cuda.empty_cache()
    small = gpt2_small_rmt("cuda")
    random_ids = np.random.default_rng(0).integers(0, GPT2_SMALL["vocab_size"], tokens)
    rows.append(measure("GPT-2-small-sized random RMT", small, random_ids, args.rounds))
    report.table(["model", "tokens", "dtype", "trace s", "tokens/s", "segment loop s", "trace / loop",
                  "peak GPU GB beyond model", "host RSS held GB"], rows,
                 title=f"traces on {torch.cuda.get_device_name(0)}")
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
